-- The same scoring as lmm_dietox_scored, by another route: plain SQL from the
-- tidy table (no lmm_predict), to cross-check the two
-- (tests/assert_sql_scoring_matches_lmm_predict.sql).
--   pred_population  = b0 + b1 * Time                    (fixed effects only)
--   pred_conditional = (b0 + u0[Pig]) + (b1 + u1[Pig]) * Time
-- u0, u1 are the pig's BLUPs (ran_vals rows, joined on level = Pig as text);
-- a pig the fit never saw gets u = 0, i.e. the population-level prediction.
with tidy as (
    select * from {{ ref('lmm_dietox_tidy') }}
),

fixed as (
    select
        max(estimate) filter (where term = '(Intercept)') as b0,
        max(estimate) filter (where term = 'Time') as b1
    from tidy
    where effect = 'fixed'
),

blups as (
    select
        level,
        max(estimate) filter (where term = '(Intercept)') as u0,
        max(estimate) filter (where term = 'Time') as u1
    from tidy
    where effect = 'ran_vals' and group_var = 'Pig'
    group by level
)

select
    r.score_id,
    r.Pig,
    r.Time,
    b.level is not null as pig_in_fit,
    f.b0 + f.b1 * r.Time as pred_population,
    (f.b0 + coalesce(b.u0, 0)) + (f.b1 + coalesce(b.u1, 0)) * r.Time as pred_conditional
from {{ ref('score_requests') }} as r
cross join fixed as f
left join blups as b on b.level = cast(r.Pig as varchar)
