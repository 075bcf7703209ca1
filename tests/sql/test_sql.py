"""SQL surface of lmm: call styles, visibility, GROUP BY, read-only LOAD, errors, NULLs."""
import duckdb
import pytest

from conftest import EXT, connect, load_csv, rows, fit_value


def fit(con, *args, **named):
    params = ", ".join(["?"] * len(args) + [f"{k} := ?" for k in named])
    return rows(con, f"SELECT * FROM lmm_fit({params})", list(args) + list(named.values()))


def as_map(result):
    return {(r["effect"], r["group_var"], r["level"], r["term"]): r for r in result}


def assert_same(a, b, rel=0.0):
    ma, mb = as_map(a), as_map(b)
    assert ma.keys() == mb.keys()
    for k in ma:
        for col in ["estimate", "std_error", "statistic", "p_value", "conf_low", "conf_high"]:
            x, y = ma[k][col], mb[k][col]
            if x is None or y is None:
                assert x is None and y is None, (k, col)
            elif k[3] != "iterations":
                assert abs(x - y) <= rel * max(abs(x), abs(y)) + (1e-12 if rel else 0.0), (k, col, x, y)


def test_output_schema(con):
    cur = con.execute("SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days | Subject)')")
    assert [(d[0], str(d[1])) for d in cur.description] == [
        ("effect", "VARCHAR"), ("group_var", "VARCHAR"), ("level", "VARCHAR"), ("term", "VARCHAR"),
        ("estimate", "DOUBLE"), ("std_error", "DOUBLE"), ("statistic", "DOUBLE"), ("df", "DOUBLE"),
        ("p_value", "DOUBLE"), ("conf_low", "DOUBLE"), ("conf_high", "DOUBLE")]
    res = [dict(zip([d[0] for d in cur.description], r)) for r in cur.fetchall()]
    effects = {r["effect"] for r in res}
    assert effects == {"fixed", "ran_pars", "ran_vals", "fit"}
    assert len([r for r in res if r["effect"] == "ran_vals"]) == 18 * 2
    terms = {r["term"] for r in res if r["effect"] == "fit"}
    assert terms == {"nobs", "nobs_dropped", "ngroups", "logLik", "AIC", "BIC", "REMLcrit", "sigma",
                     "converged", "singular", "iterations"}
    assert fit_value(res, "ngroups", "Subject") == 18


def test_both_call_styles_identical(con):
    a = fit(con, "dietox", "Weight ~ Time + (1 + Time | Pig)")
    b = fit(con, "dietox", "Weight ~ Time", "Pig", ["Time"])
    assert_same(a, b)
    c = fit(con, "dietox", "Weight ~ Time + (1 | Pig)")
    d = fit(con, "dietox", "Weight ~ Time", "Pig")
    assert_same(c, d)


def test_named_options(con):
    ml = fit(con, "sleepstudy", "Reaction ~ Days + (Days || Subject)", method="ML", ranef=False)
    assert not [r for r in ml if r["effect"] == "ran_vals"]
    assert abs(fit_value(ml, "deviance") - 1752.0032551) < 1e-4
    with pytest.raises(KeyError):
        fit_value(ml, "REMLcrit")


def test_aggregate_equals_table_function(con):
    a = rows(con, "SELECT unnest(lmm_fit_agg(t, 'Reaction ~ Days + (Days | Subject)'), recursive := true) FROM sleepstudy t")
    b = fit(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)")
    assert_same(a, b)
    c = rows(con, "SELECT unnest(lmm_fit_agg(t, 'Reaction ~ Days + (Days | Subject)', {'method': 'ML', 'ranef': false}), recursive := true) FROM sleepstudy t")
    d = fit(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)", method="ML", ranef=False)
    assert_same(c, d)


