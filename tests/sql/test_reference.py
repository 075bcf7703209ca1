"""Every model of the shared reference (one grouping factor, crossed, nested),
REML and ML, through SQL, against lme4 with the tolerances of issue 2."""
import math

import pytest

from conftest import fixture, rows, fit_value

MODELS = {
    "dietox_ri": "dietox", "dietox_rs": "dietox", "dietox_rs_uncorr": "dietox",
    "sleepstudy_ri": "sleepstudy", "sleepstudy_rs": "sleepstudy", "sleepstudy_rs_uncorr": "sleepstudy",
    "sitka_ri": "sitka", "sitka_rs": "sitka", "dyestuff": "dyestuff", "dyestuff2": "dyestuff2",
    "orthodont": "orthodont", "score_ri": "score", "score_rs": "score", "synthetic_small": "synthetic_small",
    "penicillin_crossed": "penicillin", "pastes_nested": "pastes",
}


def get(result, effect, term, group=None, level=None):
    for r in result:
        if r["effect"] == effect and r["term"] == term and (group is None or r["group_var"] == group) \
                and (level is None or r["level"] == level):
            return r
    raise KeyError((effect, term, group, level))


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_matches_lme4(con, model, method):
    fx = fixture(model)
    ref = fx["lme4"][method]
    res = rows(con, "SELECT * FROM lmm_fit(?, ?, method := ?)", [MODELS[model], fx["formula_lme4"], method])

    # objective: no worse than the best optimum_check objective + 1e-6
    crit = "REMLcrit" if method == "REML" else "deviance"
    ours = fit_value(res, crit)
    best = min([o["objective"] for o in ref["optimum_check"]] + [ref["REML_criterion" if method == "REML" else "deviance"]])
    assert ours <= best + 1e-6, (ours, best)
    df, n = ref["logLik_df"], fx["n_obs"]
    assert abs(fit_value(res, "logLik") + ours / 2) < 1e-6
    assert abs(fit_value(res, "AIC") - (ours + 2 * df)) < 1e-6
    assert abs(fit_value(res, "BIC") - (ours + df * math.log(n))) < 1e-6
    assert fit_value(res, "nobs") == n
    assert fit_value(res, "converged") == 1
    assert fit_value(res, "singular") == (1 if ref["isSingular"] else 0)

    fe = ref["fixed_effects"]
    for name, est, se in zip(fe["names"], fe["estimate"], fe["std_error"]):
        r = get(res, "fixed", name)
        assert abs(r["estimate"] - est) <= max(1e-4 * abs(est), 1e-3 * se), (name, r["estimate"], est)
        assert abs(r["std_error"] - se) <= 1e-3 * se, (name, r["std_error"], se)
        assert abs(r["statistic"] - est / se) <= 2e-3 * abs(est / se) + 1e-9
        assert r["conf_low"] < r["estimate"] < r["conf_high"]

    def close(ours, reference, what):
        if reference == 0:
            assert abs(ours) <= 1e-6, (what, ours)
        else:
            assert abs(ours - reference) <= 1e-3 * abs(reference), (what, ours, reference)

    for vc in ref["var_components"]:
        g, terms, cov = vc["grouping_factor"], vc["terms"], vc["covariance"]
        for a, ta in enumerate(terms):
            close(get(res, "ran_pars", f"var__{ta}", g)["estimate"], cov[a][a], f"var {ta}")
            close(get(res, "ran_pars", f"sd__{ta}", g)["estimate"], math.sqrt(cov[a][a]), f"sd {ta}")
            for b in range(a + 1, len(terms)):
                tb = terms[b]
                c = get(res, "ran_pars", f"cov__{ta}.{tb}", g)["estimate"]
                assert abs(c - cov[a][b]) <= 1e-3 * math.sqrt(cov[a][a] * cov[b][b]), (ta, tb, c)
    close(get(res, "ran_pars", "var__Observation", "Residual")["estimate"], ref["residual_variance"], "sigma2")

    for bl in ref["blups"]:
        g = bl["grouping_factor"]
        for t, term in enumerate(bl["terms"]):
            tol = 1e-3 * max(abs(v[t]) for v in bl["values"])
            ours = {r["level"]: r for r in res if r["effect"] == "ran_vals" and r["term"] == term and r["group_var"] == g}
            assert len(ours) == len(bl["levels"])
            for lev, vals, sds in zip(bl["levels"], bl["values"], bl["cond_sd"]):
                assert abs(ours[lev]["estimate"] - vals[t]) <= tol, (lev, term)
                assert abs(ours[lev]["std_error"] - sds[t]) <= tol, (lev, term)
