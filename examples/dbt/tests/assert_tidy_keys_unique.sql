-- (effect, group_var, level, term) identifies a row of the tidy table. Fails on
-- every key that occurs more than once.
select effect, group_var, level, term, count(*) as n
from {{ ref('lmm_dietox_tidy') }}
group by all
having count(*) > 1
