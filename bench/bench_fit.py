"""Benchmark of issue 2: lmm_fit against the floor of a plain GROUP BY.

For each size N it generates (once, into bench/out/bench_N_G.duckdb) a table with
G groups, columns x1, x2, x3 (normal), cat (4 levels) and y from the model
y = 1 + 0.5 x1 - 0.25 x2 + 0.1 x3 + cat effect + b0[g] + b1[g] x1 + e, and then, each
measurement in a fresh process on that file:
  - lmm_fit('bench', 'y ~ x1 + x2 + x3 + cat + (1 + x1 | g)')  (wall time, peak RSS)
  - the floor: one GROUP BY g computing the per-group cross-product sums a fit
    needs (Z_g'Z_g, Z_g'X_g, Z_g'y_g for Z = [1, x1]), materialised as a count.
Run: .venv/bin/python bench/bench_fit.py [--sizes 1000000,10000000] [--runs 3]
Before/after: --compare OLD.duckdb_extension,NEW.duckdb_extension runs lmm_fit
with each extension alternately (and the floor) on the same files, and
reports both medians and new/old.
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

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXT = pathlib.Path(os.environ.get("LMM_EXTENSION", ROOT / "build" / "release" / "lmm.duckdb_extension"))
OUT = ROOT / "bench" / "out"

FORMULA = "y ~ x1 + x2 + x3 + cat + (1 + x1 | g)"

# Deterministic pseudo-random numbers from hashes (DuckDB's random() is not
# reproducible across threads): uniform in (0, 1) from a hash of (i, k).
def unif(expr, k):
    return f"((hash({expr}, {k}) % 1000000007)::DOUBLE + 0.5) / 1000000007.0"


def normal(expr, k):
    return f"(sqrt(-2 * ln({unif(expr, k)})) * cos(2 * pi() * {unif(expr, k + 100)}))"


def generate(path, n, g):
    import duckdb
    if path.exists():
        return
    OUT.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if tmp.exists():
        tmp.unlink()
    con = duckdb.connect(str(tmp))
    con.execute(f"""
        CREATE TABLE effects AS SELECT gid, {normal('gid', 1)} AS b0, 0.3 * {normal('gid', 2)} AS b1
        FROM range({g}) t(gid)""")
    con.execute(f"""
        CREATE TABLE bench AS
        WITH r AS (
          SELECT i, hash(i, 7) % {g} AS gid, {normal('i', 3)} AS x1, {normal('i', 4)} AS x2,
                 {normal('i', 5)} AS x3, ['a', 'b', 'c', 'd'][1 + (hash(i, 6) % 4)::INT] AS cat,
                 0.7 * {normal('i', 8)} AS e
          FROM range({n}) t(i))
        SELECT r.gid::BIGINT AS g, x1, x2, x3, cat,
               1 + 0.5 * x1 - 0.25 * x2 + 0.1 * x3
                 + CASE cat WHEN 'b' THEN 0.5 WHEN 'c' THEN -0.3 WHEN 'd' THEN 0.2 ELSE 0 END
                 + b0 + b1 * x1 + e AS y
        FROM r JOIN effects USING (gid) ORDER BY i""")
    con.execute("DROP TABLE effects")
    con.close()
    tmp.rename(path)


FLOOR_SQL = """
SELECT count(*), sum(n + s1 + s11 + s2 + s12 + s3 + s13 + cb + c1b + cc + c1c + cd + c1d + sy + s1y) FROM (
  SELECT g, count(*) AS n,
    sum(x1) AS s1, sum(x1*x1) AS s11,
    sum(x2) AS s2, sum(x1*x2) AS s12, sum(x3) AS s3, sum(x1*x3) AS s13,
    sum((cat='b')::INT) AS cb, sum(x1*(cat='b')::INT) AS c1b,
    sum((cat='c')::INT) AS cc, sum(x1*(cat='c')::INT) AS c1c,
    sum((cat='d')::INT) AS cd, sum(x1*(cat='d')::INT) AS c1d,
    sum(y) AS sy, sum(x1*y) AS s1y
  FROM bench GROUP BY g)
