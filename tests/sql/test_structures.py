"""Covariance structures written as lme4 2.0 / glmmTMB write them (issue 13):
us(...) is the unstructured block `(... | g)`, diag(...) independent terms
`(... || g)`. Reference: glmmTMB 1.1.5 fits (tests/fixtures/structures/
diag_glmmtmb.R writes the JSON), REML and ML, with the tolerances of the
earlier fits; the structures lmm does not fit yet are refused by name."""
import json

import duckdb
import pytest

from conftest import FIXTURES, load_csv, rows

REFERENCE = json.loads((FIXTURES / "structures" / "diag_glmmtmb.json").read_text())


def tidy(con, data, formula, method="REML"):
    return rows(con, f"SELECT * FROM lmm_fit('{data}', '{formula}', method := '{method}')")


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: f"{r['data']}-{r['method']}")
def test_diag_against_glmmtmb(con, ref):
    got = tidy(con, ref["data"], ref["formula"], ref["method"])
    fit = {r["term"]: r["estimate"] for r in got if r["effect"] == "fit"}
    objective = fit["REMLcrit" if ref["method"] == "REML" else "deviance"]
    assert abs(objective - ref["objective"]) < 1e-6
    fixed = {r["term"]: r for r in got if r["effect"] == "fixed"}
    assert sorted(fixed) == sorted(ref["fixef"])
    for term, value in ref["fixef"].items():
        assert abs(fixed[term]["estimate"] / value - 1) < 1e-4, term
        assert abs(fixed[term]["std_error"] / ref["se"][term] - 1) < 1e-3, term
    pars = {(r["group_var"], r["term"]): r["estimate"] for r in got if r["effect"] == "ran_pars"}
    group = [g for g, _ in pars if g != "Residual"][0]
    for term, sd in ref["sd"].items():
        assert abs(pars[(group, f"sd__{term}")] / sd - 1) < 1e-3, term
    assert abs(pars[("Residual", "sd__Observation")] / ref["sigma"] - 1) < 1e-3
    # independent terms: no correlation row, and two variance parameters counted
    assert not any(t.startswith("cor__") for _, t in pars)


def test_us_and_diag_are_the_bar_and_the_double_bar(con):
    def table(formula):
        out = [((r["effect"], r["group_var"], r["level"], r["term"]), (r["estimate"], r["std_error"]))
               for r in tidy(con, "sleepstudy", formula)]
        return sorted(out, key=lambda x: str(x[0]))
    assert table("Reaction ~ Days + us(Days | Subject)") == table("Reaction ~ Days + (Days | Subject)")
    assert table("Reaction ~ Days + diag(Days | Subject)") == table("Reaction ~ Days + (Days || Subject)")
    assert table("Reaction ~ Days + diag(0 + Days | Subject)") == table("Reaction ~ Days + (0 + Days | Subject)")


def test_diag_over_a_factor_and_other_structures_are_refused(con):
    with pytest.raises(duckdb.Error, match=r"diag\(factor\(Days\) \| Subject\)'.*its own variance.*10 columns"):
        tidy(con, "sleepstudy", "Reaction ~ Days + diag(factor(Days) | Subject)")
    with pytest.raises(duckdb.Error, match=r"'cs\(…\)' \(compound symmetry\) is not supported yet"):
        tidy(con, "sleepstudy", "Reaction ~ Days + cs(0 + factor(Days) | Subject)")
    with pytest.raises(duckdb.Error, match=r"'ar1\(…\)'"):
        tidy(con, "sleepstudy", "Reaction ~ Days + ar1(0 + factor(Days) | Subject)")
    with pytest.raises(duckdb.Error, match="single '|'"):
        tidy(con, "sleepstudy", "Reaction ~ Days + diag(Days || Subject)")
