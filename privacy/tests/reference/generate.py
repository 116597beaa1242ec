#!/usr/bin/env python3
"""Generates table.json: reference ε and per-order RDP from dp_accounting and Opacus.

Run in a throwaway venv (nothing here is a dependency of Cohort):

    python3 -m venv /tmp/acct-ref-venv
    /tmp/acct-ref-venv/bin/pip install dp-accounting numpy scipy
    /tmp/acct-ref-venv/bin/pip install --no-deps opacus
    /tmp/acct-ref-venv/bin/python privacy/tests/reference/generate.py > privacy/tests/reference/table.json

Opacus is installed without torch: its RDP analysis module is plain numpy/scipy, so we load
opacus/accountants/analysis/rdp.py by file path and never import the `opacus` package.
The Rust test privacy/tests/reference/main.rs checks every row.
"""

import importlib.metadata
import importlib.util
import json
import math
import os
import sys

import dp_accounting
import numpy as np
import scipy
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant as dpa_rdp
from scipy import optimize, special


def load_opacus_rdp():
    spec = importlib.util.find_spec("opacus")
    root = os.path.dirname(spec.origin)
    path = os.path.join(root, "accountants", "analysis", "rdp.py")
    module_spec = importlib.util.spec_from_file_location("opacus_rdp_analysis", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


opacus_rdp = load_opacus_rdp()
ORDERS = list(dpa_rdp.DEFAULT_RDP_ORDERS)

# (q, sigma, steps, delta): the golden settings plus a spread of q, σ and δ,
# including large q (where the fractional-order series differ) and small σ.
SETTINGS = [
    (0.01, 1.1, 1000, 1e-5),      # issue 3: RDP ε ≈ 1.7118
    (1.0, 1.0, 1, 1e-5),          # plain Gaussian: exact ε = 4.37718
    (0.04, 1.5, 2250, 1e-5),      # Opacus accountants_test: ε ≈ 7.329
    (0.004, 1.1, 10000, 1e-5),    # the PLD benchmark setting
    (1.0, 4.0, 16, 1e-6),         # 16 full-batch steps = one Gaussian at σ = 1
    (0.1, 0.8, 100, 1e-6),
    (0.5, 2.0, 50, 1e-5),
    (0.9, 3.0, 20, 1e-5),
    (0.001, 0.7, 100000, 1e-7),
    (0.2, 5.0, 10, 1e-3),
    (0.02, 0.5, 500, 1e-5),
    (0.05, 10.0, 1, 1e-5),
]

PLD_SETTINGS_TO_SKIP = set()  # every setting is cheap enough for dp_accounting's PLD


def gaussian_delta(sigma, eps):
    return special.ndtr(0.5 / sigma - eps * sigma) - math.exp(eps) * special.ndtr(
        -0.5 / sigma - eps * sigma
    )


def gaussian_epsilon(sigma, delta):
    """Exact ε of the Gaussian mechanism (Balle & Wang 2018), by root finding."""
    if gaussian_delta(sigma, 0.0) <= delta:
        return 0.0
    hi = 1.0
    while gaussian_delta(sigma, hi) > delta:
        hi *= 2
    return optimize.brentq(lambda e: gaussian_delta(sigma, e) - delta, 0.0, hi, xtol=1e-14, rtol=1e-15)


# Opacus stops its fractional series at the first term below e^-30 *absolute*, so where
# ln A_α is tiny (small q) its value can be off by more than 1e-7 relative. For those settings
# we also record the RDP by 40-digit quadrature (mpmath) as the ground truth.
HIGH_PRECISION = {(0.001, 0.7, 100000): [1.1, 1.2, 1.3, 1.4, 1.5]}


def rdp_by_quadrature(q, sigma, alpha, steps):
    import mpmath as mp

    mp.mp.dps = 40
    q, s, a = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)
    f = lambda z: mp.npdf(z, 0, s) * ((1 - q) + q * mp.e ** ((2 * z - 1) / (2 * s**2))) ** a
    value = mp.quad(f, [-mp.inf, -5, 0, 0.5, 1, 5, 20, mp.inf])
    return float(mp.log(value) / (a - 1) * steps)


def finite_or_none(x):
    """JSON has no infinity: an order a library could not bound is written as null."""
    return x if math.isfinite(x) else None


def opacus_rdp_vector(q, sigma, steps):
    out = []
    for order in ORDERS:
        try:
            value = opacus_rdp.compute_rdp(q=q, noise_multiplier=sigma, steps=steps, orders=float(order))
            out.append(finite_or_none(float(value)))
        except (ValueError, OverflowError):
            out.append(None)  # Opacus' signed series failed at this order
    return out


def main():
    cases = []
    for q, sigma, steps, delta in SETTINGS:
        rdp_op = opacus_rdp_vector(q, sigma, steps)
        rdp_dp = [
            finite_or_none(float(x))
            for x in steps * dpa_rdp._compute_rdp_poisson_subsampled_gaussian(q, sigma, ORDERS)
        ]
        # Our RDP ε: Opacus' per-order values through dp_accounting's conversion.
        usable = [(a, r) for a, r in zip(ORDERS, rdp_op) if r is not None]
        eps_ours, order_ours = dpa_rdp.compute_epsilon([a for a, _ in usable], [r for _, r in usable], delta)

        event = dp_accounting.GaussianDpEvent(sigma)
        if q < 1.0:
            event = dp_accounting.PoissonSampledDpEvent(q, event)
        rdp_acc = dpa_rdp.RdpAccountant()
        rdp_acc.compose(event, steps)
        eps_dp, order_dp = rdp_acc.get_epsilon_and_optimal_order(delta)

        eps_op, order_op = opacus_rdp.get_privacy_spent(
            orders=[a for a, _ in usable], rdp=[r for _, r in usable], delta=delta
        )

        pld = pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-4)
        pld.compose(event, steps)
        eps_pld = pld.get_epsilon(delta)

        quadrature = {
            str(order): rdp_by_quadrature(q, sigma, order, steps)
            for order in HIGH_PRECISION.get((q, sigma, steps), [])
        }
        exact = gaussian_epsilon(sigma / math.sqrt(steps), delta) if q == 1.0 else None
        cases.append(
            {
                "q": q,
                "sigma": sigma,
                "steps": steps,
                "delta": delta,
                "rdp_opacus": rdp_op,
                "rdp_dp_accounting": rdp_dp,
                "rdp_quadrature": quadrature,
                "epsilon_rdp": float(eps_ours),
                "order_rdp": float(order_ours),
                "epsilon_rdp_dp_accounting": float(eps_dp),
                "order_rdp_dp_accounting": float(order_dp),
                "epsilon_rdp_opacus": float(eps_op),
                "epsilon_pld_dp_accounting": float(eps_pld),
                "epsilon_exact": exact,
            }
        )
        print(f"done q={q} sigma={sigma} steps={steps}", file=sys.stderr)

    table = {
        "generated_by": "privacy/tests/reference/generate.py",
        "versions": {
            "dp_accounting": importlib.metadata.version("dp-accounting"),
            "opacus": importlib.metadata.version("opacus"),
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "python": sys.version.split()[0],
        },
        "orders": ORDERS,
        "cases": cases,
    }
    json.dump(table, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
