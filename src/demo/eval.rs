//! Evaluates the federation's global model on every hospital's held-out records.
//!
//! The driver loads each hospital's data spec exactly as `cohort join` does, and keeps the test
//! side, which no hospital trains on. Each side is standardised with its own hospital's
//! training statistics (the spec's loader does that), which is how the model is applied at that
//! hospital. The reported accuracy pools every held-out record.

use cohort_client::data::{self, DataSpec, Dataset};
use cohort_client::model::ModelSpec;

/// Each hospital's test split and the model architecture.
#[derive(Debug)]
pub struct Evaluator {
    spec: ModelSpec,
    tests: Vec<Dataset>,
    train_sizes: Vec<i64>,
}

/// The global model's accuracy, pooled and per hospital.
#[derive(Debug, Clone, PartialEq)]
pub struct Accuracy {
    /// Correct predictions over all held-out records.
    pub pooled: f64,
    /// Mean cross-entropy over all held-out records.
    pub loss: f64,
    /// Per hospital, in hospital order.
    pub per_hospital: Vec<f64>,
    /// Held-out records in total.
    pub records: i64,
}

impl Evaluator {
    /// Loads the test side of every hospital's spec.
    pub fn new(spec: ModelSpec, hospitals: &[DataSpec]) -> Result<Self, String> {
        let mut tests = Vec::with_capacity(hospitals.len());
        let mut train_sizes = Vec::with_capacity(hospitals.len());
        for h in hospitals {
            let split = data::load(h).map_err(|e| format!("cannot load {h}: {e}"))?;
            train_sizes.push(split.train.len());
            tests.push(split.test);
        }
        Ok(Self {
            spec,
            tests,
            train_sizes,
        })
    }

    /// Training records per hospital (what each `cohort join` trains on).
    pub fn train_sizes(&self) -> &[i64] {
        &self.train_sizes
    }

    /// Held-out records per hospital.
    pub fn test_sizes(&self) -> Vec<i64> {
        self.tests.iter().map(Dataset::len).collect()
    }

    /// Accuracy and loss of the model in `safetensors` (through the simulator's evaluation).
    pub fn evaluate(&self, safetensors: &[u8]) -> Result<Accuracy, String> {
        let mut per_hospital = Vec::with_capacity(self.tests.len());
        let (mut correct, mut loss, mut records) = (0.0, 0.0, 0i64);
        for test in &self.tests {
            let (acc, l) = crate::sim::eval::evaluate(&self.spec, safetensors, test)
                .map_err(|e| format!("evaluating the global model: {e}"))?;
            per_hospital.push(acc);
            correct += acc * test.len() as f64;
            loss += l * test.len() as f64;
            records += test.len();
        }
        let n = records.max(1) as f64;
        Ok(Accuracy {
            pooled: correct / n,
            loss: loss / n,
            per_hospital,
            records,
        })
    }
}
