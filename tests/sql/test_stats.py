"""Statistics as values (issue 12): lmm_stats_agg per shard, lmm_stats_merge,
lmm_fit_stats / lmm_model_stats give lmm_fit's table and model, for any
partition of the rows (shards that split groups, levels seen in one shard
only, empty shards, shards of one row), within 1e-9 relative."""
import duckdb
import pytest

from conftest import rows

MODELS = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", "Subject"),       # one factor
    ("dietox", "Weight ~ Time + (Time | Pig)", "Pig"),                     # one factor, 861 rows
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "plate"),  # crossed
    ("pastes", "strength ~ 1 + (1 | batch/cask)", "batch"),                # nested
]

# shard expressions over a table with row id __rid and grouping column g
PARTITIONS = {
    "rows by hash (groups split)": "hash(__rid) % 4",
    "by group (levels in one shard only)": "hash({g}) % 3",
    "single rows and the rest": "CASE WHEN __rid < 3 THEN 100 + __rid ELSE __rid % 2 END",
}


def key(r):
    return (r["effect"], r["group_var"], r["level"], r["term"])


# The variance parameters' standard errors and the Satterthwaite / Kenward-Roger
# df come from a Hessian taken by central differences of the exact gradient
# (step 1e-4): rounding in the 14th digit of the statistics moves them by about
# 2e-9 relative (measured: one fit on 1 and 2 threads differs by as much), so
# those are held to 1e-8; everything else, estimates and fixed-effect SEs
# included, to 1e-9.
def tolerance(r, column):
    by_differences = column == "df" or (r["effect"] == "ran_pars" and column in ("std_error", "statistic", "p_value"))
    return 1e-8 if by_differences else 1e-9


def assert_same(a, b, what):
    assert len(a) == len(b), what
    other = {key(r): r for r in b}
    for r in a:
        o = other[key(r)]
        for c in ("estimate", "std_error", "statistic", "df", "p_value", "conf_low", "conf_high"):
            x, y = r[c], o[c]
            if x is None or y is None:
                assert x is None and y is None, (what, key(r), c, x, y)
            else:
                assert abs(x - y) <= tolerance(r, c) * max(abs(x), 1e-3), (what, key(r), c, x, y)


def shards(con, table, formula, g, expr):
    con.execute(f"CREATE OR REPLACE TEMP TABLE __t AS SELECT *, row_number() OVER () - 1 AS __rid FROM {table}")
    shard = expr.format(g=g)
    # an empty shard: its statistics are NULL, and merging skips them
    con.execute(f"""CREATE OR REPLACE TEMP TABLE part AS
        SELECT {shard} AS shard, lmm_stats_agg(t, '{formula}') AS stats FROM (SELECT * EXCLUDE (__rid) , __rid FROM __t) t GROUP BY ALL
        UNION ALL SELECT -1, lmm_stats_agg(t, '{formula}') FROM __t t WHERE false""")


@pytest.mark.parametrize("table,formula,g", MODELS)
@pytest.mark.parametrize("partition", list(PARTITIONS))
def test_any_partition_fits_as_all_rows(con, table, formula, g, partition):
    shards(con, table, formula, g, PARTITIONS[partition])
    assert con.execute("SELECT count(*) FILTER (WHERE stats IS NULL) FROM part").fetchone()[0] == 1
    whole = rows(con, f"SELECT * FROM lmm_fit('{table}', '{formula}')")
    # the row id column is in the shards' rows but not in the formula: not read
    merged = rows(con, "SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM part))")
    assert_same(whole, merged, f"{table} {partition}")
    # merging in two levels (a tree reduction) is the same
    two = rows(con, """SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(s) FROM
                       (SELECT lmm_stats_merge(stats) AS s FROM part GROUP BY shard % 2)))""")
    assert_same(whole, two, f"{table} {partition}, two levels")


def test_fit_options_and_the_model_value(con):
    f = "Reaction ~ Days + (Days | Subject)"
    shards(con, "sleepstudy", f, "Subject", PARTITIONS["rows by hash (groups split)"])
    merged = "(SELECT lmm_stats_merge(stats) FROM part)"
    for opts in ["method := 'ML'", "ddf := 'Satterthwaite'", "ddf := 'Kenward-Roger'", "ranef := false"]:
        whole = rows(con, f"SELECT * FROM lmm_fit('sleepstudy', '{f}', {opts})")
        assert_same(whole, rows(con, f"SELECT * FROM lmm_fit_stats({merged}, {opts})"), opts)
    # the model value predicts and tests as lmm_model_agg's
    con.execute(f"CREATE TABLE m1 AS SELECT lmm_model_stats({merged}) AS model")
    con.execute(f"CREATE TABLE m2 AS SELECT lmm_model_agg(t, '{f}') AS model FROM sleepstudy t")
    p = con.execute("""SELECT max(abs(lmm_predict((SELECT model FROM m1), s) - lmm_predict((SELECT model FROM m2), s)))
                       FROM sleepstudy s""").fetchone()[0]
    assert p < 1e-9
    a = con.execute("SELECT * FROM lmm_anova((SELECT model FROM m1))").fetchall()
    b = con.execute("SELECT * FROM lmm_anova((SELECT model FROM m2))").fetchall()
    assert a[0][0] == b[0][0] and abs(a[0][5] - b[0][5]) < 1e-9 * abs(b[0][5])
    ml = con.execute(f"SELECT octet_length(lmm_model_stats({merged}, method := 'ML'))").fetchone()[0]
    assert ml > 0


