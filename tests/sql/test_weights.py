"""Prior weights, `weights := 'column'` (issue 13): lme4's `lmer(..., weights = w)`,
the residual variance of row i σ²/wᵢ. Reference: lme4 1.1-31 fits
(tests/fixtures/weights/weights_lme4.R writes the JSON; the weights are the
SQL expressions below), REML and ML, one factor, crossed and nested, with the
tolerances of the earlier fits; then what must hold without a reference:
constant weights, zero weights, invariance, errors, statistics values,
inference from a weighted model value."""
import json
import math

import duckdb
import pytest

from conftest import FIXTURES, connect, fit_value, rows
from test_invariance import assert_close_all

REFERENCE = json.loads((FIXTURES / "weights" / "weights_lme4.json").read_text())

# The weights of the reference, as weights_lme4.R computes them.
WEIGHTS = {
    "sleepstudy": "1 + 0.5 * sin(1.7 * Days + Subject)",
    "dietox": "1 + 0.5 * sin(1.3 * Time + Pig / 7)",
    "orthodont": "1 + 0.5 * sin(1.1 * age + distance)",
    "penicillin": "1 + 0.5 * sin(diameter)",
    "pastes": "1 + 0.5 * sin(strength)",
}


@pytest.fixture(scope="module")
def wcon():
    c = connect()
    from conftest import load_csv
    for name, w in WEIGHTS.items():
        load_csv(c, name, name)
        c.execute(f"CREATE TABLE w_{name} AS SELECT *, {w} AS w FROM {name}")
    yield c
    c.close()


def fit(con, table, formula, method="REML", weights="w"):
    return rows(con, "SELECT * FROM lmm_fit(?, ?, method := ?, weights := ?)", [table, formula, method, weights])


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: f"{r['data']}-{r['method']}-{r['formula']}")
def test_against_lme4(wcon, ref):
    got = fit(wcon, f"w_{ref['data']}", ref["formula"], ref["method"])
    objective = fit_value(got, "REMLcrit" if ref["method"] == "REML" else "deviance")
    assert abs(objective - ref["objective"]) < 1e-6
    assert abs(fit_value(got, "logLik") - ref["logLik"]) < 1e-6
    assert fit_value(got, "nobs") == ref["nobs"]
    fixed = {r["term"]: r for r in got if r["effect"] == "fixed"}
    assert sorted(fixed) == sorted(ref["fixef"])
    for term, value in ref["fixef"].items():
        assert abs(fixed[term]["estimate"] / value - 1) < 1e-4, term
        assert abs(fixed[term]["std_error"] / ref["se"][term] - 1) < 1e-3, term
    pars = {f"{r['group_var']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_pars"}
    for key, value in ref["ran_pars"].items():
        if key.split("|")[1].startswith("cor__"):
            assert abs(pars[key] - value) < 1e-3, key
        else:
            assert abs(pars[key] / value - 1) < 1e-3, key
    blups = {f"{r['group_var']}|{r['level']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_vals"}
    largest = max(abs(v) for v in ref["blups"].values())
    assert len(blups) == len(ref["blups"])
    for key, value in ref["blups"].items():
        assert abs(blups[key] - value) < 1e-3 * largest, key


def tidy_map(res):
    return {(r["effect"], r["group_var"], r["level"], r["term"]): r for r in res}


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_constant_weights_scale_sigma_only(wcon, method):
    # w = c for every row: σ² is c times larger; β, the random-effect
    # variances and the BLUPs stay; logLik stays too, because lme4's
    # deviance has −Σ log wᵢ = −n log c, which cancels the n log c that
    # σ²'s scale adds (lme4 1.1-31 gives −871.81414 with and without w = 3).
    f = "Reaction ~ Days + (Days | Subject)"
    c = 3.0
    wcon.execute(f"CREATE OR REPLACE TABLE c_sleep AS SELECT *, {c} AS w FROM sleepstudy")
    base = tidy_map(rows(wcon, "SELECT * FROM lmm_fit('sleepstudy', ?, method := ?)", [f, method]))
    got = tidy_map(fit(wcon, "c_sleep", f, method))
    for key, r in base.items():
        effect, group, _, term = key
        value = got[key]["estimate"]
        if term == "sigma" or (group == "Residual" and term == "sd__Observation"):
            assert abs(value / (r["estimate"] * math.sqrt(c)) - 1) < 1e-6, key
        elif group == "Residual" and term == "var__Observation":
            assert abs(value / (r["estimate"] * c) - 1) < 1e-6, key
        elif effect == "fit" and term in ("logLik", "AIC", "BIC", "REMLcrit", "deviance"):
            assert abs(value - r["estimate"]) < 1e-6, key
        elif effect == "fit":
            assert value == r["estimate"] or term == "iterations", key
        else:
            scale = max(abs(v["estimate"]) for k, v in base.items() if k[0] == effect)
            assert abs(value - r["estimate"]) <= 1e-6 * scale, key


