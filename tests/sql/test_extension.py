"""Tests of the DuckDB layer (loading, registration, the lmm_fit macro, errors).

Run after scripts/build.sh:  .venv/bin/pytest tests/sql
The extension file is build/release/lmm.duckdb_extension unless LMM_EXTENSION
is set. Checks that need a working statistics core are skipped while the core
is a stub (its `todo!()` panics surface as "not yet implemented").
"""

import os
import subprocess
from pathlib import Path

import duckdb
import pytest

ROOT = Path(__file__).resolve().parents[2]
EXT = Path(os.environ.get("LMM_EXTENSION", ROOT / "build" / "release" / "lmm.duckdb_extension"))
CLI = ROOT / ".venv" / "bin" / "duckdb"

RESULT_COLUMNS = [
    ("effect", "VARCHAR"),
    ("group_var", "VARCHAR"),
    ("level", "VARCHAR"),
    ("term", "VARCHAR"),
    ("estimate", "DOUBLE"),
    ("std_error", "DOUBLE"),
    ("statistic", "DOUBLE"),
    ("df", "DOUBLE"),
    ("p_value", "DOUBLE"),
    ("conf_low", "DOUBLE"),
    ("conf_high", "DOUBLE"),
]

pytestmark = pytest.mark.skipif(not EXT.is_file(), reason=f"{EXT} not built (run scripts/build.sh)")


def connect(path=":memory:", **kw):
    con = duckdb.connect(path, config={"allow_unsigned_extensions": "true"}, **kw)
    con.execute(f"LOAD '{EXT}'")
    return con


@pytest.fixture
def con():
    c = connect()
    c.execute(
        "CREATE TABLE t AS SELECT i::DOUBLE AS x, (i % 7)::DOUBLE AS y, 'g' || (i % 5) AS g, "
        "DATE '2020-01-01' + (i % 3)::INT AS d FROM range(200) r(i)"
    )
    yield c
    c.close()


def error_of(con, sql):
    with pytest.raises(duckdb.Error) as e:
        con.sql(sql).fetchall()
    return str(e.value)


def needs_core(con, sql):
    """Run sql; skip the test if the statistics core is still a stub."""
    try:
        return con.sql(sql).fetchall()
    except duckdb.Error as e:
        if "not yet implemented" in str(e):
            pytest.skip("statistics core not implemented yet")
        raise


def test_footer():
    data = EXT.read_bytes()
    header = data[-534:-512]
    assert header == b"\x00\x93\x04\x10duckdb_signature\x80\x04"
    fields = [data[-512 + 32 * i : -512 + 32 * (i + 1)].rstrip(b"\0").decode() for i in range(8)]
    assert fields[:3] == ["", "", ""]
    assert fields[3] == "C_STRUCT"
    assert fields[4].startswith("v")
    assert fields[5] == "v1.5.6"
    assert fields[6] in {"linux_amd64", "linux_arm64", "osx_arm64", "osx_amd64", "windows_amd64"}
    assert fields[7] == "4"
    assert data[-256:] == b"\0" * 256


def test_functions_registered(con):
    rows = con.sql(
        "SELECT parameter_types, return_type FROM duckdb_functions() "
        "WHERE function_name = 'lmm_fit_agg' ORDER BY len(parameter_types)"
    ).fetchall()
    assert [r[0] for r in rows] == [["ANY", "VARCHAR"], ["ANY", "VARCHAR", "ANY"]]
    fields = ", ".join(f'"{n}" {t}' if n == "level" else f"{n} {t}" for n, t in RESULT_COLUMNS)
    assert rows[0][1] == rows[1][1] == f"STRUCT({fields})[]"
    # The body in the in-memory catalog lmm_ext, a forwarder in the default database.
    macro = con.sql(
        "SELECT database_name, parameters FROM duckdb_functions() WHERE function_name = 'lmm_fit' "
        "AND function_type = 'table_macro' ORDER BY database_name"
    ).fetchall()
    params = ["tname", "formula", "grp", "re", "method", "ranef", "ddf", "weights", "contrasts"]
    assert macro == [("lmm_ext", params), ("memory", params)]


def test_macro_schema(con):
    cols = con.sql("DESCRIBE SELECT * FROM lmm_fit('t', 'y ~ x')").fetchall()
    assert [(c[0], c[1]) for c in cols] == RESULT_COLUMNS


