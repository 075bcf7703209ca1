"""Shared fixtures for the SQL-level tests: a DuckDB connection with lmm loaded."""
import json
import os
import pathlib

import duckdb
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXT = ROOT / "build" / "release" / "lmm.duckdb_extension"
FIXTURES = ROOT / "tests" / "fixtures"


def connect(database=":memory:", **config):
    cfg = {"allow_unsigned_extensions": "true"}
    cfg.update(config)
    con = duckdb.connect(database, config=cfg)
    con.execute(f"LOAD '{EXT}'")
    return con


def load_csv(con, table, dataset):
    path = FIXTURES / "data" / f"{dataset}.csv"
    con.execute(f"CREATE OR REPLACE TABLE {table} AS SELECT * FROM read_csv('{path}')")


def fixture(model):
    return json.loads((FIXTURES / f"{model}.json").read_text())


def rows(con, sql, params=None):
    """Run a query returning the tidy table; give a list of dicts."""
    cur = con.execute(sql, params or [])
    names = [d[0] for d in cur.description]
    return [dict(zip(names, r)) for r in cur.fetchall()]


def fit_value(result, term, group=None):
    for r in result:
        if r["effect"] == "fit" and r["term"] == term and (group is None or r["group_var"] == group):
            return r["estimate"]
    raise KeyError(term)


@pytest.fixture
def con():
    c = connect()
    for name in ["dietox", "sleepstudy", "sitka", "dyestuff", "dyestuff2", "orthodont", "synthetic_small",
                 "penicillin", "pastes"]:
        load_csv(c, name, name)
    load_csv(c, "score", "score_parentedu_byclass")
    # lme4's cake with its factors as text (the README's contrasts example)
    c.execute(
        f"CREATE TABLE cake AS SELECT CAST(replicate AS VARCHAR) AS replicate, recipe, CAST(temperature AS VARCHAR) AS temperature, "
        f"CAST(angle AS DOUBLE) AS angle FROM read_csv('{FIXTURES / 'data' / 'cake.csv'}', all_varchar = true)"
    )
    yield c
    c.close()
