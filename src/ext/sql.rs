//! SQL run at LOAD: the `lmm_fit` table macro over `lmm_fit_agg`.

use std::ffi::CString;
use std::mem::MaybeUninit;

use libduckdb_sys as ffi;

/// `lmm_fit(tname, formula, grp := NULL, re := NULL, method := 'REML', ranef := true, ddf := 'none')`.
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
pub const LMM_FIT_MACRO: &str = "\
CREATE OR REPLACE MACRO lmm_fit(tname, formula, grp := NULL, re := NULL, method := 'REML', ranef := true, ddf := 'none') AS TABLE
WITH RECURSIVE __lmm_steps(__lmm_job, __lmm_running) AS (
    SELECT lmm_accumulate_agg(
               __lmm_row,
               formula,
               {'method': method, 'ranef': ranef, 'ddf': ddf, 'grp': CAST(grp AS VARCHAR),
                're': COALESCE(array_to_string(TRY_CAST(re AS VARCHAR[]), chr(31)), CAST(re AS VARCHAR))}),
           true
    FROM query_table(tname) AS __lmm_row
    UNION ALL
    SELECT __lmm_job, lmm_fit_poll(__lmm_job) FROM __lmm_steps WHERE __lmm_running
)
SELECT unnest(lmm_fit_result(__lmm_job), recursive := true) FROM __lmm_steps WHERE NOT __lmm_running";

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

/// Create the SQL macros. Failure (e.g. a read-only database) is returned but
/// must not fail the LOAD: the aggregate itself is registered already.
pub unsafe fn create_macros(con: ffi::duckdb_connection) -> Result<(), String> {
    let mut first_error = Ok(());
    for sql in [LMM_FIT_MACRO, LMM_PREDICT_MACRO, LMM_TIDY_MACRO, LMM_SCORE_MACRO] {
        if let Err(e) = unsafe { execute(con, sql) } {
            if first_error.is_ok() {
                first_error = Err(e);
            }
        }
    }
    first_error
}
