"""Benchmark of issue 12: the scale-out routes over the same Parquet files.

Data: N rows and G groups as bench_fit.py makes them (hash-assigned groups of
unequal size, BIGINT ids, rows in hash order, model
y ~ x1 + x2 + x3 + cat + (1 + x1 | g)), written once as --files Parquet files
(bench/out/scale_N_G/part-K.parquet). Each measurement in a fresh process,
medians of --runs:
  - duckdb:       lmm_fit over read_parquet(the files) in one DuckDB process
                  (wall time, peak RSS)
  - spark_lmm:    lmm.spark.fit over spark.read.parquet(the files) on
                  local-cluster[2,1,--executor-mib] (two worker JVMs, one core
                  each), wall time including the driver's fit; peak RSS of the
                  driver (Python) and, from Spark's executor metrics, of each
                  executor's JVM and Python workers
  - spark_dist:   lmm.spark.fit(mode="distributed") on the same cluster: rows
                  repartitioned by g into --dist-partitions, statistics kept
                  on the executors, one Spark job per evaluation (also
                  reported: the number of evaluations and their median time)
  - spark_floor:  Spark's own groupBy(g) computing the same per-group
                  cross-products a fit needs (Z_g'[X y] for Z = [1, x1]),
                  materialised by a count: what any Spark job over these rows
                  must at least pay
Run: .venv/bin/python bench/bench_scale.py [--sizes 10000000,100000000] [--groups-per-row 0.05] [--runs 3]
The Spark settings come from LMM_BENCH_DRIVER_MEMORY (default 2g),
LMM_BENCH_MAX_RESULT (spark.driver.maxResultSize, default 1g) and
LMM_BENCH_EXECUTOR_MEMORY (each executor's heap, Spark's default 1g; at most
--executor-mib, the local-cluster worker's memory).
"""
import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_fit import EXT, FORMULA, OUT, normal  # noqa: E402


