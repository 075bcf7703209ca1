//! The statistics-level bootstrap against rows kept in the test.

use super::*;
use crate::crossed::{Factor, Pair};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;

/// A grouping factor row by row: each row's level and its q Z values.
struct Grouping {
    q: usize,
    nlev: usize,
    level: Vec<usize>,
    z: Vec<Vec<f64>>,
}

/// A small data set kept as rows: X (per row, p values) and the groupings,
/// the one with the most levels first.
struct Design {
    x: Vec<Vec<f64>>,
    groupings: Vec<Grouping>,
}

/// The parameters a replicate is drawn at.
struct Truth {
    beta: Vec<f64>,
    lambdas: Vec<Vec<f64>>,
    sigma: f64,
}

impl Design {
    fn n(&self) -> usize {
        self.x.len()
    }

    fn p(&self) -> usize {
        self.x[0].len()
    }

    /// The fit's statistics from rows with response y.
    fn statistics(&self, y: &[f64]) -> (Vec<Factor>, Vec<Pair>, Vec<f64>) {
        let k = self.p() + 1;
        let xy = |i: usize| -> Vec<f64> { self.x[i].iter().copied().chain([y[i]]).collect() };
        let mut factors = Vec::new();
        for g in &self.groupings {
            let q = g.q;
            let mut ztz = vec![0.0; g.nlev * q * q];
            let mut ztr = vec![0.0; g.nlev * q * k];
            for i in 0..self.n() {
                let (l, z, r) = (g.level[i], &g.z[i], xy(i));
                for c in 0..q {
                    for a in 0..q {
                        ztz[l * q * q + c * q + a] += z[a] * z[c];
                    }
                }
                for j in 0..k {
                    for a in 0..q {
                        ztr[l * q * k + j * q + a] += z[a] * r[j];
                    }
                }
            }
            factors.push(Factor {
                q,
                nlev: g.nlev,
                ztz,
                ztr,
                off: 0,
            });
        }
        let mut pairs = Vec::new();
        for a in 0..self.groupings.len() {
            for b in a + 1..self.groupings.len() {
                let (ga, gb) = (&self.groupings[a], &self.groupings[b]);
                let mut cells: BTreeMap<(u32, u32), Vec<f64>> = BTreeMap::new();
                for i in 0..self.n() {
                    let block = cells
                        .entry((ga.level[i] as u32, gb.level[i] as u32))
                        .or_insert_with(|| vec![0.0; ga.q * gb.q]);
                    for c in 0..gb.q {
                        for r in 0..ga.q {
                            block[c * ga.q + r] += ga.z[i][r] * gb.z[i][c];
                        }
                    }
                }
                let blocks = cells.values().flatten().copied().collect();
                pairs.push(Pair {
                    a,
                    b,
                    cells: cells.keys().copied().collect(),
                    blocks,
                });
            }
        }
        let mut rtr = vec![0.0; k * k];
        for i in 0..self.n() {
            let r = xy(i);
            for c in 0..k {
                for a in 0..k {
                    rtr[c * k + a] += r[a] * r[c];
                }
            }
        }
        (factors, pairs, rtr)
    }

    /// Zᵀv per factor, Xᵀv and vᵀv, from rows.
    fn response_of(&self, v: &[f64]) -> Response {
        let zty = self
            .groupings
            .iter()
            .map(|g| {
                let mut s = vec![0.0; g.nlev * g.q];
                for i in 0..self.n() {
                    for a in 0..g.q {
                        s[g.level[i] * g.q + a] += g.z[i][a] * v[i];
                    }
                }
                s
            })
            .collect();
        let xty = (0..self.p())
            .map(|j| (0..self.n()).map(|i| self.x[i][j] * v[i]).sum())
            .collect();
        Response {
            zty,
            xty,
            yty: v.iter().map(|a| a * a).sum(),
        }
    }

    fn simulator(&self) -> Simulator {
        let (factors, pairs, rtr) = self.statistics(&vec![0.0; self.n()]);
        Simulator::new(self.n() as f64, self.p(), &factors, &pairs, &rtr).expect("simulator")
    }

