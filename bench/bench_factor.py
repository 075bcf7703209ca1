"""Benchmark: lmm_fit with a many-level fixed factor, y ~ f + (1 | g).

For each level count L it generates (once, into bench/out/factor_L.duckdb) a
balanced table: 10 rows per level of the fixed factor f (VARCHAR, L levels),
so N = 10 L rows, and a random-intercept factor g of 100 levels assigned by
a hash of the row (so f and g cross, unbalanced in g), with
y = 0.01 * (level of f) + b[g] + e. Each measurement runs in a fresh process
on that file: lmm_fit('factor', 'y ~ f + (1 | g)'), the complete fit with its
L fixed-effect rows (median wall time of --runs runs).
Run: .venv/bin/python bench/bench_factor.py [--levels 300,1000,3000] [--runs 3]
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

FORMULA = "y ~ f + (1 | g)"
ROWS_PER_LEVEL = 10
GROUPS = 100


def unif(expr, k):
    return f"((hash({expr}, {k}) % 1000000007)::DOUBLE + 0.5) / 1000000007.0"


def normal(expr, k):
    return f"(sqrt(-2 * ln({unif(expr, k)})) * cos(2 * pi() * {unif(expr, k + 100)}))"


def generate(path, levels):
    import duckdb
    if path.exists():
        return
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    con = duckdb.connect(str(tmp))
    con.execute(f"CREATE TABLE effects AS SELECT gid, {normal('gid', 1)} AS b FROM range({GROUPS}) t(gid)")
    con.execute(f"""
        CREATE TABLE factor AS
        WITH r AS (
          SELECT i, i % {levels} AS lev, hash(i, 7) % {GROUPS} AS gid, 0.5 * {normal('i', 3)} AS e
          FROM range({levels * ROWS_PER_LEVEL}) t(i))
        SELECT 'L' || lpad(lev::VARCHAR, 5, '0') AS f, gid::BIGINT AS g, 0.01 * lev + b + e AS y
        FROM r JOIN effects USING (gid) ORDER BY i""")
    con.execute("DROP TABLE effects")
    con.close()
    tmp.rename(path)


LMM_SQL = f"SELECT count(*), max(estimate) FILTER (WHERE term = 'iterations') FROM lmm_fit('factor', '{FORMULA}')"


def measure(path):
    """Runs in a child process: open the file, run the fit once, report its time."""
    import duckdb
    con = duckdb.connect(str(path), config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    con.execute("SELECT count(f), sum(y), count(g) FROM factor").fetchall()
    t0 = time.perf_counter()
    res = con.execute(LMM_SQL).fetchall()
    dt = time.perf_counter() - t0
    print(json.dumps({"seconds": dt, "result": str(res)}))


def run_child(path):
    out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--levels", default="300,1000,3000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        measure(pathlib.Path(a.child))
        return
    print(f"{'levels':>7} {'rows':>7} {'groups':>6} | {'lmm_fit s (median)':>18} {'runs':>24}")
    for levels in (int(s) for s in a.levels.split(",")):
        path = OUT / f"factor_{levels}.duckdb"
        generate(path, levels)
        runs = [run_child(path)["seconds"] for _ in range(a.runs)]
        shown = ", ".join(f"{s:.2f}" for s in runs)
        print(f"{levels:>7} {levels * ROWS_PER_LEVEL:>7} {GROUPS:>6} | {statistics.median(runs):>18.3f} {shown:>24}", flush=True)


if __name__ == "__main__":
    main()