def test_empty_input(con):
    assert con.sql("SELECT lmm_fit_agg(t, 'y ~ x') FROM t WHERE false").fetchall() == [(None,)]
    assert con.sql("SELECT lmm_fit_agg(t, 'y ~ x', {'method': 'ML'}) FROM t WHERE false").fetchall() == [(None,)]
    con.execute("CREATE TABLE e AS SELECT * FROM t LIMIT 0")
    assert con.sql("SELECT * FROM lmm_fit('e', 'y ~ x', 'g', ['x'])").fetchall() == []
    # a group that sees no rows is NULL, others are not touched
    assert con.sql(
        "SELECT count(*) FILTER (WHERE r IS NULL) FROM "
        "(SELECT g, lmm_fit_agg(t, 'y ~ x') FILTER (WHERE false) AS r FROM t GROUP BY g)"
    ).fetchall() == [(5,)]


def test_argument_errors(con):
    assert "must be a whole row" in error_of(con, "SELECT lmm_fit_agg(x, 'y ~ x') FROM t")
    assert "formula must not be NULL" in error_of(con, "SELECT lmm_fit_agg(t, NULL) FROM t")
    assert "same for all rows" in error_of(
        con, "SELECT lmm_fit_agg(t, CASE WHEN x < 100 THEN 'y ~ x' ELSE 'x ~ y' END) FROM t"
    )
    assert "unknown option 'foo'" in error_of(con, "SELECT lmm_fit_agg(t, 'y ~ x', {'foo': 1}) FROM t")
    assert "option method" in error_of(con, "SELECT * FROM lmm_fit('t', 'y ~ x', method := 'XX')")
    assert "option ranef" in error_of(con, "SELECT * FROM lmm_fit('t', 'y ~ x', ranef := 'maybe')")
    assert "must be a STRUCT" in error_of(con, "SELECT lmm_fit_agg(t, 'y ~ x', 3) FROM t")
    assert "re (random slopes) needs grp" in error_of(con, "SELECT * FROM lmm_fit('t', 'y ~ x', re := ['x'])")


def test_no_crash_and_connection_usable(con):
    # Whatever the core does (fit, error or caught panic), the host survives.
    for sql in [
        "SELECT * FROM lmm_fit('t', 'y ~ x')",
        "SELECT * FROM lmm_fit('t', 'y ~ x', 'g', ['x'])",
        "SELECT * FROM lmm_fit('t', 'y ~ x + (x||g)', method := 'ML', ranef := false)",
        "SELECT g, lmm_fit_agg(t, 'y ~ x') FROM t GROUP BY g",
        "SELECT lmm_fit_agg(t, 'y ~ x') OVER (ORDER BY x) FROM t",
    ]:
        try:
            con.sql(sql).fetchall()
        except duckdb.Error as e:
            assert str(e).split(": ", 1)[1].startswith("lmm"), str(e)
    assert con.sql("SELECT 42").fetchall() == [(42,)]


def test_column_errors(con):
    needs_core(con, "SELECT lmm_fit_agg(t, 'y ~ x + (1 | g)') FROM t")
    assert "column 'nope' not found; available columns: x, y, g, d" in error_of(
        con, "SELECT lmm_fit_agg(t, 'y ~ nope + (1 | g)') FROM t"
    )
    # DATE is a grouping key only (issue 10: grouping columns of any type).
    assert "column 'd' has type DATE, which lmm can use only as a grouping factor" in error_of(
        con, "SELECT lmm_fit_agg(t, 'y ~ d + (1 | g)') FROM t"
    )
    assert "column 'l' has type INTEGER[], which lmm cannot use" in error_of(
        con, "SELECT lmm_fit_agg(t, 'y ~ x + (1 | l)') FROM (SELECT *, [1] AS l FROM t) t"
    )


def test_macro_call_styles(con):
    needs_core(con, "SELECT * FROM lmm_fit('t', 'y ~ x + (1 | g)')")
    q = "SELECT * FROM lmm_fit({}) ORDER BY ALL"
    base = con.sql(q.format("'t', 'y ~ x + (1 | g)'")).fetchall()
    assert base == con.sql(q.format("tname := 't', formula := 'y ~ x + (1 | g)'")).fetchall()
    assert base == con.sql(q.format("'t', 'y ~ x + (1 | g)', NULL, NULL")).fetchall()
    assert base == con.sql(q.format("'t', 'y ~ x', 'g'")).fetchall()
    assert base == con.sql(q.format("'t', 'y ~ x', 'g', []")).fetchall()
    a = con.sql(q.format("'t', 'y ~ x', 'g', ['x']")).fetchall()
    assert a == con.sql(q.format("'t', 'y ~ x + (1 + x | g)'")).fetchall()
    assert a == con.sql(q.format("'t', 'y ~ x', grp := 'g', re := 'x'")).fetchall()
    ml = con.sql(q.format("'t', 'y ~ x + (x || g)', method := 'ML', ranef := false")).fetchall()
    assert ml == con.sql(q.format("'t', 'y ~ x + (x || g)', NULL, NULL, 'ML', false")).fetchall()
    assert not any(r[0] == "ran_vals" for r in ml)


