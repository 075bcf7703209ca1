//! The variance parameters on the data scale, named as the tidy table names
//! them: per factor and block `sd__T` and `cor__T1.T2` of
//! Var(b) = σ² T Λ Λᵀ Tᵀ, then `sd__Observation` of group `Residual`.

use super::stored::Stored;
use crate::dense::sandwich;
use crate::model::Model;

#[derive(Debug, Clone, PartialEq)]
pub struct VarPar {
    pub group_var: String,
    pub term: String,
    pub value: f64,
}

/// Σ_b = σ² T Λ Λᵀ Tᵀ for factor f.
pub fn covariance(stats: &Stored, f: usize, lambda: &[f64], sigma2: f64) -> Vec<f64> {
    let q = stats.factors[f].q;
    let mut ll = vec![0.0; q * q];
    for a in 0..q {
        for b in 0..q {
            ll[b * q + a] = (0..q)
                .map(|t| lambda[t * q + a] * lambda[t * q + b])
                .sum::<f64>()
                * sigma2;
        }
    }
    sandwich(&stats.factors[f].tmat, &ll, q)
}

/// sd and cor of every block of every factor, then σ.
pub fn sdcor(stats: &Stored, model: &Model, lambdas: &[Vec<f64>], sigma2: f64) -> Vec<VarPar> {
    let mut out = Vec::new();
    for (f, fs) in stats.factors.iter().enumerate() {
        let q = fs.q;
        let cov = covariance(stats, f, &lambdas[f], sigma2);
        let names: Vec<&str> = model.factors[f]
            .terms
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let group = &model.factors[f].name;
        let mut off = 0;
        for &s in &fs.blocks {
            for j in off..off + s {
                out.push(VarPar {
                    group_var: group.clone(),
                    term: format!("sd__{}", names[j]),
                    value: cov[j * q + j].max(0.0).sqrt(),
                });
            }
            for a in off..off + s {
                for b in a + 1..off + s {
                    let (va, vb) = (cov[a * q + a], cov[b * q + b]);
                    let cor = if va > 0.0 && vb > 0.0 {
                        (cov[b * q + a] / (va.sqrt() * vb.sqrt())).clamp(-1.0, 1.0)
                    } else {
                        f64::NAN
                    };
                    out.push(VarPar {
                        group_var: group.clone(),
                        term: format!("cor__{}.{}", names[a], names[b]),
                        value: cor,
                    });
                }
            }
            off += s;
        }
    }
    out.push(VarPar {
        group_var: "Residual".into(),
        term: "sd__Observation".into(),
        value: sigma2.sqrt(),
    });
    out
}
