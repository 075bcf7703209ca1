//! Times the core alone (no DuckDB) on the issue-2 benchmark design:
//! `cargo run --release --example profile_core -- 1000000`.
use lmm::input::{Chunk, Column, ColumnData};
use lmm::{Accumulator, Options};
use std::time::Instant;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(1_000_000, |s| s.parse().unwrap());
    let g = n / 20;
    let mut state: u64 = 42;
    let mut unif = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u, v) = (unif().max(1e-300), unif());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    let b0: Vec<f64> = (0..g).map(|_| normal()).collect();
    let b1: Vec<f64> = (0..g).map(|_| 0.5 * normal()).collect();
    let cats: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
    let acc0 =
        Accumulator::new("y ~ x1 + x2 + x3 + cat + (1 + x1 | g)", Options::default()).unwrap();
    let mut acc = acc0.clone();
    let t0 = Instant::now();
    let chunk_len = 2048;
    let mut i = 0;
    let mut gen_time = 0.0;
    while i < n {
        let len = chunk_len.min(n - i);
        let tg = Instant::now();
        let mut y = Vec::with_capacity(len);
        let mut x1 = Vec::with_capacity(len);
        let mut x2 = Vec::with_capacity(len);
        let mut x3 = Vec::with_capacity(len);
        let mut cat = Vec::with_capacity(len);
        let mut gg = Vec::with_capacity(len);
        for r in 0..len {
            let row = i + r;
            let grp = row / 20;
            let (a, b, c) = (normal(), normal(), normal());
            let k = row % 4;
            x1.push(a);
            x2.push(b);
            x3.push(c);
            cat.push(cats[k]);
            gg.push(grp as i64);
            y.push(
                1.0 + 0.5 * a - 0.25 * b
                    + 0.1 * c
                    + 0.2 * k as f64
                    + b0[grp]
                    + b1[grp] * a
                    + 0.7 * normal(),
            );
        }
        gen_time += tg.elapsed().as_secs_f64();
        let valid = vec![true; len];
        let col = |name: &str, data| Column {
            name: name.into(),
            type_name: "X".into(),
            data,
            valid: valid.clone(),
        };
        let names = acc.required_columns().to_vec();
        let columns = names
            .iter()
            .map(|nm| match nm.as_str() {
                "y" => col("y", ColumnData::Float(y.clone())),
                "x1" => col("x1", ColumnData::Float(x1.clone())),
                "x2" => col("x2", ColumnData::Float(x2.clone())),
                "x3" => col("x3", ColumnData::Float(x3.clone())),
                "cat" => col("cat", ColumnData::Text(cat.clone())),
                "g" => col("g", ColumnData::Int(gg.clone())),
                _ => unreachable!(),
            })
            .collect();
        let chunk = Chunk { columns, len };
        let rows: Vec<usize> = (0..len).collect();
        acc.update(&chunk, &rows).unwrap();
        i += len;
    }
    let t_update = t0.elapsed().as_secs_f64() - gen_time;
    let t1 = Instant::now();
    let rows = acc.finish().unwrap();
    let t_fit = t1.elapsed().as_secs_f64();
    let it = rows
        .iter()
        .find(|r| r.term.as_deref() == Some("iterations"))
        .unwrap()
        .estimate
        .unwrap();
    println!("n={n} groups={g} update={t_update:.3}s fit={t_fit:.3}s evaluations={it}");
    for r in rows.iter().filter(|r| r.effect != "ran_vals") {
        println!(
            "  {} {:?} {:?} {:.6}",
            r.effect,
            r.group_var,
            r.term,
            r.estimate.unwrap()
        );
    }
}
