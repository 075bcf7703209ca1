"""The main job: fit the dietox and sleepstudy models of the README in an
in-memory DuckDB with the lmm extension loaded, and print the tidy tables."""
import pathlib
import sys

import duckdb

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXT = ROOT / "build" / "release" / "lmm.duckdb_extension"
DATA = ROOT / "tests" / "fixtures" / "data"

con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{EXT}'")
for name in ["dietox", "sleepstudy"]:
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv('{DATA / name}.csv')")

queries = sys.argv[1:] or [
    "SELECT * FROM lmm_fit('dietox', 'Weight ~ Time + (1 + Time | Pig)', ranef := false)",
    "SELECT * FROM lmm_fit('dietox', 'Weight ~ Time', 'Pig', ['Time']) WHERE effect = 'ran_vals' LIMIT 6",
    "SELECT * FROM lmm_fit('sleepstudy', 'Reaction ~ Days + (Days || Subject)', method := 'ML', ranef := false)",
]
for q in queries:
    print(q)
    con.sql(q).show(max_width=200, max_rows=60)
