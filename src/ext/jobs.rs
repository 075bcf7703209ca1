//! Fits that DuckDB can interrupt: the data pass, then the fit on a worker
//! thread, watched from SQL.
//!
//! DuckDB checks for an interrupt between the chunks of a pipeline, never
//! inside a callback: an aggregate's finalize that fits for a minute cannot be
//! stopped. So `lmm_fit` runs as a recursive query:
//!
//! ```sql
//! WITH RECURSIVE steps(job, running) AS (
//!     SELECT lmm_accumulate_agg(row, formula, options), true FROM ... row   -- the pass
//!     UNION ALL
//!     SELECT job, lmm_fit_poll(job) FROM steps WHERE running)              -- ≤ POLL each
//! SELECT unnest(lmm_fit_result(job), recursive := true) FROM steps WHERE NOT running
//! ```
//!
//! The aggregate deposits its accumulation here and returns a small handle
//! (`deposit`). The first `lmm_fit_poll` starts the fit on a worker thread;
//! each poll waits for it at most `POLL`, so an interrupt is seen between two
//! iterations of the recursion. Every poll also records that the query is
//! alive: a worker nobody polled for `PATIENCE` (its query was interrupted or
//! failed) stops at its next checkpoint (`crate::cancel`), which frees the
//! statistics. `lmm_fit_result` takes the table and forgets the job.
//!
//! A handle is good once, in this process. Jobs never taken are evicted,
//! oldest first, beyond `MAX_JOBS`, and when idle for longer than `PATIENCE`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::accumulator::Accumulator;
use crate::budget;
use crate::cancel::{self, Control};
use crate::error::{LmmError, Result};
use crate::tidy::Tidy;

/// What a job makes of the accumulation: `lmm_fit`'s table or `lmm_model`'s
/// value; or the table of an inference function (`lmm_confint`, …).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Product {
    Table,
    Model,
    Inference,
}

/// A finished job.
pub enum Finished {
    Table(Tidy),
    Model(Vec<u8>),
    Inference(crate::inference::table::Table),
}

/// An inference call waiting to run: `inference::run`'s arguments.
pub struct InferenceCall {
    pub kind: String,
    pub model: Vec<u8>,
    pub other: Option<Vec<u8>>,
    pub options: String,
    pub contrast: Option<String>,
}

/// The work a job does.
enum Work {
    Fit(Accumulator),
    Inference(InferenceCall),
}

const MAGIC: &[u8; 8] = b"LMMJOB01";
const HANDLE_LEN: usize = 24;
const MAX_JOBS: usize = 64;

/// Longest wait inside one poll: the interrupt latency of a fit.
const POLL: Duration = Duration::from_millis(100);
/// A fit whose query stopped polling for this long is abandoned.
const PATIENCE: Duration = Duration::from_secs(3);

enum State {
    /// Accumulated (or called), not yet started.
    Waiting(Work),
    /// Fitting on a worker thread.
    Running(Receiver<Result<Finished>>),
    /// Finished, waiting to be taken.
    Done(Finished),
    /// Taken, or being started.
    Gone,
}

/// A job: its state, and the control its worker watches, which also says
/// when the job was last polled.
struct Entry {
    id: u64,
    nonce: u64,
    control: Arc<Control>,
    state: Arc<Mutex<State>>,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Milliseconds on a clock shared by pollers and the worker's checkpoints.
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A value no other query can guess from its own handles: the clock and the id, mixed.
fn nonce(id: u64) -> u64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = t ^ id.rotate_left(32);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h
}

fn registry() -> std::sync::MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Keep `acc` for a fit and return the handle of the job.
pub fn deposit(acc: Accumulator) -> Vec<u8> {
    deposit_work(Work::Fit(acc))
}

/// Keep an inference call for a worker and return the handle of the job.
pub fn deposit_inference(call: InferenceCall) -> Vec<u8> {
    deposit_work(Work::Inference(call))
}

fn deposit_work(work: Work) -> Vec<u8> {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let nonce = nonce(id);
    let control = Arc::new(Control::watched(now_ms, PATIENCE.as_millis() as u64));
    let state = Arc::new(Mutex::new(State::Waiting(work)));
    let mut jobs = registry();
    // A job nobody polled for `PATIENCE` belongs to a query that stopped.
    jobs.retain(|e| !e.control.is_cancelled());
    if jobs.len() >= MAX_JOBS {
        jobs.remove(0);
    }
    jobs.push(Entry {
        id,
        nonce,
        control,
        state,
    });
    let mut handle = Vec::with_capacity(HANDLE_LEN);
    handle.extend_from_slice(MAGIC);
    handle.extend_from_slice(&id.to_le_bytes());
    handle.extend_from_slice(&nonce.to_le_bytes());
    handle
}

