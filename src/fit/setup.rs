//! The model's columns re-expressed about the data (see `fit`), checked, and
//! their cross-products: everything the optimizer's problem is made of.

use super::checks::{check_memory, check_rank, check_response, check_scale, HUGE, TINY};
use super::columns::{constant_of, cross, cross_group, each_term, Col};
use crate::accumulator::Accumulator;
use crate::bail;
use crate::design::{self, DesignColumn, Source};
use crate::error::Result;
use crate::theta::ThetaLayout;

/// One grouping factor's part of the model: its random-effect columns
/// (re-expressed), θ layout, and the map b = T b_c back to the data scale.
pub(crate) struct FactorSpec {
    /// index into `acc.factors`
    pub index: usize,
    /// lme4's name: the grouping columns joined by ':'
    pub name: String,
    pub nlev: usize,
    pub zcols: Vec<DesignColumn>,
    pub zc: Vec<Col>,
    pub layout: ThetaLayout,
    pub tmat: Vec<f64>,
    pub bars_terms: Vec<Vec<String>>,
}

/// The fit's columns and cross-products, ready for the optimizer.
pub(crate) struct Setup {
    pub n: f64,
    pub p: usize,
    pub k: usize,
    pub xcols: Vec<DesignColumn>,
    /// [X y] re-expressed
    pub rcols: Vec<Col>,
    pub specs: Vec<FactorSpec>,
    /// [X y]ᵀ[X y] of the re-expressed columns
    pub rtr: Vec<f64>,
    /// β = β_c + e₀ (aᵀβ_c + ȳ) when the intercept absorbs the centring (`uncentre`)
    pub uncentre: bool,
    pub intercept_shift: Vec<f64>,
    pub y_mean: f64,
}

impl Setup {
    /// Per-level Z_lᵀZ_l and Z_lᵀ[X y] of the re-expressed columns of one
    /// factor, for the levels `acc` holds (all of them, or a shard's).
    pub fn level_blocks(&self, acc: &Accumulator, spec: &FactorSpec) -> (Vec<f64>, Vec<f64>) {
        let (q, k, rcols) = (spec.zcols.len(), self.k, &self.rcols);
        let store = &acc.factors[spec.index].store;
        let nlev = store.len();
        let mut ztz = vec![0.0; nlev * q * q];
        let mut ztr = vec![0.0; nlev * q * k];
        for i in 0..nlev {
            let m = &store.group(i);
            for a in 0..q {
                for b in 0..q {
                    ztz[i * q * q + b * q + a] =
                        cross_group(m, &spec.zc[a], &spec.zc[b], &acc.zindex);
                }
                for j in 0..k {
                    ztr[i * q * k + j * q + a] =
                        cross_group(m, &spec.zc[a], &rcols[j], &acc.zindex);
                }
            }
        }
        (ztz, ztr)
    }
}

/// Re-express, check and cross the columns of the model.
pub(super) fn prepare(acc: &Accumulator) -> Result<Setup> {
    prepare_with(acc, None)
}

