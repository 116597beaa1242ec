"""Opacus side of `cohort bench dp-sgd`: the same models, batch and optimiser, on this machine.

Prints one JSON object per model with examples/second for non-private PyTorch training, Opacus
DP-SGD with per-sample gradients from hooks (its default) and Opacus' ghost clipping.
Inputs are random tensors, as in `cohort bench dp-sgd`, and batches have a fixed size in both.

Needs torch 2.13 and opacus 1.6; `make bench` runs it with benches/compare/run.sh, which makes a
throwaway venv under /tmp that reuses the project's torch.
Usage: python opacus_dp_sgd.py [--model mnist-cnn|mlp] [--batch 256] [--seconds 3]
"""
import argparse
import json
import time
import warnings

import torch
from torch import nn

warnings.filterwarnings("ignore")


def mnist_cnn():
    # Same layers as ModelSpec::mnist_cnn() in cohort-client.
    return nn.Sequential(
        nn.Conv2d(1, 16, 8, 2, padding=3), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Conv2d(16, 32, 4, 2), nn.Tanh(), nn.MaxPool2d(2, 1),
        nn.Flatten(), nn.Linear(32 * 4 * 4, 32), nn.Tanh(), nn.Linear(32, 10),
    )


def mlp():
    # Same layers as `cohort bench dp-sgd --model mlp`: 784-512-256-10 with ReLU.
    return nn.Sequential(
        nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )


def timed(step, batch, seconds, warmup=3):
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    steps = 0
    while steps == 0 or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * batch / (time.perf_counter() - start)


def bench(name, batch, seconds):
    from opacus import PrivacyEngine

    make = {"mnist-cnn": mnist_cnn, "mlp": mlp}[name]
    shape = (1, 28, 28)
    x = torch.randn(batch * 4, *shape)
    y = torch.randint(0, 10, (batch * 4,))
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=batch, drop_last=True
    )
    xb, yb = x[:batch], y[:batch]

    model = make()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loss_fn = nn.CrossEntropyLoss()

    def plain_step():
        opt.zero_grad()
        loss_fn(model(xb), yb).backward()
        opt.step()

    nonprivate = timed(plain_step, batch, seconds)

    results = {}
    for mode in ["hooks", "ghost"]:
        model = make()
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        engine = PrivacyEngine(accountant="rdp", secure_mode=False)
        kwargs = dict(
            module=model, optimizer=opt, data_loader=loader, noise_multiplier=1.0,
            max_grad_norm=1.0, poisson_sampling=False, grad_sample_mode=mode,
        )
        if mode == "ghost":
            model, opt, crit, _ = engine.make_private(criterion=nn.CrossEntropyLoss(), **kwargs)

            def step():
                opt.zero_grad()
                loss = crit(model(xb), yb)
                loss.backward()
                opt.step()
        else:
            model, opt, _ = engine.make_private(**kwargs)

            def step():
                opt.zero_grad()
                loss_fn(model(xb), yb).backward()
                opt.step()

        results[mode] = timed(step, batch, seconds)

    return {
        "model": name,
        "batch": batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "samples_per_s_nonprivate": nonprivate,
        "samples_per_s_opacus_hooks": results["hooks"],
        "samples_per_s_opacus_ghost": results["ghost"],
        "overhead_hooks": nonprivate / results["hooks"],
        "overhead_ghost": nonprivate / results["ghost"],
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mnist-cnn", choices=["mnist-cnn", "mlp"])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(json.dumps(bench(args.model, args.batch, args.seconds)))


if __name__ == "__main__":
    main()
