//! The fuzz targets' checks over their committed corpus, as ordinary tests: `make test` (and
//! so CI) replays every input under `fuzz/corpus/<target>/` through the same code the
//! coverage-guided targets run (`fuzz/cases.rs`, `fuzz/cases_client.rs`); `make fuzz` explores
//! from there. An input that once crashed a target goes into the corpus with the fix, so it is
//! replayed here from then on.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/cases.rs"]
#[allow(dead_code)]
mod cases;
#[path = "../fuzz/cases_client.rs"]
mod cases_client;

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    inputs.sort();
    assert!(!inputs.is_empty(), "no corpus in {}", dir.display());
    inputs
}

fn replay(target: &str, case: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| case(&bytes));
        assert!(outcome.is_ok(), "{target} fails on {}", path.display());
    }
}

#[test]
fn frame() {
    replay("frame", cases::frame);
}

#[test]
fn safetensors_server() {
    replay("safetensors_server", cases::safetensors_server);
}

#[test]
fn safetensors_client() {
    replay("safetensors_client", cases_client::safetensors_client);
}

#[test]
fn data_spec() {
    replay("data_spec", cases_client::data_spec);
}

#[test]
fn secagg() {
    replay("secagg", cases::secagg);
}

/// The committed SecAgg seeds are the honest messages of the round the case runs (its keys
/// come from a fixed seed): if the protocol changes, they must be written again, or the
/// fuzzer would start from messages the round refuses at once.
#[test]
fn secagg_seeds_are_current() {
    let fresh = cases::secagg_seeds();
    let committed: Vec<Vec<u8>> = corpus("secagg")
        .into_iter()
        .filter(|(p, _)| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|(_, b)| b)
        .collect();
    for seed in &fresh {
        assert!(
            committed.contains(seed),
            "stale SecAgg seeds: run `cargo test --test fuzz_corpus -- --ignored write_secagg_seeds`"
        );
    }
}

/// Writes the SecAgg seeds into the corpus (run by hand after a protocol change).
#[test]
#[ignore = "writes into fuzz/corpus; run by hand"]
fn write_secagg_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/secagg");
    for (i, seed) in cases::secagg_seeds().iter().enumerate() {
        std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
    }
}
