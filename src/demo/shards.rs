//! Deals the rows of one CSV table out to hospitals, one file each, as a federation's sites
//! would hold them.
//!
//! Rows are copied verbatim (no parsing, so nothing about the values can change) after a seeded
//! shuffle, and dealt round-robin: shard sizes differ by at most one row. Each hospital then
//! loads its file through the ordinary data spec with a seeded train/test split, so the driver
//! can load exactly the same held-out rows to evaluate the global model, standardised with
//! that hospital's own training statistics — as the hospital itself would apply the model.

use std::path::{Path, PathBuf};

use cohort_client::data::{CsvOptions, DataSpec, permutation};

/// The Wisconsin breast-cancer table, vendored with its CC BY 4.0 attribution in
/// `client/data/README.md`. Compiled in so the demo runs from any directory.
pub const BREAST_CANCER_CSV: &str = include_str!("../../client/data/breast_cancer.csv");

/// The label column of [`BREAST_CANCER_CSV`].
pub const BREAST_CANCER_LABEL: &str = "diagnosis";

/// One hospital's file and the spec that loads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shard {
    /// The CSV file.
    pub path: PathBuf,
    /// Data rows in it (header excluded).
    pub rows: usize,
    /// `csv:PATH?label=...&test=...&seed=...`: what the hospital trains on (train side) and
    /// what the driver evaluates on (test side).
    pub spec: DataSpec,
}

/// Writes `count` shards of `table` (header line first) into `dir` as `hospital-N.csv`.
///
/// Each shard's own split holds out `test_fraction` of its rows, seeded by `seed`.
pub fn write_shards(
    table: &str,
    label: &str,
    count: usize,
    test_fraction: f64,
    seed: u64,
    dir: &Path,
) -> Result<Vec<Shard>, String> {
    let mut lines = table.lines();
    let header = lines
        .next()
        .ok_or("the data table is empty: give a CSV file with a header row")?;
    if !header.split(',').any(|c| c.trim() == label) {
        return Err(format!(
            "the data table has no column {label:?}: give a CSV whose label column is {label:?}"
        ));
    }
    let rows: Vec<&str> = lines.filter(|l| !l.trim().is_empty()).collect();
    // A split needs at least one training and one test row per hospital; a handful more keeps
    // DP-SGD's Poisson batches from being empty most of the time.
    if count == 0 || rows.len() < count * 10 {
        return Err(format!(
            "{} rows cannot be shared by {count} hospitals (at least 10 rows each): use fewer hospitals",
            rows.len()
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let order = permutation(rows.len(), seed);
    let mut out = Vec::with_capacity(count);
    for h in 0..count {
        let mut text = String::with_capacity(table.len() / count + header.len() + 1);
        text.push_str(header);
        text.push('\n');
        let mut n = 0;
        for &i in order.iter().skip(h).step_by(count) {
            text.push_str(rows[i]);
            text.push('\n');
            n += 1;
        }
        let path = dir.join(format!("hospital-{}.csv", h + 1));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut options = CsvOptions::new(label);
        options.test_fraction = test_fraction;
        options.seed = seed;
        out.push(Shard {
            spec: DataSpec::Csv {
                path: path.clone(),
                options,
            },
            path,
            rows: n,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("cohort-shards-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        p
    }

    #[test]
    fn every_row_lands_in_exactly_one_shard_and_sizes_differ_by_at_most_one() {
        let dir = temp("cover");
        let shards = write_shards(BREAST_CANCER_CSV, "diagnosis", 5, 0.2, 7, &dir).unwrap();
        let sizes: Vec<usize> = shards.iter().map(|s| s.rows).collect();
        assert_eq!(sizes.iter().sum::<usize>(), 569);
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        let mut seen: Vec<String> = Vec::new();
        for s in &shards {
            let text = std::fs::read_to_string(&s.path).unwrap();
            let mut lines = text.lines();
            assert_eq!(lines.next(), BREAST_CANCER_CSV.lines().next());
            seen.extend(lines.map(str::to_owned));
        }
        let mut all: Vec<String> = BREAST_CANCER_CSV
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        all.sort();
        seen.sort();
        assert_eq!(seen, all);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_spec_loads_the_shard_and_another_seed_deals_differently() {
        let dir = temp("spec");
        let a = write_shards(BREAST_CANCER_CSV, "diagnosis", 5, 0.2, 1, &dir).unwrap();
        let first = std::fs::read_to_string(&a[0].path).unwrap();
        let split = cohort_client::data::load(&a[0].spec).unwrap();
        assert_eq!((split.train.len() + split.test.len()) as usize, a[0].rows);
        let b = write_shards(BREAST_CANCER_CSV, "diagnosis", 5, 0.2, 2, &dir).unwrap();
        assert_ne!(std::fs::read_to_string(&b[0].path).unwrap(), first);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_missing_label_or_too_few_rows_is_refused_with_a_fix() {
        let dir = temp("bad");
        let e = write_shards(BREAST_CANCER_CSV, "outcome", 5, 0.2, 1, &dir).unwrap_err();
        assert!(e.contains("no column \"outcome\""), "{e}");
        let e = write_shards("a,diagnosis\n1,x\n", "diagnosis", 5, 0.2, 1, &dir).unwrap_err();
        assert!(e.contains("use fewer hospitals"), "{e}");
    }
}
