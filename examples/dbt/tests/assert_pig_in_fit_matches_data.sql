-- pig_in_fit (a BLUP was found for the pig) must say whether the pig has rows
-- in the fitted data. Fails on every scored row where the two disagree.
select s.score_id, s.Pig, s.pig_in_fit
from {{ ref('lmm_dietox_scored') }} as s
where s.pig_in_fit is distinct from exists (
    select 1 from {{ ref('dietox') }} as d where d.Pig = s.Pig
)
