//! Where a DP-SGD step spends its time, stage by stage, next to a non-private step:
//! `cargo test -p cohort-client --lib profile_dp_step -- --ignored --nocapture`.
// Test code.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use tch::nn::VarStore;
use tch::{Device, Kind, Reduction, Tensor};

use super::noise::{GaussianSource, SecureGaussian};
use super::*;
use crate::model::{self, ModelSpec, Tape};

fn ms(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

fn profile(name: &str, spec: &ModelSpec, batch: i64, reps: usize) {
    let vs = VarStore::new(Device::Cpu);
    let net = model::build(&vs.root(), spec).unwrap();
    let mut shape = vec![batch];
    shape.extend_from_slice(&spec.input_shape);
    let x = Tensor::randn(shape.as_slice(), (Kind::Float, Device::Cpu));
    let y = Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu));
    let params: Vec<Tensor> = clip::trainable_parameters(&net)
        .into_iter()
        .map(|(_, p)| p)
        .collect();
    let mut noise = SecureGaussian::from_os().unwrap();
    let mut t = [0.0f64; 9];
    for rep in 0..reps + 2 {
        let warm = rep < 2;
        let mut add = |i: usize, v: f64| {
            if !warm {
                t[i] += v / reps as f64;
            }
        };
        // Non-private: forward, backward w.r.t. parameters.
        let s = Instant::now();
        let logits = net.forward_t(&x, true, &mut Tape::off()).unwrap();
        let loss = logits.cross_entropy_loss::<Tensor>(&y, None, Reduction::Mean, -100, 0.0);
        let f = ms(s);
        let s = Instant::now();
        let _g = Tensor::run_backward(&[&loss], &params, false, false);
        add(0, f);
        add(1, ms(s));

        // DP: recording forward, backward w.r.t. layer outputs, norms, clipped sum, noise.
        let s = Instant::now();
        let mut tape = Tape::recording();
        let logits = net.forward_t(&x, true, &mut tape).unwrap();
        let loss = clip::summed_loss(&logits, &y).unwrap();
        let records = tape.take();
        add(2, ms(s));
        let s = Instant::now();
        let outputs: Vec<&Tensor> = records.iter().map(|r| r.output()).collect();
        let grads = Tensor::run_backward(&[&loss], &outputs, false, false);
        add(3, ms(s));
        let s = Instant::now();
        let norms = ghost::squared_norms(&records, &grads).unwrap();
        let factors = ghost::clip_factors(&norms.squared, 1.0).unwrap();
        let _ = factors.double_value(&[0]);
        add(4, ms(s));
        let s = Instant::now();
        let all = net.param_tensors();
        let sums = ghost::clipped_sum(&records, &grads, norms, &factors, &all).unwrap();
        let _ = sums.values().map(|t| t.numel()).sum::<usize>();
        add(5, ms(s));
        let s = Instant::now();
        for p in &params {
            let z = noise
                .sample(1.0, &p.size(), Kind::Float, Device::Cpu)
                .unwrap();
            let _ = z.numel();
        }
        add(6, ms(s));
        let s = Instant::now();
        let got = clipped_gradient_sum(&net, &x, &y, 1.0, ClippingMode::Ghost).unwrap();
        let _ = got.grads.len();
        add(7, ms(s));
    }
    let parameters: i64 = params.iter().map(|p| p.numel() as i64).sum();
    println!(
        "{name} ({parameters} params, batch {batch}, {} threads): non-private forward {:.1} ms, \
         backward {:.1} ms | DP forward {:.1}, backward to outputs {:.1}, norms {:.1}, clipped \
         sum {:.1}, noise {:.1} | whole clipped_gradient_sum {:.1} ms",
        tch::get_num_threads(),
        t[0],
        t[1],
        t[2],
        t[3],
        t[4],
        t[5],
        t[6],
        t[7]
    );
}

#[test]
#[ignore = "a profile, seconds of CPU"]
fn profile_dp_step() {
    profile("mlp", &ModelSpec::mlp(784, &[512, 256], 10), 256, 20);
    profile("mnist-cnn", &ModelSpec::mnist_cnn(), 256, 20);
}

