"""Contrasts, `contrasts := {column: 'treatment' | 'treatment:B' | 'sum' |
'helmert' | 'poly'}` (issue 13): lme4's `lmer(..., contrasts = list(...))`.
Reference: lme4 1.1-31 fits (tests/fixtures/contrasts/contrasts_lme4.R writes
the JSON and lme4's `cake` as tests/fixtures/data/cake.csv): sum × poly in an
interaction, helmert with treatment against a chosen base, a crossed model,
orthodont and dietox; REML and ML; with the tolerances of the earlier fits.
Then: the model value's predictions equal lme4's fitted values, the same
model under another contrast is the same model (fitted values, logLik), and
errors name the key or the contrast at fault."""
import json

import duckdb
import pytest

from conftest import FIXTURES, connect, fit_value, load_csv, rows

REFERENCE = json.loads((FIXTURES / "contrasts" / "contrasts_lme4.json").read_text())


@pytest.fixture(scope="module")
def ccon():
    c = connect()
    path = FIXTURES / "data" / "cake.csv"
    c.execute(
        f"CREATE TABLE cake AS SELECT row_number() OVER () AS i, CAST(replicate AS VARCHAR) AS replicate, recipe, "
        f"CAST(temperature AS VARCHAR) AS temperature, CAST(angle AS DOUBLE) AS angle FROM read_csv('{path}', all_varchar = true)"
    )
    for name in ["orthodont", "dietox"]:
        load_csv(c, f"raw_{name}", name)
        c.execute(f"CREATE TABLE {name} AS SELECT row_number() OVER () AS i, * FROM raw_{name}")
    yield c
    c.close()


def fit(con, ref, contrasts=None):
    return rows(
        con,
        "SELECT * FROM lmm_fit(?, ?, method := ?, contrasts := ?)",
        [ref["data"], ref["formula"], ref["method"], contrasts or ref["contrasts"]],
    )


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: f"{r['data']}-{r['method']}-{r['contrasts']}")
def test_against_lme4(ccon, ref):
    got = fit(ccon, ref)
    objective = fit_value(got, "REMLcrit" if ref["method"] == "REML" else "deviance")
    assert abs(objective - ref["objective"]) < 1e-6
    assert abs(fit_value(got, "logLik") - ref["logLik"]) < 1e-6
    fixed = {r["term"]: r for r in got if r["effect"] == "fixed"}
    # R's names, in R's order
    assert [r["term"] for r in got if r["effect"] == "fixed"] == list(ref["fixef"])
    for term, value in ref["fixef"].items():
        assert abs(fixed[term]["estimate"] - value) <= 1e-4 * max(abs(value), 1e-3 * max(abs(v) for v in ref["fixef"].values())), term
        assert abs(fixed[term]["std_error"] / ref["se"][term] - 1) < 1e-3, term
    pars = {f"{r['group_var']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_pars"}
    for key, value in ref["ran_pars"].items():
        assert abs(pars[key] - value) < 1e-3 * max(abs(value), 1e-3), key
    blups = {f"{r['group_var']}|{r['level']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_vals"}
    largest = max(abs(v) for v in ref["blups"].values())
    assert len(blups) == len(ref["blups"])
    for key, value in ref["blups"].items():
        assert abs(blups[key] - value) < 1e-3 * largest, key


def predictions(con, ref, contrasts=None):
    con.execute(
        "CREATE OR REPLACE TABLE m AS SELECT model FROM lmm_model(?, ?, method := ?, contrasts := ?)",
        [ref["data"], ref["formula"], ref["method"], contrasts or ref["contrasts"]],
    )
    return [
        r[0]
        for r in con.execute(
            f"SELECT lmm_predict((SELECT model FROM m), d) FROM {ref['data']} d WHERE i <= {len(ref['fitted'])} ORDER BY i"
        ).fetchall()
    ]


@pytest.mark.parametrize("ref", REFERENCE, ids=lambda r: f"{r['data']}-{r['method']}-{r['contrasts']}")
def test_predictions_are_lme4s_fitted_values(ccon, ref):
    got = predictions(ccon, ref)
    scale = max(abs(v) for v in ref["fitted"])
    for a, b in zip(got, ref["fitted"], strict=True):
        assert abs(a - b) < 1e-6 * scale


def test_another_contrast_is_the_same_model(ccon):
    # A change of contrasts reparametrises the fixed effects: fitted values,
    # the variance parameters and the ML deviance stay; the coefficients do
    # not, nor does the REML criterion (log|XᵀV⁻¹X| moves by 2 log|det T| for
    # X → XT, a constant, so its optimum stays: lme4 behaves the same).
    ref = REFERENCE[0]
    base = predictions(ccon, ref)
    for other in ["{'recipe': 'helmert', 'temperature': 'sum'}", "{'recipe': 'treatment:C', 'temperature': 'treatment'}", "recipe=poly"]:
        assert predictions(ccon, ref, other) == pytest.approx(base, rel=1e-9, abs=1e-9)
        a, b = fit(ccon, ref), fit(ccon, ref, other)
        pars = lambda t: [r["estimate"] for r in t if r["effect"] == "ran_pars"]
        assert pars(a) == pytest.approx(pars(b), rel=1e-6)
        ml = dict(ref, method="ML")
        assert fit_value(fit(ccon, ml), "deviance") == pytest.approx(fit_value(fit(ccon, ml, other), "deviance"), abs=1e-7)
    # treatment (the default) spelled out changes nothing at all
    default = rows(ccon, "SELECT * FROM lmm_fit('cake', ?)", [ref["formula"]])
    spelled = rows(ccon, "SELECT * FROM lmm_fit('cake', ?, contrasts := 'recipe=treatment')", [ref["formula"]])
    assert default == spelled