def test_aggregate_over_a_query(con):
    # Any query can feed the aggregate: a filtered subquery here.
    a = rows(con, "SELECT unnest(lmm_fit_agg(t, 'Reaction ~ Days + (1 | Subject)'), recursive := true) "
                  "FROM (SELECT * FROM sleepstudy WHERE Days >= 2) t")
    con.execute("CREATE TABLE ss2 AS SELECT * FROM sleepstudy WHERE Days >= 2")
    b = fit(con, "ss2", "Reaction ~ Days + (1 | Subject)")
    assert_same(a, b)
    assert fit_value(a, "nobs") == 144


def test_temp_table_and_open_transaction(con):
    con.execute("CREATE TEMP TABLE tmp_sleep AS SELECT * FROM sleepstudy")
    a = fit(con, "tmp_sleep", "Reaction ~ Days + (Days | Subject)")
    b = fit(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)")
    assert_same(a, b)
    con.execute("BEGIN")
    con.execute("CREATE TABLE tx_sleep AS SELECT * FROM sleepstudy WHERE Days < 5")
    con.execute("INSERT INTO tx_sleep SELECT * FROM sleepstudy WHERE Days >= 5")
    c = fit(con, "tx_sleep", "Reaction ~ Days + (Days | Subject)")
    con.execute("ROLLBACK")
    assert_same(b, c, rel=1e-9)


def test_views_are_accepted(con):
    con.execute("CREATE VIEW v_sleep AS SELECT Reaction, Days, Subject FROM sleepstudy")
    assert_same(fit(con, "v_sleep", "Reaction ~ Days + (1 | Subject)"), fit(con, "sleepstudy", "Reaction ~ Days + (1 | Subject)"))


def test_group_by_fits_one_model_per_segment(con):
    res = con.execute("""
        SELECT site, r.term, r.estimate FROM (
          SELECT site, unnest(lmm_fit_agg(t, 'y ~ x1 + x2 + (1 | g)')) AS r
          FROM synthetic_small t GROUP BY site)
        WHERE r.effect = 'fixed' ORDER BY site, r.term""").fetchall()
    sites = sorted({r[0] for r in res})
    assert sites == ["site_a", "site_b", "site_c"]
    for site in sites:
        con.execute(f"CREATE OR REPLACE TABLE one_site AS SELECT * FROM synthetic_small WHERE site = '{site}'")
        single = {r["term"]: r["estimate"] for r in fit(con, "one_site", "y ~ x1 + x2 + (1 | g)") if r["effect"] == "fixed"}
        grouped = {t: e for s, t, e in res if s == site}
        assert grouped.keys() == single.keys()
        for t in single:
            assert abs(grouped[t] - single[t]) <= 1e-9 * max(1.0, abs(single[t]))


def test_null_and_nonfinite_rows_are_dropped(con):
    con.execute("CREATE TABLE ss_null AS SELECT Reaction, Days::DOUBLE AS Days, Subject FROM sleepstudy")
    con.execute("INSERT INTO ss_null VALUES (NULL, 1, 308), (300, NULL, 308), (300, 2, NULL), "
                "('nan'::DOUBLE, 3, 309), (250, 'inf'::DOUBLE, 309)")
    a = fit(con, "ss_null", "Reaction ~ Days + (Days | Subject)")
    b = fit(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)")
    assert fit_value(a, "nobs_dropped") == 5
    assert fit_value(a, "nobs") == 180
    for r in b:
        if r["term"] == "nobs_dropped":
            r["estimate"] = 5.0
    assert_same(a, b, rel=1e-9)


