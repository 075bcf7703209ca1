//! The FFI boundary: every callback DuckDB makes into this library runs inside
//! `guard`, which turns both `LmmError`s and panics into an error message.
//! A panic must never unwind into DuckDB (it would abort the host process).

use std::cell::RefCell;
use std::ffi::CString;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::error::LmmError;

thread_local! {
    /// Message and location of the last panic on this thread, recorded by the hook.
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Replace the panic hook of this library's copy of `std` (a cdylib has its
/// own, so the host and other extensions are not affected): instead of
/// printing to the host's stderr, remember the message and location so that
/// the SQL error can carry them.
pub fn install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        panic::set_hook(Box::new(|info| {
            let msg = payload_message(info.payload());
            let text = match info.location() {
                Some(loc) => format!("{msg} (at {}:{})", loc.file(), loc.line()),
                None => msg,
            };
            let _ = LAST_PANIC.try_with(|p| {
                if let Ok(mut p) = p.try_borrow_mut() {
                    *p = Some(text);
                }
            });
        }));
    });
}

fn payload_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

/// Run `f`, catching panics. A panic becomes
/// `lmm: internal error: <message> (at file:line)`.
pub fn guard<T>(f: impl FnOnce() -> Result<T, LmmError>) -> Result<T, LmmError> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            let recorded = LAST_PANIC
                .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.take()))
                .ok()
                .flatten();
            // Dropping a payload can itself panic in theory; keep it contained.
            let fallback = payload_message(&*payload);
            let _ = panic::catch_unwind(AssertUnwindSafe(move || drop(payload)));
            Err(LmmError::new(format!(
                "internal error: {}",
                recorded.unwrap_or(fallback)
            )))
        }
    }
}

/// A C string for an error message (interior NUL bytes replaced).
pub fn c_message(msg: &str) -> CString {
    CString::new(msg.replace('\0', " ")).unwrap_or_else(|_| CString::from(c"lmm: error"))
}
