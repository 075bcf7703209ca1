"""Issue 6: exact statistics whatever the data's offset, scale, row order or thread count."""
import math

import pytest

from conftest import connect, load_csv, rows, fit_value

F = "Reaction ~ Days + (Days | Subject)"


def fit(con, table, formula=F, method="REML"):
    return rows(con, "SELECT * FROM lmm_fit(?, ?, method := ?)", [table, formula, method])


def est(res, effect, term, group=None):
    for r in res:
        if r["effect"] == effect and r["term"] == term and (group is None or r["group_var"] == group):
            return r["estimate"]
    raise KeyError(term)


def rel(a, b):
    return abs(a - b) / max(abs(a), abs(b), 1e-300)


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("offset", [1e6, 1.7e9])
def test_covariate_offset(con, method, offset):
    con.execute(f"CREATE TABLE shifted AS SELECT Reaction, Days + {offset}::DOUBLE AS Days, Subject FROM sleepstudy")
    base, sh = fit(con, "sleepstudy", method=method), fit(con, "shifted", method=method)
    crit = "REMLcrit" if method == "REML" else "deviance"
    assert abs(fit_value(base, crit) - fit_value(sh, crit)) < 1e-6
    assert abs(fit_value(base, "logLik") - fit_value(sh, "logLik")) < 1e-6
    assert rel(est(base, "fixed", "Days"), est(sh, "fixed", "Days")) < 1e-6
    assert rel(fit_value(base, "sigma"), fit_value(sh, "sigma")) < 1e-6
    assert rel(est(base, "ran_pars", "var__Days"), est(sh, "ran_pars", "var__Days")) < 1e-6
    assert fit_value(sh, "singular") == 0


@pytest.mark.parametrize("method", ["REML", "ML"])
def test_epoch_seconds(con, method):
    con.execute("CREATE TABLE epoch AS SELECT Reaction, (1700000000 + 86400 * Days)::BIGINT AS Days, Subject FROM sleepstudy")
    base, ep = fit(con, "sleepstudy", method=method), fit(con, "epoch", method=method)
    u = 86400.0
    if method == "REML":
        # Rescaling an X column by u moves log|R_X|^2, hence REMLcrit, by exactly 2 log(u).
        assert abs(fit_value(base, "REMLcrit") + 2 * math.log(u) - fit_value(ep, "REMLcrit")) < 1e-6
        assert abs(fit_value(base, "logLik") - math.log(u) - fit_value(ep, "logLik")) < 1e-6
    else:
        assert abs(fit_value(base, "deviance") - fit_value(ep, "deviance")) < 1e-6
        assert abs(fit_value(base, "logLik") - fit_value(ep, "logLik")) < 1e-6
    assert rel(est(base, "fixed", "Days") / u, est(ep, "fixed", "Days")) < 1e-6
    assert rel(fit_value(base, "sigma"), fit_value(ep, "sigma")) < 1e-6
    assert rel(est(base, "ran_pars", "var__Days") / u**2, est(ep, "ran_pars", "var__Days")) < 1e-6


@pytest.mark.parametrize("method", ["REML", "ML"])
@pytest.mark.parametrize("shift,scale", [(1e9, 1.0), (0.0, 1e-6), (0.0, 1e6)])
def test_response_shift_and_scale(con, method, shift, scale):
    con.execute(f"CREATE TABLE ty AS SELECT (Reaction * {scale}::DOUBLE) + {shift}::DOUBLE AS Reaction, Days, Subject FROM sleepstudy")
    base, t = fit(con, "sleepstudy", method=method), fit(con, "ty", method=method)
    n, p = 180, 2
    crit = "REMLcrit" if method == "REML" else "deviance"
    m = (n - p) if method == "REML" else n
    expected = fit_value(base, crit) + m * math.log(scale**2)
    assert rel(expected, fit_value(t, crit)) < 1e-6
    assert rel(est(base, "fixed", "(Intercept)") * scale + shift, est(t, "fixed", "(Intercept)")) < 1e-6
    assert rel(est(base, "fixed", "Days") * scale, est(t, "fixed", "Days")) < 1e-6
    for r in base:
        if r["effect"] == "fixed":
            s = [x for x in t if x["effect"] == "fixed" and x["term"] == r["term"]][0]
            assert rel(r["std_error"] * scale, s["std_error"]) < 1e-6
        if r["effect"] == "ran_pars" and r["term"].startswith(("var__", "cov__")):
            assert rel(r["estimate"] * scale**2, est(t, "ran_pars", r["term"], r["group_var"])) < 1e-6
    assert rel(fit_value(base, "sigma") * scale, fit_value(t, "sigma")) < 1e-6