#[test]
#[ignore = "a profile, seconds of CPU"]
fn profile_noise() {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha20Rng;
    use rand_distr::{Distribution, StandardNormal};
    let n = 535_818usize;
    let reps = 20;
    let mut source = SecureGaussian::from_os().unwrap();
    let s = Instant::now();
    for _ in 0..reps {
        let z = source
            .sample(1.0, &[n as i64], Kind::Float, Device::Cpu)
            .unwrap();
        let _ = z.numel();
    }
    let torch_ms = ms(s) / reps as f64;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let mut bytes = vec![0u8; n * 6];
    let s = Instant::now();
    for _ in 0..reps {
        rng.fill_bytes(&mut bytes);
    }
    let stream_ms = ms(s) / reps as f64;
    let mut out = vec![0f32; n];
    let s = Instant::now();
    for _ in 0..reps {
        for x in out.iter_mut() {
            let z: f64 = StandardNormal.sample(&mut rng);
            *x = z as f32;
        }
    }
    let zig_ms = ms(s) / reps as f64;
    let mut aes = cohort_privacy::rng::AesCtrRng::from_key([1; 32]);
    let s = Instant::now();
    for _ in 0..reps {
        aes.fill_bytes(&mut bytes);
    }
    let aes_stream_ms = ms(s) / reps as f64;
    let s = Instant::now();
    for _ in 0..reps {
        for x in out.iter_mut() {
            let z: f64 = StandardNormal.sample(&mut aes);
            *x = z as f32;
        }
    }
    let aes_zig_ms = ms(s) / reps as f64;
    let mut words = vec![0u32; n];
    let s = Instant::now();
    for _ in 0..reps {
        aes.fill_u32(&mut words);
    }
    let aes_words_ms = ms(s) / reps as f64;
    let s = Instant::now();
    for _ in 0..reps {
        cohort_privacy::noise::gaussian::fill_normal_f32(&mut aes, 1.0, &mut out);
    }
    let f32_zig_ms = ms(s) / reps as f64;
    let mut params: Vec<Tensor> = [[512i64, 784], [256, 512], [10, 256]]
        .iter()
        .map(|s| Tensor::zeros(s.as_slice(), (Kind::Float, Device::Cpu)))
        .collect();
    let s = Instant::now();
    for _ in 0..reps {
        source.add_noise(1.0, &mut params).unwrap();
    }
    let add_ms = ms(s) / reps as f64;
    println!(
        "{n} normals: SecureGaussian::sample {torch_ms:.2} ms; ChaCha20 keystream of {} bytes \
         {stream_ms:.2} ms, ziggurat on ChaCha20 {zig_ms:.2} ms; AES-256-CTR keystream \
         {aes_stream_ms:.2} ms, ziggurat on AES-CTR {aes_zig_ms:.2} ms; AES-256-CTR as u32 \
         words (4 bytes a value) {aes_words_ms:.2} ms, f32 ziggurat on them {f32_zig_ms:.2} \
         ms; add_noise over an MLP's weights {add_ms:.2} ms",
        bytes.len()
    );
}

