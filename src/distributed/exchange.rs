//! A distributed fit driven from outside: the host (Python over Spark, or
//! any program that can run SQL) asks for the next request, has the shards
//! answer it, and hands the answers back.
//!
//! The optimizer wants to call the shards (`driver::Ask`) and wait; the host
//! wants to be called. So the fit runs on its own thread, and each `ask`
//! posts its request here and sleeps until `reply` brings the answers:
//!
//! ```text
//!   host                         fit thread
//!   start(header, levels)   →    driver::fit … ask(request): post, wait
//!   next()  → Request(bytes)
//!   (the shards answer)
//!   reply(answers)          →    … ask returns, the optimizer goes on
//!   next()  → Done               fit returns: the table is kept
//!   result()
//! ```
//!
//! A session nobody calls for `PATIENCE` (the host died or gave up) ends its
//! fit with an error at its next request; `abandon` does so at once.
//! Sessions live in a process-global registry under an unguessable handle;
//! at most `MAX_SESSIONS` are kept (the oldest finished or idle go first).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::driver::{self, Ask, Fitted};
use super::protocol::{answer_from_bytes, Request};
use crate::accumulator::Accumulator;
use crate::bail;
use crate::error::{LmmError, Result};

/// A fit waits this long for the answers to one request.
pub const PATIENCE: Duration = Duration::from_secs(3600);
/// Sessions kept at once in a process.
pub const MAX_SESSIONS: usize = 32;

/// What the host is to do next.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// have the shards answer this request (its bytes), then `reply`
    Request(Vec<u8>),
    /// the fit is still working: ask again
    Wait,
    /// the fit is done: take its `result`
    Done,
}

#[derive(Default)]
struct State {
    /// posted by `ask`, not yet handed to the host
    posted: Option<Request>,
    /// handed to the host, awaiting its reply
    outstanding: bool,
    answers: Option<Vec<Option<Vec<f64>>>>,
    result: Option<Result<Fitted>>,
    abandoned: bool,
    last_call: Option<Instant>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The fit thread's side: post a request, sleep until answered.
struct Channel(Arc<Shared>);

impl Ask for Channel {
    fn ask(&self, request: &Request) -> Result<Vec<Option<Vec<f64>>>> {
        let mut s = self.0.lock();
        s.posted = Some(request.clone());
        self.0.changed.notify_all();
        let asked = Instant::now();
        loop {
            if s.abandoned {
                bail!("the distributed fit was abandoned by its host");
            }
            if let Some(answers) = s.answers.take() {
                return Ok(answers);
            }
            let waited = asked.elapsed();
            if waited >= PATIENCE {
                s.abandoned = true;
                bail!(
                    "the distributed fit had no answer from its host for {} s and stopped",
                    PATIENCE.as_secs()
                );
            }
            s = self
                .0
                .changed
                .wait_timeout(s, PATIENCE - waited)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// One distributed fit in progress.
pub struct Session {
    shared: Arc<Shared>,
}

impl Session {
    /// Start fitting the model of `merged` (every shard's header merged, with
    /// the fit's options) over `levels` groups on the shards.
    pub fn start(merged: Accumulator, levels: usize) -> Result<Session> {
        super::one_factor(&merged)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        });
        let channel = Arc::new(Channel(shared.clone()));
        let fit_side = shared.clone();
        std::thread::Builder::new()
            .name("lmm-distributed-fit".into())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    driver::fit(&merged, levels, channel)
                }))
                .unwrap_or_else(|_| {
                    Err(LmmError::new(
                        "internal error: the distributed fit panicked",
                    ))
                });
                let mut s = fit_side.lock();
                s.result = Some(outcome);
                fit_side.changed.notify_all();
            })
            .map_err(|e| {
                LmmError::new(format!("could not start the distributed fit's thread: {e}"))
            })?;
        Ok(Session { shared })
    }

    /// The next step, waiting at most `wait` for the fit to post a request or finish.
    pub fn next(&self, wait: Duration) -> Result<Next> {
        let deadline = Instant::now() + wait;
        let mut s = self.shared.lock();
        s.last_call = Some(Instant::now());
        if s.outstanding {
            bail!("the distributed fit is waiting for the answers to its last request (lmm_dist_reply) before it can make another");
        }
        loop {
            if let Some(r) = &s.result {
                return match r {
                    Ok(_) => Ok(Next::Done),
                    Err(e) => Err(e.clone()),
                };
            }
            if let Some(request) = s.posted.take() {
                s.outstanding = true;
                return Ok(Next::Request(request.to_bytes()));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Next::Wait);
            }
            s = self
                .shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// The shards' answers to the outstanding request: each shard's answer
    /// (`protocol::answer_to_bytes`), concatenated in shard order.
    pub fn reply(&self, answers: &[u8]) -> Result<()> {
        let answers = split_answers(answers)?;
        let mut s = self.shared.lock();
        s.last_call = Some(Instant::now());
        if !s.outstanding {
            bail!("the distributed fit has no request awaiting answers (call lmm_dist_next first)");
        }
        s.outstanding = false;
        s.answers = Some(answers);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// The finished fit, taken (a second call is an error).
    pub fn result(&self) -> Result<Fitted> {
        let mut s = self.shared.lock();
        match s.result.take() {
            Some(r) => r,
            None if s.abandoned => bail!("the distributed fit was abandoned"),
            None => bail!("the distributed fit is not done (lmm_dist_next says when it is), or its result was already taken"),
        }
    }

    /// The request for the BLUP rows of the finished fit (None: `ranef := false`).
    pub fn blups_request(&self) -> Result<Option<Vec<u8>>> {
        match &self.shared.lock().result {
            Some(Ok(f)) => Ok(f.blups.as_ref().map(|r| r.to_bytes())),
            Some(Err(e)) => Err(e.clone()),
            None => bail!("the distributed fit is not done (lmm_dist_next says when it is), or its result was already taken"),
        }
    }

    /// Stop the fit at its next request.
    pub fn abandon(&self) {
        let mut s = self.shared.lock();
        s.abandoned = true;
        self.shared.changed.notify_all();
    }

    /// Finished, or not called for `PATIENCE`.
    fn is_stale(&self) -> bool {
        let s = self.shared.lock();
        s.result.is_some() || s.abandoned || s.last_call.is_some_and(|t| t.elapsed() >= PATIENCE)
    }
}

/// Concatenated answers, one per shard.
pub fn split_answers(mut b: &[u8]) -> Result<Vec<Option<Vec<f64>>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let len = match b[0] {
            0 => 1,
            _ if b.len() >= 5 => 5 + 8 * u32::from_le_bytes(b[1..5].try_into().unwrap()) as usize,
            _ => b.len() + 1,
        };
        if len > b.len() {
            bail!(
                "the answers of the shards are truncated (shard {} of them)",
                out.len() + 1
            );
        }
        out.push(answer_from_bytes(&b[..len])?);
        b = &b[len..];
    }
    Ok(out)
}