def all_estimates(res):
    return {(r["effect"], r["group_var"], r["level"], r["term"], c): r[c]
            for r in res for c in ["estimate", "std_error"] if r[c] is not None and r["term"] != "iterations"}


def assert_close_all(a, b, tol=1e-9):
    """Every estimate and SE within tol relative. Values that can sit near 0 are
    measured against their natural scale: a BLUP against the largest |value| of
    its term, a covariance against sqrt(var_a var_b), a correlation against 1."""
    ea, eb = all_estimates(a), all_estimates(b)
    assert ea.keys() == eb.keys()
    scale = {}
    for (effect, group, level, term, col), v in ea.items():
        key = (effect, group, term, col)
        scale[key] = max(scale.get(key, 0.0), abs(v))
    def natural(k):
        effect, group, _, term, col = k
        if effect == "ran_vals":
            return scale[(effect, group, term, col)]
        if term.startswith("cor__"):
            return 1.0
        if term.startswith("cov__"):
            ta, tb = term[5:].rsplit(".", 1) if term.count(".") == 1 else term[5:].split(".", 1)
            va = ea.get((effect, group, None, f"var__{ta}", col), 0.0)
            vb = ea.get((effect, group, None, f"var__{tb}", col), 0.0)
            return (abs(va) * abs(vb)) ** 0.5
        return 0.0

    for k in ea:
        s = natural(k)
        # The SEs of variance parameters come from a Hessian taken as differences
        # of the gradient over a relative step of 1e-4: the rounding-level
        # differences between the statistics of two row orders reach them
        # magnified about 1e4 times (measured: 2e-9 relative).
        t = max(tol, 1e-7) if k[0] == "ran_pars" and k[4] == "std_error" else tol
        assert abs(ea[k] - eb[k]) <= t * max(abs(ea[k]), abs(eb[k]), s, 1e-12), (k, ea[k], eb[k])


def test_row_order_and_threads_dietox(con):
    f = "Weight ~ Time + (Time | Pig)"
    base = fit(con, "dietox", f)
    for seed, order in [(0.1, "random()"), (0.2, "random()"), (0.0, "Time DESC, Pig DESC")]:
        con.execute(f"SELECT setseed({seed})")
        con.execute(f"CREATE OR REPLACE TABLE d_perm AS SELECT * FROM dietox ORDER BY {order}")
        assert_close_all(base, fit(con, "d_perm", f))
    con.execute("SET threads = 1")
    one = fit(con, "dietox", f)
    con.execute("RESET threads")
    assert_close_all(base, one)


def test_threads_on_a_table_that_is_split(con):
    # 600k rows span several row groups, so the aggregate really runs in parallel.
    # Group intercepts and slopes vary (a well-determined optimum: on a flat
    # likelihood, say a slope variance of 0, any optimiser path is as good as another).
    con.execute("""CREATE TABLE big AS
        SELECT i % 3000 AS g, (i * 7919 % 1000) / 100.0 AS x,
               ((i % 3000) * 13 % 97) * 0.05
               + (i * 7919 % 1000) / 100.0 * (0.5 + ((i % 3000) * 37 % 101) / 200.0)
               + ((i * 104729) % 1013) / 1013.0 AS y
        FROM range(600000) t(i)""")
    f = "y ~ x + (x | g)"
    con.execute("SET threads = 1")
    one = fit(con, "big", f)
    con.execute("SET threads = 2")
    two = fit(con, "big", f)
    con.execute("RESET threads")
    assert_close_all(one, two)