    /// y = Xβ + Zb + ε, row by row.
    fn response_vector(&self, beta: &[f64], effects: &[Vec<f64>], eps: &[f64]) -> Vec<f64> {
        (0..self.n())
            .map(|i| {
                let fixed: f64 = self.x[i].iter().zip(beta).map(|(x, b)| x * b).sum();
                let random: f64 = self
                    .groupings
                    .iter()
                    .zip(effects)
                    .map(|(g, b)| {
                        (0..g.q)
                            .map(|a| g.z[i][a] * b[g.level[i] * g.q + a])
                            .sum::<f64>()
                    })
                    .sum();
                fixed + random + eps[i]
            })
            .collect()
    }

    /// One replicate drawn the brute-force way: b and ε per row.
    fn row_replicate(&self, rng: &mut ChaCha8Rng, truth: &Truth) -> Response {
        let effects: Vec<Vec<f64>> = self
            .groupings
            .iter()
            .zip(&truth.lambdas)
            .map(|(g, lambda)| {
                let mut b = Vec::new();
                for _ in 0..g.nlev {
                    let z: Vec<f64> = (0..g.q).map(|_| rng.sample(StandardNormal)).collect();
                    b.extend((0..g.q).map(|r| {
                        truth.sigma * (0..=r).map(|c| lambda[c * g.q + r] * z[c]).sum::<f64>()
                    }));
                }
                b
            })
            .collect();
        let eps: Vec<f64> = (0..self.n())
            .map(|_| truth.sigma * rng.sample::<f64, _>(StandardNormal))
            .collect();
        self.response_of(&self.response_vector(&truth.beta, &effects, &eps))
    }

    /// rank [Z X] from the rows (Gram–Schmidt, twice per column).
    fn rank(&self) -> usize {
        let mut columns: Vec<Vec<f64>> = Vec::new();
        for g in &self.groupings {
            for l in 0..g.nlev {
                for a in 0..g.q {
                    columns.push(
                        (0..self.n())
                            .map(|i| if g.level[i] == l { g.z[i][a] } else { 0.0 })
                            .collect(),
                    );
                }
            }
        }
        for j in 0..self.p() {
            columns.push(self.x.iter().map(|x| x[j]).collect());
        }
        let mut basis: Vec<Vec<f64>> = Vec::new();
        for mut c in columns {
            let norm2: f64 = c.iter().map(|a| a * a).sum();
            for _ in 0..2 {
                for e in &basis {
                    let d: f64 = e.iter().zip(&c).map(|(a, b)| a * b).sum();
                    c.iter_mut().zip(e).for_each(|(x, a)| *x -= d * a);
                }
            }
            let rest: f64 = c.iter().map(|a| a * a).sum();
            if rest > 1e-10 * norm2 {
                let s = rest.sqrt();
                basis.push(c.iter().map(|a| a / s).collect());
            }
        }
        basis.len()
    }
}

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample(StandardNormal)
}

/// Level of row i: every level once first, then at random.
fn covering_level(rng: &mut ChaCha8Rng, i: usize, nlev: usize) -> usize {
    if i < nlev {
        i
    } else {
        rng.random_range(0..nlev)
    }
}

/// One factor, intercept and slope, 12 levels: level 0 has a single row and
/// level 1 a constant slope (both blocks singular); X = [1, x, w, x₂] with w
/// constant within levels (in Z's span, as are 1 and x). rank = 22 + 1.
fn one_factor() -> Design {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let nlev = 12;
    let group_w: Vec<f64> = (0..nlev).map(|_| normal(&mut rng)).collect();
    let mut level = vec![0];
    for l in 1..nlev {
        level.extend(std::iter::repeat(l).take(3 + l % 4));
    }
    let x: Vec<f64> = level
        .iter()
        .map(|&l| if l == 1 { 0.5 } else { normal(&mut rng) })
        .collect();
    let rows = (0..level.len())
        .map(|i| vec![1.0, x[i], group_w[level[i]], normal(&mut rng)])
        .collect();
    let z = x.iter().map(|&x| vec![1.0, x]).collect();
    Design {
        x: rows,
        groupings: vec![Grouping {
            q: 2,
            nlev,
            level,
            z,
        }],
    }
}

/// Two crossed factors: 16 levels with intercept and slope, 5 levels with
/// an intercept (levels at random), X = [1, x].
fn crossed() -> Design {
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let n = 64;
    let x: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
    let first: Vec<usize> = (0..n).map(|i| i % 16).collect();
    let second: Vec<usize> = (0..n).map(|i| covering_level(&mut rng, i, 5)).collect();
    Design {
        x: x.iter().map(|&x| vec![1.0, x]).collect(),
        groupings: vec![
            Grouping {
                q: 2,
                nlev: 16,
                level: first,
                z: x.iter().map(|&x| vec![1.0, x]).collect(),
            },
            Grouping {
                q: 1,
                nlev: 5,
                level: second,
                z: vec![vec![1.0]; n],
            },
        ],
    }
}

