"""scale() in the formula (issue 13): R's scale.default, (x − c)/s, with c
and s from the data, on the fixed and the random side, in interactions, and
with its center/scale arguments. Reference: lme4 1.1-31 fits
(tests/fixtures/scale/scale_lme4.R writes the JSON), with the tolerances of
the earlier fits; lmm_predict equals lme4's fitted values and predict() on
new rows (the training centre and scale, as R's makepredictcall). R scales
in model.frame, before na.omit: the centre and scale are over every row
where the column is present, also rows dropped for a missing response."""
import json

import duckdb
import pytest

from conftest import FIXTURES, connect, fit_value, load_csv, rows

REFERENCE = json.loads((FIXTURES / "scale" / "scale_lme4.json").read_text())


@pytest.fixture(scope="module")
def scon():
    c = connect()
    for name in ["sleepstudy", "orthodont", "dietox", "synthetic_small"]:
        load_csv(c, f"raw_{name}", name)
        c.execute(f"CREATE TABLE {name} AS SELECT row_number() OVER () AS i, * FROM raw_{name}")
    # as the R script: Reaction missing on five rows
    c.execute("""CREATE TABLE sleepna AS SELECT i, CASE WHEN (Subject = 308 AND Days IN (0, 1)) OR (Subject = 372 AND Days >= 7)
                 THEN NULL ELSE Reaction END AS Reaction, Days, Subject FROM sleepstudy""")
    yield c
    c.close()


def group(g):
    return g.split(".")[0]  # R's VarCorr names a second block of one factor 'Subject.1'


def ids(r):
    return f"{r['data']}-{r['method']}-{r['formula']}"


@pytest.mark.parametrize("ref", REFERENCE, ids=ids)
def test_against_lme4(scon, ref):
    got = rows(scon, "SELECT * FROM lmm_fit(?, ?, method := ?)", [ref["data"], ref["formula"], ref["method"]])
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
    for key, value in ref["ran_pars"].items():
        g, term = key.split("|")
        assert abs(pars[f"{group(g)}|{term}"] - value) < 1e-3 * max(abs(value), 1e-3), key
    blups = {f"{r['group_var']}|{r['level']}|{r['term']}": r["estimate"] for r in got if r["effect"] == "ran_vals"}
    largest = max(abs(v) for v in ref["blups"].values())
    assert len(blups) == len(ref["blups"])
    for key, value in ref["blups"].items():
        assert abs(blups[key] - value) < 1e-3 * largest, key


def model(con, ref):
    con.execute("CREATE OR REPLACE TABLE m AS SELECT model FROM lmm_model(?, ?, method := ?)", [ref["data"], ref["formula"], ref["method"]])


@pytest.mark.parametrize("ref", REFERENCE, ids=ids)
def test_predictions_are_lme4s(scon, ref):
    model(scon, ref)
    response = ref["formula"].split("~")[0].strip()
    got = [r[0] for r in scon.execute(
        f"SELECT lmm_predict((SELECT model FROM m), d) FROM {ref['data']} d WHERE {response} IS NOT NULL ORDER BY i LIMIT 12").fetchall()]
    scale = max(abs(v) for v in ref["fitted"])
    for a, b in zip(got, ref["fitted"], strict=True):
        assert abs(a - b) < 1e-6 * scale
    # new rows: the fit's centre and scale, not the new rows' own
    new = ref["new"]
    n = len(next(iter(new.values())))
    scon.execute(f"CREATE OR REPLACE TABLE new_rows AS SELECT * FROM {ref['data']} LIMIT 0")
    for c, values in new.items():  # Days = 2.5 must not round in an INTEGER column
        if all(isinstance(v, (int, float)) for v in values):
            scon.execute(f"ALTER TABLE new_rows ALTER {c} TYPE DOUBLE")
    for k in range(n):
        names = ", ".join(new)
        scon.execute(f"INSERT INTO new_rows ({names}) VALUES ({', '.join('?' * len(new))})", [new[c][k] for c in new])
    for re, want in [("true", ref["predict"]), ("false", ref["predict_fixed"])]:
        got = [r[0] for r in scon.execute(f"SELECT lmm_predict((SELECT model FROM m), d, re := {re}) FROM new_rows d").fetchall()]
        assert got == pytest.approx(want, rel=1e-6, abs=1e-6 * scale), re


def fixed_and_pars(con, sql):
    got = rows(con, sql)
    return [(r["term"], r["estimate"]) for r in got if r["effect"] in ("fixed", "ran_pars")] + [("REMLcrit", fit_value(got, "REMLcrit"))]