"""

LMM_SQL = f"SELECT count(*), max(estimate) FILTER (WHERE term = 'iterations') FROM lmm_fit('bench', '{FORMULA}')"


def measure(path, which):
    """Runs in a child process: open the file, run the query once, report time and RSS."""
    import duckdb
    con = duckdb.connect(str(path), config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    # Warm the file's pages so both queries start from the same cache state.
    con.execute("SELECT sum(x1 + x2 + x3 + y), count(cat), count(g) FROM bench").fetchall()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = con.execute(LMM_SQL if which == "lmm" else FLOOR_SQL).fetchall()
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": dt, "rss_before_mib": before / 1024, "rss_peak_mib": after / 1024, "result": str(res)}))


def run_child(path, which, ext=None):
    env = dict(os.environ, LMM_EXTENSION=str(ext)) if ext else None
    out = subprocess.run([sys.executable, __file__, "--child", str(path), which], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--fixed-groups", type=int, default=50000,
                    help="also run the largest N with this many groups, to show memory follows G, not N")
    ap.add_argument("--child", nargs=2)
    ap.add_argument("--compare", help="OLD,NEW: two extension files, alternated run by run")
    a = ap.parse_args()
    if a.child:
        measure(pathlib.Path(a.child[0]), a.child[1])
        return
    if a.compare:
        return compare(a, *a.compare.split(","))
    configs = [(int(s), int(s) // 20) for s in a.sizes.split(",")]
    if a.fixed_groups:
        configs.append((max(n for n, _ in configs), a.fixed_groups))
    print(f"{'N':>10} {'G':>8} | {'lmm_fit s':>9} {'floor s':>8} {'ratio':>6} | {'lmm peak RSS MiB (+Δ)':>22} {'floor peak RSS MiB (+Δ)':>24}")
    for n, g in configs:
        path = OUT / f"bench_{n}_{g}.duckdb"
        generate(path, n, g)
        lmm, floor, ratios = [], [], []
        for _ in range(a.runs):
            # Alternate so that both see the same machine load; ratio per pair.
            l = run_child(path, "lmm")
            f = run_child(path, "floor")
            lmm.append(l)
            floor.append(f)
            ratios.append(l["seconds"] / f["seconds"])
        med = lambda xs: statistics.median(xs)
        lm = med([x["seconds"] for x in lmm])
        fm = med([x["seconds"] for x in floor])
        lr = med([x["rss_peak_mib"] for x in lmm])
        ld = med([x["rss_peak_mib"] - x["rss_before_mib"] for x in lmm])
        fr = med([x["rss_peak_mib"] for x in floor])
        fd = med([x["rss_peak_mib"] - x["rss_before_mib"] for x in floor])
        print(f"{n:>10} {g:>8} | {lm:>9.3f} {fm:>8.3f} {med(ratios):>6.2f} | {lr:>12.0f} (+{ld:>6.0f}) {fr:>14.0f} (+{fd:>6.0f})", flush=True)


def compare(a, old, new):
    print(f"{'N':>10} {'G':>8} | {'old s':>8} {'new s':>8} {'new/old':>7} | {'floor s':>8} | runs (old, new)")
    for n in [int(s) for s in a.sizes.split(",")]:
        g = n // 20
        path = OUT / f"bench_{n}_{g}.duckdb"
        generate(path, n, g)
        runs = []
        for _ in range(a.runs):
            runs.append((run_child(path, "lmm", old)["seconds"], run_child(path, "lmm", new)["seconds"], run_child(path, "floor")["seconds"]))
        med = lambda k: statistics.median(r[k] for r in runs)
        pairs = ", ".join(f"({o:.3f}, {w:.3f})" for o, w, _ in runs)
        print(f"{n:>10} {g:>8} | {med(0):>8.3f} {med(1):>8.3f} {statistics.median(w / o for o, w, _ in runs):>7.3f} | {med(2):>8.3f} | {pairs}", flush=True)


if __name__ == "__main__":
    main()
