"""`ddf := 'Satterthwaite'`: degrees of freedom and t tests for the fixed
effects against lmerTest (every fixture, REML and ML), and the default (no
df, normal tests) unchanged."""
import glob
import json
import math
import pathlib

import pytest

from conftest import FIXTURES, rows, fit_value

CASES = []
for path in sorted(glob.glob(str(FIXTURES / "*.json"))):
    d = json.loads(pathlib.Path(path).read_text())
    if isinstance(d, dict) and "formula_lme4" in d:
        for method in ("REML", "ML"):
            CASES.append((pathlib.Path(path).stem, d["dataset"]["file"], d["formula_lme4"], method,
                          d["lme4"][method]["lmerTest"]["satterthwaite"]))

# sitka_rs: lme4's default optimizer stops short of the optimum lmm reaches
# (see the accuracy section of the README), so lmerTest's df are taken at
# another θ; 1e-3 elsewhere.
TOL = {"sitka_rs": 5e-3}


@pytest.mark.parametrize("model,file,formula,method,ref", CASES, ids=[f"{c[0]}-{c[3]}" for c in CASES])
def test_satterthwaite_against_lmertest(con, model, file, formula, method, ref):
    con.execute(f"CREATE OR REPLACE TABLE fx AS SELECT * FROM read_csv('{FIXTURES / file}')")
    res = rows(con, "SELECT * FROM lmm_fit('fx', ?, method := ?, ddf := 'Satterthwaite')", [formula, method])
    fixed = {r["term"]: r for r in res if r["effect"] == "fixed"}
    tol = TOL.get(model, 1e-3)
    for name, df, t, p in zip(ref["names"], ref["df"], ref["t_value"], ref["p_value"]):
        r = fixed[name]
        assert abs(r["df"] - df) <= tol * df, (name, r["df"], df)
        assert abs(r["statistic"] - t) <= 2e-3 * abs(t), (name, r["statistic"], t)
        assert abs(r["p_value"] - p) <= 2e-2 * p + 1e-12, (name, r["p_value"], p)
        # the interval uses the t quantile on df, wider than the normal one
        half = (r["conf_high"] - r["estimate"]) / r["std_error"]
        assert half > 1.959963984540054 and abs((r["estimate"] - r["conf_low"]) / r["std_error"] - half) < 1e-9


def test_t_quantile_in_intervals(con):
    # sleepstudy_rs: df = 17 to 1e-4, so the half-width is qt(0.975, 17) SEs (R: 2.109815577833317)
    res = rows(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days | Subject)', ddf := 'Satterthwaite')")
    for r in (r for r in res if r["effect"] == "fixed"):
        assert abs(r["df"] - 17.0) < 1e-3
        assert abs((r["conf_high"] - r["estimate"]) / r["std_error"] - 2.109815577833317) < 1e-4


def test_default_is_normal_without_df(con):
    a = rows(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days | Subject)')")
    b = rows(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days | Subject)', ddf := 'none')")
    assert a == b
    for r in (r for r in a if r["effect"] == "fixed"):
        assert r["df"] is None
        assert abs((r["conf_high"] - r["estimate"]) / r["std_error"] - 1.959963984540054) < 1e-12
        assert abs(r["p_value"] - math.erfc(abs(r["statistic"]) / math.sqrt(2))) <= 1e-12 + 1e-9 * r["p_value"]


def test_crossed_satterthwaite(con):
    res = rows(con, "SELECT * FROM lmm_fit('penicillin', 'diameter ~ 1 + (1 | plate) + (1 | sample)', ddf := 'Satterthwaite')")
    assert abs([r for r in res if r["effect"] == "fixed"][0]["df"] - 5.4866) < 1e-3 * 5.4866
    assert fit_value(res, "converged") == 1


def test_bad_ddf_option(con):
    import duckdb
    with pytest.raises(duckdb.Error, match="option ddf: expected 'none', 'Satterthwaite' or 'Kenward-Roger', got 'KR'"):
        con.execute("SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (1 | Subject)', ddf := 'KR')").fetchall()
