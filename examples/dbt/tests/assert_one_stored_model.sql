-- lmm_dietox_model holds exactly one model, a model value of format version 2
-- (docs/model-format.md): it starts with the magic LMMMODEL and the version as
-- a little-endian u32 (hex 4C4D4D4D4F44454C 02000000), and is as long as its
-- header says (32 + the little-endian u64 payload length at byte offset 24,
-- hex digits 49-64; NULL for a value shorter than its header). Fails once per
-- model row that is not, and once if the table has no row or more than one.
with m as (
    select model_id, octet_length(model) as n_bytes, hex(model) as h
    from {{ ref('lmm_dietox_model') }}
),

parsed as (
    select
        model_id,
        n_bytes,
        substr(h, 1, 24) as magic_and_version,
        (
            select sum(try_cast('0x' || substr(h, 49 + 2 * i, 2) as ubigint) * (256::ubigint ** i)::ubigint)
            from range(8) as t(i)
        ) as payload_length
    from m
)

select model_id, n_bytes, magic_and_version, payload_length
from parsed
where n_bytes is null
   or n_bytes < 32
   or magic_and_version is distinct from '4C4D4D4D4F44454C02000000'
   or n_bytes is distinct from 32 + payload_length
union all
select null, null, null, null
where (select count(*) from m) <> 1
