-- Fails on every scored row whose population-level or conditional prediction
-- differs from lme4's (seed lme4_dietox_rs_predictions: lme4's fixed effects and
-- BLUPs applied to the same rows) by more than var('lme4_rel_tol') relative,
-- and on a row only one side has.
select
    coalesce(s.score_id, r.score_id) as score_id,
    s.pred_population, r.pred_population as lme4_pred_population,
    s.pred_conditional, r.pred_conditional as lme4_pred_conditional
from {{ ref('lmm_dietox_scored') }} as s
full outer join {{ ref('lme4_dietox_rs_predictions') }} as r on s.score_id = r.score_id
where s.score_id is null
   or r.score_id is null
   or not abs(s.pred_population - r.pred_population) <= {{ var('lme4_rel_tol') }} * abs(r.pred_population)
   or not abs(s.pred_conditional - r.pred_conditional) <= {{ var('lme4_rel_tol') }} * abs(r.pred_conditional)
