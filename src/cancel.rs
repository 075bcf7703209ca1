//! Cancellation of a long computation from another thread (an interrupted query).
//!
//! The thread that runs a fit on behalf of a query installs a `Control` with
//! `run_cancellable`; long loops call `checkpoint()` (every objective
//! evaluation of the optimizer, every evaluation of the criterion). Once the
//! control says stop, the next checkpoint unwinds the computation, carrying
//! an `Interrupted` payload, and `run_cancellable` returns `Err(Interrupted)`.
//! Unwinding rather than threading a `Result` through every closure keeps the
//! optimizer's objective a plain `FnMut(&[f64]) -> f64`; nothing is left
//! half-updated because the whole computation is abandoned.
//!
//! A control stops when it is cancelled, or, if it is *watched*, when nobody
//! has sent it a heartbeat for longer than its patience: a query that stops
//! polling its fit (it was interrupted) need not tell the fit.
//!
//! On a thread without a control (`cargo test`, a direct call) `checkpoint()`
//! does nothing.

use std::cell::RefCell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// The payload of the unwinding started by a checkpoint after cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

/// When a computation must stop.
pub struct Control {
    cancelled: AtomicBool,
    /// A clock in milliseconds, the patience (0: not watched) and the last heartbeat.
    clock: fn() -> u64,
    patience: u64,
    last_heartbeat: AtomicU64,
}

impl Control {
    /// Stops only when cancelled.
    pub fn new() -> Control {
        Control {
            cancelled: AtomicBool::new(false),
            clock: || 0,
            patience: 0,
            last_heartbeat: AtomicU64::new(0),
        }
    }

    /// Also stops when no heartbeat came for more than `patience` ms of `clock`.
    pub fn watched(clock: fn() -> u64, patience: u64) -> Control {
        Control {
            cancelled: AtomicBool::new(false),
            clock,
            patience,
            last_heartbeat: AtomicU64::new(clock()),
        }
    }

    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// "Still wanted", at time `now` of the clock.
    pub fn heartbeat(&self, now: u64) {
        self.last_heartbeat.fetch_max(now, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
            || (self.patience > 0
                && (self.clock)().saturating_sub(self.last_heartbeat.load(Ordering::Relaxed))
                    > self.patience)
    }
}

impl Default for Control {
    fn default() -> Self {
        Control::new()
    }
}

thread_local! {
    static CONTROL: RefCell<Option<Arc<Control>>> = const { RefCell::new(None) };
}

/// Stop here if this thread's computation must stop.
#[inline]
pub fn checkpoint() {
    let stop = CONTROL.with(|c| c.borrow().as_ref().is_some_and(|c| c.is_cancelled()));
    if stop {
        panic::resume_unwind(Box::new(Interrupted));
    }
}

/// This thread's control, to hand to worker threads (`with`).
pub fn current() -> Option<Arc<Control>> {
    CONTROL.with(|c| c.borrow().clone())
}

/// Run `f` on this (worker) thread under `control`, as the thread that
/// started the work: its checkpoints unwind to that thread's `run_cancellable`.
pub fn with<T>(control: Option<Arc<Control>>, f: impl FnOnce() -> T) -> T {
    let previous = CONTROL.with(|c| c.replace(control));
    struct Restore(Option<Arc<Control>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CONTROL.with(|c| *c.borrow_mut() = previous);
        }
    }
    let _restore = Restore(previous);
    f()
}

/// Run `f` on this thread under `control`. `Err(Interrupted)` if it said
/// stop and a checkpoint was reached; any other panic continues to unwind.
pub fn run_cancellable<T>(control: Arc<Control>, f: impl FnOnce() -> T) -> Result<T, Interrupted> {
    let previous = CONTROL.with(|c| c.replace(Some(control)));
    let outcome = panic::catch_unwind(AssertUnwindSafe(f));
    CONTROL.with(|c| *c.borrow_mut() = previous);
    match outcome {
        Ok(v) => Ok(v),
        Err(payload) if payload.is::<Interrupted>() => Err(Interrupted),
        Err(payload) => panic::resume_unwind(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn a_cancelled_control_stops_the_computation_at_its_next_checkpoint() {
        let control = Arc::new(Control::new());
        let mut steps = 0;
        let r = run_cancellable(control.clone(), || {
            for i in 0..100 {
                if i == 10 {
                    control.cancel();
                }
                checkpoint();
                steps += 1;
            }
        });
        assert_eq!(r, Err(Interrupted));
        assert_eq!(steps, 10);
        // The control is gone afterwards: checkpoints are no-ops again.
        checkpoint();
    }

    #[test]
    fn without_cancellation_the_result_comes_back() {
        assert_eq!(
            run_cancellable(Arc::new(Control::new()), || {
                checkpoint();
                42
            }),
            Ok(42)
        );
    }

    static NOW: AtomicU64 = AtomicU64::new(1000);
    fn fake_clock() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    #[test]
    fn a_watched_control_stops_when_heartbeats_stop() {
        let control = Control::watched(fake_clock, 500);
        NOW.store(1400, Ordering::Relaxed);
        assert!(!control.is_cancelled());
        control.heartbeat(1400);
        NOW.store(1800, Ordering::Relaxed);
        assert!(!control.is_cancelled());
        NOW.store(1901, Ordering::Relaxed);
        assert!(control.is_cancelled());
    }
}
