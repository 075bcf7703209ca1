"""Functions in the formula (issue 13, first part): I(), log() and the other
functions of one number, factor()/C(), offset(), a function of the response.

No R is installed here, so the reference is the same model fitted to columns
computed in SQL beforehand: a fit of `log(Reaction) ~ Days + I(Days^2)` must
equal, to the last digits, the fit of `lr ~ Days + d2` over a table where
lr = ln(Reaction) and d2 = Days², with R's names in place of the columns'
(the numerics of such fits are checked against lme4 elsewhere). Predictions
must apply the same transformations to new rows, offsets included."""
import math

import duckdb
import pytest

from conftest import rows


def table(con, sql):
    return {(r["effect"], r["group_var"], r["level"], r["term"]): r for r in rows(con, sql)}


def assert_same(got, want, rename):
    """Every row of `want` (names mapped by `rename`) is in `got` with equal numbers."""
    def name(term):
        for old, new in rename.items():
            for sep in ("", "__", "."):  # a coefficient, sd__x / var__x, cor__(Intercept).x
                if term == old or (sep and term.endswith(sep + old)):
                    return term[: len(term) - len(old)] + new
        return term

    mapped = {}
    for (effect, group, level, term), r in want.items():
        mapped[(effect, group, level, name(term) if term else term)] = r
    assert sorted(got, key=str) == sorted(mapped, key=str)
    for k, w in mapped.items():
        g = got[k]
        for col in ("estimate", "std_error", "statistic", "df", "p_value"):
            a, b = g.get(col), w.get(col)
            if a is None or b is None:
                assert a is None and b is None, (k, col, a, b)
            else:
                assert abs(a - b) <= 1e-9 * max(1.0, abs(b)), (k, col, a, b)


def test_functions_of_columns_and_of_the_response(con):
    got = table(con, "SELECT * FROM lmm_fit('sleepstudy', 'log(Reaction) ~ Days + I(Days^2) + (Days | Subject)')")
    con.execute("CREATE TABLE s2 AS SELECT *, ln(Reaction) AS lr, Days * Days AS d2 FROM sleepstudy")
    want = table(con, "SELECT * FROM lmm_fit('s2', 'lr ~ Days + d2 + (Days | Subject)')")
    assert_same(got, want, {"d2": "I(Days^2)"})


@pytest.mark.parametrize("fn,sql", [("log", "ln(X)"), ("log2", "log2(X)"), ("log10", "log10(X)"), ("log1p", "ln(1 + X)"),
                                    ("exp", "exp(X)"), ("sqrt", "sqrt(X)"), ("abs", "abs(X)")])
def test_each_function(con, fn, sql):
    con.execute(f"CREATE TABLE t AS SELECT Subject, Reaction, CASE WHEN '{fn}' = 'abs' THEN Days - 4.5 ELSE Days + 0.5 END AS x, {sql.replace('X', '(Days - 4.5)') if fn == 'abs' else sql.replace('X', '(Days + 0.5)')} AS fx FROM sleepstudy")
    got = table(con, f"SELECT * FROM lmm_fit('t', 'Reaction ~ {fn}(x) + (1 | Subject)')")
    want = table(con, "SELECT * FROM lmm_fit('t', 'Reaction ~ fx + (1 | Subject)')")
    assert_same(got, want, {"fx": f"{fn}(x)"})


