"""poly() in the formula (issue 13): R's orthogonal polynomials and, with
raw = TRUE, plain powers, on the fixed and the random side and in
interactions. Reference: lme4 1.1-31 fits (tests/fixtures/poly/poly_lme4.R
writes the JSON), with the tolerances of the earlier fits; lmm_predict
equals lme4's fitted values and predict() on new rows (the training basis,
R's makepredictcall). R evaluates poly() in model.frame, before na.omit:
the basis is over every row where the column is present, also rows dropped
for a missing response."""
import json

import duckdb
import pytest

from conftest import FIXTURES, connect, fit_value, load_csv, rows

REFERENCE = json.loads((FIXTURES / "poly" / "poly_lme4.json").read_text())


@pytest.fixture(scope="module")
def pcon():
    c = connect()
    for name in ["sleepstudy", "orthodont", "dietox", "synthetic_small"]:
        load_csv(c, f"raw_{name}", name)
        c.execute(f"CREATE TABLE {name} AS SELECT row_number() OVER () AS i, * FROM raw_{name}")
    # as the R script: Reaction missing on five rows
    c.execute("""CREATE TABLE sleepna AS SELECT i, CASE WHEN (Subject = 308 AND Days IN (0, 1)) OR (Subject = 372 AND Days >= 7)
                 THEN NULL ELSE Reaction END AS Reaction, Days, Subject FROM sleepstudy""")
    yield c
    c.close()


def ids(r):
    return f"{r['data']}-{r['method']}-{r['formula']}"


@pytest.mark.parametrize("ref", REFERENCE, ids=ids)
def test_against_lme4(pcon, ref):
    got = rows(pcon, "SELECT * FROM lmm_fit(?, ?, method := ?)", [ref["data"], ref["formula"], ref["method"]])
    objective = fit_value(got, "REMLcrit" if ref["method"] == "REML" else "deviance")
    assert abs(objective - ref["objective"]) < 1e-6
    assert abs(fit_value(got, "logLik") - ref["logLik"]) < 1e-6
    assert fit_value(got, "nobs") == ref["nobs"]
    assert [r["term"] for r in got if r["effect"] == "fixed"] == list(ref["fixef"])
    fixed = {r["term"]: r for r in got if r["effect"] == "fixed"}
    for term, value in ref["fixef"].items():
        assert abs(fixed[term]["estimate"] - value) <= 1e-4 * max(abs(value), 1e-3 * max(abs(v) for v in ref["fixef"].values())), term
        assert abs(fixed[term]["std_error"] / ref["se"][term] - 1) < 1e-3, term
    pars = {f"{r['group_var']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_pars"}
    assert len([k for k in pars if "|sd__" in k or "|cor__" in k]) == len(ref["ran_pars"])
    for key, value in ref["ran_pars"].items():
        assert abs(pars[key] - value) < 1e-3 * max(abs(value), 1e-3), key
    blups = {f"{r['group_var']}|{r['level']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_vals"}
    largest = max(abs(v) for v in ref["blups"].values())
    assert len(blups) == len(ref["blups"])
    for key, value in ref["blups"].items():
        assert abs(blups[key] - value) < 1e-3 * largest, key


