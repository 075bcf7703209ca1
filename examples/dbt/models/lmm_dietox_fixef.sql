-- The tidy fixed-effect coefficients of the fit, one row per term.
select term, estimate, std_error, statistic, p_value, conf_low, conf_high
from {{ ref('lmm_dietox_tidy') }}
where effect = 'fixed'
