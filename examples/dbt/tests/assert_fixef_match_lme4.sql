-- Fails on every fixed effect whose estimate or standard error differs from
-- lme4's (seed lme4_dietox_rs_fixef, from tests/fixtures/dietox_rs.json) by more
-- than var('lme4_rel_tol') relative, and on a term only one side has.
select
    coalesce(l.term, r.term) as term,
    l.estimate, r.estimate as lme4_estimate,
    l.std_error, r.std_error as lme4_std_error
from {{ ref('lmm_dietox_fixef') }} as l
full outer join {{ ref('lme4_dietox_rs_fixef') }} as r on l.term = r.term
where l.term is null
   or r.term is null
   or not abs(l.estimate - r.estimate) <= {{ var('lme4_rel_tol') }} * abs(r.estimate)
   or not abs(l.std_error - r.std_error) <= {{ var('lme4_rel_tol') }} * abs(r.std_error)
