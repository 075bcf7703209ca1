-- The tidy table of the stored model (lmm_tidy, no refit): fixed effects,
-- variance components, every pig's BLUPs (ran_vals: estimate = BLUP,
-- std_error = conditional SD) and the fit statistics, the same rows as
-- lmm_fit_agg returns for the same data and formula.
select *
from lmm_tidy((select model from {{ ref('lmm_dietox_model') }} where model_id = 'dietox_rs'))
