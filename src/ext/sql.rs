//! SQL run at LOAD: the `lmm_fit` table macro over `lmm_fit_agg`.

use std::ffi::CString;
use std::mem::MaybeUninit;

use libduckdb_sys as ffi;

/// `lmm_fit(tname, formula, grp := NULL, re := NULL, method := 'REML', ranef := true, ddf := 'none', weights := NULL, contrasts := NULL)`.
///
/// A recursive query that DuckDB can interrupt (see `jobs`): the anchor reads
/// the rows with `lmm_accumulate_agg`; each step polls the fit running on a
/// worker thread for at most 100 ms; the last row's job gives the table.
///
/// `grp` and `re` (statsmodels style) are passed as options (`re` a list
/// joined by U+001F, or one string such as `'a + b'`); the aggregate adds the
/// bar `(1 + a + b | grp)` with every name quoted: they are never pasted into
/// the formula text. The row alias is unusual on purpose: a bare identifier
/// is a column before it is a table, so a column named like the alias would win.
macro_rules! interruptible_fit {
    ($name:literal, $poll:literal, $last:literal) => {
        concat!(
            "CREATE OR REPLACE MACRO ",
            $name,
            "(tname, formula, grp := NULL, re := NULL, method := 'REML', ranef := true, ddf := 'none', weights := NULL, contrasts := NULL) AS TABLE
WITH RECURSIVE __lmm_steps(__lmm_job, __lmm_running) AS (
    SELECT lmm_accumulate_agg(
               __lmm_row,
               formula,
               {'method': method, 'ranef': ranef, 'ddf': ddf, 'grp': CAST(grp AS VARCHAR),
                're': COALESCE(array_to_string(TRY_CAST(re AS VARCHAR[]), chr(31)), CAST(re AS VARCHAR)),
                'weights': CAST(weights AS VARCHAR), 'contrasts': CAST(contrasts AS VARCHAR)}),
           true
    FROM query_table(tname) AS __lmm_row
    UNION ALL
    SELECT __lmm_job, ",
            $poll,
            "(__lmm_job) FROM __lmm_steps WHERE __lmm_running
)
",
            $last,
            " FROM __lmm_steps WHERE NOT __lmm_running"
        )
    };
}

pub const LMM_FIT_MACRO: &str = interruptible_fit!(
    "lmm_fit",
    "lmm_fit_poll",
    "SELECT unnest(lmm_fit_result(__lmm_job), recursive := true)"
);

/// `lmm_model(tname, formula, ...)`: `lmm_fit`'s arguments, one row with the
/// model value in `model` (what `lmm_model_agg` gives), interruptible alike.
pub const LMM_MODEL_MACRO: &str = interruptible_fit!(
    "lmm_model",
    "lmm_model_poll",
    "SELECT lmm_model_result(__lmm_job) AS model"
);

/// `lmm_predict(model, new_row, re := true)`: the scalar function with `re` defaulted.
pub const LMM_PREDICT_MACRO: &str = "\
CREATE OR REPLACE MACRO lmm_predict(model, new_row, re := true) AS lmm_predict_impl(model, new_row, re)";

/// `lmm_tidy(model)`: the tidy table stored in a model value, as `lmm_fit` returns it.
pub const LMM_TIDY_MACRO: &str = "\
CREATE OR REPLACE MACRO lmm_tidy(model) AS TABLE
SELECT unnest(lmm_model_tidy(model), recursive := true)";

