"""Benchmark of issue 4: lmm_predict against the floor of a plain SQL join.

Generates once (into bench/out/predict_<G>_<N>.duckdb):
  - `train`: 4 rows per group for G groups, y = 1 + 0.5 x + b0[g] + b1[g] x + e;
  - `model`: lmm_model_agg(t, 'y ~ x + (1 + x | g)') over train (one BLOB);
  - `coefs`: the same model as a table of per-group coefficients
    (g, c0 = β0 + b0[g], c1 = β1 + b1[g]) and `pop` (β0, β1), from lmm_tidy;
  - `score`: N rows (g, x) to predict, 1% of them in groups the fit never saw.
Then, each measurement in a fresh process on that file (alternating):
  - lmm:   SELECT sum(lmm_predict(m.model, s)) FROM score s JOIN model m (by a constant key)
  - floor: SELECT sum(coalesce(c.c0, p.b0) + coalesce(c.c1, p.b1) * s.x)
           FROM score s LEFT JOIN coefs c USING (g), pop p
    (the same linear predictor, unseen groups at population level);
and, in the lmm process, the same query a second time (model already parsed).
Both queries must give the same sum (checked). Reports medians and the median
of the per-run ratios; throughput = N / median seconds.
Run: .venv/bin/python bench/bench_predict.py [--groups 1000000] [--rows 10000000] [--runs 5]
"""
import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXT = pathlib.Path(os.environ.get("LMM_EXTENSION", ROOT / "build" / "release" / "lmm.duckdb_extension"))
OUT = ROOT / "bench" / "out"
FORMULA = "y ~ x + (1 + x | g)"


def unif(expr, k):
    return f"((hash({expr}, {k}) % 1000000007)::DOUBLE + 0.5) / 1000000007.0"


def normal(expr, k):
    return f"(sqrt(-2 * ln({unif(expr, k)})) * cos(2 * pi() * {unif(expr, k + 100)}))"


