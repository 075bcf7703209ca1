"""Benchmark of issue 3: crossed random effects, lmm_fit against lme4.

Two generated problems (deterministic hashes, written once to bench/out/):
  - instevalish: 73,421 rows, students s (2,972 levels) x lecturers d (1,128
    levels), d nested in 14 departments, a 2-level fixed factor `service`;
    model y ~ service + (1 | s) + (1 | d) + (1 | dept:service)  (InstEval's shape)
  - large: 1,000,000 rows, s (50,000 levels) x d (5,000 levels);
    model y ~ service + (1 | s) + (1 | d)
For each: lmm_fit wall time and peak RSS (a fresh process per run, median of
--runs), and, when `Rscript` with lme4 is installed, lme4's lmer() time on the
same data (system.time of the lmer call alone; one run; --lme4-timeout).
Run: .venv/bin/python bench/bench_crossed.py [--runs 3] [--only instevalish]
"""
import argparse
import json
import os
import pathlib
import resource
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXT = pathlib.Path(os.environ.get("LMM_EXTENSION", ROOT / "build" / "release" / "lmm.duckdb_extension"))
OUT = ROOT / "bench" / "out"

PROBLEMS = {
    "instevalish": dict(n=73421, ns=2972, nd=1128, ndept=14,
                        formula="y ~ service + (1 | s) + (1 | d) + (1 | dept:service)"),
    "large": dict(n=1000000, ns=50000, nd=5000, ndept=14,
                  formula="y ~ service + (1 | s) + (1 | d)"),
}


def unif(expr, k):
    # hash(a, k) of DuckDB combines the hashes of a and k, which leaves the
    # draws for different k correlated; hash one integer per draw instead.
    return f"((hash(({expr}) * 1009 + {k}) % 1000000007)::DOUBLE + 0.5) / 1000000007.0"


def normal(expr, k):
    return f"(sqrt(-2 * ln({unif(expr, k)})) * cos(2 * pi() * {unif(expr, k + 100)}))"


def generate(name, cfg):
    import duckdb
    path = OUT / f"crossed_{name}.duckdb"
    csv = OUT / f"crossed_{name}.csv"
    if path.exists() and csv.exists():
        return path, csv
    OUT.mkdir(parents=True, exist_ok=True)
    for p in (path, csv):
        if p.exists():
            p.unlink()
    con = duckdb.connect(str(path))
    n, ns, nd, ndept = cfg["n"], cfg["ns"], cfg["nd"], cfg["ndept"]
    con.execute(f"""
        CREATE TABLE bench AS
        WITH r AS (
          SELECT i, hash(4 * i) % {ns} AS s, hash(4 * i + 1) % {nd} AS d, (hash(4 * i + 2) % 2)::INT AS service FROM range({n}) t(i))
        SELECT s::BIGINT AS s, d::BIGINT AS d, (d % {ndept})::BIGINT AS dept, CASE service WHEN 1 THEN 'yes' ELSE 'no' END AS service,
               3 + 0.1 * service + 0.6 * {normal('s', 4)} + 0.4 * {normal('d', 5)}
                 + 0.2 * {normal('(d % ' + str(ndept) + ') * 2 + service', 6)} + {normal('i', 7)} AS y
        FROM r ORDER BY i""")
    con.execute(f"COPY bench TO '{csv}' (HEADER, DELIMITER ',')")
    con.close()
    return path, csv


def measure(path, formula):
    import duckdb
    con = duckdb.connect(str(path), config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{EXT}'")
    con.execute("SELECT count(*), sum(y) FROM bench").fetchall()
    t0 = time.perf_counter()
    res = con.execute(f"SELECT term, estimate FROM lmm_fit('bench', '{formula}') WHERE effect IN ('fit') OR effect = 'ran_pars'").fetchall()
    dt = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": dt, "rss_peak_mib": rss, "result": {k: v for k, v in res}}))


R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1])
for (col in c("s", "d", "dept", "service")) d[[col]] <- factor(d[[col]])
f <- as.formula(args[2])
tm <- system.time(fit <- lmer(f, data = d, REML = TRUE))
cat(sprintf("{\"seconds\": %.3f, \"REMLcrit\": %.10f, \"blas\": \"%s\", \"lme4\": \"%s\"}\n",
            tm[["elapsed"]], REMLcrit(fit), sessionInfo()$BLAS, packageVersion("lme4")))
"""


def lme4_time(csv, formula, timeout):
    if not shutil.which("Rscript"):
        return None
    script = OUT / "lme4_fit.R"
    script.write_text(R_SCRIPT)
    try:
        out = subprocess.run(["Rscript", str(script), str(csv), formula], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"seconds": float("inf")}
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default=None)
    ap.add_argument("--lme4-timeout", type=float, default=900)
    ap.add_argument("--child", nargs=2)
    a = ap.parse_args()
    if a.child:
        measure(pathlib.Path(a.child[0]), PROBLEMS[a.child[1]]["formula"])
        return
    print(f"{'problem':<12} {'rows':>9} | {'lmm_fit s':>9} {'peak RSS MiB':>12} | {'lme4 s':>8} {'lme4/lmm':>8} | REMLcrit lmm vs lme4")
    for name, cfg in PROBLEMS.items():
        if a.only and name != a.only:
            continue
        path, csv = generate(name, cfg)
        runs = []
        for _ in range(a.runs):
            out = subprocess.run([sys.executable, __file__, "--child", str(path), name], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        t = statistics.median(r["seconds"] for r in runs)
        print(f"  {name}: lmm_fit runs " + ", ".join(f"{r['seconds']:.3f}" for r in runs) + " s", file=sys.stderr)
        rss = statistics.median(r["rss_peak_mib"] for r in runs)
        crit = runs[0]["result"].get("REMLcrit")
        l = lme4_time(csv, cfg["formula"], a.lme4_timeout)
        if l is None:
            lt, ratio, lc = "n/a", "n/a", "lme4 not installed"
        elif "error" in l:
            lt, ratio, lc = "error", "n/a", l["error"]
        else:
            lt = f"{l['seconds']:.2f}" if l["seconds"] != float("inf") else f">{a.lme4_timeout:.0f}"
            ratio = f"{l['seconds'] / t:.1f}" if l["seconds"] != float("inf") else "n/a"
            lc = f"{crit:.6f} vs {l.get('REMLcrit', float('nan')):.6f} (lme4 {l.get('lme4', '?')}, R BLAS {l.get('blas', '?')})"
        print(f"{name:<12} {cfg['n']:>9} | {t:>9.3f} {rss:>12.0f} | {lt:>8} {ratio:>8} | {lc}", flush=True)


if __name__ == "__main__":
    main()
