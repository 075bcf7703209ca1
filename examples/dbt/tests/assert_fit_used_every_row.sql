-- The fit converged, used all rows of the seed, dropped none, and reported one
-- group and two BLUPs (intercept, Time) per pig. Fails with each statistic that
-- disagrees with the data.
with data as (
    select count(*) as n_rows, count(distinct Pig) as n_pigs from {{ ref('dietox') }}
),

tidy as (
    select * from {{ ref('lmm_dietox_tidy') }}
),

observed as (
    select 'converged' as what, max(estimate) filter (where effect = 'fit' and term = 'converged') as got, 1 as expected from tidy
    union all
    select 'nobs', max(estimate) filter (where effect = 'fit' and term = 'nobs'), (select n_rows from data) from tidy
    union all
    select 'nobs_dropped', max(estimate) filter (where effect = 'fit' and term = 'nobs_dropped'), 0 from tidy
    union all
    select 'ngroups', max(estimate) filter (where effect = 'fit' and term = 'ngroups' and group_var = 'Pig'), (select n_pigs from data) from tidy
    union all
    select 'ran_vals rows', count(*) filter (where effect = 'ran_vals' and group_var = 'Pig'), 2 * (select n_pigs from data) from tidy
)

select * from observed where got is distinct from expected