#[test]
#[ignore = "a profile, seconds of CPU"]
fn profile_conv_pieces() {
    let b = 256;
    // (C, H, out, k, stride, pad) of mnist-cnn's two convolutions.
    for (c, h, out, k, stride, pad) in [
        (1i64, 28i64, 16i64, 8i64, 2i64, 3i64),
        (16, 13, 32, 4, 2, 0),
        // A CIFAR-sized RGB first layer and a second 3×3 layer.
        (3, 32, 16, 3, 1, 1),
        (16, 16, 32, 3, 1, 1),
    ] {
        let a = Tensor::randn([b, c, h, h], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([out, c, k, k], (Kind::Float, Device::Cpu));
        let y = a.conv2d(&w, None::<Tensor>, [stride, stride], [pad, pad], [1, 1], 1);
        let g = Tensor::randn(y.size().as_slice(), (Kind::Float, Device::Cpu));
        let oh = y.size()[2];
        let reps = 10;
        let time = |f: &mut dyn FnMut() -> Tensor| {
            let _ = f();
            let s = Instant::now();
            for _ in 0..reps {
                let _ = f().numel();
            }
            ms(s) / reps as f64
        };
        let t_conv =
            time(&mut || a.conv2d(&w, None::<Tensor>, [stride, stride], [pad, pad], [1, 1], 1));
        let t_im2col = time(&mut || a.im2col([k, k], [1, 1], [pad, pad], [stride, stride]));
        let u = a.im2col([k, k], [1, 1], [pad, pad], [stride, stride]);
        let gs = g.reshape([b, out, -1]);
        let t_bmm = time(&mut || gs.bmm(&u.transpose(1, 2)));
        let t_bmm_c = time(&mut || gs.bmm(&u.transpose(1, 2).contiguous()));
        let t_unfold = time(&mut || {
            a.constant_pad_nd([pad, pad, pad, pad])
                .unfold(2, k, stride)
                .unfold(3, k, stride)
                .contiguous()
        });
        // Per-sample weight gradients as one grouped, dilated convolution.
        let t_grouped = time(&mut || {
            let x = a.transpose(0, 1); // [C, B, H, W]
            let kernel = g.reshape([b * out, 1, oh, oh]);
            let r = x.conv2d(
                &kernel,
                None::<Tensor>,
                [1, 1],
                [pad, pad],
                [stride, stride],
                b,
            );
            r.narrow(2, 0, k).narrow(3, 0, k)
        });
        // Check the grouped result against bmm.
        let x = a.transpose(0, 1);
        let kernel = g.reshape([b * out, 1, oh, oh]);
        let r = x
            .conv2d(
                &kernel,
                None::<Tensor>,
                [1, 1],
                [pad, pad],
                [stride, stride],
                b,
            )
            .narrow(2, 0, k)
            .narrow(3, 0, k)
            .reshape([c, b, out, k * k])
            .permute([1, 2, 0, 3])
            .reshape([b, out, c * k * k]);
        let want = gs.bmm(&u.transpose(1, 2));
        let err = (&r - &want).abs().max().double_value(&[]);
        println!(
            "conv C={c} H={h} out={out} k={k}: forward conv {t_conv:.1} ms, im2col {t_im2col:.1}, \
             bmm {t_bmm:.1}, bmm(contiguous) {t_bmm_c:.1}, unfold {t_unfold:.1}, grouped conv \
             {t_grouped:.1} (max err {err:.2e})"
        );
    }
}

#[test]
#[ignore = "a profile, seconds of CPU"]
fn profile_conv_per_sample_grads() {
    // The two ways the norm pass gets a convolution's explicit per-sample gradients, timed in
    // alternation on mnist-cnn's layers and a CIFAR-sized RGB first layer.
    let b = 256;
    for (c, h, out, k, stride, pad) in [
        (1i64, 28i64, 16i64, 8i64, 2i64, 3i64),
        (16, 13, 32, 4, 2, 0),
        (3, 32, 16, 3, 1, 1),
    ] {
        let a = Tensor::randn([b, c, h, h], (Kind::Float, Device::Cpu));
        let w = Tensor::randn([out, c, k, k], (Kind::Float, Device::Cpu));
        let y = a.conv2d(&w, None::<Tensor>, [stride, stride], [pad, pad], [1, 1], 1);
        let g = Tensor::randn(y.size().as_slice(), (Kind::Float, Device::Cpu));
        let by_patches = || {
            let p = ghost::patches(&a, k, stride, pad).unwrap();
            g.reshape([b, out, -1]).bmm(&p)
        };
        let by_conv = || ghost::per_sample_conv_grads(&a, &g, k, stride, pad).unwrap();
        // The Gram alternative: norms only, [B] (and the patches kept for the clipped sum).
        let by_gram = || {
            let p = ghost::patches(&a, k, stride, pad).unwrap();
            let gs = g.reshape([b, out, -1]);
            let ga = p.bmm(&p.transpose(1, 2));
            let gg = gs.transpose(1, 2).bmm(&gs);
            (ga * gg).sum_dim_intlist([1i64, 2].as_slice(), false, Kind::Float)
        };
        let err = (by_patches() - by_conv()).abs().max().double_value(&[]);
        let (mut t_patches, mut t_conv, mut t_gram) = (0.0, 0.0, 0.0);
        let reps = 20;
        for _ in 0..reps {
            let s = Instant::now();
            let _ = by_patches().numel();
            t_patches += ms(s) / reps as f64;
            let s = Instant::now();
            let _ = by_conv().numel();
            t_conv += ms(s) / reps as f64;
            let s = Instant::now();
            let _ = by_gram().numel();
            t_gram += ms(s) / reps as f64;
        }
        println!(
            "per-sample conv grads C={c} H={h} out={out} k={k} s={stride}: patches + bmm \
             {t_patches:.2} ms, grouped conv {t_conv:.2} ms, Gram norms {t_gram:.2} ms (max \
             diff {err:.1e})"
        );
    }
}
