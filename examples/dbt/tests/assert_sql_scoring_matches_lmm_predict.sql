-- The two scoring routes agree: lmm_predict on the stored model
-- (lmm_dietox_scored) and plain SQL from its tidy table (lmm_dietox_scored_sql).
-- Fails on every row where pig_in_fit differs or either prediction differs by
-- more than var('cross_check_rel_tol') relative, and on a row only one side has.
select
    coalesce(p.score_id, s.score_id) as score_id,
    p.pig_in_fit, s.pig_in_fit as sql_pig_in_fit,
    p.pred_population, s.pred_population as sql_pred_population,
    p.pred_conditional, s.pred_conditional as sql_pred_conditional
from {{ ref('lmm_dietox_scored') }} as p
full outer join {{ ref('lmm_dietox_scored_sql') }} as s on p.score_id = s.score_id
where p.score_id is null
   or s.score_id is null
   or p.pig_in_fit is distinct from s.pig_in_fit
   or not abs(p.pred_population - s.pred_population) <= {{ var('cross_check_rel_tol') }} * abs(s.pred_population)
   or not abs(p.pred_conditional - s.pred_conditional) <= {{ var('cross_check_rel_tol') }} * abs(s.pred_conditional)