/// The job a handle names (given a heartbeat), or why there is none.
fn find(handle: &[u8], function: &str) -> Result<(Arc<Control>, Arc<Mutex<State>>)> {
    if handle.len() != HANDLE_LEN || &handle[..8] != MAGIC {
        return Err(LmmError::new(format!(
            "{function} takes the value of lmm_accumulate_agg (lmm_fit calls both); got another value"
        )));
    }
    let id = u64::from_le_bytes(handle[8..16].try_into().unwrap());
    let nonce = u64::from_le_bytes(handle[16..24].try_into().unwrap());
    let jobs = registry();
    match jobs.iter().find(|e| e.id == id && e.nonce == nonce) {
        Some(e) => {
            e.control.heartbeat(now_ms());
            Ok((e.control.clone(), e.state.clone()))
        }
        None => Err(LmmError::new(
            "this fit is no longer held (a value of lmm_accumulate_agg is good once, in the query and \
             process that made it); call lmm_fit",
        )),
    }
}

fn forget(handle: &[u8]) {
    let id = u64::from_le_bytes(handle[8..16].try_into().unwrap());
    registry().retain(|e| e.id != id);
}

/// Start the fit if it is waiting; wait for it at most `POLL`.
/// `Ok(true)` while it runs, `Ok(false)` once it is done; the fit's error
/// as soon as it fails.
pub fn poll(handle: &[u8], product: Product, memory_limit: Option<u64>) -> Result<bool> {
    let (control, state) = find(handle, "lmm_fit_poll")?;
    let mut state = state.lock().unwrap_or_else(|e| e.into_inner());
    if let State::Waiting(_) = *state {
        let State::Waiting(work) = std::mem::replace(&mut *state, State::Gone) else {
            unreachable!()
        };
        *state = State::Running(start(work, product, control, memory_limit)?);
    }
    let outcome = match &*state {
        State::Running(rx) => match rx.recv_timeout(POLL) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => return Ok(true),
            Err(RecvTimeoutError::Disconnected) => Err(LmmError::new(
                "internal error: the fitting thread ended without a result",
            )),
        },
        State::Done(_) => return Ok(false),
        State::Waiting(_) | State::Gone => {
            return Err(LmmError::new("internal error: this fit was already taken"))
        }
    };
    match outcome {
        Ok(finished) => {
            *state = State::Done(finished);
            Ok(false)
        }
        Err(e) => {
            drop(state);
            forget(handle);
            Err(e)
        }
    }
}

/// The finished table or model; the job is forgotten.
pub fn take_result(handle: &[u8]) -> Result<Finished> {
    let (_, state) = find(handle, "lmm_fit_result")?;
    let state = std::mem::replace(
        &mut *state.lock().unwrap_or_else(|e| e.into_inner()),
        State::Gone,
    );
    forget(handle);
    match state {
        State::Done(finished) => Ok(finished),
        _ => Err(LmmError::new(
            "internal error: lmm_fit_result was called before the fit finished",
        )),
    }
}

/// The fit of `acc` on a new thread, cancelled through `control`, its large
/// buffers held to `memory_limit` (see `crate::budget`).
fn start(
    work: Work,
    product: Product,
    control: Arc<Control>,
    memory_limit: Option<u64>,
) -> Result<Receiver<Result<Finished>>> {
    let (send, receive) = mpsc::channel();
    std::thread::Builder::new()
        .name("lmm-fit".into())
        .spawn(move || {
            let fit = || {
                super::guard::guard(|| match (&work, product) {
                    (Work::Fit(acc), Product::Table) => acc.finish_tidy().map(Finished::Table),
                    (Work::Fit(acc), Product::Model) => {
                        acc.finish_model().map(|m| Finished::Model(m.to_bytes()))
                    }
                    (Work::Inference(c), Product::Inference) => crate::inference::run::run(
                        &c.kind,
                        &c.model,
                        c.other.as_deref(),
                        &c.options,
                        c.contrast.as_deref(),
                    )
                    .map(Finished::Inference),
                    _ => Err(LmmError::new(
                        "internal error: a job polled as another kind of job",
                    )),
                })
            };
            let budgeted = || match memory_limit {
                Some(bytes) => budget::with_limit(bytes, "memory_limit", fit),
                None => fit(),
            };
            let outcome = match cancel::run_cancellable(control, budgeted) {
                Ok(r) => r,
                Err(cancel::Interrupted) => Err(LmmError::new(
                    "the computation was abandoned (its query stopped)",
                )),
            };
            // Nobody listens if the query is gone.
            let _ = send.send(outcome);
        })
        .map_err(|e| LmmError::new(format!("could not start the fitting thread: {e}")))?;
    Ok(receive)
}
