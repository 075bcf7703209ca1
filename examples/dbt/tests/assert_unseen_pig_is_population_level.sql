-- A pig the fit never saw has no BLUPs: its conditional prediction must equal
-- the population-level one exactly. Fails on every row where it does not, and
-- once if no scored row is of an unseen pig.
select score_id, Pig, Time, pred_population, pred_conditional
from {{ ref('lmm_dietox_scored') }}
where not pig_in_fit and pred_conditional is distinct from pred_population
union all
select null, null, null, null, null
where not exists (select 1 from {{ ref('lmm_dietox_scored') }} where not pig_in_fit)