/// Classes within schools, both with intercept and slope: 12 classes, class
/// c in school c mod 3, so Z_school lies in the span of Z_class. X = [1, x,
/// x₂, w] with w a school covariate. rank = 24 + 1 (x₂).
fn nested() -> Design {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let school_w = [0.3, -1.2, 0.8];
    let mut class = Vec::new();
    for c in 0..12 {
        class.extend(std::iter::repeat(c).take(3 + c % 3));
    }
    let n = class.len();
    let school: Vec<usize> = class.iter().map(|c| c % 3).collect();
    let x: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
    let z: Vec<Vec<f64>> = x.iter().map(|&x| vec![1.0, x]).collect();
    Design {
        x: (0..n)
            .map(|i| vec![1.0, x[i], normal(&mut rng), school_w[school[i]]])
            .collect(),
        groupings: vec![
            Grouping {
                q: 2,
                nlev: 12,
                level: class,
                z: z.clone(),
            },
            Grouping {
                q: 2,
                nlev: 3,
                level: school,
                z,
            },
        ],
    }
}

/// Three crossed factors (20 levels, intercept; 5 levels, intercept and
/// slope; 3 levels, intercept): pairs among the dense factors too.
fn three_factors() -> Design {
    let mut rng = ChaCha8Rng::seed_from_u64(14);
    let n = 70;
    let x: Vec<f64> = (0..n).map(|_| normal(&mut rng)).collect();
    let levels: Vec<Vec<usize>> = [20, 5, 3]
        .iter()
        .map(|&nlev| (0..n).map(|i| covering_level(&mut rng, i, nlev)).collect())
        .collect();
    Design {
        x: (0..n).map(|i| vec![1.0, x[i], normal(&mut rng)]).collect(),
        groupings: vec![
            Grouping {
                q: 1,
                nlev: 20,
                level: levels[0].clone(),
                z: vec![vec![1.0]; n],
            },
            Grouping {
                q: 2,
                nlev: 5,
                level: levels[1].clone(),
                z: x.iter().map(|&x| vec![1.0, x]).collect(),
            },
            Grouping {
                q: 1,
                nlev: 3,
                level: levels[2].clone(),
                z: vec![vec![1.0]; n],
            },
        ],
    }
}

fn designs() -> Vec<(&'static str, Design)> {
    vec![
        ("one factor", one_factor()),
        ("crossed", crossed()),
        ("nested", nested()),
        ("three factors", three_factors()),
    ]
}

fn truth(design: &Design) -> Truth {
    let lambda = |q: usize, f: usize| -> Vec<f64> {
        if q == 1 {
            vec![0.9 + 0.4 * f as f64]
        } else {
            vec![0.8 + 0.3 * f as f64, 0.3 - 0.6 * f as f64, 0.0, 0.6]
        }
    };
    Truth {
        beta: [1.0, -0.5, 0.3, 2.0][..design.p()].to_vec(),
        lambdas: design
            .groupings
            .iter()
            .enumerate()
            .map(|(f, g)| lambda(g.q, f))
            .collect(),
        sigma: 0.7,
    }
}

fn flatten(r: &Response) -> Vec<f64> {
    r.zty
        .iter()
        .flatten()
        .chain(&r.xty)
        .copied()
        .chain([r.yty])
        .collect()
}

fn bits(r: &Response) -> Vec<u64> {
    flatten(r).iter().map(|x| x.to_bits()).collect()
}

