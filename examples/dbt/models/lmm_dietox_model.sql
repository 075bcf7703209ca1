-- Fit the random-slope model (REML) once and store it: one row, the model
-- value (a BLOB: formula, how to build each column from a row, fixed effects,
-- every pig's BLUPs and the whole tidy table; docs/model-format.md) under a key.
-- lmm_dietox_scored joins on the key and predicts with lmm_predict;
-- lmm_dietox_tidy reads the tidy table back with lmm_tidy. Nothing refits.
select
    'dietox_rs' as model_id,
    lmm_model_agg(t, '{{ var("dietox_formula") }}') as model
from {{ ref('dietox') }} as t