@pytest.mark.parametrize("ref", REFERENCE, ids=ids)
def test_predictions_are_lme4s(pcon, ref):
    pcon.execute("CREATE OR REPLACE TABLE m AS SELECT model FROM lmm_model(?, ?, method := ?)", [ref["data"], ref["formula"], ref["method"]])
    response = ref["formula"].split("~")[0].strip()
    got = [r[0] for r in pcon.execute(
        f"SELECT lmm_predict((SELECT model FROM m), d) FROM {ref['data']} d WHERE {response} IS NOT NULL ORDER BY i LIMIT 12").fetchall()]
    scale = max(abs(v) for v in ref["fitted"])
    for a, b in zip(got, ref["fitted"], strict=True):
        assert abs(a - b) < 1e-6 * scale
    # new rows: the fit's basis, not one of the new rows' own
    new = ref["new"]
    n = len(next(iter(new.values())))
    pcon.execute(f"CREATE OR REPLACE TABLE new_rows AS SELECT * FROM {ref['data']} LIMIT 0")
    for c, values in new.items():
        if all(isinstance(v, (int, float)) for v in values):
            pcon.execute(f"ALTER TABLE new_rows ALTER {c} TYPE DOUBLE")
    for k in range(n):
        names = ", ".join(new)
        pcon.execute(f"INSERT INTO new_rows ({names}) VALUES ({', '.join('?' * len(new))})", [new[c][k] for c in new])
    for re, want in [("true", ref["predict"]), ("false", ref["predict_fixed"])]:
        got = [r[0] for r in pcon.execute(f"SELECT lmm_predict((SELECT model FROM m), d, re := {re}) FROM new_rows d").fetchall()]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6 * scale), re
    # lmm_score: the predictions of the new rows, as lmm_predict's
    scored = [r[0] for r in pcon.execute("SELECT prediction FROM lmm_score('new_rows', 'm')").fetchall()]
    assert scored == pytest.approx(ref["predict"], rel=1e-6, abs=1e-6 * scale)


def fixed_and_pars(con, sql):
    got = rows(con, sql)
    return [(r["term"], r["estimate"]) for r in got if r["effect"] in ("fixed", "ran_pars")] + [("REMLcrit", fit_value(got, "REMLcrit"))]


def test_offsets_scales_row_order_and_threads_leave_it_unchanged(pcon):
    # poly(a·x + K, k) = poly(x, k) for a > 0 (orthogonal polynomials are those
    # of the affine image): the same fit whatever the offset (to 1.7e9, seconds
    # since 1970), the scale (1e-6 … 1e6), the row order or the threads, to
    # 1e-9. The powers are accumulated about an origin in the data, so the
    # offset never enters a power.
    f = "Reaction ~ poly({x}, 2) + (poly({x}, 2) | Subject)"
    base = fixed_and_pars(pcon, f"SELECT * FROM lmm_fit('sleepstudy', '{f.format(x='Days')}')")
    for expr in ["Days + 1.7e9", "Days * 1e-6", "Days * 1e6", "Days * 1e6 + 1.7e9"]:
        pcon.execute(f"CREATE OR REPLACE TABLE moved AS SELECT Reaction, {expr} AS x, Subject FROM sleepstudy ORDER BY hash(i)")
        for threads in (1, 2):
            pcon.execute(f"SET threads = {threads}")
            got = fixed_and_pars(pcon, f"SELECT * FROM lmm_fit('moved', '{f.format(x='x')}')")
            assert [t for t, _ in got] == [t.replace("Days", "x") for t, _ in base]
            for (t, a), (_, b) in zip(got, base):
                assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (expr, threads, t)
    pcon.execute("SET threads = 2")


@pytest.mark.parametrize("formula", [
    "Reaction ~ poly(Days, 2) + (poly(Days, 2) | Subject)",
    "Reaction ~ poly(Days, 3, raw = TRUE) + (Days | Subject)",
])
def test_statistics_values_merge_across_origins(pcon, formula):
    # shards (a group split across them) each accumulate the powers about their
    # own first value; merged, they are re-expressed about one origin and give
    # lmm_fit's table; the power sums include rows without a response
    direct = rows(pcon, f"SELECT * FROM lmm_fit('sleepna', '{formula}')")
    pcon.execute("CREATE OR REPLACE TABLE shuffled AS SELECT * FROM sleepna ORDER BY hash(i + 7)")
    pcon.execute(f"CREATE OR REPLACE TABLE part AS SELECT hash(i) % 3 AS shard, lmm_stats_agg(t, '{formula}') AS stats FROM shuffled t GROUP BY ALL")
    merged = rows(pcon, "SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM part))")
    assert [r["term"] for r in merged] == [r["term"] for r in direct]
    for a, b in zip(merged, direct):
        for c in ("estimate", "std_error"):
            if b[c] is not None:
                assert a[c] == pytest.approx(b[c], rel=1e-8, abs=1e-10), (a["term"], c)