def test_read_only_database(tmp_path):
    db = str(tmp_path / "ro.duckdb")
    c = duckdb.connect(db)
    c.execute("CREATE TABLE t AS SELECT i::DOUBLE AS x, (i % 3)::DOUBLE AS y FROM range(10) r(i)")
    c.close()
    c = connect(db, read_only=True)  # CREATE MACRO fails inside LOAD: must not fail the LOAD
    assert c.sql("SELECT lmm_fit_agg(t, 'y ~ x') FROM t WHERE false").fetchall() == [(None,)]
    c.close()
    c = connect(db)  # read-write: the macro is stored, LOAD twice is fine
    c.execute(f"LOAD '{EXT}'")
    c.close()
    c = connect(db, read_only=True)
    assert c.sql("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'lmm_fit'").fetchall() == [(2,)]
    assert c.sql("SELECT count(*) FROM lmm_fit('t', 'x ~ 1 + (1 | y)')").fetchall()[0][0] > 0
    c.close()


def test_cli_1_5_6():
    # The pinned duckdb-cli (requirements-test.txt) loads the same file and fits.
    version = subprocess.run([str(CLI), "-version"], capture_output=True, text=True)
    assert "v1.5.6" in version.stdout, version.stdout
    data = ROOT / "tests" / "fixtures" / "data" / "dyestuff.csv"
    sql = (
        f"LOAD '{EXT}'; "
        "SELECT count(*) FROM duckdb_functions() WHERE function_name IN ('lmm_fit_agg', 'lmm_fit') "
        "AND database_name <> 'lmm_ext'; "
        f"CREATE TABLE d AS SELECT * FROM read_csv('{data}'); "
        "SELECT round(estimate, 6) FROM lmm_fit('d', 'Yield ~ 1 + (1 | Batch)') WHERE term = 'REMLcrit';"
    )
    out = subprocess.run([str(CLI), "-unsigned", "-csv", "-noheader", "-c", sql], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    assert lines[0] == "3"
    assert abs(float(lines[1]) - 319.654277) < 1e-6


def test_cli_1_5_6_stored_model_and_predictions(con):
    # The model functions work in the pinned CLI too, and give the numbers
    # Python duckdb 2.0.0 gives.
    data = ROOT / "tests" / "fixtures" / "data" / "dietox.csv"
    sql = (
        f"LOAD '{EXT}'; "
        f"CREATE TABLE d AS SELECT * FROM read_csv('{data}'); "
        "CREATE TABLE m AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time | Pig)') AS model FROM d t; "
        "SELECT sum(lmm_predict(m.model, d)), sum(lmm_predict(m.model, d, re := false)) FROM d, m; "
        "SELECT estimate FROM lmm_tidy((SELECT model FROM m)) WHERE term = 'Time' AND effect = 'fixed';"
    )
    out = subprocess.run([str(CLI), "-unsigned", "-csv", "-noheader", "-c", sql], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.split()
    cond, pop = (float(v) for v in lines[0].split(","))
    slope = float(lines[1])
    con.execute(f"CREATE TABLE dietox AS SELECT * FROM read_csv('{data}')")
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time | Pig)') AS model FROM dietox t")
    want = con.execute(
        "SELECT sum(lmm_predict(m.model, d)), sum(lmm_predict(m.model, d, re := false)) FROM dietox d, m").fetchone()
    want_slope = con.execute(
        "SELECT estimate FROM lmm_tidy((SELECT model FROM m)) WHERE term = 'Time' AND effect = 'fixed'").fetchone()[0]
    assert abs(cond - want[0]) <= 1e-9 * abs(want[0])
    assert abs(pop - want[1]) <= 1e-9 * abs(want[1])
    assert abs(cond - pop) > 1e-6 * abs(pop)  # the BLUPs matter
    assert abs(slope - want_slope) <= 1e-12 * abs(want_slope)