def test_sum_contrast_coefficients_are_deviations_from_the_mean(ccon):
    # With sum contrasts in a balanced one-way layout, the intercept is the
    # grand mean and recipe1, recipe2 the first two recipes' deviations from it.
    got = {r["term"]: r["estimate"] for r in rows(
        ccon, "SELECT * FROM lmm_fit('cake', 'angle ~ recipe + (1 | replicate)', contrasts := {'recipe': 'sum'})") if r["effect"] == "fixed"}
    means = dict(ccon.execute("SELECT recipe, avg(angle) FROM cake GROUP BY recipe").fetchall())
    grand = ccon.execute("SELECT avg(angle) FROM cake").fetchone()[0]
    assert got["(Intercept)"] == pytest.approx(grand, rel=1e-9)
    assert got["recipe1"] == pytest.approx(means["A"] - grand, rel=1e-7)
    assert got["recipe2"] == pytest.approx(means["B"] - grand, rel=1e-7)


def test_struct_map_and_text_forms_agree(ccon):
    f = "angle ~ recipe + temperature + (1 | replicate)"
    forms = [
        "{'recipe': 'sum', 'temperature': 'poly'}",
        "MAP {'recipe': 'sum', 'temperature': 'poly'}",
        "'recipe=sum, temperature=poly'",
    ]
    results = [rows(ccon, f"SELECT * FROM lmm_fit('cake', '{f}', contrasts := {form})") for form in forms]
    assert results[0] == results[1] == results[2]
    assert "temperature.Q" in [r["term"] for r in results[0]]


@pytest.mark.parametrize(
    "contrasts, message",
    [
        ("{'recipie': 'sum'}", "'recipie' is not a column of the model (its categorical columns: recipe, temperature)"),
        ("{'angle': 'sum'}", "'angle'"),
        ("{'recipe': 'lasso'}", "unknown contrast 'lasso' for 'recipe'"),
        ("{'temperature': 'treatment:999'}", "the base level '999' of 'treatment:999' is not a level of 'temperature'"),
        ("{'recipe': 'sum:A'}", "only treatment coding takes a base level"),
    ],
)
def test_errors_name_the_culprit(ccon, contrasts, message):
    with pytest.raises(duckdb.Error, match=None) as e:
        ccon.execute(f"SELECT * FROM lmm_fit('cake', 'angle ~ recipe + temperature + (1 | replicate)', contrasts := {contrasts})").fetchall()
    assert message in str(e.value)


def test_statistics_values_take_contrasts_at_the_fit(ccon):
    f = "angle ~ recipe * temperature + (1 | recipe:replicate)"
    ccon.execute(f"CREATE OR REPLACE TABLE s AS SELECT lmm_stats_agg(c, '{f}') AS stats FROM cake c")
    got = rows(ccon, "SELECT * FROM lmm_fit_stats((SELECT stats FROM s), contrasts := {'recipe': 'sum', 'temperature': 'poly'})")
    direct = fit(ccon, REFERENCE[0])
    assert [r["term"] for r in got] == [r["term"] for r in direct]
    for a, b in zip(got, direct):
        if a["estimate"] is not None:
            assert a["estimate"] == pytest.approx(b["estimate"], rel=1e-9, abs=1e-12)
    with pytest.raises(duckdb.Error, match="give contrasts := to lmm_fit_stats"):
        ccon.execute(f"SELECT lmm_stats_agg(c, '{f}', {{'contrasts': 'recipe=sum'}}) FROM cake c").fetchall()


def test_inference_on_a_contrast_coded_model(ccon):
    # The F test of the interaction (type 2) does not depend on the coding;
    # the same under sum × poly and under treatment contrasts.
    f = "angle ~ recipe * temperature + (1 | recipe:replicate)"
    out = {}
    for name, c in [("sum", "{'recipe': 'sum', 'temperature': 'poly'}"), ("treatment", "NULL")]:
        ccon.execute(f"CREATE OR REPLACE TABLE m AS SELECT model FROM lmm_model('cake', '{f}', contrasts := {c})")
        out[name] = {r[0]: r[1] for r in ccon.execute(
            "SELECT term, f_value FROM lmm_anova((SELECT model FROM m), type := 2, ddf := 'Satterthwaite')").fetchall()}
    assert out["sum"]["recipe:temperature"] == pytest.approx(out["treatment"]["recipe:temperature"], rel=1e-8)


def test_model_value_stores_the_contrast_matrices(ccon):
    # Read with the independent reader of docs/model-format.md (test_predict).
    from test_predict import parse_model
    f = "angle ~ recipe * temperature + (1 | recipe:replicate)"
    coded = parse_model(ccon.execute(
        f"SELECT model FROM lmm_model('cake', '{f}', contrasts := {{'recipe': 'sum', 'temperature': 'poly'}})").fetchone()[0])
    plain = parse_model(ccon.execute(f"SELECT model FROM lmm_model('cake', '{f}')").fetchone()[0])
    assert coded["version"] == 3 and plain["version"] == 2
    by_name = {v["name"]: v for v in coded["vars"]}
    assert by_name["recipe"]["coding"] == [1.0, 0.0, -1.0, 0.0, 1.0, -1.0]  # contr.sum(3), column-major
    poly = by_name["temperature"]["coding"]
    assert len(poly) == 6 * 5 and poly[0] == pytest.approx(-5 / 70 ** 0.5, rel=1e-14)  # contr.poly(6)[1, 1]
    assert all("coding" not in v for v in plain["vars"])
