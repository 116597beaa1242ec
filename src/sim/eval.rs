//! The global model's quality after each round, on the held-out test split.

use cohort_client::data::Dataset;
use cohort_client::model::{self, ModelSpec, Tape};
use cohort_client::weights;
use tch::{Kind, TchError};

/// Test accuracy and mean cross-entropy of the model `weights` (safetensors) with `spec`.
pub fn evaluate(
    spec: &ModelSpec,
    weights_bytes: &[u8],
    test: &Dataset,
) -> Result<(f64, f64), String> {
    let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
    let net = model::build(&vs.root(), spec).map_err(|e| e.to_string())?;
    weights::load_safetensors(&mut vs, weights_bytes).map_err(|e| e.to_string())?;
    let n = test.len();
    if n == 0 {
        return Err("the test split is empty".into());
    }
    let mut correct = 0i64;
    let mut loss_sum = 0.0f64;
    tch::no_grad(|| -> Result<(), TchError> {
        let mut start = 0;
        while start < n {
            let len = 1024.min(n - start);
            let x = test.features.f_narrow(0, start, len)?;
            let y = test
                .labels
                .f_narrow(0, start, len)?
                .f_to_kind(Kind::Int64)?;
            let logits = net.forward_t(&x, false, &mut Tape::off())?;
            correct += logits
                .f_argmax(-1, false)?
                .f_eq_tensor(&y)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            // Summed in f64 batch by batch: the same order every run.
            loss_sum += logits
                .f_log_softmax(-1, Kind::Float)?
                .f_nll_loss::<tch::Tensor>(&y, None, tch::Reduction::Mean, -100)?
                .f_double_value(&[])?
                * len as f64;
            start += len;
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok((correct as f64 / n as f64, loss_sum / n as f64))
}