def test_weights_of_one_are_the_unweighted_fit(wcon):
    f = "Weight ~ Time + (Time | Pig)"
    wcon.execute("CREATE OR REPLACE TABLE one_dietox AS SELECT *, 1::INTEGER AS w FROM dietox")
    base = rows(wcon, "SELECT * FROM lmm_fit('dietox', ?)", [f])
    assert_close_all(base, fit(wcon, "one_dietox", f), tol=1e-12)


def test_zero_weights_drop_the_row_and_null_weights_too(wcon):
    f = "Reaction ~ Days + (Days | Subject)"
    wcon.execute("""CREATE OR REPLACE TABLE z_sleep AS
        SELECT *, CASE WHEN Days = 3 THEN 0.0 WHEN Days = 5 AND Subject = 308 THEN NULL ELSE w END AS wz FROM w_sleepstudy""")
    wcon.execute("CREATE OR REPLACE TABLE kept_sleep AS SELECT * FROM w_sleepstudy WHERE Days <> 3 AND NOT (Days = 5 AND Subject = 308)")
    got = fit(wcon, "z_sleep", f, weights="wz")
    assert fit_value(got, "nobs") == 180 - 18 - 1
    assert fit_value(got, "nobs_dropped") == 19
    kept = [r for r in fit(wcon, "kept_sleep", f) if r["term"] != "nobs_dropped"]
    assert_close_all(kept, [r for r in got if r["term"] != "nobs_dropped"], tol=1e-9)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("offset", [1e6, 1.7e9])
def test_offsets_with_weights(wcon, method, offset):
    f = "Reaction ~ Days + (Days | Subject)"
    wcon.execute(f"""CREATE OR REPLACE TABLE o_sleep AS
        SELECT Reaction + {offset}::DOUBLE AS Reaction, Days + {offset}::DOUBLE AS Days, Subject, w FROM w_sleepstudy""")
    base, sh = fit(wcon, "w_sleepstudy", f, method), fit(wcon, "o_sleep", f, method)
    crit = "REMLcrit" if method == "REML" else "deviance"
    assert abs(fit_value(base, crit) - fit_value(sh, crit)) < 1e-6
    b, s = tidy_map(base), tidy_map(sh)
    # (the intercept's variance is that at Days = 0, which the shift moves)
    for key in [("fixed", None, None, "Days"), ("ran_pars", "Subject", None, "sd__Days"), ("ran_pars", "Residual", None, "sd__Observation")]:
        assert abs(s[key]["estimate"] / b[key]["estimate"] - 1) < 1e-6, key


@pytest.mark.parametrize("scale", [1e-6, 1e6])
def test_weight_scale(wcon, scale):
    # Weights multiplied by a constant leave everything but σ (scaled by its root).
    f = "Weight ~ Time + (Time | Pig)"
    wcon.execute(f"CREATE OR REPLACE TABLE s_dietox AS SELECT * REPLACE (w * {scale} AS w) FROM w_dietox")
    b, s = tidy_map(fit(wcon, "w_dietox", f)), tidy_map(fit(wcon, "s_dietox", f))
    # Var(εᵢ) = σ²/wᵢ: weights s·wᵢ give σ² s times larger, the same residual variances
    assert abs(s[("fit", None, None, "sigma")]["estimate"] / (math.sqrt(scale) * b[("fit", None, None, "sigma")]["estimate"]) - 1) < 1e-6
    assert abs(s[("fit", None, None, "logLik")]["estimate"] - b[("fit", None, None, "logLik")]["estimate"]) < 1e-6
    for key in [("fixed", None, None, "Time"), ("ran_pars", "Pig", None, "sd__Time")]:
        assert abs(s[key]["estimate"] / b[key]["estimate"] - 1) < 1e-6, key


def test_row_order_and_threads_with_weights(wcon):
    f = "Weight ~ Time + (Time | Pig)"
    base = fit(wcon, "w_dietox", f)
    for seed in (0.1, 0.2):
        wcon.execute(f"SELECT setseed({seed})")
        wcon.execute("CREATE OR REPLACE TABLE p_dietox AS SELECT * FROM w_dietox ORDER BY random()")
        assert_close_all(base, fit(wcon, "p_dietox", f))
    wcon.execute("SET threads = 1")
    one = fit(wcon, "w_dietox", f)
    wcon.execute("RESET threads")
    assert_close_all(base, one)


