"""lmm.spark (issue 12): exact fits of Spark DataFrames through per-partition
statistics merged by a tree reduction, against lmm_fit on the same rows.

Master: local-cluster[2,1,1024] — a standalone master with two worker JVMs,
each its own executor with its own Python workers: the rows really are split
between processes that share nothing but what Spark moves, as on a cluster
(plain local[n] runs every task in the driver's JVM). spark.task.maxFailures
is 2 so that a task failing once is retried, as a cluster would."""
import os
import pathlib
import sys

import pandas as pd
import pytest

pyspark = pytest.importorskip("pyspark")
from pyspark.sql import SparkSession  # noqa: E402

import lmm  # noqa: E402
import lmm.spark  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "fixtures" / "data"


@pytest.fixture(scope="module")
def spark():
    os.environ["PYSPARK_PYTHON"] = sys.executable
    s = (
        SparkSession.builder.master("local-cluster[2,1,1024]")
        .appName("lmm-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.task.maxFailures", "2")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    s.sparkContext.setLogLevel("ERROR")
    yield s
    s.stop()


def reference(table, formula, **options):
    con = lmm.connect()
    con.execute(f"CREATE TABLE t AS SELECT * FROM read_csv('{DATA / table}.csv')")
    return lmm.fit("t", formula, con=con, **options), con.execute("SELECT * FROM t").df()


def key(r):
    return (r["effect"], r["group_var"], r["level"], r["term"])


def assert_same(whole, spark_table, what):
    """As tests/sql/test_stats.py: 1e-9 relative, 1e-8 for what a difference Hessian gives."""
    b = {key(r): r for r in spark_table.toPandas().to_dict("records")}
    a = whole.to_dict("records")
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


MODELS = [
    ("dietox", "Weight ~ Time + (Time | Pig)", "Pig"),
    ("penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)", "plate"),
    ("pastes", "strength ~ 1 + (1 | batch/cask)", "batch"),
]


@pytest.mark.parametrize("table,formula,group", MODELS)
def test_partitions_give_lmm_fits_table(spark, table, formula, group):
    whole, rows = reference(table, formula)
    df = spark.createDataFrame(rows)
    empty = spark.createDataFrame([], df.schema)
    cases = {
        "rows spread over 5 partitions (groups split)": df.repartition(5),
        "by group (each level in one partition)": df.repartition(3, group),
        "with empty partitions": df.repartition(2).union(empty.repartition(3)),
    }
    for what, d in cases.items():
        # partitions: keep every partition its own task (no coalescing)
        assert_same(whole, lmm.spark.fit(d, formula, partitions=10_000), f"{table}: {what}")
    # and coalesced, as by default, to twice the parallelism
    assert_same(whole, lmm.spark.fit(df.repartition(7), formula), f"{table}: coalesced")


def test_one_row_partitions_and_options(spark):
    whole, rows = reference("dyestuff", "Yield ~ 1 + (1 | Batch)", method="ML")
    df = spark.createDataFrame(rows).repartition(len(rows))
    assert df.rdd.getNumPartitions() == len(rows)
    assert_same(whole, lmm.spark.fit(df, "Yield ~ 1 + (1 | Batch)", method="ML", partitions=10_000), "one row per partition, ML")
    whole, rows = reference("dietox", "Weight ~ Time", grp="Pig", re=["Time"], ddf="Satterthwaite")
    df = spark.createDataFrame(rows).repartition(4)
    assert_same(whole, lmm.spark.fit(df, "Weight ~ Time", grp="Pig", re=["Time"], ddf="Satterthwaite"), "grp/re, Satterthwaite")


def test_a_task_that_fails_once_is_retried(spark, tmp_path):
    whole, rows = reference("sleepstudy", "Reaction ~ Days + (Days | Subject)")
    marker = str(tmp_path / "failed-once")

    def fail_once(batches):
        # the first attempt of the partition holding row 0 fails; its retry runs
        for b in batches:
            if not os.path.exists(marker) and 0 in b.column("rid").to_pylist():
                open(marker, "w").close()
                raise RuntimeError("injected failure")
            yield b

    rows = rows.assign(rid=range(len(rows)))
    df = spark.createDataFrame(rows).repartition(4)
    flaky = df.mapInArrow(fail_once, df.schema)
    result = lmm.spark.fit(flaky, "Reaction ~ Days + (Days | Subject)")
    assert os.path.exists(marker)
    assert_same(whole, result, "after a retried task")


def test_errors_reach_the_driver_with_lmms_message(spark):
    df = spark.createDataFrame(pd.read_csv(DATA / "sleepstudy.csv")).repartition(2)
    with pytest.raises(lmm.spark.LmmError, match="lmm: .*Nope"):
        lmm.spark.fit(df, "Reaction ~ Nope + (1 | Subject)")
    with pytest.raises(lmm.spark.LmmError, match="lmm: .*random-effects term"):
        lmm.spark.fit(df, "Reaction ~ Days")
    with pytest.raises(lmm.spark.LmmError, match="no rows"):
        lmm.spark.fit(df.filter("Days < 0"), "Reaction ~ Days + (1 | Subject)")


def test_statistics_too_large_for_the_driver_stop_with_a_clear_error(spark):
    # the merged route brings every group's statistics to the driver; a value
    # beyond what Spark moves there stops the job in the worker, naming the
    # limit and the route that has none (10^8 rows / 5e6 groups made 4
    # partition values of about 700 MiB, which killed the executors' JVMs)
    df = spark.createDataFrame(pd.read_csv(DATA / "sleepstudy.csv")).repartition(2)
    with pytest.raises(lmm.spark.LmmError, match=r"statistics take .* MiB.*max_bytes = 1,000.*mode='distributed'"):
        lmm.spark.fit(df, "Reaction ~ Days + (Days | Subject)", max_bytes=1000)
    value = lmm.spark.stats(df, "Reaction ~ Days + (Days | Subject)", max_bytes=10**6)
    assert 1000 < len(value) < 10**6
    # the tests' executors have the default 1g: an eighth of it, or the
    # driver's 1g cap shared by the values that reach it, whichever is less
    assert lmm.spark._size_limit(spark.sparkContext, 2, 2) == (2**27, "spark.executor.memory = 1g: an executor holds a value several times over")
    assert lmm.spark._size_limit(spark.sparkContext, 100, 2) == (2**30 // 10, "spark.driver.maxResultSize = 1g for the 10 values that reach the driver")
    # as pyspark's treeAggregate: 5 partitions at depth 2 become one, 16 stay 4
    assert [lmm.spark._tree_results(p, 2) for p in (1, 2, 4, 5, 16, 100)] == [1, 2, 4, 1, 4, 10]
    assert [lmm.spark._spark_bytes(t) for t in ("1g", "512m", "2048k", "1024", "0", "1.5g")] == [
        2**30, 2**29, 2**21, 1024, 0, 3 * 2**29]


def test_prior_weights_on_both_routes(spark):
    # weights := travels with the statistics: merged and distributed equal lmm_fit's weighted table
    con = lmm.connect()
    con.execute(f"CREATE TABLE t AS SELECT *, 1 + 0.5 * sin(1.3 * Time + Pig / 7) AS w FROM read_csv('{DATA / 'dietox'}.csv')")
    f = "Weight ~ Time + (Time | Pig)"
    whole = lmm.fit("t", f, con=con, weights="w")
    df = spark.createDataFrame(con.execute("SELECT * FROM t").df()).repartition(5)
    assert_same(whole, lmm.spark.fit(df, f, weights="w", partitions=10_000), "weights, merged")
    assert_same(whole, lmm.spark.fit(df, f, mode="distributed", weights="w", partitions=3), "weights, distributed")



# ------------------------------------------------------------ distributed mode

DISTRIBUTED = [
    ("sleepstudy", "Reaction ~ Days + (Days | Subject)", {}),
    ("dietox", "Weight ~ Time + (Time | Pig)", {"ddf": "Satterthwaite"}),
    ("dyestuff", "Yield ~ 1 + (1 | Batch)", {"method": "ML"}),
]

ORDER = {"fixed": 0, "ran_pars": 1, "ran_vals": 2, "fit": 3}


@pytest.mark.parametrize("table,formula,options", DISTRIBUTED)
def test_distributed_mode_gives_lmm_fits_table(spark, table, formula, options):
    whole, rows = reference(table, formula, **options)
    df = spark.createDataFrame(rows).repartition(5)
    # 3 partitions; more partitions than some models have groups (empty ones); the default
    for partitions in (3, 12, None):
        result = lmm.spark.fit(df, formula, mode="distributed", partitions=partitions, **options)
        assert_same(whole, result, f"{table} distributed, {partitions} partitions")
        effects = [ORDER[r.effect] for r in result.select("effect").collect()]
        assert effects == sorted(effects), "lmm_fit's row order: fixed, ran_pars, ran_vals, fit"


def test_distributed_grp_re_and_no_blups(spark):
    whole, rows = reference("dietox", "Weight ~ Time", grp="Pig", re=["Time"], ranef=False)
    df = spark.createDataFrame(rows)
    result = lmm.spark.fit(df, "Weight ~ Time", mode="distributed", grp="Pig", re=["Time"], ranef=False, partitions=4)
    assert_same(whole, result, "distributed grp/re, ranef off")


def test_distributed_request_task_that_fails_once_is_retried(spark, tmp_path):
    whole, rows = reference("sleepstudy", "Reaction ~ Days + (Days | Subject)")
    df = spark.createDataFrame(rows)
    marker = str(tmp_path / "request-failed-once")
    sc = spark.sparkContext
    sc.setLocalProperty(lmm.spark._FAIL_ONCE, marker)
    try:
        result = lmm.spark.fit(df, "Reaction ~ Days + (Days | Subject)", mode="distributed", partitions=3)
    finally:
        sc.setLocalProperty(lmm.spark._FAIL_ONCE, None)
    assert os.path.exists(marker)
    assert_same(whole, result, "distributed, after a retried request task")


def test_distributed_refusals_reach_the_driver(spark):
    df = spark.createDataFrame(pd.read_csv(DATA / "sleepstudy.csv")).repartition(2)
    with pytest.raises(lmm.spark.LmmError, match="one grouping factor.*merged"):
        lmm.spark.fit(df, "Reaction ~ Days + (1 | Subject) + (1 | Days)", mode="distributed")
    with pytest.raises(lmm.spark.LmmError, match="Kenward-Roger"):
        lmm.spark.fit(df, "Reaction ~ Days + (1 | Subject)", mode="distributed", ddf="Kenward-Roger")
    with pytest.raises(lmm.spark.LmmError, match="grouping column 'Nobody'"):
        lmm.spark.fit(df, "Reaction ~ Days + (1 | Nobody)", mode="distributed")
    with pytest.raises(lmm.spark.LmmError, match="lmm: .*Nope"):
        lmm.spark.fit(df, "Reaction ~ Nope + (1 | Subject)", mode="distributed")
    with pytest.raises(lmm.spark.LmmError, match="no rows"):
        lmm.spark.fit(df.filter("Days < 0"), "Reaction ~ Days + (1 | Subject)", mode="distributed")
    with pytest.raises(ValueError, match="mode"):
        lmm.spark.fit(df, "Reaction ~ Days + (1 | Subject)", mode="sideways")
    # a shard larger than max_bytes (by default an eighth of an executor's heap) is refused, naming the way out
    with pytest.raises(lmm.spark.LmmError, match=r"one shard's statistics take [\d,]+ bytes, more than 100 \(max_bytes = 100\); use more partitions"):
        lmm.spark.fit(df, "Reaction ~ Days + (1 | Subject)", mode="distributed", partitions=2, max_bytes=100)