struct Entry {
    handle: i64,
    session: Arc<Session>,
}

static SESSIONS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static COUNTER: AtomicU64 = AtomicU64::new(1);

fn sessions() -> MutexGuard<'static, Vec<Entry>> {
    SESSIONS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A handle no other caller can guess from its own: the clock and a counter, mixed.
fn new_handle() -> i64 {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut h = t ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(40);
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    (h >> 1) as i64
}

/// Start a session (`Session::start`) and keep it; its handle.
pub fn open(merged: Accumulator, levels: usize) -> Result<i64> {
    let session = Arc::new(Session::start(merged, levels)?);
    let handle = new_handle();
    let mut all = sessions();
    if all.len() >= MAX_SESSIONS {
        if let Some(i) = all.iter().position(|e| e.session.is_stale()) {
            all.remove(i).session.abandon();
        } else {
            session.abandon();
            bail!("{MAX_SESSIONS} distributed fits are in progress in this process; finish or abandon one (lmm_dist_abandon) first");
        }
    }
    all.push(Entry { handle, session });
    Ok(handle)
}

/// The session of `handle`.
pub fn get(handle: i64) -> Result<Arc<Session>> {
    match sessions().iter().find(|e| e.handle == handle) {
        Some(e) => Ok(e.session.clone()),
        None => bail!("no distributed fit has the handle {handle} in this process (finished and taken, abandoned, or never started)"),
    }
}

/// Forget the session of `handle`, stopping its fit if it runs.
pub fn close(handle: i64) {
    let mut all = sessions();
    if let Some(i) = all.iter().position(|e| e.handle == handle) {
        all.remove(i).session.abandon();
    }
}