def generate(directory, n, g, files):
    import duckdb
    if (directory / "_SUCCESS").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    per = -(-n // files)
    for k in range(files):
        lo, hi = k * per, min(n, (k + 1) * per)
        con.execute(f"""COPY (
            WITH r AS (SELECT i, hash(i, 7) % {g} AS gid, {normal('i', 3)} AS x1, {normal('i', 4)} AS x2,
                              {normal('i', 5)} AS x3, ['a', 'b', 'c', 'd'][1 + (hash(i, 6) % 4)::INT] AS cat,
                              0.7 * {normal('i', 8)} AS e
                       FROM range({lo}, {hi}) t(i))
            SELECT gid::BIGINT AS g, x1, x2, x3, cat,
                   1 + 0.5 * x1 - 0.25 * x2 + 0.1 * x3
                     + CASE cat WHEN 'b' THEN 0.5 WHEN 'c' THEN -0.3 WHEN 'd' THEN 0.2 ELSE 0 END
                     + {normal('gid', 1)} + 0.3 * {normal('gid', 2)} * x1 + e AS y
            FROM r) TO '{directory / f"part-{k:04d}.parquet"}' (FORMAT parquet)""")
    (directory / "_SUCCESS").touch()


FLOOR = """g, count(*) AS n, sum(x1) AS s1, sum(x1*x1) AS s11, sum(x2) AS s2, sum(x1*x2) AS s12,
           sum(x3) AS s3, sum(x1*x3) AS s13, sum(cb) AS cb, sum(x1*cb) AS c1b, sum(cc) AS cc, sum(x1*cc) AS c1c,
           sum(cd) AS cd, sum(x1*cd) AS c1d, sum(y) AS sy, sum(x1*y) AS s1y"""


def child_duckdb(directory):
    import duckdb
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    con.execute("SET enable_progress_bar = false")
    con.execute(f"CREATE VIEW bench AS SELECT * FROM read_parquet('{directory}/*.parquet')")
    t0 = time.perf_counter()
    r = con.execute(f"SELECT count(*) FROM lmm_fit('bench', '{FORMULA}')").fetchall()
    dt = time.perf_counter() - t0
    return {"seconds": dt, "rss_peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rows_out": r[0][0]}


def executor_peaks(spark):
    """Peak RSS of each executor's JVM and Python workers (MiB), from Spark's executor metrics."""
    sc = spark.sparkContext
    url = f"{sc.uiWebUrl}/api/v1/applications/{sc.applicationId}/allexecutors"
    try:
        data = json.loads(urllib.request.urlopen(url, timeout=10).read())
    except Exception as e:  # the metrics are a bonus, not the measurement
        return {"error": str(e)}
    out = {}
    for e in data:
        m = e.get("peakMemoryMetrics") or {}
        out[e["id"]] = {
            "jvm_rss_mib": round(m.get("ProcessTreeJVMRSSMemory", 0) / 2**20),
            "jvm_heap_mib": round(m.get("JVMHeapMemory", 0) / 2**20),
            "python_rss_mib": round(m.get("ProcessTreePythonRSSMemory", 0) / 2**20),
        }
    return out


def spark_session(executor_mib):
    os.environ["PYSPARK_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession
    return (
        SparkSession.builder.master(f"local-cluster[2,1,{executor_mib}]")
        .appName("lmm-bench-scale")
        .config("spark.ui.enabled", "true")
        .config("spark.executor.processTreeMetrics.enabled", "true")
        .config("spark.executor.metrics.pollingInterval", "200ms")
        .config("spark.executor.heartbeatInterval", "2s")
        .config("spark.driver.memory", os.environ.get("LMM_BENCH_DRIVER_MEMORY", "2g"))
        .config("spark.driver.maxResultSize", os.environ.get("LMM_BENCH_MAX_RESULT", "1g"))
        .config("spark.executor.memory", os.environ.get("LMM_BENCH_EXECUTOR_MEMORY", "1g"))
        .getOrCreate()
    )


def child_spark(directory, which, executor_mib, dist_partitions=0):
    spark = spark_session(executor_mib)
    spark.sparkContext.setLogLevel("ERROR")
    df = spark.read.parquet(str(directory))
    extra = {}
    t0 = time.perf_counter()
    if which == "spark_lmm":
        import lmm.spark
        try:
            n = lmm.spark.fit(df, FORMULA).count()
        except lmm.spark.LmmError as e:  # the merged route refuses statistics too large to carry
            extra = {"refused": str(e)[:400]}
            n = None
    elif which == "spark_dist":
        import lmm.distributed
        import lmm.spark
        asked = []
        drive = lmm.distributed.drive

        def timed_drive(con, header, levels, ask, **options):
            def timed(request):
                t = time.perf_counter()
                answer = ask(request)
                asked.append(time.perf_counter() - t)
                return answer
            return drive(con, header, levels, timed, **options)

        lmm.distributed.drive = timed_drive
        n = lmm.spark.fit(df, FORMULA, mode="distributed", partitions=dist_partitions or None).count()
        extra = {"evaluations": len(asked), "evaluation_median_s": round(statistics.median(asked), 3), "evaluations_s": round(sum(asked), 2)}
    else:
        from pyspark.sql import functions as F
        d = df.withColumn("cb", (F.col("cat") == "b").cast("int")).withColumn("cc", (F.col("cat") == "c").cast("int")).withColumn(
            "cd", (F.col("cat") == "d").cast("int"))
        d.createOrReplaceTempView("bench")
        n = spark.sql(f"SELECT {FLOOR} FROM bench GROUP BY g").count()
    dt = time.perf_counter() - t0
    time.sleep(3)  # one more heartbeat carries the executors' peaks
    out = {"seconds": dt, "driver_python_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
           "executors": executor_peaks(spark), "rows_out": n, **extra}
    spark.stop()
    return out


def run_child(*args):
    p = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True, timeout=7200)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000000,100000000")
    ap.add_argument("--groups-per-row", type=float, default=0.05)
    ap.add_argument("--files", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--executor-mib", type=int, default=4096)
    ap.add_argument("--what", default="duckdb,spark_lmm,spark_dist,spark_floor")
    ap.add_argument("--dist-partitions", type=int, default=0, help="partitions of the distributed mode (0: its default)")
    ap.add_argument("--child", nargs="+")
    a = ap.parse_args()
    if a.child:
        directory, which = pathlib.Path(a.child[0]), a.child[1]
        res = child_duckdb(directory) if which == "duckdb" else child_spark(directory, which, int(a.child[2]), int(a.child[3]))
        print(json.dumps(res))
        return
    for n in [int(s) for s in a.sizes.split(",")]:
        g = int(n * a.groups_per_row)
        directory = OUT / f"scale_{n}_{g}"
        t0 = time.perf_counter()
        generate(directory, n, g, a.files)
        row = {"rows": n, "groups": g, "files": a.files, "generate_s": round(time.perf_counter() - t0, 1)}
        for which in a.what.split(","):
            runs = []
            for _ in range(a.runs):
                t = time.perf_counter()
                try:
                    runs.append(run_child(directory, which, a.executor_mib, a.dist_partitions))
                except RuntimeError as e:  # a route that fails is reported, and the others still run
                    runs.append({"seconds": time.perf_counter() - t, "failed": str(e)[-600:]})
                print(json.dumps({which: runs[-1]}), file=sys.stderr, flush=True)
            row[which] = {"seconds": round(statistics.median(r["seconds"] for r in runs), 2), "runs": [round(r["seconds"], 2) for r in runs]}
            last = runs[-1]
            row[which].update({k: v for k, v in last.items() if k not in ("seconds",)})
        ok = {k: row[k]["seconds"] for k in ("duckdb", "spark_lmm", "spark_dist", "spark_floor")
              if k in row and "refused" not in row[k] and "failed" not in row[k]}
        for a_, b_ in (("spark_lmm", "duckdb"), ("spark_dist", "duckdb"), ("spark_dist", "spark_lmm"),
                       ("spark_lmm", "spark_floor"), ("spark_dist", "spark_floor"), ("duckdb", "spark_floor")):
            if a_ in ok and b_ in ok:
                row[f"{a_}_over_{b_}"] = round(ok[a_] / ok[b_], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