def test_arithmetic_inside_i_and_random_side(con):
    got = table(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ I(Days * 2 - 1) + (I(Days / 10) | Subject)')")
    con.execute("CREATE TABLE t AS SELECT *, Days * 2 - 1 AS a, Days / 10 AS b FROM sleepstudy")
    want = table(con, "SELECT * FROM lmm_fit('t', 'Reaction ~ a + (b | Subject)')")
    # R's deparse spaces '+', '-' and '*', not '/' or '^'
    assert_same(got, want, {"a": "I(Days * 2 - 1)", "b": "I(Days/10)"})


def test_factor_of_a_number_and_c(con):
    got = table(con, "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ factor(Days) + (1 | Subject)')")
    con.execute("CREATE TABLE t AS SELECT *, Days::VARCHAR AS dayf FROM sleepstudy")
    want = table(con, "SELECT * FROM lmm_fit('t', 'Reaction ~ dayf + (1 | Subject)')")
    # numeric levels sort as numbers (R's factor of a number), text ones as text:
    # only the names differ, 'dayf1' -> 'factor(Days)1'
    rename = {f"dayf{d}": f"factor(Days){d}" for d in range(10)}
    assert_same(got, want, rename)
    names = [k[3] for k in got if k[0] == "fixed"]
    assert names[:3] == ["(Intercept)", "factor(Days)1", "factor(Days)2"], names
    c = table(con, "SELECT * FROM lmm_fit('dietox', 'Weight ~ Time + C(Evit) + (1 | Pig)')")
    assert any(k[3].startswith("C(Evit)") for k in c), sorted(c)


def test_offset_is_the_response_minus_the_offset_and_prediction_adds_it(con):
    con.execute("CREATE TABLE t AS SELECT *, Days * 3.5 AS o FROM sleepstudy")
    got = table(con, "SELECT * FROM lmm_fit('t', 'Reaction ~ Days + offset(o) + (1 | Subject)')")
    con.execute("CREATE TABLE t2 AS SELECT *, Reaction - o AS r2 FROM t")
    want = table(con, "SELECT * FROM lmm_fit('t2', 'r2 ~ Days + (1 | Subject)')")
    assert_same(got, want, {})
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'Reaction ~ Days + offset(o) + (1 | Subject)') AS model FROM t")
    con.execute("CREATE TABLE m2 AS SELECT lmm_model_agg(t, 'r2 ~ Days + (1 | Subject)') AS model FROM t2 t")
    p = con.execute("""SELECT lmm_predict(m.model, t), lmm_predict(m2.model, t2) + t.o,
                              lmm_predict(m.model, t, re := false), lmm_predict(m2.model, t2, re := false) + t.o
                       FROM t JOIN t2 USING (Subject, Days), m, m2 ORDER BY Subject, Days""").fetchall()
    assert len(p) == 180
    for a, b, c, d in p:
        assert abs(a - b) <= 1e-9 * abs(b) and abs(c - d) <= 1e-9 * abs(d), (a, b, c, d)


def test_prediction_applies_the_transformations(con):
    con.execute("CREATE TABLE m AS SELECT lmm_model_agg(t, 'log(Reaction) ~ I(Days^2) + log1p(Days) + (1 | Subject)') AS model FROM sleepstudy t")
    con.execute("CREATE TABLE s2 AS SELECT *, Days * Days AS d2, ln(1 + Days) AS l1 FROM sleepstudy")
    con.execute("CREATE TABLE m2 AS SELECT lmm_model_agg(t, 'lr ~ d2 + l1 + (1 | Subject)') AS model FROM (SELECT *, ln(Reaction) AS lr FROM s2) t")
    # a new row brings only the columns the formula names (not the response)
    p = con.execute("""SELECT lmm_predict(m.model, {'Days': d.Days, 'Subject': d.Subject}), lmm_predict(m2.model, d)
                       FROM s2 d, m, m2""").fetchall()
    assert len(p) == 180
    for a, b in p:
        assert abs(a - b) <= 1e-9 * abs(b), (a, b)
    # log of a negative number is NaN, as in R: no prediction
    assert con.execute("SELECT lmm_predict(model, {'Days': -3, 'Subject': 308}) FROM m").fetchone()[0] is None


@pytest.mark.parametrize("formula,message", [
    ("Reaction ~ ns(Days, 2) + (1 | Subject)", "'ns()' is not supported yet"),
    ("Reaction ~ foo(Days) + (1 | Subject)", "unknown function 'foo()'"),
    ("Reaction ~ Days^2 + (1 | Subject)", "write I(x^2) for a power"),
    ("Reaction ~ Days + (offset(Days) | Subject)", "offset() cannot be part of a random-effects term"),
    ("Reaction ~ log(s) + (1 | Subject)", "computes with column 's', which has type VARCHAR"),
    ("factor(Reaction) ~ Days + (1 | Subject)", "must be numeric, not a factor"),
])
def test_errors_name_the_culprit(con, formula, message):
    con.execute("CREATE TABLE t AS SELECT *, Subject::VARCHAR AS s FROM sleepstudy")
    with pytest.raises(duckdb.Error) as e:
        con.execute(f"SELECT * FROM lmm_fit('t', '{formula}')").fetchall()
    assert message in str(e.value), str(e.value)


def test_readme_model_language_examples_run(con):
    import pathlib
    import re
    text = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = text[text.index("### Model language"):text.index("### Errors")]
    blocks = re.findall(r"```sql\n(.*?)```", section, re.S)
    assert blocks
    for block in blocks:
        for stmt in [s.strip() for s in block.split(";\n") if s.strip()]:
            assert con.execute(stmt.rstrip(";")).fetchall()
