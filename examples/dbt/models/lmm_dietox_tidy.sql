-- Fit the random-slope model (REML) with the lmm aggregate and keep its tidy
-- table: fixed effects, variance components, every pig's BLUPs (ran_vals:
-- estimate = BLUP, std_error = conditional SD) and the fit statistics.
-- lmm_fit_agg reads the rows of any query, so ref() works as a plain FROM.
select unnest(lmm_fit_agg(t, '{{ var("dietox_formula") }}'), recursive := true)
from {{ ref('dietox') }} as t
