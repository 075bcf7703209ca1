//! A session driven by its host (requests and answers as bytes, shards
//! built by the cache from statistics values) gives exactly the fit that
//! asks the shards directly; a host that misbehaves gets errors, not hangs.

use std::time::Duration;

use super::cache;
use super::exchange::{self, Next, Session};
use super::header;
use super::protocol::{answer_to_bytes, Request};
use crate::options::Ddf;
use crate::statistics::tests::{accumulate, data};
use crate::statistics::{decode, encode};
use crate::Accumulator;

/// Statistics values of shards of whole groups, the merged header's value and the level count.
fn shards(formula: &str, n: usize) -> (Vec<Vec<u8>>, Vec<u8>, usize) {
    let d = data();
    let mut rows = vec![Vec::new(); n];
    for r in 0..d.y.len() {
        rows[d.g[r][1..].parse::<usize>().unwrap() % n].push(r);
    }
    let stats: Vec<Vec<u8>> = rows
        .iter()
        .map(|r| encode(&accumulate(formula, &d, r)))
        .collect();
    let mut merged: Option<Accumulator> = None;
    let mut levels = 0;
    for s in &stats {
        let (h, l) = header::of(decode(s).unwrap());
        levels += l;
        match &mut merged {
            Some(m) => m.merge(&h).unwrap(),
            None => merged = Some(h),
        }
    }
    (stats, encode(&merged.unwrap()), levels)
}

/// Drive `session` to its end, answering from the cached shards.
fn drive(
    session: &Session,
    stats: &[Vec<u8>],
    header: &[u8],
    levels: usize,
) -> crate::error::Result<usize> {
    let mut requests = 0;
    loop {
        match session.next(Duration::from_secs(10))? {
            Next::Request(bytes) => {
                let request = Request::from_bytes(&bytes)?;
                let mut answers = Vec::new();
                for s in stats {
                    answers.extend(answer_to_bytes(
                        cache::shard(header, levels, s)?
                            .answer(&request)?
                            .as_deref(),
                    ));
                }
                session.reply(&answers)?;
                requests += 1;
            }
            Next::Wait => {}
            Next::Done => return Ok(requests),
        }
    }
}

#[test]
fn a_session_gives_the_fit_of_asking_the_shards_directly() {
    let formula = "y ~ x + c + (1 + x | g)";
    let (stats, header, levels) = shards(formula, 4);
    let mut merged = decode(&header).unwrap();
    merged.options.ddf = Ddf::Satterthwaite;
    let session = Session::start(merged.clone(), levels).unwrap();
    let requests = drive(&session, &stats, &header, levels).unwrap();
    let blups = session.blups_request().unwrap().expect("ranef is on");
    let fitted = session.result().unwrap();
    assert_eq!(fitted.requests, requests);
    assert!(session.result().is_err(), "the result is taken once");

    // the same fit, asking shards built without the cache
    struct Direct(Vec<super::shard::Shard>);
    impl super::driver::Ask for Direct {
        fn ask(&self, r: &Request) -> crate::error::Result<Vec<Option<Vec<f64>>>> {
            self.0.iter().map(|s| s.answer(r)).collect()
        }
    }
    let direct: Vec<_> = stats
        .iter()
        .map(|s| super::shard::Shard::new(&merged, levels, &decode(s).unwrap()).unwrap())
        .collect();
    let expected =
        super::driver::fit(&merged, levels, std::sync::Arc::new(Direct(direct))).unwrap();
    assert_eq!(fitted.tidy.into_rows(), expected.tidy.into_rows());
    assert_eq!(
        Request::from_bytes(&blups).unwrap(),
        expected.blups.unwrap()
    );
}

#[test]
fn a_host_out_of_step_gets_errors() {
    let formula = "y ~ x + (1 | g)";
    let (stats, header, levels) = shards(formula, 2);
    let session = Session::start(decode(&header).unwrap(), levels).unwrap();
    // a reply before any request
    let early = session.reply(&[]).err().unwrap().to_string();
    assert!(early.contains("no request"), "{early}");
    let Next::Request(_) = session.next(Duration::from_secs(10)).unwrap() else {
        panic!("a request first")
    };
    // another request before the answers
    let twice = session
        .next(Duration::from_millis(10))
        .err()
        .unwrap()
        .to_string();
    assert!(twice.contains("waiting for the answers"), "{twice}");
    // answers of the wrong size end the fit with a message
    session.reply(&answer_to_bytes(Some(&[1.0, 2.0]))).unwrap();
    let wrong = loop {
        match session.next(Duration::from_secs(10)) {
            Err(e) => break e.to_string(),
            Ok(Next::Wait) => {}
            Ok(other) => panic!("{other:?}"),
        }
    };
    assert!(wrong.contains("size"), "{wrong}");
    // truncated answers are refused before they reach the fit
    assert!(exchange::split_answers(&answer_to_bytes(Some(&[1.0]))[..7]).is_err());
    // an abandoned session ends
    let s = exchange::open(decode(&header).unwrap(), levels).unwrap();
    let session = exchange::get(s).unwrap();
    let Next::Request(_) = session.next(Duration::from_secs(10)).unwrap() else {
        panic!()
    };
    exchange::close(s);
    assert!(exchange::get(s).is_err());
    let ended = loop {
        match session.next(Duration::from_secs(10)) {
            Err(e) => break e.to_string(),
            Ok(Next::Wait) => {}
            Ok(other) => panic!("{other:?}"),
        }
    };
    assert!(
        ended.contains("waiting for the answers") || ended.contains("abandoned"),
        "{ended}"
    );
    let _ = stats;
}

#[test]
fn the_cache_keys_shards_by_their_values() {
    let (stats, header, levels) = shards("y ~ x + (1 | g)", 3);
    let a = cache::shard(&header, levels, &stats[0]).unwrap();
    let again = cache::shard(&header, levels, &stats[0]).unwrap();
    assert!(std::sync::Arc::ptr_eq(&a, &again));
    let b = cache::shard(&header, levels, &stats[1]).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&a, &b));
    assert_ne!(a.groups() + b.groups(), 0);
    let mut damaged = stats[0].clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    let e = cache::shard(&header, levels, &damaged)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("checksum"), "{e}");
}
