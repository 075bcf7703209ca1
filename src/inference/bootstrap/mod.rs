//! Parametric bootstrap at the level of the statistics: a replicate's
//! response y* = Xβ̂ + Zb* + ε* is never formed; what a refit reads of it
//! (Zᵀy* per level, Xᵀy*, y*ᵀy*) is drawn directly from the statistics of
//! the fit. The derivation is in `simulate`.
//!
//! - `simulate`: the `Simulator` (built once) and its replicates.
//! - `gram`: the structured factor L of G = [Z X]ᵀ[Z X] that both the mean
//!   and the noise of a replicate go through.
//! - `pivoted`: the rank-revealing Cholesky used for its blocks.

pub mod gram;
pub mod pivoted;
pub mod refit;
pub mod simulate;

#[cfg(test)]
mod tests;

pub use simulate::{stream, Simulator};

use crate::crossed::Factor;

/// The statistics of a response vector y against the model's columns:
/// Zᵀy per factor (nlev_f·q_f values, level-major, each level's q_f in the
/// order of its columns), Xᵀy (p) and yᵀy.
#[derive(Clone, Debug, PartialEq)]
pub struct Response {
    pub zty: Vec<Vec<f64>>,
    pub xty: Vec<f64>,
    pub yty: f64,
}

/// Writes a replicate's response into (clones of) the fit's statistics:
/// the last column of each level's ztr, and the last row and column of
/// [X y]ᵀ[X y] (k×k, k = p + 1). The Z and X parts are left as they are.
pub fn apply(response: &Response, factors: &mut [Factor], rtr: &mut [f64]) {
    let p = response.xty.len();
    let k = p + 1;
    assert_eq!(rtr.len(), k * k, "bootstrap: rtr is (p+1)×(p+1)");
    assert_eq!(
        response.zty.len(),
        factors.len(),
        "bootstrap: a response for every factor"
    );
    for (f, zty) in factors.iter_mut().zip(&response.zty) {
        let q = f.q;
        assert_eq!(zty.len(), f.nlev * q, "bootstrap: Zᵀy has nlev × q values");
        for (level, values) in zty.chunks_exact(q).enumerate() {
            let y_column = level * q * k + p * q;
            f.ztr[y_column..y_column + q].copy_from_slice(values);
        }
    }
    for (j, &v) in response.xty.iter().enumerate() {
        rtr[p * k + j] = v;
        rtr[j * k + p] = v;
    }
    rtr[p * k + p] = response.yty;
}