/// 1. For a fixed b* and ε* (drawn here, explicitly), the statistics of y*
/// from rows equal `Simulator::response` given b* and ε*'s own statistics
/// (Zᵀε*, Xᵀε*, ε*ᵀε* from rows): the bookkeeping of Mᵀy* = Gv + Mᵀε* and
/// y*ᵀy* = ‖Lᵀv‖² + 2vᵀMᵀε* + ε*ᵀε* through the factor L, all but the
/// sampling of c and of the χ². `apply` then gives every statistic of y*.
#[test]
fn exact_algebra_matches_rows() {
    for (name, design) in designs() {
        let truth = truth(&design);
        let sim = design.simulator();
        let mut rng = ChaCha8Rng::seed_from_u64(99);
        let effects: Vec<Vec<f64>> = design
            .groupings
            .iter()
            .map(|g| (0..g.nlev * g.q).map(|_| normal(&mut rng)).collect())
            .collect();
        let eps: Vec<f64> = (0..design.n()).map(|_| 0.7 * normal(&mut rng)).collect();
        let y = design.response_vector(&truth.beta, &effects, &eps);
        let expected = design.response_of(&y);
        let got = sim.response(&truth.beta, &effects, &design.response_of(&eps));
        let (e, g) = (flatten(&expected), flatten(&got));
        let scale = e.iter().fold(1.0f64, |m, x| m.max(x.abs()));
        for (j, (a, b)) in e.iter().zip(&g).enumerate() {
            assert!(
                (a - b).abs() <= 1e-11 * scale,
                "{name}: statistic {j}: rows {a}, statistics {b}"
            );
        }
        // apply: the replicate's statistics are those of y* from rows, entry for entry.
        let (mut factors, pairs, mut rtr) = design.statistics(&vec![0.0; design.n()]);
        apply(&got, &mut factors, &mut rtr);
        let (factors_y, _, rtr_y) = design.statistics(&y);
        let close =
            |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-11 * scale);
        assert!(close(&rtr, &rtr_y), "{name}: rtr after apply");
        for (f, fy) in factors.iter().zip(&factors_y) {
            assert!(
                close(&f.ztr, &fy.ztr) && close(&f.ztz, &fy.ztz),
                "{name}: ztr after apply"
            );
        }
        assert_eq!(
            pairs.len(),
            design.groupings.len() * (design.groupings.len() - 1) / 2
        );
    }
}

/// The rank of [Z X] the factorization reveals is the rows' (Gram–Schmidt),
/// and the one worked out by hand for the one-factor and nested designs.
#[test]
fn rank_is_revealed() {
    for (name, design) in designs() {
        assert_eq!(design.simulator().rank(), design.rank(), "{name}");
    }
    assert_eq!(one_factor().simulator().rank(), 23);
    assert_eq!(nested().simulator().rank(), 25);
}

/// Means and covariances of many replicates' statistics.
struct Moments {
    count: f64,
    mean: Vec<f64>,
    /// per pair j ≤ l (row-major over the lower triangle): the mean and the
    /// variance of (x_j − x̄_j)(x_l − x̄_l), whose mean is the covariance
    cov: Vec<(f64, f64)>,
}

impl Moments {
    fn of(samples: &[Vec<f64>]) -> Moments {
        let (count, d) = (samples.len() as f64, samples[0].len());
        let mean: Vec<f64> = (0..d)
            .map(|j| samples.iter().map(|s| s[j]).sum::<f64>() / count)
            .collect();
        let mut cov = Vec::new();
        for j in 0..d {
            for l in 0..=j {
                let products: Vec<f64> = samples
                    .iter()
                    .map(|s| (s[j] - mean[j]) * (s[l] - mean[l]))
                    .collect();
                let m = products.iter().sum::<f64>() / count;
                let v = products.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (count - 1.0);
                cov.push((m, v));
            }
        }
        Moments { count, mean, cov }
    }

    fn variance(&self, j: usize) -> f64 {
        self.cov[j * (j + 1) / 2 + j].0
    }

    /// The largest |difference| / standard error over every mean, variance
    /// and covariance, with its description.
    fn worst_z(&self, other: &Moments) -> (f64, String) {
        let mut worst = (0.0, String::new());
        for j in 0..self.mean.len() {
            let se = (self.variance(j) / self.count + other.variance(j) / other.count).sqrt();
            let z = (self.mean[j] - other.mean[j]).abs() / se;
            if z > worst.0 {
                worst = (
                    z,
                    format!("mean {j}: {} vs {}", self.mean[j], other.mean[j]),
                );
            }
        }
        let mut t = 0;
        for j in 0..self.mean.len() {
            for l in 0..=j {
                let ((m1, v1), (m2, v2)) = (self.cov[t], other.cov[t]);
                let z = (m1 - m2).abs() / (v1 / self.count + v2 / other.count).sqrt();
                if z > worst.0 {
                    worst = (z, format!("cov({j}, {l}): {m1} vs {m2}"));
                }
                t += 1;
            }
        }
        worst
    }
}