def connect(path):
    import duckdb
    con = duckdb.connect(str(path), config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    return con


def generate(path, g, n):
    if path.exists():
        return
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    con = connect(tmp)
    t0 = time.perf_counter()
    con.execute(f"""CREATE TABLE effects AS SELECT gid, {normal('gid', 1)} AS b0, 0.3 * {normal('gid', 2)} AS b1
                    FROM range({g}) t(gid)""")
    con.execute(f"""
        CREATE TABLE train AS
        WITH r AS (SELECT i, i % {g} AS gid, {normal('i', 3)} AS x, 0.7 * {normal('i', 4)} AS e FROM range({4 * g}) t(i))
        SELECT gid::BIGINT AS g, x, 1 + 0.5 * x + b0 + b1 * x + e AS y FROM r JOIN effects USING (gid) ORDER BY i""")
    con.execute("DROP TABLE effects")
    con.execute(f"CREATE TABLE model AS SELECT lmm_model_agg(t, '{FORMULA}') AS model FROM train t")
    print(f"generated and fitted in {time.perf_counter() - t0:.1f} s; model value "
          f"{con.execute('SELECT octet_length(model) FROM model').fetchone()[0] / 2**20:.1f} MiB", flush=True)
    con.execute("""
        CREATE TABLE pop AS SELECT max(estimate) FILTER (term = '(Intercept)') AS b0, max(estimate) FILTER (term = 'x') AS b1
        FROM lmm_tidy((SELECT model FROM model)) WHERE effect = 'fixed'""")
    con.execute("""
        CREATE TABLE coefs AS SELECT level::BIGINT AS g,
               pop.b0 + max(estimate) FILTER (term = '(Intercept)') AS c0, pop.b1 + max(estimate) FILTER (term = 'x') AS c1
        FROM lmm_tidy((SELECT model FROM model)), pop WHERE effect = 'ran_vals' GROUP BY level, pop.b0, pop.b1""")
    # 1% of the rows in groups g .. 1.01 g, which the fit never saw; random order.
    con.execute(f"""
        CREATE TABLE score AS SELECT (hash(i, 11) % {g + g // 100})::BIGINT AS g, {normal('i', 12)} AS x
        FROM range({n}) t(i)""")
    con.close()
    tmp.rename(path)


# DuckDB's cross product (`FROM score s, model m`) copies the model BLOB into
# every output chunk (measured: `sum(octet_length(m.model))` alone costs as
# much), so the main measurement joins the one-row model table by a constant key:
LMM_SQL = """SELECT sum(lmm_predict(m.model, s)), count(*)
             FROM (SELECT *, 1 AS k FROM score) s JOIN (SELECT model, 1 AS k FROM model) m USING (k)"""
FLOOR_SQL = """SELECT sum(coalesce(c.c0, p.b0) + coalesce(c.c1, p.b1) * s.x), count(*)
               FROM score s LEFT JOIN coefs c USING (g), pop p"""
# The spelling, a cross join, on the first CROSS_ROWS rows only, with
# DuckDB's own cost of carrying the BLOB through that cross join.
CROSS_ROWS = 1_000_000
CROSS_SQL = f"SELECT sum(lmm_predict(m.model, s)), count(*) FROM (SELECT * FROM score LIMIT {CROSS_ROWS}) s, model m"
CROSS_BLOB_SQL = f"SELECT sum(octet_length(m.model)), count(*) FROM (SELECT * FROM score LIMIT {CROSS_ROWS}) s, model m"
FLOOR_CROSS_SQL = f"""SELECT sum(coalesce(c.c0, p.b0) + coalesce(c.c1, p.b1) * s.x), count(*)
               FROM (SELECT * FROM score LIMIT {CROSS_ROWS}) s LEFT JOIN coefs c USING (g), pop p"""


def measure(path, which):
    con = connect(path)
    # Warm the file's pages (and, for lmm, not the model: the first run parses it).
    con.execute("SELECT sum(g + x), count(*) FROM score").fetchall()
    con.execute("SELECT sum(g + c0 + c1) FROM coefs").fetchall()
    con.execute("SELECT octet_length(model) FROM model").fetchall()
    sql = LMM_SQL if which == "lmm" else FLOOR_SQL
    t0 = time.perf_counter()
    res = con.execute(sql).fetchone()
    dt = time.perf_counter() - t0
    out = {"seconds": dt, "sum": res[0], "rows": res[1]}
    if which == "lmm":
        t0 = time.perf_counter()
        res2 = con.execute(sql).fetchone()
        out["warm_seconds"] = time.perf_counter() - t0
        assert res2[1] == res[1] and abs(res2[0] - res[0]) <= 1e-9 * abs(res[0])  # parallel sums differ in rounding
        for name, q in [("cross", CROSS_SQL), ("cross_blob_only", CROSS_BLOB_SQL)]:
            t0 = time.perf_counter()
            r = con.execute(q).fetchone()
            out[name + "_seconds"] = time.perf_counter() - t0
            out[name + "_sum"] = r[0]
    else:
        t0 = time.perf_counter()
        r = con.execute(FLOOR_CROSS_SQL).fetchone()
        out["cross_seconds"] = time.perf_counter() - t0
        out["cross_sum"] = r[0]
    print(json.dumps(out))


def run_child(path, which):
    out = subprocess.run([sys.executable, __file__, "--child", str(path), which], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--groups", type=int, default=1_000_000)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        measure(pathlib.Path(a.child[0]), a.child[1])
        return
    path = OUT / f"predict_{a.groups}_{a.rows}.duckdb"
    generate(path, a.groups, a.rows)
    lmm, floor, ratios = [], [], []
    for _ in range(a.runs):
        l = run_child(path, "lmm")
        f = run_child(path, "floor")
        assert l["rows"] == f["rows"] == a.rows
        assert abs(l["sum"] - f["sum"]) <= 1e-9 * abs(f["sum"]) + 1e-6, (l["sum"], f["sum"])
        assert abs(l["cross_sum"] - f["cross_sum"]) <= 1e-9 * abs(f["cross_sum"]) + 1e-6
        lmm.append(l)
        floor.append(f)
        ratios.append(l["seconds"] / f["seconds"])
    med = statistics.median
    lm, lw, fm = med([x["seconds"] for x in lmm]), med([x["warm_seconds"] for x in lmm]), med([x["seconds"] for x in floor])
    result = {
        "groups": a.groups, "rows": a.rows, "runs": a.runs,
        "lmm_seconds": lm, "lmm_warm_seconds": lw, "floor_seconds": fm,
        "lmm_rows_per_s": a.rows / lm, "lmm_warm_rows_per_s": a.rows / lw, "floor_rows_per_s": a.rows / fm,
        "ratio": med(ratios), "ratio_warm": med([l["warm_seconds"] / f["seconds"] for l, f in zip(lmm, floor)]),
        "cross_rows": CROSS_ROWS,
        "cross_lmm_seconds": med([x["cross_seconds"] for x in lmm]),
        "cross_blob_only_seconds": med([x["cross_blob_only_seconds"] for x in lmm]),
        "cross_floor_seconds": med([x["cross_seconds"] for x in floor]),
        "all": {"lmm": lmm, "floor": floor},
    }
    (OUT / f"bench_predict_{a.groups}_{a.rows}.json").write_text(json.dumps(result, indent=1))
    print(f"| {'G':>9} | {'N':>10} | lmm_predict s (first, parses model) | rows/s | lmm_predict s (model cached) | rows/s "
          f"| floor (SQL join) s | rows/s | ratio first | ratio cached |")
    print(f"| {a.groups:>9,} | {a.rows:>10,} | {lm:.3f} | {a.rows / lm / 1e6:.1f} M | {lw:.3f} | {a.rows / lw / 1e6:.1f} M "
          f"| {fm:.3f} | {a.rows / fm / 1e6:.1f} M | {result['ratio']:.2f} | {result['ratio_warm']:.2f} |")
    print(f"cross join spelling on {CROSS_ROWS:,} rows: lmm_predict {result['cross_lmm_seconds']:.3f} s, "
          f"octet_length(model) alone {result['cross_blob_only_seconds']:.3f} s, floor {result['cross_floor_seconds']:.3f} s")


if __name__ == "__main__":
    main()
