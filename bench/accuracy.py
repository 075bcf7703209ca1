"""Accuracy of lmm_fit against lme4 on every single-factor fixture (REML and ML).

Prints, per model and method: our objective minus the best lme4 optimum
(negative = we found a lower objective), and the largest relative differences
of fixed effects, their SEs, variance components, and BLUPs / conditional SDs
(relative to the largest |BLUP| of the term).
Run: .venv/bin/python bench/accuracy.py  (after scripts/build.sh)
"""
import math
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "sql"))
from conftest import connect, load_csv, fixture, rows, fit_value  # noqa: E402
from test_reference import MODELS, get  # noqa: E402

con = connect()
for name in sorted(set(MODELS.values())):
    load_csv(con, name, "score_parentedu_byclass" if name == "score" else name)

print(f"{'model':<22} {'method':<5} {'obj - best':>11} {'fixef':>9} {'SE':>9} {'varcomp':>9} {'BLUP':>9} {'condSD':>9}")
worst = {}
for model in sorted(MODELS):
    fx = fixture(model)
    for method in ["REML", "ML"]:
        ref = fx["lme4"][method]
        res = rows(con, "SELECT * FROM lmm_fit(?, ?, method := ?)", [MODELS[model], fx["formula_lme4"], method])
        crit = "REMLcrit" if method == "REML" else "deviance"
        best = min([o["objective"] for o in ref["optimum_check"]] + [ref["REML_criterion" if method == "REML" else "deviance"]])
        d_obj = fit_value(res, crit) - best
        fe = ref["fixed_effects"]
        d_fe = max(abs(get(res, "fixed", n)["estimate"] - e) / abs(e) for n, e in zip(fe["names"], fe["estimate"]))
        d_se = max(abs(get(res, "fixed", n)["std_error"] - s) / s for n, s in zip(fe["names"], fe["std_error"]))
        d_vc = 0.0
        for vc in ref["var_components"]:
            for a, t in enumerate(vc["terms"]):
                r = vc["covariance"][a][a]
                o = get(res, "ran_pars", f"var__{t}", vc["grouping_factor"])["estimate"]
                d_vc = max(d_vc, abs(o - r) / r if r else abs(o))
        r = ref["residual_variance"]
        d_vc = max(d_vc, abs(get(res, "ran_pars", "var__Observation", "Residual")["estimate"] - r) / r)
        d_b = d_sd = 0.0
        for bl in ref["blups"]:
            for t, term in enumerate(bl["terms"]):
                scale = max(abs(v[t]) for v in bl["values"]) or 1.0
                ours = {x["level"]: x for x in res if x["effect"] == "ran_vals" and x["term"] == term}
                for lev, v, s in zip(bl["levels"], bl["values"], bl["cond_sd"]):
                    d_b = max(d_b, abs(ours[lev]["estimate"] - v[t]) / scale)
                    d_sd = max(d_sd, abs(ours[lev]["std_error"] - s[t]) / scale)
        vals = [d_obj, d_fe, d_se, d_vc, d_b, d_sd]
        for k, v in zip(["obj", "fe", "se", "vc", "b", "sd"], vals):
            worst[k] = max(worst.get(k, -math.inf), v)
        print(f"{model:<22} {method:<5} {d_obj:>11.2e} {d_fe:>9.1e} {d_se:>9.1e} {d_vc:>9.1e} {d_b:>9.1e} {d_sd:>9.1e}")
print(f"{'worst':<28} {worst['obj']:>11.2e} {worst['fe']:>9.1e} {worst['se']:>9.1e} {worst['vc']:>9.1e} {worst['b']:>9.1e} {worst['sd']:>9.1e}")
