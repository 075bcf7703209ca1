"""lmm_bootstrap: replicates drawn as statistics (no rows) against a
brute-force parametric bootstrap that simulates rows and refits them
(bootMer with use.u = FALSE), and its reproducibility."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import EXT, FIXTURES

NSIM = 2000
CASES = {
    "sleepstudy_rs": ("data/sleepstudy.csv", "Reaction", "Days", "Subject"),
    "dietox_rs": ("data/dietox.csv", "Weight", "Time", "Pig"),
}


def estimates_by_parameter(rows):
    """{(effect, group_var, term): array over replicates (in replicate order)}."""
    out = {}
    for rep, effect, group, term, est in sorted(rows, key=lambda r: r[0]):
        out.setdefault((effect, group, term), []).append(est)
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def brute_force(con, file, y, x, g, seed):
    """NSIM row-level replicates y* = Xβ̂ + Zb* + ε*, each refitted by lmm_fit_agg."""
    con.execute(f"CREATE OR REPLACE TABLE d AS SELECT * FROM read_csv('{FIXTURES / file}')")
    formula = f"{y} ~ {x} + ({x} | {g})"
    tidy = con.execute(f"SELECT effect, group_var, term, estimate FROM lmm_fit('d', '{formula}')").fetchall()
    val = {(e, gv, t): v for e, gv, t, v in tidy if e != "ran_vals"}
    beta = np.array([val[("fixed", None, "(Intercept)")], val[("fixed", None, x)]])
    cov = np.array([[val[("ran_pars", g, "var__(Intercept)")], val[("ran_pars", g, f"cov__(Intercept).{x}")]],
                    [val[("ran_pars", g, f"cov__(Intercept).{x}")], val[("ran_pars", g, f"var__{x}")]]])
    sigma = val[("ran_pars", "Residual", "sd__Observation")]
    data = con.execute(f"SELECT {g}, {x} FROM d").fetchnumpy()
    levels, idx = np.unique(data[g], return_inverse=True)
    xv = data[x].astype(float)
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(cov)
    n = len(xv)
    reps, groups, xs, ys = [], [], [], []
    for r in range(NSIM):
        b = rng.standard_normal((len(levels), 2)) @ chol.T
        yv = beta[0] + beta[1] * xv + b[idx, 0] + b[idx, 1] * xv + sigma * rng.standard_normal(n)
        reps.append(np.full(n, r + 1)); groups.append(idx); xs.append(xv); ys.append(yv)
    sim = {"rep": np.concatenate(reps), g: np.concatenate(groups), x: np.concatenate(xs), y: np.concatenate(ys)}
    con.register("sim_rows", sim)
    rows = con.execute(f"""
        SELECT rep, r.effect, r.group_var, r.term, r.estimate FROM (
            SELECT rep, unnest(lmm_fit_agg(t, '{formula}', {{'ranef': false}})) AS r FROM sim_rows t GROUP BY rep)
        WHERE r.effect = 'fixed' OR r.term LIKE 'sd__%' OR r.term LIKE 'cor__%'""").fetchall()
    con.unregister("sim_rows")
    return estimates_by_parameter(rows), formula


@pytest.mark.parametrize("model", sorted(CASES))
def test_statistics_bootstrap_matches_row_bootstrap(con, model):
    file, y, x, g = CASES[model]
    rows_boot, formula = brute_force(con, file, y, x, g, seed=20261202)
    con.execute(f"CREATE OR REPLACE TABLE m AS SELECT lmm_model_agg(t, '{formula}') AS model FROM d t")
    stats_boot = estimates_by_parameter(con.execute(f"SELECT * FROM lmm_bootstrap((SELECT model FROM m), {NSIM}, seed := 7)").fetchall())
    assert sorted(stats_boot) == sorted(rows_boot)
    # The test: two independent samples of NSIM replicates of the same
    # distribution. Means agree within 4.5 standard errors of their difference
    # (sqrt(s1²/N + s2²/N)); SDs within 4.5 SEs, SE(s) = s·sqrt((κ − 1)/(4N))
    # with κ each sample's kurtosis (valid for skewed ones such as cor). With
    # 12 comparisons per model a false alarm has probability about 1e-4; the
    # seeds are fixed, so the outcome is reproducible.
    for key, a in stats_boot.items():
        b = rows_boot[key]
        assert len(a) == len(b) == NSIM
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        se_mean = np.sqrt(a.var(ddof=1) / len(a) + b.var(ddof=1) / len(b))
        assert abs(a.mean() - b.mean()) <= 4.5 * se_mean, (key, a.mean(), b.mean(), se_mean)

        def se_sd(v):
            s = v.std(ddof=1)
            kurt = np.mean((v - v.mean()) ** 4) / s ** 4
            return s * np.sqrt(max(kurt - 1, 0.5) / (4 * len(v)))
        se = np.hypot(se_sd(a), se_sd(b))
        assert abs(a.std(ddof=1) - b.std(ddof=1)) <= 4.5 * se, (key, a.std(ddof=1), b.std(ddof=1), se)


CODE = """
import duckdb, hashlib, json, sys
con = duckdb.connect(config={{"allow_unsigned_extensions": "true", "threads": {threads}}})
con.execute("LOAD '{ext}'")
con.execute("CREATE TABLE d AS SELECT * FROM read_csv('{data}')")
con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model FROM d t")
rows = con.execute("SELECT * FROM lmm_bootstrap((SELECT model FROM m), 300, seed := {seed}) ORDER BY replicate, effect, group_var, term").fetchall()
print(hashlib.sha256(json.dumps(rows).encode()).hexdigest())
"""


def digest(threads, seed):
    env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
    code = CODE.format(threads=threads, ext=EXT, data=FIXTURES / "data/sleepstudy.csv", seed=seed)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_same_seed_same_replicates_for_any_thread_count():
    one, two = digest(1, 42), digest(2, 42)
    assert one == two
    assert digest(2, 43) != one


def test_bootstrap_errors(con):
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Reaction ~ Days + (Days | Subject)') AS model FROM sleepstudy t")
    import duckdb
    for nsim in ("0", "-5", "2.5"):
        with pytest.raises(duckdb.Error) as e:
            con.execute(f"SELECT * FROM lmm_bootstrap((SELECT model FROM m), {nsim})").fetchall()
        assert "nsim" in str(e.value), str(e.value)
