"""Benchmark of issue 11: inference after the fit, from the stored statistics.

Data: bench_fit.py's tables (bench/out/bench_N_G.duckdb; G groups of unequal,
hash-assigned membership, rows in hash order, BIGINT group ids), model
y ~ x1 + x2 + x3 + cat + (1 + x1 | g). Each measurement runs in a fresh process
on the file (medians of --runs):
  - fit:      CREATE TABLE m AS SELECT lmm_model_agg(t, formula) ... (LMM_TRACE
              gives the optimizer's share: 'optimized' minus 'setup')
  - kr:       lmm_fit(..., ddf := 'Kenward-Roger') (KR df for every coefficient) and
              lmm_anova(model, type := 3, ddf := 'Kenward-Roger') on the stored model
  - profile:  lmm_confint(model) (profile intervals of every parameter, no rows read)
  - boot:     lmm_bootstrap(model, 1000)
  - lme4:     lmer(formula) in R with OpenBLAS, the same rows (read time excluded), --lme4
--crossed adds bench_crossed.py's InstEval-shaped problem (73,421 rows, 2,972 x 1,128
levels, y ~ service + (1 | s) + (1 | d) + (1 | dept:service)), with --crossed-nsim replicates.
Run: .venv/bin/python bench/bench_inference.py [--sizes 1000000,10000000] [--runs 3] [--lme4] [--crossed]
"""
import argparse
import json
import os
import pathlib
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from bench_fit import EXT, FORMULA, OUT, generate  # noqa: E402

GROUPS = {1_000_000: 50_000, 10_000_000: 500_000}

CHILD = r"""
import duckdb, json, sys, time
path, ext, formula, what, nsim = sys.argv[1:6]
con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{ext}'")
con.execute("SET enable_progress_bar = false")
con.execute(f"ATTACH '{path}' AS bench (READ_ONLY)")
src = "bench.main.bench"
def timed(sql):
    t = time.perf_counter(); con.execute(sql).fetchall(); return time.perf_counter() - t
out = {}
out["fit"] = timed(f"CREATE TABLE m AS SELECT lmm_model_agg(t, '{formula}') AS model FROM {src} t")
if what == "kr":
    out["kr_fit"] = timed(f"SELECT count(*) FROM lmm_fit('{src}', '{formula}', ddf := 'Kenward-Roger')")
    out["anova"] = timed("SELECT count(*) FROM lmm_anova((SELECT model FROM m), type := 3, ddf := 'Kenward-Roger')")
    out["plain_fit"] = timed(f"SELECT count(*) FROM lmm_fit('{src}', '{formula}')")
elif what == "profile":
    out["profile"] = timed("SELECT count(*) FROM lmm_confint((SELECT model FROM m))")
elif what == "boot":
    out["boot"] = timed(f"SELECT count(*) FROM lmm_bootstrap((SELECT model FROM m), {nsim}, seed := 1)")
print(json.dumps(out))
"""

R_SCRIPT = r"""
suppressMessages(library(lme4))
args <- commandArgs(trailingOnly = TRUE)
d <- read.csv(args[1]); d$cat <- factor(d$cat); d$g <- factor(d$g)
t <- system.time(m <- lmer(y ~ x1 + x2 + x3 + cat + (1 + x1 | g), data = d, REML = TRUE))[["elapsed"]]
cat(sprintf('{"lme4": %.3f, "REMLcrit": %.10g}\n', t, REMLcrit(m)))
"""


def child(path, what, trace=True, formula=FORMULA, nsim=1000):
    env = dict(os.environ, LMM_TRACE="1") if trace else dict(os.environ)
    p = subprocess.run([sys.executable, "-c", CHILD, str(path), str(EXT), formula, what, str(nsim)], env=env, capture_output=True, text=True, timeout=7200)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    res = json.loads(p.stdout.strip().splitlines()[-1])
    # the first fit's trace: setup and optimized times
    setup = re.search(r"lmm: setup \(.*?\) ([0-9.]+)s", p.stderr)
    opt = re.search(r"lmm: optimized \((\d+) evaluations\) ([0-9.]+)s", p.stderr)
    if setup and opt:
        res["optimizer"] = float(opt.group(2)) - float(setup.group(1))
        res["evaluations"] = int(opt.group(1))
    return res


def median_of(runs, path, what, **kw):
    results = [child(path, what, **kw) for _ in range(runs)]
    return {k: statistics.median(r[k] for r in results) for k in results[0]}


def lme4(path, n):
    csv = OUT / f"bench_{n}.csv"
    if not csv.exists():
        import duckdb
        con = duckdb.connect()
        con.execute(f"ATTACH '{path}' AS b (READ_ONLY)")
        con.execute(f"COPY b.main.bench TO '{csv}' (HEADER)")
    r = subprocess.run(["Rscript", "-e", R_SCRIPT, str(csv)], capture_output=True, text=True, timeout=7200)
    if r.returncode != 0:
        return {"lme4_error": r.stderr[-500:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(row, args, path, formula, nsim):
    """The measurements asked for (--what), each the median of --runs fresh processes."""
    what = set(args.what.split(","))
    if "kr" in what:
        kr = median_of(args.runs, path, "kr", formula=formula)
        row.update({
            "fit_s": round(kr["fit"], 3), "optimizer_s": round(kr.get("optimizer", float("nan")), 3),
            "evaluations": kr.get("evaluations"),
            "kr_fit_s": round(kr["kr_fit"], 3), "plain_fit_s": round(kr["plain_fit"], 3),
            "kr_anova_s": round(kr["anova"], 3),
            "kr_and_anova_over_fit": round((kr["kr_fit"] - kr["plain_fit"] + kr["anova"]) / kr["plain_fit"] + 1, 2),
        })
    if "profile" in what:
        prof = median_of(args.runs, path, "profile", formula=formula)
        row.update({
            "profile_fit_s": round(prof["fit"], 3), "profile_optimizer_s": round(prof.get("optimizer", float("nan")), 3),
            "profile_s": round(prof["profile"], 3),
            "profile_over_optimizer": round(prof["profile"] / prof.get("optimizer", float("nan")), 1),
        })
    if "boot" in what:
        boot = median_of(args.runs, path, "boot", formula=formula, nsim=nsim)
        row[f"boot{nsim}_s"] = round(boot["boot"], 3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000000,10000000")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--lme4", action="store_true")
    ap.add_argument("--crossed", action="store_true")
    ap.add_argument("--crossed-nsim", type=int, default=100)
    ap.add_argument("--what", default="kr,profile,boot", help="which measurements: kr, profile, boot (comma-separated)")
    args = ap.parse_args()
    if args.crossed:
        from bench_crossed import PROBLEMS, generate as generate_crossed
        cfg = PROBLEMS["instevalish"]
        path, _ = generate_crossed("instevalish", cfg)
        f = cfg["formula"]
        row = {"problem": "instevalish"}
        measure(row, args, path, f, args.crossed_nsim)
        print(json.dumps(row), flush=True)
    for n in [int(s) for s in args.sizes.split(",") if s]:
        g = GROUPS.get(n, n // 20)
        path = OUT / f"bench_{n}_{g}.duckdb"
        generate(path, n, g)
        row = {"rows": n, "groups": g}
        measure(row, args, path, FORMULA, 1000)
        if args.lme4:
            print(json.dumps(row), flush=True)  # lmm's figures first: lme4 may take long
            row.update(lme4(path, n))
            if "lme4" in row and "boot1000_s" in row:
                row["boot1000_over_lme4"] = round(row["boot1000_s"] / row["lme4"], 3)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
