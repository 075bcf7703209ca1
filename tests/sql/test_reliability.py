"""Regression tests of the reliability issue (#10): inputs that used to give
a wrong or silent result now give the right one or a clear error."""

import duckdb
import pytest

from conftest import EXT, connect, load_csv


@pytest.fixture
def con():
    c = connect()
    load_csv(c, "sleepstudy", "sleepstudy")
    c.execute(
        "CREATE TABLE d AS SELECT (i % 10)::VARCHAR AS g, (i * 0.37) % 1 AS x, ((i * 0.61) % 1) + (i % 10) * 0.1 AS y, "
        "i AS __lmm_key, -i AS __lmm_row FROM range(200) t(i)"
    )
    c.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'y ~ x + (1 | g)') AS model FROM d t")
    yield c
    c.close()


def error_of(con, sql, params=None):
    with pytest.raises(duckdb.Error) as e:
        con.execute(sql, params or []).fetchall()
    return str(e.value)


def test_grp_is_a_column_name_not_formula_text(con):
    # Used to be pasted into the formula: this fitted (1 | Subject) + (Days | Subject).
    e = error_of(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days', grp := 'Subject) + (Days | Subject')")
    assert "column 'Subject) + (Days | Subject' not found" in e
    e = error_of(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days', grp := 'Subject', re := ['Days | Subject) + (1'])")
    assert "not found" in e


def test_grp_and_re_spellings_give_the_formula_fit(con):
    q = "SELECT term, estimate FROM lmm_fit('sleepstudy', {}) WHERE effect <> 'ran_vals' ORDER BY ALL"
    want = con.execute(q.format("'Reaction ~ Days + (1 + Days | Subject)'")).fetchall()
    assert con.execute(q.format("'Reaction ~ Days', grp := 'Subject', re := ['Days']")).fetchall() == want
    assert con.execute(q.format("'Reaction ~ Days', grp := 'Subject', re := 'Days'")).fetchall() == want
    assert "needs grp" in error_of(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days', re := 'Days')")


@pytest.mark.parametrize("split", ["Days < 5", "rowid < 179", "rowid = 0"])
def test_options_that_differ_between_rows_are_refused(con, split):
    # Used to take the first row's options, so the result depended on row order.
    e = error_of(
        con,
        f"SELECT lmm_fit_agg(t, 'Reaction ~ Days + (1 | Subject)', "
        f"{{'method': CASE WHEN {split} THEN 'ML' ELSE 'REML' END}}) FROM sleepstudy t",
    )
    assert "options must be the same for all rows of a group" in e


def test_options_per_group_by_segment_are_fine(con):
    r = con.execute(
        "SELECT Days < 5 AS early, len(lmm_fit_agg(t, 'Reaction ~ 1 + (1 | Subject)', "
        "{'method': CASE WHEN Days < 5 THEN 'ML' ELSE 'REML' END})) FROM sleepstudy t GROUP BY early ORDER BY early"
    ).fetchall()
    assert [x[0] for x in r] == [False, True] and all(x[1] > 0 for x in r)


def test_lmm_score_keeps_a_column_named_like_its_key(con):
    # A column __lmm_key used to collapse the output to one row.
    got = con.execute("SELECT count(*), count(DISTINCT __lmm_key), sum(__lmm_row) FROM lmm_score('d', 'm')").fetchall()
    assert got == [(200, 200, -sum(range(200)))]
    cols = [r[0] for r in con.execute("DESCRIBE SELECT * FROM lmm_score('d', 'm')").fetchall()]
    assert cols == ["g", "x", "y", "__lmm_key", "__lmm_row", "prediction"]
    same = con.execute(
        "SELECT max(abs(s.prediction - lmm_predict(m.model, d))) FROM lmm_score('d', 'm') s "
        "JOIN d USING (__lmm_key), m"
    ).fetchone()[0]
    assert same == 0.0


@pytest.mark.parametrize("rows", [0, 2])
def test_lmm_score_needs_exactly_one_model(con, rows):
    con.execute(f"CREATE TABLE mk AS SELECT model FROM m, range({rows})")
    for q in ["SELECT count(*) FROM lmm_score('d', 'mk')", "SELECT * FROM lmm_score('d', 'mk')"]:
        assert f"needs exactly one model in 'mk' (one row with a model column); it has {rows} rows" in error_of(con, q)


def test_damaged_model_after_a_valid_one_with_the_same_header_is_refused(con):
    good = con.execute("SELECT model FROM m").fetchone()[0]
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # header (first 32 bytes) intact, payload damaged
    con.execute("CREATE TABLE mm AS SELECT * FROM (VALUES (1, ?::BLOB), (2, ?::BLOB)) v(k, model)", [good, bytes(bad)])
    e = error_of(con, "SELECT k, lmm_predict(mm.model, d) FROM mm, (SELECT * FROM d LIMIT 3) d ORDER BY k")
    assert "checksum does not match" in e
    # The valid one alone still predicts.
    assert len(con.execute("SELECT lmm_predict(mm.model, d) FROM mm, d WHERE k = 1").fetchall()) == 200


# --- macros: where they live, and what a database file keeps --------------------------------

FIT = "SELECT count(*) FROM {}('s', 'Reaction ~ Days + (1 | Subject)')"


def connect_ro(db):
    c = duckdb.connect(db, read_only=True, config={"allow_unsigned_extensions": "true"})
    c.execute(f"LOAD '{EXT}'")
    return c


def file_db(tmp_path):
    db = str(tmp_path / "f.duckdb")
    c = connect(db)
    load_csv(c, "s", "sleepstudy")
    assert c.execute(FIT.format("lmm_fit")).fetchone()[0] > 0
    c.close()
    return db


def test_macro_bodies_live_in_an_in_memory_catalog(tmp_path):
    db = file_db(tmp_path)
    c = duckdb.connect(db)  # without LOAD
    stored = c.execute(
        "SELECT function_name, macro_definition FROM duckdb_functions() WHERE function_type LIKE '%macro' "
        "AND function_name LIKE 'lmm%' AND database_name = current_database() ORDER BY 1"
    ).fetchall()
    assert [r[0] for r in stored] == sorted(["lmm_anova", "lmm_bootstrap", "lmm_confint", "lmm_contrast", "lmm_fit", "lmm_fit_stats", "lmm_lrt", "lmm_model", "lmm_model_stats",
                                             "lmm_predict", "lmm_profile", "lmm_score", "lmm_summary", "lmm_tidy", "lmm_vcov"])
    # Only forwarders are kept in the file, no logic of lmm's own.
    assert all("lmm_ext.main." in r[1] for r in stored), stored
    # Opened without lmm, the call says that lmm's catalog is missing.
    e = error_of(c, FIT.format("lmm_fit"))
    assert "lmm_ext" in e and "does not exist" in e
    c.close()


def test_read_only_file_runs_lmm(tmp_path):
    db = file_db(tmp_path)
    c = connect_ro(db)
    assert c.execute(FIT.format("lmm_fit")).fetchone()[0] > 0
    assert c.execute(FIT.format("lmm_ext.lmm_fit")).fetchone()[0] > 0
    c.close()


def test_read_only_file_never_written_by_lmm_works_qualified(tmp_path):
    db = str(tmp_path / "plain.duckdb")
    c = duckdb.connect(db)
    load_csv(c, "s", "sleepstudy")
    c.close()
    c = connect_ro(db)
    assert c.execute(FIT.format("lmm_ext.lmm_fit")).fetchone()[0] > 0
    assert 'lmm_ext.lmm_fit' in error_of(c, FIT.format("lmm_fit"))  # DuckDB's hint names it
    c.close()


def test_planted_macro_on_a_read_only_file_fails_the_load(tmp_path):
    db = file_db(tmp_path)
    c = duckdb.connect(db)
    c.execute(
        "CREATE OR REPLACE MACRO lmm_fit(tname, formula, grp := NULL, re := NULL, method := 'REML', "
        "ranef := true, ddf := 'none') AS TABLE SELECT 'fixed' AS effect, 42.0 AS estimate"
    )
    c.close()
    c = duckdb.connect(db, read_only=True, config={"allow_unsigned_extensions": "true"})
    with pytest.raises(duckdb.Error) as e:
        c.execute(f"LOAD '{EXT}'")
    c.close()
    assert "holds macro(s) named like lmm's that are not lmm's: lmm_fit" in str(e.value)
    # Read-write, LOAD replaces it.
    c = connect(db)
    assert c.execute(FIT.format("lmm_fit")).fetchone()[0] > 0
    c.close()


def test_after_use_of_another_database(con):
    con.execute("ATTACH ':memory:' AS other")
    con.execute("USE other")
    got = con.execute("SELECT count(*) FROM lmm_ext.lmm_fit('memory.sleepstudy', 'Reaction ~ Days + (1 | Subject)')")
    assert got.fetchone()[0] > 0
    m = con.execute(
        "SELECT lmm_ext.lmm_predict(lmm_model_agg(t, 'Reaction ~ Days + (1 | Subject)'), "
        "{'Days': 1, 'Subject': 308}) FROM memory.sleepstudy t"
    ).fetchone()[0]
    assert m > 0


# --- interrupts ------------------------------------------------------------------------------

def test_interrupt_stops_a_long_crossed_fit_within_a_second(con):
    import threading
    import time

    con.execute(
        "CREATE TABLE c AS SELECT (hash(i) % 50000)::INT AS a, (hash(i * 7 + 1) % 5000)::INT AS b, "
        "random() + ((hash(i) % 50000) % 17) * 0.1 + ((hash(i * 7 + 1) % 5000) % 13) * 0.1 AS y "
        "FROM range(1000000) t(i)"
    )
    timer = threading.Timer(1.0, con.interrupt)
    start = time.monotonic()
    timer.start()
    with pytest.raises(duckdb.InterruptException):
        con.execute("SELECT count(*) FROM lmm_fit('c', 'y ~ 1 + (1 | a) + (1 | b)')").fetchall()
    elapsed = time.monotonic() - start
    timer.join()
    assert elapsed < 2.0, elapsed
    # The connection is usable at once.
    assert con.execute("SELECT count(*) FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (1 | Subject)')").fetchone()[0] > 0


# --- GROUP BY: a failing group is named, or NULL on request ----------------------------------

@pytest.fixture
def segments(con):
    # Segment '0' has a constant response: its fit fails; '1' and '2' fit.
    con.execute(
        "CREATE TABLE seg AS SELECT (i % 10)::VARCHAR AS g, (i % 3)::VARCHAR AS s, (i * 0.37) % 1 AS x, "
        "CASE WHEN i % 3 = 0 THEN 1.0 ELSE ((i * 0.61) % 1) + (i % 10) * 0.1 END AS y FROM range(300) t(i)"
    )
    return con


def test_failing_group_by_segment_is_described(segments):
    e = error_of(segments, "SELECT s, lmm_fit_agg(t, 'y ~ x + (1 | g)') FROM seg t GROUP BY s")
    assert "in the GROUP BY group with 100 row(s) used, 10 level(s) of 'g': 0, 1, 2, ..." in e
    assert "{'on_error': 'null'}" in e


@pytest.mark.parametrize("agg", ["lmm_fit_agg", "lmm_model_agg"])
def test_on_error_null_gives_null_for_the_failing_group_only(segments, agg):
    got = segments.execute(
        f"SELECT s, {agg}(t, 'y ~ x + (1 | g)', {{'on_error': 'null'}}) IS NULL FROM seg t GROUP BY s ORDER BY s"
    ).fetchall()
    assert got == [("0", True), ("1", False), ("2", False)]
    assert "expected 'stop' or 'null'" in error_of(
        segments, f"SELECT {agg}(t, 'y ~ x + (1 | g)', {{'on_error': 'skip'}}) FROM seg t")


def test_a_column_named_like_the_row_alias_is_explained(con):
    con.execute("CREATE TABLE r AS SELECT *, 'x' AS __lmm_row FROM sleepstudy")
    e = error_of(con, "SELECT * FROM lmm_fit('r', 'Reaction ~ Days + (1 | Subject)')")
    assert "lmm_fit calls the row __lmm_row, so rename a column of that name" in e
    con.execute("CREATE TABLE ms AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (1 | Subject)') AS model FROM sleepstudy t")
    assert len(con.execute("SELECT * FROM lmm_score('r', 'ms')").fetchall()) == 180  # lmm_score's alias differs


# --- grouping columns of any type ------------------------------------------------------------

KEY_COLUMNS = {
    "d": ("DATE '2020-01-01' + Subject::INT", "2020-11-04"),
    "ts": ("TIMESTAMP '2020-01-01' + to_hours(Subject::INT)", "2020-01-13 20:00:00"),
    "tm": ("TIME '00:00:00' + to_minutes(Subject::INT)", "05:08:00"),
    "u": ("('00000000-0000-0000-0000-' || lpad(Subject::VARCHAR, 12, '0'))::UUID", "00000000-0000-0000-0000-000000000308"),
    "b": ("Subject::VARCHAR::BLOB", "308"),
    "iv": ("to_days(Subject::INT)", "0 months 308 days 00:00:00"),
}


@pytest.mark.parametrize("col", list(KEY_COLUMNS))
def test_grouping_columns_of_date_time_uuid_blob_interval(con, col):
    expr, first_level = KEY_COLUMNS[col]
    con.execute(f"CREATE TABLE k AS SELECT Reaction, Days, Subject, {expr} AS {col} FROM sleepstudy")
    q = "SELECT effect, term, estimate FROM lmm_fit('k', 'Reaction ~ Days + (Days | {})') WHERE effect <> 'ran_vals' ORDER BY ALL"
    want = con.execute(q.format("Subject")).fetchall()
    got = con.execute(q.format(col)).fetchall()
    assert [r[:2] for r in got] == [r[:2] for r in want]
    assert max(abs(a[2] - b[2]) for a, b in zip(got, want)) == 0.0
    level = con.execute(f"SELECT level FROM lmm_fit('k', 'Reaction ~ Days + (Days | {col})') WHERE effect = 'ran_vals' LIMIT 1")
    assert level.fetchone()[0] == first_level
    # Prediction finds each row's level by the same text.
    diff = con.execute(
        f"SELECT max(abs(lmm_predict(a.m, k) - lmm_predict(b.m, k))) FROM k, "
        f"(SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | {col})') AS m FROM k t) a, "
        f"(SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS m FROM k t) b").fetchone()[0]
    assert diff == 0.0


def test_key_only_types_are_refused_as_fixed_effects(con):
    con.execute("CREATE TABLE k AS SELECT Reaction, Subject, DATE '2020-01-01' + Days::INT AS d FROM sleepstudy")
    e = error_of(con, "SELECT * FROM lmm_fit('k', 'Reaction ~ d + (1 | Subject)')")
    assert "column 'd' has type DATE, which lmm can use only as a grouping factor" in e


# --- memory budget ---------------------------------------------------------------------------

def test_lmm_fit_holds_its_buffers_to_memory_limit(con):
    con.execute(
        "CREATE TABLE c AS SELECT (hash(i) % 20000)::INT AS a, (hash(i * 7 + 1) % 5000)::INT AS b, "
        "random() + ((hash(i * 7 + 1) % 5000) % 13) * 0.1 AS y FROM range(200000) t(i)"
    )
    con.execute("SET memory_limit = '200MB'")
    e = error_of(con, "SELECT count(*) FROM lmm_fit('c', 'y ~ 1 + (1 | a) + (1 | b)')")
    # 2 (m + k)^2 doubles for m = 5000 levels, k = 2, plus the per-level blocks.
    assert ("the fit (per-level blocks and the dense block of the crossed factors after the largest) "
            "would need 382.3 MiB, more than memory_limit (190.7 MiB)") in e
    assert "raise memory_limit" in e


def test_lmm_model_is_lmm_model_agg_interruptible(con):
    con.execute("CREATE TABLE ma AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)', {'method': 'ML'}) AS model FROM sleepstudy t")
    con.execute("CREATE TABLE mb AS SELECT * FROM lmm_model('sleepstudy', 'Reaction ~ Days + (Days | Subject)', method := 'ML')")
    assert con.execute("SELECT count(*) FROM mb").fetchone()[0] == 1
    diff = con.execute("SELECT max(abs(lmm_predict(ma.model, s) - lmm_predict(mb.model, s))) FROM sleepstudy s, ma, mb").fetchone()[0]
    assert diff == 0.0
    a = con.execute("SELECT * FROM lmm_tidy((SELECT model FROM ma)) ORDER BY ALL").fetchall()
    b = con.execute("SELECT * FROM lmm_tidy((SELECT model FROM mb)) ORDER BY ALL").fetchall()
    assert a == b


def test_prediction_of_a_row_with_nan_in_a_model_column_is_null(con):
    con.execute("CREATE TABLE dg AS SELECT Reaction, Days, Subject::DOUBLE AS s FROM sleepstudy")
    con.execute("CREATE TABLE mg AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (1 | s)') AS model FROM dg t")
    got = con.execute(
        "SELECT lmm_predict(mg.model, {'Days': 1.0, 's': 'NaN'::DOUBLE}), "
        "lmm_predict(mg.model, {'Days': 'inf'::DOUBLE, 's': 308.0}), "
        "lmm_predict(mg.model, {'Days': 1.0, 's': 308.0}) FROM mg").fetchone()
    assert got[0] is None and got[1] is None and got[2] is not None


def test_interrupt_stops_a_long_prediction(con):
    import threading
    import time

    timer = threading.Timer(0.5, con.interrupt)
    start = time.monotonic()
    timer.start()
    with pytest.raises(duckdb.InterruptException):
        con.execute(
            "SELECT sum(lmm_predict(m.model, {'x': (i % 100) * 0.01, 'g': (i % 10)::VARCHAR})) "
            "FROM range(200000000) r(i), m"
        ).fetchall()
    elapsed = time.monotonic() - start
    timer.join()
    assert elapsed < 1.5, elapsed


def test_interrupt_stops_a_long_bootstrap_and_profile(con):
    # The inference functions run as jobs polled from SQL (as lmm_fit): an
    # interrupt stops a bootstrap of 10⁶ replicates, or a profile, within a second.
    import threading
    import time

    con.execute("CREATE TABLE mb AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model FROM sleepstudy t")
    for sql in ["SELECT count(*) FROM lmm_bootstrap((SELECT model FROM mb), 1000000)",
                "SELECT count(*) FROM lmm_confint((SELECT model FROM mb), method := 'boot', nsim := 1000000)"]:
        timer = threading.Timer(0.5, con.interrupt)
        start = time.monotonic()
        timer.start()
        with pytest.raises(duckdb.InterruptException):
            con.execute(sql).fetchall()
        elapsed = time.monotonic() - start
        timer.join()
        assert elapsed < 1.5, (sql, elapsed)
    # The connection is usable at once, and a short bootstrap still runs.
    assert con.execute("SELECT count(*) FROM lmm_bootstrap((SELECT model FROM mb), 10)").fetchone()[0] == 60