/// `lmm_score(tname, model_table, re := true)`: every row of a table or view
/// with its prediction from the model stored in `model_table`'s `model`
/// column, which must hold exactly one row (else an error saying how many).
/// The model side is joined on a constant key rather than cross-joined:
/// DuckDB's cross product copies a BLOB into every chunk, which for a model
/// of 10⁶ groups costs more than the predictions themselves. The key is the
/// row-count check itself, so the check runs whichever columns are used.
/// Each row travels as one STRUCT column, so no column of the user's (say a
/// `__lmm_key`) can clash with the key.
pub const LMM_SCORE_MACRO: &str = "CREATE OR REPLACE MACRO lmm_score(tname, model_table, re := true) AS TABLE
SELECT unnest(__lmm_s.__lmm_row), lmm_predict_impl(__lmm_m.model, __lmm_s.__lmm_row, re) AS prediction
FROM (SELECT __lmm_t AS __lmm_row, 1 AS __lmm_key FROM query_table(tname) AS __lmm_t) AS __lmm_s
JOIN (SELECT first(model) AS model,
             CASE WHEN count(*) = 1 THEN 1
                  ELSE error('lmm: lmm_score needs exactly one model in ''' || CAST(model_table AS VARCHAR)
                             || ''' (one row with a model column); it has ' || count(*) || ' rows')
             END AS __lmm_key
      FROM query_table(model_table)) AS __lmm_m USING (__lmm_key)";

/// Run one statement on `con`; the error message if it fails.
pub unsafe fn execute(con: ffi::duckdb_connection, sql: &str) -> Result<(), String> {
    let c_sql = CString::new(sql).map_err(|e| e.to_string())?;
    unsafe {
        let mut result = MaybeUninit::<ffi::duckdb_result>::zeroed();
        let state = ffi::duckdb_query(con, c_sql.as_ptr(), result.as_mut_ptr());
        let outcome = if state == ffi::DuckDBSuccess {
            Ok(())
        } else {
            let err = ffi::duckdb_result_error(result.as_mut_ptr());
            Err(if err.is_null() {
                "unknown error".to_string()
            } else {
                std::ffi::CStr::from_ptr(err).to_string_lossy().into_owned()
            })
        };
        ffi::duckdb_destroy_result(result.as_mut_ptr());
        outcome
    }
}

/// The in-memory catalog that holds lmm's macros (attached at LOAD, so it is
/// shared by every connection of the database and never written to a file).
pub const CATALOG: &str = "lmm_ext";

/// lmm's macros: name, whether it is a table macro, parameters (with their
/// defaults), and the `CREATE OR REPLACE MACRO` statement of its body.
struct Macro {
    name: &'static str,
    table: bool,
    params: &'static [(&'static str, Option<&'static str>)],
    create: &'static str,
}

const FIT_PARAMS: &[(&str, Option<&str>)] = &[
    ("tname", None),
    ("formula", None),
    ("grp", Some("NULL")),
    ("re", Some("NULL")),
    ("method", Some("'REML'")),
    ("ranef", Some("true")),
    ("ddf", Some("'none'")),
    ("weights", Some("NULL")),
    ("contrasts", Some("NULL")),
];

/// `key␟value` pairs joined by `␞` (NULL values left out), as `inference::run` reads them.
macro_rules! options {
    ($($key:literal),*) => {
        concat!("concat_ws(chr(30)", $(", '", $key, "' || chr(31) || CAST(", $key, " AS VARCHAR)"),*, ")")
    };
}

/// An inference table macro, interruptible as `lmm_fit` is (see `jobs`): the
/// call is deposited (`lmm_inference_start`), polled on a worker thread for at
/// most 100 ms per step, and its table (`inference::run`) unnested with its
/// generic columns named.
macro_rules! inference_macro {
    ($name:literal, $params:literal, $kind:literal, $model:literal, $other:literal, $options:expr, $contrast:literal, $columns:literal) => {
        concat!(
            "CREATE OR REPLACE MACRO ", $name, "(", $params, ") AS TABLE
WITH RECURSIVE __lmm_steps(__lmm_job, __lmm_running) AS (
    SELECT lmm_inference_start('", $kind, "', ", $model, ", ", $other, ", ", $options, ", ", $contrast, "), true
    UNION ALL
    SELECT __lmm_job, lmm_inference_poll(__lmm_job) FROM __lmm_steps WHERE __lmm_running
)
SELECT ", $columns, " FROM (SELECT unnest(lmm_inference_result(__lmm_job)) AS __r FROM __lmm_steps WHERE NOT __lmm_running)"
        )
    };
}

/// `lmm_vcov(model, ddf := NULL)`: Cov(β̂) as rows `term1, term2, covariance`.
pub const LMM_VCOV_MACRO: &str = inference_macro!(
    "lmm_vcov",
    "model, ddf := NULL",
    "vcov",
    "model",
    "NULL",
    options!("ddf"),
    "NULL",
    "__r.t0 AS term1, __r.t1 AS term2, __r.v0 AS covariance"
);

/// `lmm_confint(model, method := 'profile', level := 0.95, nsim := 1000, seed := 0)`.
pub const LMM_CONFINT_MACRO: &str = inference_macro!(
    "lmm_confint", "model, method := 'profile', level := 0.95, nsim := 1000, seed := 0", "confint", "model", "NULL",
    options!("method", "level", "nsim", "seed"), "NULL",
    "__r.t0 AS group_var, __r.t1 AS term, __r.v0 AS estimate, __r.v1 AS conf_low, __r.v2 AS conf_high, __r.t2 AS method"
);

/// `lmm_lrt(model0, model1, refit := true)`: lme4's `anova(m0, m1)`.
pub const LMM_LRT_MACRO: &str = inference_macro!(
    "lmm_lrt", "model0, model1, refit := true", "lrt", "model0", "model1", options!("refit"), "NULL",
    "__r.t0 AS model, CAST(__r.v0 AS INTEGER) AS npar, __r.v1 AS AIC, __r.v2 AS BIC, __r.v3 AS logLik, __r.v4 AS deviance,      __r.v5 AS chisq, CAST(__r.v6 AS INTEGER) AS df, __r.v7 AS p_value"
);

/// `lmm_anova(model, type := 3, ddf := 'Satterthwaite')`: lmerTest's `anova(m, type)`.
pub const LMM_ANOVA_MACRO: &str = inference_macro!(
    "lmm_anova", "model, type := 3, ddf := 'Satterthwaite'", "anova", "model", "NULL", options!("type", "ddf"), "NULL",
    "__r.t0 AS term, __r.v0 AS sum_sq, __r.v1 AS mean_sq, __r.v2 AS num_df, __r.v3 AS den_df, __r.v4 AS f_value, __r.v5 AS p_value"
);

/// `lmm_contrast(model, L, ddf := 'Satterthwaite')`: L a list of MAPs (coefficient → weight).
pub const LMM_CONTRAST_MACRO: &str = inference_macro!(
    "lmm_contrast", "model, L, ddf := 'Satterthwaite'", "contrast", "model", "NULL", options!("ddf"),
    "array_to_string(list_transform(L, lambda __lmm_r: array_to_string(list_transform(map_entries(__lmm_r), lambda __lmm_e: __lmm_e.key || chr(31) || CAST(__lmm_e.value AS VARCHAR)), chr(29))), chr(30))",
    "__r.t0 AS test, CAST(__r.t1 AS INTEGER) AS \"row\", __r.v0 AS estimate, __r.v1 AS std_error, __r.v2 AS df, __r.v3 AS t_value,      __r.v4 AS conf_low, __r.v5 AS conf_high, __r.v6 AS p_value, __r.v7 AS sum_sq, __r.v8 AS mean_sq, __r.v9 AS num_df, __r.v10 AS den_df, __r.v11 AS f_value"
);

/// `lmm_bootstrap(model, nsim, seed := 0)`: per replicate and parameter, its estimate.
pub const LMM_BOOTSTRAP_MACRO: &str = inference_macro!(
    "lmm_bootstrap", "model, nsim, seed := 0", "bootstrap", "model", "NULL", options!("nsim", "seed"), "NULL",
    "CAST(__r.v0 AS INTEGER) AS replicate, __r.t0 AS effect, __r.t1 AS group_var, __r.t2 AS term, __r.v1 AS estimate"
);

/// `lmm_profile(model, parameter := NULL)`: the profile's points (lme4's `as.data.frame(profile(fit))`).
pub const LMM_PROFILE_MACRO: &str = inference_macro!(
    "lmm_profile",
    "model, parameter := NULL",
    "profile",
    "model",
    "NULL",
    options!("parameter"),
    "NULL",
    "__r.t0 AS group_var, __r.t1 AS term, __r.v0 AS value, __r.v1 AS zeta, __r.t2 AS parameter"
);

/// `lmm_summary(model)`: lme4's `summary()` as text (a scalar macro).
pub const LMM_SUMMARY_MACRO: &str =
    "CREATE OR REPLACE MACRO lmm_summary(model) AS (lmm_inference('summary', model, NULL, '', NULL))[1].t0";

/// `lmm_fit_stats(stats, method := 'REML', ranef := true, ddf := 'none', contrasts := NULL)`: the
/// tidy table of a statistics value (`lmm_stats_agg`, `lmm_stats_merge`),
/// interruptible as `lmm_fit` (the fit runs as a job polled by `lmm_fit_poll`).
pub const LMM_FIT_STATS_MACRO: &str = concat!(
    "CREATE OR REPLACE MACRO lmm_fit_stats(stats, method := 'REML', ranef := true, ddf := 'none', contrasts := NULL) AS TABLE
WITH RECURSIVE __lmm_steps(__lmm_job, __lmm_running) AS (
    SELECT lmm_stats_start(stats, ", options!("method", "ranef", "ddf", "contrasts"), "), true
    UNION ALL
    SELECT __lmm_job, lmm_fit_poll(__lmm_job) FROM __lmm_steps WHERE __lmm_running
)
SELECT unnest(lmm_fit_result(__lmm_job), recursive := true) FROM __lmm_steps WHERE NOT __lmm_running"
);

/// `lmm_model_stats(stats, method := 'REML', ranef := true, ddf := 'none', contrasts := NULL)`: the model value of a statistics value.
pub const LMM_MODEL_STATS_MACRO: &str = concat!(
    "CREATE OR REPLACE MACRO lmm_model_stats(stats, method := 'REML', ranef := true, ddf := 'none', contrasts := NULL) AS lmm_model_stats_impl(stats, ",
    options!("method", "ranef", "ddf", "contrasts"),
    ")"
);

const STATS_PARAMS: &[(&str, Option<&str>)] = &[
    ("stats", None),
    ("method", Some("'REML'")),
    ("ranef", Some("true")),
    ("ddf", Some("'none'")),
    ("contrasts", Some("NULL")),
];

const MACROS: [Macro; 15] = [
    Macro {
        name: "lmm_fit",
        table: true,
        params: FIT_PARAMS,
        create: LMM_FIT_MACRO,
    },
    Macro {
        name: "lmm_model",
        table: true,
        params: FIT_PARAMS,
        create: LMM_MODEL_MACRO,
    },
    Macro {
        name: "lmm_predict",
        table: false,
        params: &[("model", None), ("new_row", None), ("re", Some("true"))],
        create: LMM_PREDICT_MACRO,
    },
    Macro {
        name: "lmm_tidy",
        table: true,
        params: &[("model", None)],
        create: LMM_TIDY_MACRO,
    },
    Macro {
        name: "lmm_score",
        table: true,
        params: &[("tname", None), ("model_table", None), ("re", Some("true"))],
        create: LMM_SCORE_MACRO,
    },
    Macro {
        name: "lmm_vcov",
        table: true,
        params: &[("model", None), ("ddf", Some("NULL"))],
        create: LMM_VCOV_MACRO,
    },
    Macro {
        name: "lmm_confint",
        table: true,
        params: &[
            ("model", None),
            ("method", Some("'profile'")),
            ("level", Some("0.95")),
            ("nsim", Some("1000")),
            ("seed", Some("0")),
        ],
        create: LMM_CONFINT_MACRO,
    },
    Macro {
        name: "lmm_lrt",
        table: true,
        params: &[("model0", None), ("model1", None), ("refit", Some("true"))],
        create: LMM_LRT_MACRO,
    },
    Macro {
        name: "lmm_anova",
        table: true,
        params: &[
            ("model", None),
            ("type", Some("3")),
            ("ddf", Some("'Satterthwaite'")),
        ],
        create: LMM_ANOVA_MACRO,
    },
    Macro {
        name: "lmm_summary",
        table: false,
        params: &[("model", None)],
        create: LMM_SUMMARY_MACRO,
    },
    Macro {
        name: "lmm_profile",
        table: true,
        params: &[("model", None), ("parameter", Some("NULL"))],
        create: LMM_PROFILE_MACRO,
    },
    Macro {
        name: "lmm_bootstrap",
        table: true,
        params: &[("model", None), ("nsim", None), ("seed", Some("0"))],
        create: LMM_BOOTSTRAP_MACRO,
    },
    Macro {
        name: "lmm_contrast",
        table: true,
        params: &[
            ("model", None),
            ("L", None),
            ("ddf", Some("'Satterthwaite'")),
        ],
        create: LMM_CONTRAST_MACRO,
    },
    Macro {
        name: "lmm_fit_stats",
        table: true,
        params: STATS_PARAMS,
        create: LMM_FIT_STATS_MACRO,
    },
    Macro {
        name: "lmm_model_stats",
        table: false,
        params: STATS_PARAMS,
        create: LMM_MODEL_STATS_MACRO,
    },
];

impl Macro {
    /// The body, created in `lmm_ext.main`.
    fn in_catalog(&self) -> String {
        let head = format!("CREATE OR REPLACE MACRO {}(", self.name);
        self.create.replacen(
            &head,
            &format!("CREATE OR REPLACE MACRO {CATALOG}.main.{}(", self.name),
            1,
        )
    }

    /// A forwarder named `name` (in the schema `schema`, or the default one)
    /// that calls the body in `lmm_ext`. Forwarders are what lands in the
    /// user's database: they hold no logic of their own, so one left by another
    /// version of lmm still runs this one's.
    fn forwarder(&self, schema: Option<&str>, name: &str) -> String {
        let params: Vec<String> = self
            .params
            .iter()
            .map(|(p, d)| match d {
                Some(d) => format!("{p} := {d}"),
                None => p.to_string(),
            })
            .collect();
        let args: Vec<String> = self
            .params
            .iter()
            .map(|(p, d)| {
                if d.is_some() {
                    format!("{p} := {p}")
                } else {
                    p.to_string()
                }
            })
            .collect();
        let target = format!("{CATALOG}.main.{}({})", self.name, args.join(", "));
        let body = if self.table {
            format!("TABLE SELECT * FROM {target}")
        } else {
            target
        };
        let qualified = schema.map_or(name.to_string(), |s| format!("{s}.{name}"));
        format!(
            "CREATE OR REPLACE MACRO {qualified}({}) AS {body}",
            params.join(", ")
        )
    }
}

/// Create the macros. Their bodies go into the in-memory catalog `lmm_ext`
/// (never persisted, present on read-only databases and after `USE`, called
/// as `lmm_ext.lmm_fit(...)`); forwarders with the plain names go into the
/// default database, so that `lmm_fit(...)` works.
///
/// DuckDB's C API has no way to register a macro in the system catalog, so
/// the forwarders persist in a file database. Where they cannot be written
/// (a read-only file), the ones already there are compared with ours: a
/// macro with one of lmm's names that is not lmm's forwarder (planted, or
/// left by a version that had no forwarders) makes the LOAD fail, naming it,
/// so that it is never run in lmm's place without a word. `Err` fails the LOAD.
pub unsafe fn create_macros(con: ffi::duckdb_connection) -> Result<(), String> {
    unsafe {
        let attached = execute(con, &format!("ATTACH IF NOT EXISTS ':memory:' AS {CATALOG} (READ_WRITE)")).is_ok()
            && execute(
                con,
                &format!(
                    "SELECT CASE WHEN path IS NOT NULL THEN error('a database named {CATALOG} is attached already') END \
                     FROM duckdb_databases() WHERE database_name = '{CATALOG}'"
                ),
            )
            .is_ok();
        if !attached {
            // No catalog of our own: the bodies go into the default database
            // where it can be written (the aggregates work regardless).
            for m in &MACROS {
                let _ = execute(con, m.create);
            }
            return Ok(());
        }
        for m in &MACROS {
            execute(con, &m.in_catalog())?;
            // The reference copy of the forwarder, to compare read-only databases with.
            execute(
                con,
                &m.forwarder(
                    Some(&format!("{CATALOG}.main")),
                    &format!("__forwarder_{}", m.name),
                ),
            )?;
        }
        let mut writable = true;
        for m in &MACROS {
            writable &= execute(con, &m.forwarder(None, m.name)).is_ok();
        }
        if writable {
            return Ok(());
        }
        let names: Vec<String> = MACROS.iter().map(|m| format!("'{}'", m.name)).collect();
        execute(
            con,
            &format!(
                "SELECT CASE WHEN count(*) > 0 THEN error('the database ' || current_database() || \
                 ' cannot be written (read-only?) and holds macro(s) named like lmm''s that are not lmm''s: ' \
                 || string_agg(u.function_name, ', ') || '. They would run instead of lmm: open the database \
                 read-write once and LOAD lmm (it replaces them), or DROP them. lmm''s own are always there as \
                 {CATALOG}.lmm_fit(...), {CATALOG}.lmm_predict(...), ...') END \
                 FROM duckdb_functions() u LEFT JOIN duckdb_functions() r \
                   ON r.database_name = '{CATALOG}' AND r.function_name = '__forwarder_' || u.function_name \
                 WHERE u.database_name = current_database() AND u.schema_name = 'main' \
                   AND u.function_name IN ({}) \
                   AND (r.function_name IS NULL OR r.macro_definition IS DISTINCT FROM u.macro_definition \
                        OR r.parameters IS DISTINCT FROM u.parameters)",
                names.join(", ")
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarders_pass_every_parameter_through() {
        let fit = &MACROS[0];
        assert_eq!(
            fit.forwarder(None, "lmm_fit"),
            "CREATE OR REPLACE MACRO lmm_fit(tname, formula, grp := NULL, re := NULL, method := 'REML', ranef := true, \
             ddf := 'none', weights := NULL, contrasts := NULL) AS TABLE SELECT * FROM lmm_ext.main.lmm_fit(tname, formula, grp := grp, re := re, \
             method := method, ranef := ranef, ddf := ddf, weights := weights, contrasts := contrasts)"
        );
        let predict = MACROS.iter().find(|m| m.name == "lmm_predict").unwrap();
        assert!(predict
            .forwarder(None, "lmm_predict")
            .ends_with("AS lmm_ext.main.lmm_predict(model, new_row, re := re)"));
        for m in &MACROS {
            assert!(
                m.in_catalog()
                    .starts_with(&format!("CREATE OR REPLACE MACRO lmm_ext.main.{}(", m.name)),
                "{}",
                m.name
            );
            // The declared parameters are those of the body.
            let declared: Vec<String> = m
                .params
                .iter()
                .map(|(p, d)| d.map_or(p.to_string(), |d| format!("{p} := {d}")))
                .collect();
            assert!(
                m.create
                    .contains(&format!("{}({})", m.name, declared.join(", "))),
                "{}",
                m.name
            );
        }
    }
}
