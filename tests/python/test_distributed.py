"""Distributed one-factor fits through SQL (issue 12): shards of whole groups
answer the driver's requests (lmm_shard_answer), the driver's session
(lmm_dist_start / next / reply / result, driven by lmm.distributed.drive)
gives lmm_fit's table on all rows within 1e-9, BLUPs (lmm_shard_blups)
included; what it cannot do is refused with a message that says why."""
import pathlib

import duckdb
import pandas as pd
import pytest

import lmm
from lmm import distributed

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data"

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "Subject", {}),
    ("dietox", "Weight ~ Time + (Time || Pig)", "Pig", {"method": "ML", "ddf": "Satterthwaite"}),
    ("dyestuff", "Yield ~ 1 + (1 | Batch)", "Batch", {"ddf": "Satterthwaite"}),
    # scale(): the centre and scale are the whole table's, merged from the shards' moments
    ("sleepstudy", "Reaction ~ scale(Days) + (scale(Days) | Subject)", "Subject", {}),
    # poly(): the basis is the whole table's, from the shards' power sums, each
    # about its own origin (its first value: Days + Subject/100 differs by shard)
    ("sleepstudy", "Reaction ~ poly(Days + Subject / 100, 2) + (poly(Days + Subject / 100, 2) | Subject)", "Subject", {}),
]


def key(r):
    return tuple(None if pd.isna(r[c]) else r[c] for c in ("effect", "group_var", "level", "term"))


def assert_same(whole, dist, what):
    """1e-9 relative; 1e-8 for what central differences of the gradient give (tests/sql/test_stats.py)."""
    a, b = whole.to_dict("records"), {key(r): r for r in dist.to_dict("records")}
    assert len(a) == len(b), what
    for r in a:
        o = b[key(r)]
        for c in ("estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high"):
            x, y = r[c], o[c]
            if pd.isna(x) or pd.isna(y):
                assert pd.isna(x) and pd.isna(y), (what, key(r), c, x, y)
                continue
            tol = 1e-8 if c == "df" or (r["effect"] == "ran_pars" and c in ("std_error", "statistic", "p_value")) else 1e-9
            assert abs(x - y) <= tol * max(abs(x), 1e-3), (what, key(r), c, x, y)


def shards(con, table, formula, group, expr):
    """Shards of the table's rows (`expr` of the group column), plus an empty one."""
    con.execute(f"CREATE OR REPLACE TABLE t AS SELECT * FROM read_csv('{DATA / table}.csv')")
    con.execute(f"""CREATE OR REPLACE TABLE part AS
        SELECT {expr.format(g=group)} AS shard, lmm_stats_agg(t, '{formula}') AS stats FROM t GROUP BY ALL
        UNION ALL SELECT 1000, lmm_stats_agg(t, '{formula}') FROM t WHERE false""")
    return con.execute("SELECT lmm_shard_header(stats) AS h, lmm_shard_levels(stats) AS l FROM part ORDER BY shard").fetchall()


def fit(con, table, formula, group, expr, **options):
    meta = shards(con, table, formula, group, expr)
    header, levels = distributed.merged_header(con, [h for h, _ in meta], [l or 0 for _, l in meta])
    asked = []

    def ask(request):
        asked.append(request)
        rows = con.execute("SELECT lmm_shard_answer(?, ?, stats, ?) FROM part ORDER BY shard", [header, levels, request]).fetchall()
        return b"".join(bytes(a) for (a,) in rows if a is not None)

    tidy, blups = distributed.drive(con, header, levels, ask, **options)
    if blups is not None:
        rows = con.execute(
            "SELECT unnest(lmm_shard_blups(?, ?, stats, ?), recursive := true) FROM part ORDER BY shard", [header, levels, blups]
        ).df()
        tidy = pd.concat([tidy, rows.dropna(subset=["effect"])], ignore_index=True)
    return tidy, len(asked)


@pytest.mark.parametrize("table,formula,group,options", MODELS)
def test_shards_of_whole_groups_give_lmm_fits_table(table, formula, group, options):
    con = lmm.connect()
    con.execute(f"CREATE TABLE whole AS SELECT * FROM read_csv('{DATA / table}.csv')")
    whole = lmm.fit("whole", formula, con=con, **options)
    for expr in ["hash({g}) % 3", "0", "hash({g}) % 50"]:
        dist, asked = fit(con, table, formula, group, expr, **options)
        assert asked > 5, asked
        assert_same(whole, dist, f"{table} {options} shards {expr}")
        assert dist["effect"].tolist().count("ran_vals") == whole["effect"].tolist().count("ran_vals")


def test_without_blups():
    con = lmm.connect()
    dist, _ = fit(con, "sleepstudy", "Reaction ~ Days + (1 | Subject)", "Subject", "hash({g}) % 2", ranef=False)
    assert "ran_vals" not in set(dist["effect"])
    assert set(dist["effect"]) == {"fixed", "ran_pars", "fit"}


def test_grouping_columns_and_refusals():
    con = lmm.connect()
    assert distributed.grouping_columns("y ~ x + (1 + x | g)", con=con) == ["g"]
    assert distributed.grouping_columns("y ~ x + (1 | a:b)", con=con) == ["a", "b"]
    assert distributed.grouping_columns("y ~ x", con=con, grp="Pig", re=["x"]) == ["Pig"]
    for f in ["y ~ (1 | a) + (1 | b)", "y ~ (1 | a/b)"]:
        with pytest.raises(duckdb.Error, match="one grouping factor.*merged"):
            distributed.grouping_columns(f, con=con)
    meta = shards(con, "sleepstudy", "Reaction ~ Days + (1 | Subject)", "Subject", "hash({g}) % 2")
    header, levels = distributed.merged_header(con, [h for h, _ in meta], [l or 0 for _, l in meta])
    with pytest.raises(duckdb.Error, match="Kenward-Roger"):
        distributed.drive(con, header, levels, lambda r: b"", ddf="Kenward-Roger")
    # answers that are not the shards' end the fit with a message, and the handle is gone
    with pytest.raises(duckdb.Error, match="answers of the shards are truncated"):
        distributed.drive(con, header, levels, lambda r: b"\x01\x05")
    with pytest.raises(duckdb.Error, match="no distributed fit has the handle"):
        con.execute("SELECT lmm_dist_next(12345)").fetchall()
    with pytest.raises(duckdb.Error, match="handle is NULL"):
        con.execute("SELECT lmm_dist_next(NULL)").fetchall()
    with pytest.raises(duckdb.Error, match="cannot be negative"):
        con.execute("SELECT lmm_dist_start(?, -1, '')", [header]).fetchall()
    # a request that is not one; a shard of another formula
    with pytest.raises(duckdb.Error, match="request of a distributed fit"):
        con.execute("SELECT lmm_shard_answer(?, ?, stats, 'xx'::BLOB) FROM part WHERE stats IS NOT NULL", [header, levels]).fetchall()
    other = con.execute("SELECT lmm_stats_agg(t, 'Reaction ~ 1 + (1 | Subject)') FROM t").fetchall()[0][0]
    moments = b"\x01" + (2).to_bytes(4, "little") + bytes(16)
    with pytest.raises(duckdb.Error, match="another formula"):
        con.execute("SELECT lmm_shard_answer(?, ?, ?, ?)", [header, levels, other, moments]).fetchall()
    # a shard without rows answers nothing
    assert con.execute("SELECT lmm_shard_answer(?, ?, NULL, ?)", [header, levels, moments]).fetchall() == [(None,)]
