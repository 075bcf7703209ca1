//! Times the core alone (no DuckDB) on an InstEval-shaped crossed problem:
//! `cargo run --release --example profile_crossed -- [rows] [students] [lecturers]`.
//! Defaults: 73,421 rows, 2,972 students × 1,128 lecturers, lecturers in 14
//! departments, a 2-level `service` (so `dept:service` has 28 levels).
use lmm::input::{Chunk, Column, ColumnData};
use lmm::{Accumulator, Options};
use std::time::Instant;

fn main() {
    let arg = |i: usize, d: usize| std::env::args().nth(i).map_or(d, |s| s.parse().unwrap());
    let (n, ns, nd) = (arg(1, 73_421), arg(2, 2_972), arg(3, 1_128));
    let formula = std::env::args()
        .nth(4)
        .unwrap_or_else(|| "y ~ service + (1 | s) + (1 | d) + (1 | dept:service)".into());
    let mut state: u64 = 7;
    let mut unif = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut draws: Vec<f64> = (0..2 * (n + ns + nd + 64)).map(|_| unif()).collect();
    let mut normal = move || {
        let (u, v) = (draws.pop().unwrap().max(1e-300), draws.pop().unwrap());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let bs: Vec<f64> = (0..ns).map(|_| 0.6 * normal()).collect();
    let bd: Vec<f64> = (0..nd).map(|_| 0.4 * normal()).collect();
    let bds: Vec<f64> = (0..28).map(|_| 0.2 * normal()).collect();
    let mut h: u64 = 99;
    let mut next = || {
        h = h
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        h >> 33
    };
    let (mut y, mut s, mut d, mut dept, mut service) = (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..n {
        let (si, di, sv) = (
            next() as usize % ns,
            next() as usize % nd,
            next() as usize % 2,
        );
        let dp = di % 14;
        s.push(si as i64);
        d.push(di as i64);
        dept.push(dp as i64);
        service.push(if sv == 1 { &b"yes"[..] } else { &b"no"[..] });
        y.push(3.0 + 0.1 * sv as f64 + bs[si] + bd[di] + bds[dp * 2 + sv] + normal());
    }
    let mut acc = Accumulator::new(&formula, Options::default()).unwrap();
    let t0 = Instant::now();
    let valid = vec![true; n];
    let col = |name: &str, data| Column {
        name: name.into(),
        type_name: "X".into(),
        data,
        valid: valid.clone(),
    };
    let columns = acc
        .required_columns()
        .iter()
        .map(|nm| match nm.as_str() {
            "y" => col("y", ColumnData::Float(y.clone())),
            "s" => col("s", ColumnData::Int(s.clone())),
            "d" => col("d", ColumnData::Int(d.clone())),
            "dept" => col("dept", ColumnData::Int(dept.clone())),
            "service" => col("service", ColumnData::Text(service.clone())),
            other => panic!("no column {other}"),
        })
        .collect();
    let chunk = Chunk { columns, len: n };
    let rows: Vec<usize> = (0..n).collect();
    acc.update(&chunk, &rows).unwrap();
    let t_update = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let out = acc.finish().unwrap();
    let t_fit = t1.elapsed().as_secs_f64();
    let get = |t: &str| {
        out.iter()
            .find(|r| r.term.as_deref() == Some(t))
            .and_then(|r| r.estimate)
            .unwrap_or(f64::NAN)
    };
    println!(
        "n={n} update={t_update:.3}s fit={t_fit:.3}s evaluations={} REMLcrit={:.6}",
        get("iterations"),
        get("REMLcrit")
    );
    for r in out
        .iter()
        .filter(|r| r.effect == "ran_pars" || r.effect == "fixed")
    {
        println!(
            "  {} {:?} {:?} {:.6}",
            r.effect,
            r.group_var,
            r.term,
            r.estimate.unwrap()
        );
    }
}