def test_grp_and_re_shape_the_statistics(con):
    con.execute("""CREATE TABLE part AS SELECT lmm_stats_agg(t, 'Weight ~ Time', {'grp': 'Pig', 're': 'Time'}) AS stats
                   FROM dietox t GROUP BY Pig % 3""")
    whole = rows(con, "SELECT * FROM lmm_fit('dietox', 'Weight ~ Time', grp := 'Pig', re := ['Time'])")
    assert_same(whole, rows(con, "SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM part))"), "grp/re")


def test_errors_name_the_culprit(con):
    con.execute("""CREATE TABLE a AS SELECT lmm_stats_agg(t, 'Reaction ~ Days + (Days | Subject)') AS stats FROM sleepstudy t""")
    con.execute("""CREATE TABLE b AS SELECT lmm_stats_agg(t, 'Reaction ~ Days + (1 | Subject)') AS stats FROM sleepstudy t""")
    with pytest.raises(duckdb.Error, match="different formulas"):
        con.execute("SELECT lmm_stats_merge(stats) FROM (SELECT stats FROM a UNION ALL SELECT stats FROM b)").fetchall()
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (1 | Subject)') AS model FROM sleepstudy t")
    with pytest.raises(duckdb.Error, match="model value, not a statistics value"):
        con.execute("SELECT * FROM lmm_fit_stats((SELECT model FROM m))").fetchall()
    with pytest.raises(duckdb.Error, match="not an lmm statistics value"):
        con.execute("SELECT lmm_stats_merge('\\x01\\x02'::BLOB)").fetchall()
    damaged = con.execute("SELECT stats FROM a").fetchone()[0]
    damaged = damaged[:-1] + bytes([damaged[-1] ^ 1])
    with pytest.raises(duckdb.Error, match="checksum"):
        con.execute("SELECT * FROM lmm_fit_stats(?)", [damaged]).fetchall()
    with pytest.raises(duckdb.Error, match="statistics value is NULL"):
        con.execute("SELECT * FROM lmm_fit_stats((SELECT lmm_stats_agg(t, 'Reaction ~ Days + (1 | Subject)') FROM sleepstudy t WHERE false))").fetchall()
    assert con.execute("SELECT lmm_model_stats(NULL::BLOB)").fetchall() == [(None,)]
    with pytest.raises(duckdb.Error, match="method: expected 'REML' or 'ML'"):
        con.execute("SELECT * FROM lmm_fit_stats((SELECT stats FROM a), method := 'XX')").fetchall()
    # a column whose type differs between shards
    con.execute("CREATE TABLE s1 AS SELECT Reaction, Days, Subject::VARCHAR AS Subject FROM sleepstudy")
    con.execute("CREATE TABLE s2 AS SELECT Reaction, Days::VARCHAR AS Days, Subject::VARCHAR AS Subject FROM sleepstudy")
    con.execute("""CREATE TABLE c AS SELECT lmm_stats_agg(t, 'Reaction ~ Days + (1 | Subject)') AS stats FROM s1 t
                   UNION ALL SELECT lmm_stats_agg(t, 'Reaction ~ Days + (1 | Subject)') FROM s2 t""")
    with pytest.raises(duckdb.Error, match="Days"):
        con.execute("SELECT lmm_stats_merge(stats) FROM c").fetchall()


def test_readme_scale_out_examples_run(con):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("## Scale out"):text.index("## Worked examples")]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert blocks
    out = []
    for block in blocks:
        for stmt in [s.strip() for s in block.split(";\n") if s.strip()]:
            out.append(con.execute(stmt.rstrip(";")).fetchall())
    # the last two statements: the merged fit's fixed effects are lmm_fit's
    whole = con.execute("SELECT estimate FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days | Subject)') WHERE effect = 'fixed'").fetchall()
    fixed = [r for r in out[-2] if r[0] == "fixed"]
    assert [round(r[4], 9) for r in fixed] == [round(w[0], 9) for w in whole]
    assert isinstance(out[-1][0][0], (bytes, bytearray))
