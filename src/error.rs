//! One error type for the whole core: a message meant for the user.

use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub struct LmmError(pub String);

impl LmmError {
    pub fn new(msg: impl Into<String>) -> Self {
        LmmError(msg.into())
    }
}

impl fmt::Display for LmmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lmm: {}", self.0)
    }
}

impl std::error::Error for LmmError {}

pub type Result<T> = std::result::Result<T, LmmError>;

/// Shorthand for an early return with a formatted message.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => { return Err($crate::error::LmmError(format!($($arg)*))) };
}