const REPLICATES: u64 = 20_000;

fn statistics_level(design: &Design, truth: &Truth, sigma: f64) -> Moments {
    let sim = design.simulator();
    let samples: Vec<Vec<f64>> = (0..REPLICATES)
        .map(|i| flatten(&sim.replicate(7, i, &truth.beta, &truth.lambdas, sigma)))
        .collect();
    Moments::of(&samples)
}

fn row_level(design: &Design, truth: &Truth) -> Moments {
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let samples: Vec<Vec<f64>> = (0..REPLICATES)
        .map(|_| flatten(&design.row_replicate(&mut rng, truth)))
        .collect();
    Moments::of(&samples)
}

/// The noise alone: β = 0 and Λ = 0, so y* = ε* and the replicate is
/// (Mᵀε*, ε*ᵀε*), the draw of c and of the χ² remainder (ε*ᵀε* has variance
/// 2nσ⁴ only, so its mean tells the degrees of freedom apart).
fn noise_only(truth: &Truth) -> Truth {
    Truth {
        beta: vec![0.0; truth.beta.len()],
        lambdas: truth.lambdas.iter().map(|l| vec![0.0; l.len()]).collect(),
        sigma: truth.sigma,
    }
}

/// 2. 20,000 replicates drawn from the statistics against 20,000 drawn from
/// rows (b* and ε* per row, statistics formed from y*). For every statistic
/// (each Zᵀy* entry, Xᵀy*, y*ᵀy*), its mean, and for every pair of them
/// (variances included) the mean of the centred product: the two estimates
/// differ by less than 5 standard errors of their difference (estimated
/// from the samples; under equal laws each such |z| exceeds 5 with
/// probability 6e-7, and the seeds are fixed). Each design at the truth and
/// for the noise alone. To show the comparison has power, the same
/// statistics-level draw at σ × 1.1 must fail it.
#[test]
fn distribution_matches_rows() {
    for (name, design) in designs() {
        let full = truth(&design);
        let noise = noise_only(&full);
        for (what, at) in [("replicate", &full), ("noise", &noise)] {
            let rows = row_level(&design, at);
            let (z, worst) = statistics_level(&design, at, at.sigma).worst_z(&rows);
            eprintln!("{name}, {what}: worst {z:.2} at {worst}");
            assert!(z < 5.0, "{name}, {what}: {worst} ({z:.1} standard errors)");
            let (z_off, _) = statistics_level(&design, at, at.sigma * 1.1).worst_z(&rows);
            eprintln!("{name}, {what}: off {z_off:.2}");
            assert!(
                z_off > 5.0,
                "{name}, {what}: σ × 1.1 went unnoticed ({z_off:.1} standard errors)"
            );
        }
    }
}

/// 3. A replicate depends on (seed, index) alone: the same pair gives the
/// same bits, other indices or seeds other values, and replicates computed
/// in reverse or from two threads equal the sequential ones bit for bit.
#[test]
fn replicates_are_reproducible() {
    let design = three_factors();
    let truth = truth(&design);
    let sim = design.simulator();
    let draw =
        |seed: u64, i: u64| bits(&sim.replicate(seed, i, &truth.beta, &truth.lambdas, truth.sigma));
    assert_eq!(draw(5, 3), draw(5, 3));
    assert_ne!(draw(5, 3), draw(5, 4));
    assert_ne!(draw(5, 3), draw(6, 3));
    let count = 40;
    let sequential: Vec<Vec<u64>> = (0..count).map(|i| draw(5, i)).collect();
    let mut reverse: Vec<Vec<u64>> = (0..count).rev().map(|i| draw(5, i)).collect();
    reverse.reverse();
    assert_eq!(sequential, reverse);
    let mut threaded: Vec<Vec<u64>> = vec![Vec::new(); count as usize];
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..2u64)
            .map(|t| {
                scope.spawn(move || {
                    (t..count)
                        .step_by(2)
                        .map(|i| (i, draw(5, i)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for handle in handles {
            for (i, r) in handle.join().unwrap() {
                threaded[i as usize] = r;
            }
        }
    });
    assert_eq!(sequential, threaded);
    let distinct: std::collections::HashSet<&Vec<u64>> = sequential.iter().collect();
    assert_eq!(distinct.len(), count as usize);
}