/// `prepare`, with each factor's number of levels given (`levels`) where the
/// levels are held elsewhere (a distributed fit: `acc` holds no groups, and
/// the driver's memory is not what their statistics need).
pub(crate) fn prepare_with(acc: &Accumulator, levels: Option<&[usize]>) -> Result<Setup> {
    let f = &acc.formula;
    design::check_contrasts(acc)?;
    // A header (`distributed`) keeps no groups: its rows are the all-rows moments'.
    let n_obs = if levels.is_some() {
        acc.global.n
    } else {
        acc.n_obs()
    };
    if n_obs == 0 {
        bail!(
            "no rows left to fit after dropping {} row(s) with NULL or non-finite values in the model's columns ({})",
            acc.n_dropped,
            acc.var_names.join(", ")
        );
    }
    let d = acc.ext.len();
    let mut total = acc.global.clone();
    total.grow(d);
    let n = n_obs as f64;
    let abs_mean = |c: usize| acc.shift[c] + total.mean(c);
    let sd = |c: usize| (total.comoment(c, c) / total.w).sqrt();
    // How large a column's values are, even when their squares under- or overflow:
    // its mean and SD, and its largest group mean where those cannot settle
    // `check_scale`. A group mean lies within √(n)·SD of the mean (the groups'
    // share of the co-moment is at most all of it), so the groups matter only
    // when the SD is not finite or that bound leaves [TINY, HUGE].
    let magnitude = |c: usize| {
        let spread = if sd(c).is_finite() { sd(c) } else { 0.0 };
        let base = abs_mean(c).abs().max(spread);
        let settled =
            sd(c).is_finite() && base >= TINY && abs_mean(c).abs() + spread * n.sqrt() <= HUGE;
        if settled {
            return base;
        }
        let store = &acc.factors[0].store;
        (0..store.len())
            .map(|g| (acc.shift[c] + store.group(g).mean(c)).abs())
            .fold(base, f64::max)
    };
    check_response(
        &acc.vars[0].name,
        total.comoment(0, 0),
        abs_mean(0),
        magnitude(0),
    )?;
    for c in 1..d {
        if !total.comoment(c, c).is_finite() {
            let name: Vec<&str> = acc.terms[acc.ext[c].term]
                .vars
                .iter()
                .map(|&v| acc.vars[v].name.as_str())
                .collect();
            check_scale(
                &format!("the term '{}'", name.join(":")),
                f64::INFINITY.max(magnitude(c)),
            )?;
        }
    }

    // Fixed effects.
    let xcols: Vec<DesignColumn> = design::code(acc, f.intercept, &f.fixed, true)?;
    let p = xcols.len();
    let centre_x = f.intercept;
    // A column's (or combination's) mean relative to the state's shift, the
    // shift itself (with a combination's constant), and its SD.
    let rel_mean = |src: &Source| {
        let mut m = 0.0;
        each_term(src, |c, w| m += w * total.mean(c));
        m
    };
    let shift_of = |src: &Source| {
        let mut m = constant_of(src);
        each_term(src, |c, w| m += w * acc.shift[c]);
        m
    };
    let src_sd = |src: &Source| {
        let mut v = 0.0;
        each_term(src, |i, wi| {
            each_term(src, |j, wj| v += wi * wj * total.comoment(i, j))
        });
        (v / total.w).sqrt()
    };
    let col_x = |dc: &DesignColumn| match &dc.source {
        s @ (Source::Ext(_) | Source::Combo(..)) if centre_x => Col {
            source: s.clone(),
            centre: rel_mean(s),
            scale: 1.0,
        },
        s @ (Source::Ext(_) | Source::Combo(..)) => Col {
            source: s.clone(),
            centre: -shift_of(s),
            scale: 1.0,
        },
        s => Col {
            source: s.clone(),
            centre: 0.0,
            scale: 1.0,
        },
    };
    let mut rcols: Vec<Col> = xcols.iter().map(col_x).collect();
    rcols.push(if centre_x {
        Col {
            source: Source::Ext(0),
            centre: total.mean(0),
            scale: 1.0,
        }
    } else {
        Col {
            source: Source::Ext(0),
            centre: -acc.shift[0],
            scale: 1.0,
        }
    });
    let k = p + 1;

    // Random effects: per grouping factor, one block per bar.
    let mut specs: Vec<FactorSpec> = Vec::new();
    for (fi, factor) in acc.factors.iter().enumerate() {
        let group_vars: Vec<String> = factor
            .vars
            .iter()
            .map(|&v| acc.vars[v].name.clone())
            .collect();
        let name = group_vars.join(":");
        let nlev = levels.map_or(factor.store.len(), |l| l[fi]);
        if nlev < 2 {
            bail!("grouping factor '{name}' has {nlev} level(s); at least 2 are needed to estimate its variance");
        }
        let mut zcols: Vec<DesignColumn> = Vec::new();
        let mut zc: Vec<Col> = Vec::new();
        let mut block_sizes = Vec::new();
        let mut bars_terms: Vec<Vec<String>> = Vec::new();
        let mut bar_intercepts = Vec::new();
        for bar in f.random.iter().filter(|b| b.group == group_vars) {
            let cols = design::code(acc, bar.intercept, &bar.terms, false)?;
            if let (Some(written), true) = (&bar.diag_of, cols.len() > 1) {
                let names: Vec<&str> = cols.iter().map(|c| c.name.as_str()).collect();
                bail!(
                    "'{written}': diag() gives every column of its block its own variance, and the term '{}' has {} columns ({}); \
                     lmm splits a block by term, not by column, so diag() takes terms of one column for now \
                     (lme4's (f || g) keeps a factor's columns in one correlated block: write that if it is what you mean)",
                    bar.terms.first().map_or("(Intercept)".to_string(), |t| t.join(":")),
                    cols.len(),
                    names.join(", ")
                );
            }
            let centre = bar.intercept && cols.len() > 1;
            for dc in &cols {
                let col = match &dc.source {
                    src @ (Source::Ext(_) | Source::Combo(..)) => {
                        if let Source::Ext(c) = src {
                            check_scale(
                                &format!("the random-effect column '{}' of '{name}'", dc.name),
                                magnitude(*c),
                            )?;
                        }
                        let s = src_sd(src);
                        let s = if s > 0.0 && s.is_finite() { s } else { 1.0 };
                        Col {
                            source: src.clone(),
                            centre: if centre {
                                rel_mean(src)
                            } else {
                                -shift_of(src)
                            },
                            scale: s,
                        }
                    }
                    s => Col {
                        source: s.clone(),
                        centre: 0.0,
                        scale: 1.0,
                    },
                };
                zc.push(col);
            }
            block_sizes.push(cols.len());
            bar_intercepts.push(bar.intercept);
            bars_terms.push(cols.iter().map(|c| c.name.clone()).collect());
            zcols.extend(cols);
        }
        let q = zcols.len();
        let layout = ThetaLayout::new(&block_sizes);
        // b = T b_c, T block upper-triangular (q×q column-major).
        let mut tmat = vec![0.0; q * q];
        for (bi, &(off, s)) in layout.blocks.iter().enumerate() {
            for j in 0..s {
                let c = &zc[off + j];
                tmat[(off + j) * q + off + j] = 1.0 / c.scale;
                if bar_intercepts[bi] && j > 0 && s > 1 {
                    if matches!(c.source, Source::Ext(_) | Source::Combo(..)) {
                        // the intercept absorbs −c_j/s_j b_cj
                        tmat[(off + j) * q + off] = -(shift_of(&c.source) + c.centre) / c.scale;
                    }
                }
            }
        }
        specs.push(FactorSpec {
            index: fi,
            name,
            nlev,
            zcols,
            zc,
            layout,
            tmat,
            bars_terms,
        });
    }
    for s in &specs {
        if (n_obs as usize) <= s.nlev * s.zcols.len() {
            bail!(
                "number of observations ({n_obs}) <= number of random effects ({}) for grouping factor '{}'; the random-effects parameters and the residual variance are probably unidentifiable",
                s.nlev * s.zcols.len(),
                s.name
            );
        }
    }
    if (n_obs as usize) <= p {
        bail!(
            "number of observations ({n_obs}) must exceed the number of fixed-effect columns ({p})"
        );
    }
    if levels.is_none() {
        check_memory(&specs, k)?;
    }

    let mut rtr = vec![0.0; k * k];
    for a in 0..k {
        for b in 0..k {
            rtr[b * k + a] = cross(&total, &rcols[a], &rcols[b]);
        }
    }
    // Column means on the data scale, to name the intercept in an aliasing that involves it.
    let xmeans: Vec<f64> = xcols
        .iter()
        .map(|c| match &c.source {
            Source::Ones => 1.0,
            s => shift_of(s) + rel_mean(s),
        })
        .collect();
    for dc in &xcols {
        if let Source::Ext(c) = dc.source {
            check_scale(&format!("the column '{}'", dc.name), magnitude(c))?;
        }
    }
    check_rank(&rtr, k, &xcols, if centre_x { Some(&xmeans) } else { None })?;

    // Map β back: β_0 = β_c0 − Σ_j x̄_j β_cj (+ ȳ), β_j = β_cj.
    let uncentre = centre_x && p > 0 && matches!(xcols[0].source, Source::Ones);
    let intercept_shift = (0..p)
        .map(|j| match &xcols[j].source {
            Source::Ext(_) | Source::Combo(..) if uncentre && j > 0 => -xmeans[j],
            _ => 0.0,
        })
        .collect();
    let y_mean = abs_mean(0);
    Ok(Setup {
        n,
        p,
        k,
        xcols,
        rcols,
        specs,
        rtr,
        uncentre,
        intercept_shift,
        y_mean,
    })
}