def test_raw_polynomials_are_the_powers(pcon):
    got = fixed_and_pars(pcon, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ poly(Days, 2, raw = TRUE) + (1 | Subject)')")
    want = fixed_and_pars(pcon, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + I(Days^2) + (1 | Subject)')")
    assert [t for t, _ in got] == [t.replace("Days", "poly(Days, 2, raw = TRUE)1").replace("I(poly(Days, 2, raw = TRUE)1^2)", "poly(Days, 2, raw = TRUE)2") for t, _ in want]
    for (t, a), (_, b) in zip(got, want):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-9), t


def test_model_value_stores_rs_coefs(pcon):
    from test_predict import parse_model
    m = parse_model(pcon.execute("SELECT model FROM lmm_model('sleepstudy', 'Reaction ~ poly(Days, 2) + (1 | Subject)')").fetchone()[0])
    assert m["version"] == 5
    basis = {v["name"]: v.get("poly") for v in m["vars"]}["poly(Days, 2)"]
    # R: attr(poly(sleepstudy$Days, 2), "coefs"): alpha = c(4.5, 4.5), norm2 = c(1, 180, 1485, 9504)
    # the model keeps alpha relative to an origin in the data (R's alpha = origin + alpha)
    assert [basis["origin"] + a for a in basis["alpha"]] == pytest.approx([4.5, 4.5], rel=1e-13)
    assert basis["norm2"] == pytest.approx([1, 180, 1485, 9504], rel=1e-12)
    plain = parse_model(pcon.execute("SELECT model FROM lmm_model('sleepstudy', 'Reaction ~ Days + (1 | Subject)')").fetchone()[0])
    assert plain["version"] == 2


@pytest.mark.parametrize(
    "formula, message",
    [
        ("Reaction ~ poly(Dayz, 2) + (1 | Subject)", "Dayz"),
        ("Reaction ~ I(poly(Days, 2)^2) + (1 | Subject)", "poly() is a variable of a term"),
        ("poly(Reaction, 2) ~ Days + (1 | Subject)", "poly() is a variable of a term"),
        ("Reaction ~ poly(Days, 0) + (1 | Subject)", "whole number ≥ 1"),
        ("Reaction ~ poly(Days, 1.5) + (1 | Subject)", "whole number ≥ 1"),
        ("Reaction ~ poly(Days, 9) + (1 | Subject)", "degree 9 is more than lmm fits (6"),
        ("Reaction ~ poly(Days, 2, TRUE) + (1 | Subject)", "raw = TRUE by name"),
        ("Reaction ~ poly(Days, raw = maybe) + (1 | Subject)", "raw is TRUE or FALSE"),
        ("Reaction ~ poly(Days, coefs = 2) + (1 | Subject)", "poly() has no argument 'coefs'"),
        ("Reaction ~ poly(Days, 2, degree = 3) + (1 | Subject)", "'degree' is given twice"),
        ("Reaction ~ poly(two, 2) + (1 | Subject)", "'poly(two, 2)': the degree 2 must be less than the number of distinct values of its variable (2)"),
        ("Reaction ~ poly(name, 2) + (1 | Subject)", "'poly(name, 2)' computes with column 'name', which has type VARCHAR"),
    ],
)
def test_errors_name_the_culprit(pcon, formula, message):
    pcon.execute("CREATE OR REPLACE TABLE odd AS SELECT *, Days % 2 AS two, 'a' || Subject AS name FROM sleepstudy")
    with pytest.raises(duckdb.Error) as e:
        pcon.execute(f"SELECT * FROM lmm_fit('odd', '{formula}')").fetchall()
    assert message in str(e.value)