def test_categorical_types_code_alike(con):
    ref = fit(con, "orthodont", "distance ~ age + Sex + (age | Subject)")
    assert {r["term"] for r in ref if r["effect"] == "fixed"} == {"(Intercept)", "age", "SexMale"}
    con.execute("CREATE TYPE sex_t AS ENUM ('Female', 'Male')")
    con.execute("CREATE TABLE ortho_enum AS SELECT distance, age, Subject, Sex::sex_t AS Sex FROM orthodont")
    assert_same(fit(con, "ortho_enum", "distance ~ age + Sex + (age | Subject)"), ref, rel=1e-12)
    con.execute("CREATE TABLE ortho_bool AS SELECT distance, age, Subject, Sex = 'Male' AS male FROM orthodont")
    b = fit(con, "ortho_bool", "distance ~ age + male + (age | Subject)")
    assert abs([r for r in b if r["term"] == "maleTRUE"][0]["estimate"]
               - [r for r in ref if r["term"] == "SexMale"][0]["estimate"]) < 1e-9
    # The grouping column's type does not matter: integer and text keys give the same fit.
    con.execute("CREATE TABLE ss_text AS SELECT Reaction, Days, 'S' || Subject::VARCHAR AS Subject FROM sleepstudy")
    t = fit(con, "ss_text", "Reaction ~ Days + (Days | Subject)", ranef=False)
    i = fit(con, "sleepstudy", "Reaction ~ Days + (Days | Subject)", ranef=False)
    assert_same(t, i, rel=1e-12)


def test_interactions_and_no_intercept(con):
    res = fit(con, "synthetic_small", "y ~ x1 * site + (1 | g)", ranef=False)
    names = [r["term"] for r in res if r["effect"] == "fixed"]
    assert names == ["(Intercept)", "x1", "sitesite_b", "sitesite_c", "x1:sitesite_b", "x1:sitesite_c"]
    res0 = fit(con, "synthetic_small", "y ~ 0 + site + x1 + (1 | g)", ranef=False)
    names0 = [r["term"] for r in res0 if r["effect"] == "fixed"]
    assert names0 == ["sitesite_a", "sitesite_b", "sitesite_c", "x1"]
    # Same model, other parameterisation: same likelihood.
    res1 = fit(con, "synthetic_small", "y ~ site + x1 + (1 | g)", ranef=False)
    assert abs(fit_value(res0, "REMLcrit") - fit_value(res1, "REMLcrit")) < 1e-6


def test_read_only_database_load(tmp_path):
    db = str(tmp_path / "ro.duckdb")
    w = duckdb.connect(db)
    w.execute("CREATE TABLE s AS SELECT * FROM read_csv(?)", [str(EXT.parents[2] / "tests/fixtures/data/sleepstudy.csv")])
    w.close()
    ro = connect(db, access_mode="READ_ONLY")
    res = rows(ro, "SELECT unnest(lmm_fit_agg(t, 'Reaction ~ Days + (Days | Subject)'), recursive := true) FROM s t")
    assert abs(fit_value(res, "REMLcrit") - 1743.6282719) < 1e-5
    ro.close()


def test_file_database_reload(tmp_path):
    db = str(tmp_path / "rw.duckdb")
    for _ in range(2):  # a second LOAD must not fail on the existing macro
        c = connect(db)
        c.execute("CREATE OR REPLACE TABLE d AS SELECT * FROM read_csv(?)", [str(EXT.parents[2] / "tests/fixtures/data/dyestuff.csv")])
        assert fit_value(fit(c, "d", "Yield ~ 1 + (1 | Batch)"), "ngroups") == 6
        c.close()


ERRORS = [
    (("sleepstudy", "Reaction ~ Dayz + (1 | Subject)"), {}, ["Dayz", "not found", "Reaction", "Days", "Subject"]),
    (("orthodont", "Sex ~ age + (1 | Subject)"), {}, ["Sex", "VARCHAR", "numeric"]),
    (("sleepstudy", "Reaction ~ Days + (1 | )"), {}, ["syntax", "position"]),
    (("sleepstudy", "Reaction ~ Days + (Days | Subject)"), {"method": "XML"}, ["method", "XML"]),
    (("sleepstudy", "Reaction ~ Days + (Days | Subject)"), {"ranef": "maybe"}, ["ranef"]),
    (("one_group", "Reaction ~ Days + (1 | Subject)"), {}, ["Subject", "at least 2"]),
    (("all_null", "Reaction ~ Days + (1 | Subject)"), {}, ["no rows", "dropping"]),
    (("collinear", "Reaction ~ Days + Days2 + (1 | Subject)"), {}, ["rank deficient", "Days2", "Days"]),
    (("collinear", "Reaction ~ Days + const + (1 | Subject)"), {}, ["rank deficient", "const", "constant"]),
    (("sleepstudy", "Reaction ~ Days"), {}, ["random-effects"]),
]


