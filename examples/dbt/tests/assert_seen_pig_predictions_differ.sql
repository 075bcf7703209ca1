-- A pig of the fit has its own intercept and slope: its conditional prediction
-- must differ from the population-level one. Fails on every row where they
-- agree, and once if no scored row is of a seen pig.
select score_id, Pig, Time, pred_population, pred_conditional
from {{ ref('lmm_dietox_scored') }}
where pig_in_fit and not abs(pred_conditional - pred_population) > 1e-9 * abs(pred_population)
union all
select null, null, null, null, null
where not exists (select 1 from {{ ref('lmm_dietox_scored') }} where pig_in_fit)