def test_offsets_scales_row_order_and_threads_leave_it_unchanged(scon):
    # scale(Days + K) = scale(Days) and scale(Days · a) = scale(Days) for a > 0:
    # the same fit whatever the offset (to 1.7e9, seconds since 1970), the
    # scale (1e-6 … 1e6), the row order or the threads. To 1e-9, but for the
    # precision of doubles: the pass keeps each group's mean of the column as
    # it is, so an offset K costs the ulps of K in every group mean, a
    # relative error about ε·K/sd in the scaled values (1e-7 measured for
    # Days + 1.7e9, whose sd is 2.9; 2e-8 for the same scaled in SQL).
    f = "Reaction ~ scale({x}) + (scale({x}) | Subject)"
    base = fixed_and_pars(scon, f"SELECT * FROM lmm_fit('sleepstudy', '{f.format(x='Days')}')")
    eps, sd = 2.0**-52, scon.execute("SELECT stddev_samp(Days) FROM sleepstudy").fetchone()[0]
    for expr, offset, factor in [("Days + 1.7e9", 1.7e9, 1), ("Days * 1e-6", 0, 1e-6), ("Days * 1e6", 0, 1e6),
                                 ("Days * 1e6 + 1.7e9", 1.7e9, 1e6)]:
        tol = 1e-9 + 10 * eps * offset / (sd * factor)
        scon.execute(f"CREATE OR REPLACE TABLE moved AS SELECT Reaction, {expr} AS x, Subject FROM sleepstudy ORDER BY hash(i)")
        for threads in (1, 2):
            scon.execute(f"SET threads = {threads}")
            got = fixed_and_pars(scon, f"SELECT * FROM lmm_fit('moved', '{f.format(x='x')}')")
            assert [t for t, _ in got] == [t.replace("Days", "x") for t, _ in base]
            for (t, a), (_, b) in zip(got, base):
                assert a == pytest.approx(b, rel=tol, abs=1e-9), (expr, threads, t)
    scon.execute("SET threads = 2")


def test_statistics_values_carry_the_moments(scon):
    # sharded statistics (a group split across shards) merge to lmm_fit's table;
    # the moments behind scale() include rows without a response
    f = "Reaction ~ scale(Days) + (scale(Days) | Subject)"
    direct = rows(scon, f"SELECT * FROM lmm_fit('sleepna', '{f}')")
    scon.execute(f"CREATE OR REPLACE TABLE part AS SELECT hash(i) % 3 AS shard, lmm_stats_agg(t, '{f}') AS stats FROM sleepna t GROUP BY ALL")
    merged = rows(scon, "SELECT * FROM lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM part))")
    assert [r["term"] for r in merged] == [r["term"] for r in direct]
    for a, b in zip(merged, direct):
        for c in ("estimate", "std_error"):
            if b[c] is not None:
                assert a[c] == pytest.approx(b[c], rel=1e-9, abs=1e-12), (a["term"], c)


def test_scaled_columns_are_what_sql_computes(scon):
    # the same fit as the column scaled in SQL, with R's definitions of
    # center and scale (n − 1; about the centre given; root mean square)
    for call, centre, spread in [
        ("scale(Days)", "avg(Days)", "stddev_samp(Days)"),
        ("scale(Days, center = FALSE)", "0", "sqrt(sum(Days * Days) / (count(*) - 1))"),
        ("scale(Days, center = 2, scale = FALSE)", "2", "1"),
        ("scale(Days, center = 3)", "3", "sqrt(sum((Days - 3) * (Days - 3)) / (count(*) - 1))"),
        ("scale(Days, F, 4)", "0", "4"),
    ]:
        scon.execute(f"CREATE OR REPLACE TABLE s AS SELECT Reaction, Subject, (Days - c) / s AS z FROM sleepstudy, "
                     f"(SELECT {centre} AS c, {spread} AS s FROM sleepstudy LIMIT 1)")  # one row also for constants
        got = fixed_and_pars(scon, f"SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ {call} + (0 + {call} | Subject)')")
        want = fixed_and_pars(scon, "SELECT * FROM lmm_fit('s', 'Reaction ~ z + (0 + z | Subject)')")
        assert [t for t, _ in got] == [t.replace("z", call) for t, _ in want]
        for (t, a), (_, b) in zip(got, want):
            assert a == pytest.approx(b, rel=1e-9, abs=1e-9), (call, t)


def test_model_value_stores_centre_and_scale(scon):
    from test_predict import parse_model
    scaled = parse_model(scon.execute("SELECT model FROM lmm_model('sleepstudy', 'Reaction ~ scale(Days) + (1 | Subject)')").fetchone()[0])
    assert scaled["version"] == 4
    days = scon.execute("SELECT avg(Days), stddev_samp(Days) FROM sleepstudy").fetchone()
    assert {v["name"]: v.get("scaling") for v in scaled["vars"]}["scale(Days)"] == pytest.approx(days, rel=1e-14)


@pytest.mark.parametrize(
    "formula, message",
    [
        ("Reaction ~ scale(Subjekt) + (1 | Subject)", "Subjekt"),
        ("Reaction ~ I(scale(Days)^2) + (1 | Subject)", "scale() is a variable of a term"),
        ("scale(Reaction) ~ Days + (1 | Subject)", "scale() is a variable of a term"),
        ("Reaction ~ scale(Days, centre = TRUE) + (1 | Subject)", "scale() has no argument 'centre'"),
        ("Reaction ~ scale(Days, TRUE, TRUE, TRUE) + (1 | Subject)", "at most two arguments"),
        ("Reaction ~ scale(Days, center = maybe) + (1 | Subject)", "TRUE, FALSE or a number"),
        ("Reaction ~ scale(Days, scale = 0) + (1 | Subject)", "'scale(Days, scale = 0)': the values have no spread"),
        ("Reaction ~ scale(one) + (1 | Subject)", "'scale(one)': the values have no spread"),
        ("Reaction ~ scale(name) + (1 | Subject)", "'scale(name)' computes with column 'name', which has type VARCHAR"),
    ],
)
def test_errors_name_the_culprit(scon, formula, message):
    scon.execute("CREATE OR REPLACE TABLE odd AS SELECT *, 1.0 AS one, 'a' || Subject AS name FROM sleepstudy")
    with pytest.raises(duckdb.Error) as e:
        scon.execute(f"SELECT * FROM lmm_fit('odd', '{formula}')").fetchall()
    assert message in str(e.value)
