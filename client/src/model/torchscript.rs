//! Models written in PyTorch, loaded as TorchScript (`torch.jit.script(model).save("m.pt")`).
//!
//! Their parameters join the caller's VarStore (so they save and load like any other model) and
//! can be frozen by name prefix for fine-tuning. DP-SGD trains them with the per-sample
//! fallback, since a scripted graph does not expose layer inputs and outputs.

use std::cell::{Cell, RefCell};
use std::path::Path;

use tch::nn;
use tch::{CModule, Kind, TchError, Tensor};

use super::{Param, Tape};

/// A trainable TorchScript module.
#[derive(Debug)]
pub struct TorchScriptModel {
    module: RefCell<CModule>,
    training: Cell<bool>,
    params: Vec<Param>,
    input_shape: Vec<i64>,
}

impl TorchScriptModel {
    /// Loads `file` onto `path`'s device and registers its parameters under `path`.
    /// `input_shape` is one example's shape (without the batch dimension); it is used to probe
    /// the module for batch-mixing layers.
    pub fn load(
        file: impl AsRef<Path>,
        path: &nn::Path<'_>,
        input_shape: &[i64],
    ) -> Result<Self, TchError> {
        let mut module = CModule::load_on_device(file, path.device())?;
        module.f_set_train()?;
        let mut params = Vec::new();
        for (name, tensor) in module.named_parameters()? {
            let registered = path.add(&name.replace('.', "_"), tensor.shallow_clone(), true);
            let _ = registered;
            let tensor = tensor.f_set_requires_grad(true)?;
            params.push(Param { name, tensor });
        }
        Ok(Self {
            module: RefCell::new(module),
            training: Cell::new(true),
            params,
            input_shape: input_shape.to_vec(),
        })
    }

    /// Parameters in the module's own order, with their TorchScript names (`head.weight`).
    pub fn parameters(&self) -> &[Param] {
        &self.params
    }

    /// Freezes every parameter whose TorchScript name starts with `prefix`; returns how many.
    pub fn freeze(&self, prefix: &str) -> usize {
        let mut frozen = 0;
        for param in self.params.iter().filter(|p| p.name.starts_with(prefix)) {
            let _ = param.tensor.set_requires_grad(false);
            frozen += 1;
        }
        frozen
    }

    /// Runs the module in training or evaluation mode.
    pub fn forward_t(
        &self,
        xs: &Tensor,
        train: bool,
        _tape: &mut Tape,
    ) -> Result<Tensor, TchError> {
        let mut module = self
            .module
            .try_borrow_mut()
            .map_err(|_| TchError::Kind("TorchScript module re-entered".into()))?;
        if self.training.get() != train {
            if train {
                module.f_set_train()?;
            } else {
                module.f_set_eval()?;
            }
            self.training.set(train);
        }
        module.forward_ts(&[xs])
    }

    /// Whether, in training mode, one example's output depends on the other examples of the
    /// batch (batch normalisation does this). Probed with the same libtorch seed for both runs,
    /// so dropout masks match.
    pub fn mixes_batch(&self) -> Result<bool, TchError> {
        let mut shape = vec![3];
        shape.extend_from_slice(&self.input_shape);
        let kind = self.params.first().map_or(Kind::Float, |p| p.tensor.kind());
        let device = self
            .params
            .first()
            .map_or(tch::Device::Cpu, |p| p.tensor.device());
        let x = Tensor::f_randn(shape.as_slice(), (kind, device))?;
        let others = Tensor::f_randn(shape.as_slice(), (kind, device))?.f_mul_scalar(5.0)?;
        let y = Tensor::f_cat(&[x.f_narrow(0, 0, 1)?, others.f_narrow(0, 1, 2)?], 0)?;
        let run = |input: &Tensor| -> Result<Tensor, TchError> {
            tch::manual_seed(0x5eed);
            tch::no_grad(|| self.forward_t(input, true, &mut Tape::off()))?.f_narrow(0, 0, 1)
        };
        let a = run(&x)?;
        let b = run(&y)?;
        Ok(!a.f_allclose(&b, 1e-5, 1e-6, false)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dpsgd::{self, ClippingMode, DpConfig, DpError, OptimizerConfig, StepAccountant};
    use tch::Device;

    #[derive(Debug)]
    struct NoAccountant;

    impl StepAccountant for NoAccountant {
        fn step(&mut self, _: f64, _: f64) {}
        fn epsilon(&self, _: f64) -> Option<f64> {
            None
        }
    }

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    fn config() -> DpConfig {
        DpConfig {
            noise_multiplier: 0.5,
            max_grad_norm: 1.0,
            sample_rate: 0.25,
            clipping: ClippingMode::Auto,
        }
    }

    #[test]
    fn a_scripted_model_fine_tunes_its_head_with_dp_and_keeps_its_frozen_body() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TorchScriptModel::load(fixture("tiny_mlp.pt"), &vs.root(), &[4]).unwrap();
        let names: Vec<_> = model.parameters().iter().map(|p| p.name.clone()).collect();
        assert_eq!(
            names,
            ["body.weight", "body.bias", "head.weight", "head.bias"]
        );
        assert_eq!(vs.variables().len(), 4, "parameters join the VarStore");
        assert_eq!(model.freeze("body."), 2);
        assert!(!model.mixes_batch().unwrap());
        let before: Vec<Tensor> = model.parameters().iter().map(|p| p.tensor.copy()).collect();

        let x = Tensor::randn([16, 4], (Kind::Float, Device::Cpu));
        let y = Tensor::randint(3, [16], (Kind::Int64, Device::Cpu));
        let mut trainer = dpsgd::make_private(
            model,
            OptimizerConfig::sgd(0.5, 0.0).build(),
            config(),
            16,
            Box::new(NoAccountant),
        )
        .unwrap();
        for _ in 0..3 {
            trainer.step(&x, &y).unwrap();
        }
        let after = trainer.network().parameters();
        for (i, (p, old)) in after.iter().zip(&before).enumerate() {
            let moved = (&p.tensor - old).abs().max().double_value(&[]) > 0.0;
            assert_eq!(moved, i >= 2, "{} moved: {moved}", p.name);
        }
    }

    #[test]
    fn ghost_clipping_is_refused_and_batch_norm_is_detected() {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = TorchScriptModel::load(fixture("tiny_mlp.pt"), &vs.root(), &[4]).unwrap();
        let ghost = DpConfig {
            clipping: ClippingMode::Ghost,
            ..config()
        };
        let err = dpsgd::make_private(
            model,
            OptimizerConfig::sgd(0.1, 0.0).build(),
            ghost,
            8,
            Box::new(NoAccountant),
        )
        .unwrap_err();
        assert!(matches!(err, DpError::Unsupported(_)), "{err}");

        let vs = nn::VarStore::new(Device::Cpu);
        let model = TorchScriptModel::load(fixture("tiny_bn.pt"), &vs.root(), &[4]).unwrap();
        assert!(model.mixes_batch().unwrap());
        let err = dpsgd::make_private(
            model,
            OptimizerConfig::sgd(0.1, 0.0).build(),
            config(),
            8,
            Box::new(NoAccountant),
        )
        .unwrap_err();
        assert!(matches!(err, DpError::BatchNorm), "{err}");
    }
}
