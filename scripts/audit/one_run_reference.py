"""Reference values for privacy/src/audit/one_run_tests.rs.

An independent evaluation, with scipy's binomial, of the one-run audit of Steinke, Nasr and
Jagielski 2023 (arXiv 2305.08846): p(eps) = P[Bin(r, q) >= v] + 2 m delta alpha with
q = e^eps / (1 + e^eps) and alpha = max_i P[v - i <= Bin(r, q) < v] / i, and eps_LB the first
eps whose p-value reaches 1 - confidence. Run: python3 scripts/audit/one_run_reference.py
(needs scipy).
"""
import math

from scipy.stats import binom


def p_value(m, r, v, eps, delta):
    q = 1.0 / (1.0 + math.exp(-eps))
    tail = binom.sf(v - 1, r, q)
    window, alpha = 0.0, 0.0
    for i in range(1, v + 1):
        window += binom.pmf(v - i, r, q)
        alpha = max(alpha, window / i)
    return min(1.0, tail + 2 * m * delta * alpha)


def epsilon_lower_bound(m, r, v, delta, confidence):
    significance = 1.0 - confidence
    if p_value(m, r, v, 0.0, delta) >= significance:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < significance:
        lo, hi = hi, hi + 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if p_value(m, r, v, mid, delta) < significance:
            lo = mid
        else:
            hi = mid
    return lo


if __name__ == "__main__":
    cases = [
        (100, 100, 75, 0.0),
        (100, 100, 75, 1e-4),
        (1000, 100, 75, 1e-4),
        (100_000, 1510, 1439, 1e-5),
        (1000, 1000, 1000, 1e-5),
        (1000, 500, 400, 1e-5),
        (10_000, 200, 180, 1e-6),
    ]
    for m, r, v, delta in cases:
        print(f"({m}, {r}, {v}, {delta}, {epsilon_lower_bound(m, r, v, delta, 0.95):.6f}),")
    print(f"p(ln 3) for 75 of 100: {p_value(100, 100, 75, math.log(3), 0.0):.6f}")
