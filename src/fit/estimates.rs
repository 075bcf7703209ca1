//! What either likelihood (one factor, or several) gives back at the optimum.

/// What either likelihood (one factor, or several) gives back at the optimum.
pub(crate) struct Estimates {
    pub deviance: f64,
    pub beta: Vec<f64>,
    pub sigma2: f64,
    pub vcov: Vec<f64>,
    /// per factor (spec order): Λ, conditional modes and covariances (transformed scale)
    pub lambdas: Vec<Vec<f64>>,
    pub blups: Vec<Vec<f64>>,
    pub cond_cov: Vec<Vec<f64>>,
    pub theta: Vec<f64>,
    pub diagonal: Vec<usize>,
    pub converged: bool,
    pub evaluations: usize,
    /// The problem's blocks, given back after the fit (elimination order):
    /// per factor (ztz, ztr), the pairs, and [X y]ᵀ[X y].
    pub blocks: Vec<(Vec<f64>, Vec<f64>)>,
    pub pairs: Vec<crate::inference::stored::PairStats>,
    pub rtr: Vec<f64>,
}

/// Snap diagonal θ entries that ended a rounding error away from 0 onto the
/// boundary, where lme4 reports them (a singular fit), if that is no worse.
pub(super) fn snap_to_boundary(
    theta: &mut [f64],
    f: &mut f64,
    diagonal: &[usize],
    dev: &dyn Fn(&[f64]) -> f64,
) {
    for &i in diagonal {
        if theta[i] > 0.0 && theta[i] < 1e-6 {
            let mut trial = theta.to_vec();
            trial[i] = 0.0;
            let ft = dev(&trial);
            if ft <= *f + 1e-12 * f.abs().max(1.0) {
                theta[i] = 0.0;
                *f = ft.min(*f);
            }
        }
    }
}
