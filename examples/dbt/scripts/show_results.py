"""Print the models that `dbt build` (scripts/dbt_build.sh) left in
examples/dbt/target/lmm_example.duckdb: the stored model's size, the fixed
effects, four of the scored rows (two seen pigs, the unseen pig 9999 at two
times) and the largest relative difference between lmm_predict and the
plain-SQL scoring.

    .venv/bin/python examples/dbt/scripts/show_results.py
"""
import pathlib

import duckdb

DATABASE = pathlib.Path(__file__).resolve().parents[1] / "target" / "lmm_example.duckdb"

con = duckdb.connect(str(DATABASE), read_only=True)
con.sql("SELECT model_id, octet_length(model) AS model_bytes FROM lmm_dietox_model").show()
con.sql("SELECT term, round(estimate, 6) AS estimate, round(std_error, 6) AS std_error FROM lmm_dietox_fixef").show()
con.sql("""SELECT score_id, Pig, Time, pig_in_fit, round(pred_population, 4) AS pred_population,
                  round(pred_conditional, 4) AS pred_conditional
           FROM lmm_dietox_scored WHERE score_id IN (1, 3, 9, 12) ORDER BY score_id""").show()
con.sql("""SELECT max(abs(p.pred_population - s.pred_population) / abs(s.pred_population)) AS max_rel_diff_population,
                  max(abs(p.pred_conditional - s.pred_conditional) / abs(s.pred_conditional)) AS max_rel_diff_conditional
           FROM lmm_dietox_scored p JOIN lmm_dietox_scored_sql s USING (score_id)""").show()
