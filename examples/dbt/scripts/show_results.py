"""Print the models that `dbt build` (scripts/dbt_build.sh) left in
examples/dbt/target/lmm_example.duckdb: the fixed effects and four of the
scored rows (two seen pigs, the unseen pig 9999 at two times).

    .venv/bin/python examples/dbt/scripts/show_results.py
"""
import pathlib

import duckdb

DATABASE = pathlib.Path(__file__).resolve().parents[1] / "target" / "lmm_example.duckdb"

con = duckdb.connect(str(DATABASE), read_only=True)
con.sql("SELECT term, round(estimate, 6) AS estimate, round(std_error, 6) AS std_error FROM lmm_dietox_fixef").show()
con.sql("""SELECT score_id, Pig, Time, pig_in_fit, round(pred_population, 4) AS pred_population,
                  round(pred_conditional, 4) AS pred_conditional
           FROM lmm_dietox_scored WHERE score_id IN (1, 3, 9, 12) ORDER BY score_id""").show()
