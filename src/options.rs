//! Fit options given by name (`method := 'ML'`, `ranef := false`).

use crate::bail;
use crate::error::Result;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Reml,
    Ml,
}

/// Degrees of freedom for the fixed-effect tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ddf {
    /// None: z tests on the normal distribution (statsmodels' convention).
    None,
    /// Satterthwaite's approximation and t tests (lmerTest's default).
    Satterthwaite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub method: Method,
    /// Emit the `ran_vals` rows (BLUPs).
    pub ranef: bool,
    pub ddf: Ddf,
}

impl Default for Options {
    fn default() -> Self {
        Options { method: Method::Reml, ranef: true, ddf: Ddf::None }
    }
}

const KNOWN: &str = "method ('REML' or 'ML'), ranef (true/false), ddf ('none' or 'Satterthwaite')";

impl Options {
    /// Options from (name, value-as-text) pairs; a NULL value means "default".
    pub fn from_pairs(pairs: &[(String, Option<String>)]) -> Result<Options> {
        let mut o = Options::default();
        for (name, value) in pairs {
            let Some(v) = value else { continue };
            match name.to_ascii_lowercase().as_str() {
                "method" => {
                    o.method = match v.to_ascii_uppercase().as_str() {
                        "REML" => Method::Reml,
                        "ML" => Method::Ml,
                        _ => bail!("option method: expected 'REML' or 'ML', got '{v}'"),
                    }
                }
                "ranef" => {
                    o.ranef = match v.to_ascii_lowercase().as_str() {
                        "true" | "t" | "1" | "yes" => true,
                        "false" | "f" | "0" | "no" => false,
                        _ => bail!("option ranef: expected true or false, got '{v}'"),
                    }
                }
                "ddf" => {
                    o.ddf = match v.to_ascii_lowercase().as_str() {
                        "none" => Ddf::None,
                        "satterthwaite" => Ddf::Satterthwaite,
                        _ => bail!("option ddf: expected 'none' or 'Satterthwaite', got '{v}'"),
                    }
                }
                _ => bail!("unknown option '{name}'; known options: {KNOWN}"),
            }
        }
        Ok(o)
    }
}
