-- Score new rows with the stored model:
--   pred_conditional = lmm_predict(model, row)              (fixed effects + the pig's BLUPs)
--   pred_population  = lmm_predict(model, row, re := false) (fixed effects only)
-- lmm_predict takes the whole row (the alias r) and finds Pig and Time by name;
-- a pig the fit never saw contributes no BLUPs (population level).
-- The one-row model table is joined by its key, not by a cross join, which
-- would copy the model BLOB into every chunk of rows (README, "Cross joins copy
-- the model"): free for this small model, costly for one with many groups.
-- pig_in_fit (the pig has BLUPs in the model's tidy table) is for the tests.
with requests as (
    select *, 'dietox_rs' as model_id from {{ ref('score_requests') }}
),

seen_pigs as (
    select distinct level
    from {{ ref('lmm_dietox_tidy') }}
    where effect = 'ran_vals' and group_var = 'Pig'
)

select
    r.score_id,
    r.Pig,
    r.Time,
    p.level is not null as pig_in_fit,
    lmm_predict(m.model, r, re := false) as pred_population,
    lmm_predict(m.model, r) as pred_conditional
from requests as r
join {{ ref('lmm_dietox_model') }} as m on m.model_id = r.model_id
left join seen_pigs as p on p.level = cast(r.Pig as varchar)