@pytest.mark.parametrize("args,named,needles", ERRORS)
def test_errors_name_the_culprit(con, args, named, needles):
    con.execute("CREATE TABLE one_group AS SELECT * FROM sleepstudy WHERE Subject = 308")
    con.execute("CREATE TABLE all_null AS SELECT Reaction, NULL::DOUBLE AS Days, Subject FROM sleepstudy")
    con.execute("CREATE TABLE collinear AS SELECT *, 2 * Days + 1 AS Days2, 7.5 AS const FROM sleepstudy")
    with pytest.raises(duckdb.Error) as e:
        fit(con, *args, **named)
    msg = str(e.value)
    for needle in needles:
        assert needle in msg, (needle, msg)
    # The connection is still usable after an error.
    assert con.execute("SELECT 42").fetchone()[0] == 42


def test_unknown_option_in_aggregate(con):
    with pytest.raises(duckdb.Error, match="unknown option 'methd'"):
        con.execute("SELECT lmm_fit_agg(t, 'Reaction ~ Days + (1 | Subject)', {'methd': 'ML'}) FROM sleepstudy t").fetchall()


def test_nested_spellings_agree(con):
    a = fit(con, "pastes", "strength ~ 1 + (1 | batch/cask)")
    b = fit(con, "pastes", "strength ~ 1 + (1 | batch) + (1 | cask:batch)")
    assert_same(a, b, rel=1e-9)
    assert {r["group_var"] for r in a if r["effect"] == "ran_pars"} == {"cask:batch", "batch", "Residual"}
    # written the other way round, the interaction factor takes that name and its labels that order
    c = fit(con, "pastes", "strength ~ 1 + (1 | batch) + (1 | batch:cask)")
    assert abs(fit_value(a, "REMLcrit") - fit_value(c, "REMLcrit")) < 1e-9
    assert "A:a" in {r["level"] for r in c if r["group_var"] == "batch:cask"}
    assert "a:A" in {r["level"] for r in a if r["group_var"] == "cask:batch"}


def test_crossed_output_has_every_factor(con):
    res = fit(con, "penicillin", "diameter ~ 1 + (1 | plate) + (1 | sample)")
    assert fit_value(res, "ngroups", "plate") == 24
    assert fit_value(res, "ngroups", "sample") == 6
    assert len([r for r in res if r["effect"] == "ran_vals" and r["group_var"] == "plate"]) == 24
    assert len([r for r in res if r["effect"] == "ran_vals" and r["group_var"] == "sample"]) == 6


def test_crossed_with_slopes_and_aggregate_merge(con):
    # Several factors with slopes; another row order changes the result only
    # within the crossed optimizer's stopping rule (projected gradient below
    # 1e-9 |deviance|): the two orders take different BFGS paths and stop
    # ~1e-8 apart in relative terms on this model, whose 3-level `site`
    # leaves a flat direction. (One-factor fits stop at 1e-13 and agree to 1e-9.)
    f = "y ~ x1 + (1 + x1 | g) + (1 | site)"
    a = fit(con, "synthetic_small", f)
    assert fit_value(a, "converged") == 1
    con.execute("CREATE TABLE syn_perm AS SELECT * FROM synthetic_small ORDER BY x2")
    b = fit(con, "syn_perm", f)
    assert_same(a, b, rel=1e-6)
