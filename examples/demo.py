"""The main job: load lmm into an in-memory DuckDB, fit the dietox,
sleepstudy, penicillin (crossed) and pastes (nested) models on the bundled
sample data, store one fit and predict with it, test and bound its
parameters from the stored model (LRT, profile intervals, Kenward-Roger
ANOVA), fit the dietox model again from statistics computed per shard and
merged, and print the results.
Extra arguments are SQL queries to run instead of the built-in ones."""
import pathlib
import sys

import duckdb

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXT = ROOT / "build" / "release" / "lmm.duckdb_extension"
DATA = ROOT / "tests" / "fixtures" / "data"

con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
con.execute(f"LOAD '{EXT}'")
for name in ["dietox", "sleepstudy", "penicillin", "pastes"]:
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_csv('{DATA / name}.csv')")

COMPACT = "SELECT effect, group_var, level, term, round(estimate, 6) AS estimate, round(std_error, 6) AS std_error, round(p_value, 6) AS p_value FROM "
queries = sys.argv[1:] or [
    # lme4 formula, REML; BLUPs left out for brevity
    COMPACT + "lmm_fit('dietox', 'Weight ~ Time + (1 + Time | Pig)', ranef := false)",
    # statsmodels-style arguments: the same model; three BLUP rows
    COMPACT + "lmm_fit('dietox', 'Weight ~ Time', 'Pig', ['Time']) WHERE effect = 'ran_vals' AND level IN ('4601', '4602') ",
    # uncorrelated random intercept and slope, ML
    COMPACT + "lmm_fit('sleepstudy', 'Reaction ~ Days + (Days || Subject)', method := 'ML', ranef := false)",
    # the aggregate: one model per segment with GROUP BY
    """SELECT early, r.term, round(r.estimate, 4) AS estimate FROM (
         SELECT Days < 5 AS early, unnest(lmm_fit_agg(t, 'Reaction ~ Days + (1 | Subject)')) AS r
         FROM sleepstudy t GROUP BY early)
       WHERE r.effect = 'fixed' ORDER BY ALL""",
    # crossed and nested random effects
    COMPACT + "lmm_fit('penicillin', 'diameter ~ 1 + (1 | plate) + (1 | sample)') WHERE effect <> 'ran_vals'",
    COMPACT + "lmm_fit('pastes', 'strength ~ 1 + (1 | batch/cask)') WHERE effect <> 'ran_vals'",
    # a stored model: predictions with and without the pig's BLUPs, for a pig
    # of the fit and for one it never saw (population level)
    "CREATE TABLE pig_model AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time | Pig)') AS model FROM dietox t",
    """SELECT n.Pig, n.Time, round(lmm_predict(m.model, n), 4) AS conditional,
              round(lmm_predict(m.model, n, re := false), 4) AS population
       FROM (VALUES (4601, 13), (4602, 13), (9999, 13)) n(Pig, Time), pig_model m""",
    # inference from the stored model, no second pass over the rows: is the
    # intercept-slope correlation needed (lme4's anova(m0, m))? profile
    # intervals (lme4's confint), a Kenward-Roger ANOVA (lmerTest's anova)
    "CREATE TABLE pig_model0 AS SELECT lmm_model_agg(t, 'Weight ~ Time + (Time || Pig)') AS model FROM dietox t",
    "SELECT * FROM lmm_lrt((SELECT model FROM pig_model0), (SELECT model FROM pig_model))",
    "SELECT * FROM lmm_confint((SELECT model FROM pig_model))",
    "SELECT * FROM lmm_anova((SELECT model FROM pig_model), type := 3, ddf := 'Kenward-Roger')",
    # statistics as values: one per shard (the shards split the pigs' rows),
    # merged exactly and fitted: the fixed effects of the first query again
    """CREATE TABLE shards AS SELECT hash(Time) % 3 AS shard,
              lmm_stats_agg(t, 'Weight ~ Time + (1 + Time | Pig)') AS stats FROM dietox t GROUP BY shard""",
    "SELECT shard, octet_length(stats) AS bytes FROM shards ORDER BY shard",
    COMPACT + "lmm_fit_stats((SELECT lmm_stats_merge(stats) FROM shards), ranef := false) WHERE effect = 'fixed'",
]
for q in queries:
    print(q.strip())
    rel = con.sql(q)
    if rel is not None:
        rel.show(max_width=160, max_rows=60)