def test_weights_errors_name_the_column(wcon):
    f = "Reaction ~ Days + (1 | Subject)"
    wcon.execute("""CREATE OR REPLACE TABLE bad_w AS SELECT *, CASE WHEN Days = 4 THEN -1.0 ELSE 1.0 END AS neg,
        CASE WHEN Days = 4 THEN 'infinity'::DOUBLE ELSE 1.0 END AS inf, CAST(Days AS VARCHAR) AS txt FROM sleepstudy""")
    with pytest.raises(duckdb.Error, match=r"weights: the column 'neg' holds a negative weight \(-1\)"):
        fit(wcon, "bad_w", f, weights="neg")
    with pytest.raises(duckdb.Error, match=r"weights: the column 'inf' holds a non-finite weight"):
        fit(wcon, "bad_w", f, weights="inf")
    with pytest.raises(duckdb.Error, match=r"weights: the column 'txt' has type VARCHAR; prior weights must be numeric"):
        fit(wcon, "bad_w", f, weights="txt")
    with pytest.raises(duckdb.Error, match=r"weights: the column 'Subject' is a grouping factor"):
        fit(wcon, "bad_w", f, weights="Subject")
    with pytest.raises(duckdb.Error, match=r"nosuch"):
        fit(wcon, "bad_w", f, weights="nosuch")


def test_aggregate_and_statistics_values_carry_the_weights(wcon):
    f = "diameter ~ 1 + (1 | plate) + (1 | sample)"
    base = fit(wcon, "w_penicillin", f)
    agg = rows(wcon, f"SELECT unnest(lmm_fit_agg(t, '{f}', {{'weights': 'w'}}), recursive := true) FROM w_penicillin t")
    assert_close_all(base, agg, tol=1e-12)
    # shards that split the levels, merged: the same fit
    wcon.execute(f"""CREATE OR REPLACE TABLE parts AS SELECT hash(plate, sample) % 4 AS shard,
        lmm_stats_agg(t, '{f}', {{'weights': 'w'}}) AS stats FROM w_penicillin t GROUP BY shard""")
    merged = rows(wcon, "SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM parts))")
    assert_close_all(base, merged, tol=1e-9)
    # statistics with and without weights do not merge
    wcon.execute(f"""INSERT INTO parts SELECT 9, lmm_stats_agg(t, '{f}') FROM w_penicillin t""")
    with pytest.raises(duckdb.Error, match=r"made with weights 'w' and with no weights cannot be merged|made with no weights and with weights 'w' cannot be merged"):
        wcon.execute("SELECT lmm_stats_merge(stats ORDER BY shard) FROM parts").fetchall()


def test_inference_from_a_weighted_model(wcon):
    f1, f0 = "Reaction ~ Days + (Days | Subject)", "Reaction ~ Days + (1 | Subject)"
    for name, f in (("m1", f1), ("m0", f0)):
        wcon.execute(f"CREATE OR REPLACE TABLE {name} AS SELECT model FROM lmm_model('w_sleepstudy', '{f}', weights := 'w')")
    tidy = tidy_map(rows(wcon, "SELECT * FROM lmm_tidy((SELECT model FROM m1))"))
    direct = tidy_map(fit(wcon, "w_sleepstudy", f1))
    assert tidy[("fit", None, None, "logLik")]["estimate"] == direct[("fit", None, None, "logLik")]["estimate"]
    # the LRT's logLik of each model is the model's own (the −Σ log w is in both)
    lrt = rows(wcon, "SELECT * FROM lmm_lrt((SELECT model FROM m0), (SELECT model FROM m1))")
    ml = {r: fit_value(fit(wcon, "w_sleepstudy", g, "ML"), "logLik") for r, g in (("m0", f0), ("m1", f1))}
    by_npar = sorted(lrt, key=lambda r: r["npar"])
    assert abs(by_npar[0]["logLik"] - ml["m0"]) < 1e-5
    assert abs(by_npar[1]["logLik"] - ml["m1"]) < 1e-5
    # Wald intervals from the weighted vcov
    ci = {r["term"]: r for r in rows(wcon, "SELECT * FROM lmm_confint((SELECT model FROM m1), method := 'Wald')")}
    days = direct[("fixed", None, None, "Days")]
    assert abs(ci["Days"]["conf_low"] - (days["estimate"] - 1.959963984540054 * days["std_error"])) < 1e-6
    # a prediction needs no weight column
    p = wcon.execute("SELECT lmm_predict((SELECT model FROM m1), {'Days': 2, 'Subject': 308})").fetchall()[0][0]
    assert math.isfinite(p)
