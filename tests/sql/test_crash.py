"""Crash tests (the reliability issue): inputs that once took the host process
down. Each runs in a child process (tests/sql/crash.py) with its address space
capped at 4 GiB, and must exit normally: a result, or an error that is lmm's
or DuckDB's out-of-memory error, never an abort ("Rust cannot catch foreign
exceptions", "fatal runtime error", "memory allocation of N bytes failed"),
a signal or a hang.
"""
import pytest

import crash
import test_fuzz

pytestmark = pytest.mark.skipif(not crash.EXT.is_file(), reason=f"{crash.EXT} not built (run scripts/build.sh)")

OOM = ("lmm:", "Out of Memory", "out of memory")


def big_table(rows, groups):
    return f"CREATE TABLE big AS SELECT (i % {groups}) AS g, random() AS x, random() AS y FROM range({rows}) t(i)"


@pytest.mark.parametrize("limit", ["10MB", "50MB"])
def test_lmm_fit_under_memory_limit(limit):
    res = crash.run_sql([f"SET memory_limit = '{limit}'",
                         "SELECT count(*) FROM lmm_fit('big', 'y ~ x + (1 + x | g)')"],
                        setup=[big_table(500_000, 50_000)], timeout=120)
    crash.assert_clean(res, contains=OOM)


@pytest.mark.parametrize("limit", ["10MB", "50MB"])
@pytest.mark.parametrize("agg", ["lmm_fit_agg", "lmm_model_agg"])
def test_aggregates_under_memory_limit(agg, limit):
    res = crash.run_sql([f"SET memory_limit = '{limit}'",
                         f"SELECT octet_length({agg}(t, 'y ~ x + (1 + x | g)')::BLOB) FROM big t"
                         if agg == "lmm_model_agg" else
                         f"SELECT len({agg}(t, 'y ~ x + (1 + x | g)')) FROM big t"],
                        setup=[big_table(500_000, 200_000)], timeout=120)
    crash.assert_clean(res, contains=OOM)


@pytest.mark.parametrize("limit", ["10MB", "50MB"])
def test_lmm_tidy_of_a_large_model_under_memory_limit(limit):
    # the model is made without a limit; reading its table back is limited
    res = crash.run_sql([
        "CREATE TABLE m AS SELECT lmm_model_agg(t, 'y ~ x + (1 + x | g)') AS model FROM big t",
        f"SET memory_limit = '{limit}'",
        "SELECT count(*) FROM lmm_tidy((SELECT model FROM m))",
        "SELECT sum(lmm_predict(m.model, b)) FROM big b JOIN m ON true",
    ], setup=[big_table(500_000, 200_000)], timeout=120)
    crash.assert_clean(res, contains=OOM)


FORMULAS = {
    "Days*Days*...*Days (26 factors)": "Reaction ~ " + "*".join(["Days"] * 26) + " + (1 | Subject)",
    "x0*x1*...*x21 (columns that do not exist)": "Reaction ~ " + "*".join(f"x{i}" for i in range(22))
                                                 + " + (1 | Subject)",
    "(1 | Subject/.../Subject), 3,000 segments": "Reaction ~ Days + (1 | " + "/".join(["Subject"] * 3000) + ")",
}
SLEEP = ("CREATE TABLE sleep AS SELECT (250 + 10 * (i % 10) + (i // 10) + random())::DOUBLE AS Reaction, "
         "(i % 10) AS Days, (i // 10) AS Subject FROM range(180) t(i)")


@pytest.mark.parametrize("name", list(FORMULAS))
@pytest.mark.parametrize("call", ["fit", "model"])
def test_pathological_formulas_fail_fast(name, call):
    f = FORMULAS[name].replace("'", "''")
    sql = (f"SELECT lmm_fit_agg(t, '{f}') FROM sleep t" if call == "fit" else
           f"SELECT lmm_model_agg(t, '{f}') FROM sleep t")
    res = crash.run_sql([sql], setup=[SLEEP], timeout=20)
    # A repeated variable is one variable (R: Days*Days is Days; Subject:Subject
    # is Subject), so those two fit; 2^22 - 1 distinct terms are refused.
    crash.assert_clean(res, error=name.startswith("x0"), time_limit=5)


def test_small_nested_fit_stays_small():
    # Found by test_fuzz.py: a 120-row fit must not need gigabytes of memory.
    # (Its address space does grow by about 1 GiB per thread that multiplies
    # matrices: faer's private-gemm-x86 reserves 2 x L3, untouched; hence the
    # harness's 16 GiB cap. The resident memory is what is used.)
    f = "y ~ (f | f:g/e)"
    statements = [["SELECT unnest(lmm_fit_agg(t, ?), recursive := true) FROM t", [f]],
                  ["SELECT unnest(lmm_fit_agg(t, ?, {'method': 'ML'}), recursive := true) FROM t", [f]],
                  ["SELECT unnest(lmm_fit_agg(t, ?), recursive := true) FROM "
                   "(SELECT * FROM t WHERE xn IS NOT NULL) t", [f]]]
    for _ in range(2):
        res = crash.run_sql(statements, setup=test_fuzz.SETUP, timeout=30)
        crash.assert_clean(res)
        assert max(o.rss_growth_kib for o in res.outcomes) < 256 << 10, res.describe()


def test_harness_sees_crashes_and_hangs():
    # The harness itself: an abort, a segfault and a hang are reported as such,
    # and a plain lmm error is clean.
    res = crash.run_snippet("import os; os.abort()")
    assert res.signal == "SIGABRT"
    with pytest.raises(AssertionError, match="crashed"):
        crash.assert_clean(res)
    res = crash.run_snippet("import time; time.sleep(30)", timeout=1)
    assert res.timed_out
    with pytest.raises(AssertionError, match="hung"):
        crash.assert_clean(res)
    res = crash.run_snippet("x = bytearray(32 << 30)")  # beyond the 16 GiB cap
    assert res.error == "MemoryError"
    res = crash.run_sql(["SELECT lmm_fit_agg(t, 'y ~ nope + (1 | g)') FROM (SELECT 1.0 AS y, 1 AS g) t"])
    crash.assert_clean(res, error=True)
    assert crash.is_lmm_error(res.error) and "nope" in res.error
    batch = crash.run_batch([{"sql": ["SELECT 1"]}, {"code": "import os; os.abort()"}, {"sql": ["SELECT 2"]}])
    assert [o.completed for o in batch] == [True, False, True]
    assert batch[1].signal == "SIGABRT" and batch[1].alone is not None and not batch[1].alone.completed
