"""The Python package (pip install ./python): lmm.connect / load / fit / model /
stats / merge_stats / fit_stats / model_stats on pandas, Arrow and duckdb
relations, against the SQL functions on the same rows."""
import pathlib

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

import lmm

DATA = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "data"
F = "Weight ~ Time + (Time | Pig)"


@pytest.fixture(scope="module")
def dietox():
    return pd.read_csv(DATA / "dietox.csv")


def test_the_package_carries_its_extension():
    path = pathlib.Path(lmm.extension_path())
    assert path.exists() and path.parent == pathlib.Path(lmm.__file__).parent
    con = lmm.connect()
    assert con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = 'lmm_fit_agg'").fetchall()[0][0] > 0


def test_load_into_a_connection():
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    lmm.load(con)
    con.execute(f"CREATE TABLE s AS SELECT * FROM read_csv('{DATA / 'sleepstudy.csv'}')")
    assert con.execute("SELECT count(*) FROM lmm_fit('s', 'Reaction ~ Days + (1 | Subject)') WHERE effect = 'fixed'").fetchall()[0][0] == 2
    plain = duckdb.connect()
    with pytest.raises(RuntimeError, match="unsigned"):
        lmm.load(plain)


def test_fit_takes_pandas_arrow_and_relations(dietox):
    con = lmm.connect()
    con.execute(f"CREATE TABLE d AS SELECT * FROM read_csv('{DATA / 'dietox.csv'}')")
    sql = con.execute(f"SELECT * FROM lmm_fit('d', '{F}')").df()
    for data in [dietox, pa.Table.from_pandas(dietox), con.sql("SELECT * FROM d"), "d"]:
        t = lmm.fit(data, F, con=con)
        assert list(t.columns) == list(sql.columns)
        pd.testing.assert_series_equal(t.estimate, sql.estimate, rtol=1e-12)
    ml = lmm.fit(dietox, F, method="ML", ddf="Satterthwaite")
    ref = con.execute(f"SELECT * FROM lmm_fit('d', '{F}', method := 'ML', ddf := 'Satterthwaite')").df()
    pd.testing.assert_series_equal(ml.df, ref.df, rtol=1e-12)
    g = lmm.fit(dietox, "Weight ~ Time", grp="Pig", re=["Time"])
    pd.testing.assert_series_equal(g.estimate, sql.estimate, rtol=1e-12)


def test_model_and_statistics_values(dietox):
    m = lmm.model(dietox, F)
    con = lmm.connect()
    assert con.execute("SELECT count(*) FROM lmm_tidy(?::BLOB)", [m]).fetchall()[0][0] == len(lmm.fit(dietox, F))
    parts = [lmm.stats(dietox[dietox.Pig % 3 == k], F) for k in range(3)] + [lmm.stats(dietox[dietox.Pig < 0], F)]
    assert parts[-1] is None
    merged = lmm.merge_stats(parts)
    pd.testing.assert_series_equal(lmm.fit_stats(merged).estimate, lmm.fit(dietox, F).estimate, rtol=1e-9)
    assert lmm.model_stats(merged)[:8] == b"LMMMODEL"
    with pytest.raises(duckdb.Error, match="Nope"):
        lmm.fit(dietox, "Weight ~ Nope + (1 | Pig)")


def test_weights_reach_every_entry_point(dietox):
    d = dietox.assign(w=1 + 0.5 * (dietox.Time * 1.3 + dietox.Pig / 7).map(__import__("math").sin))
    con = lmm.connect()
    con.register("dw", d)
    sql = con.execute(f"SELECT * FROM lmm_fit('dw', '{F}', weights := 'w')").df()
    pd.testing.assert_series_equal(lmm.fit(d, F, weights="w").estimate, sql.estimate, rtol=1e-12)
    plain = lmm.fit(d, F)
    assert abs(plain.estimate - sql.estimate).max() > 1e-6, "the weights change the fit"
    m = lmm.model(d, F, weights="w")
    assert con.execute("SELECT estimate FROM lmm_tidy(?::BLOB) WHERE term = 'logLik'", [m]).fetchall()[0][0] == \
        sql[sql.term == "logLik"].estimate.iloc[0]
    parts = [lmm.stats(d[d.Pig % 2 == k], F, weights="w") for k in range(2)]
    pd.testing.assert_series_equal(lmm.fit_stats(lmm.merge_stats(parts)).estimate, sql.estimate, rtol=1e-9)


def test_contrasts_reach_fit_and_model(dietox):
    f = "Weight ~ Time + Evit + (1 | Pig)"
    con = lmm.connect()
    con.register("dc", dietox)
    sql = con.execute(f"SELECT * FROM lmm_fit('dc', '{f}', contrasts := {{'Evit': 'sum'}})").df()
    got = lmm.fit(dietox, f, contrasts={"Evit": "sum"})
    pd.testing.assert_series_equal(got.estimate, sql.estimate, rtol=1e-12)
    assert {"Evit1", "Evit2"} <= set(got.term)
    m = lmm.model(dietox, f, contrasts={"Evit": "helmert"})
    terms = [r[0] for r in con.execute("SELECT term FROM lmm_tidy(?::BLOB) WHERE effect = 'fixed'", [m]).fetchall()]
    assert terms == ["(Intercept)", "Time", "Evit1", "Evit2"]
