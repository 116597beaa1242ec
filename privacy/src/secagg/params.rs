//! Choosing the graph degree `k` and the threshold `t` from the number of clients `n`, the
//! expected dropout rate `δ` and the tolerated fraction `γ` of clients colluding with the server.
//!
//! The model follows Bell et al. 2020 (§4) and Google's parameter finder: each client drops out
//! independently with probability `δ` and is corrupted independently with probability `γ`, and
//! union bounds over the `n` clients give
//!
//! - **correctness**: a round fails when some client's secret has fewer than `t` live holders,
//!   `P_fail ≤ n · P[Bin(k, 1−δ) < t]`, required `≤ 2^−η` (η = 20 by default);
//! - **privacy of each input** (two conditions, required `≤ 2^−σ`, σ = 40 by default):
//!   * the adversary must not hold `t` shares of both secrets of an honest client. With a
//!     semi-honest server that means fewer than `t` corrupted neighbours,
//!     `n · P[Bin(k, γ) ≥ t]`; a malicious server can also lie about who dropped out to get
//!     one kind of share from some honest holders and the other kind from the rest, which needs
//!     only `2t − k` corrupted neighbours, `n · P[Bin(k, γ) ≥ 2t − k]`;
//!   * the honest survivors must stay connected in the graph, or the server learns the partial
//!     sums of the pieces. In the Harary ring that fails only if `⌊k/2⌋` consecutive clients are
//!     all dropped or corrupted: `n · (δ + γ)^⌊k/2⌋`. The complete graph cannot disconnect.
//!
//! With `γ = 0` the first condition puts no floor under `t` (the server alone never holds a
//! share); pass a positive `γ` to buy a margin against collusion.
//!
//! The smallest even `k` meeting all three with some `t` wins, each client's cost being linear
//! in `k`; once that `k` would reach `n − 1`, the complete graph (classic SecAgg) is used.
//! Treating corruption per client as independent (binomial) is the analysis's approximation of
//! a fixed corrupted set (hypergeometric, whose tails are lighter), so it errs on the safe side.

/// Who the protection must hold against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threat {
    /// The server follows the protocol but colludes with corrupted clients (the default model).
    SemiHonest,
    /// The server may lie about dropouts to different clients.
    Malicious,
}

/// What the caller knows about the federation.
#[derive(Debug, Clone, Copy)]
pub struct Requirements {
    /// Number of clients in the round.
    pub clients: usize,
    /// Expected fraction of clients that drop out during the round, in `[0, 1)`.
    pub dropout: f64,
    /// Tolerated fraction of clients colluding with the server, in `[0, 1)`.
    pub corrupted: f64,
    /// Privacy failure probability must be at most `2^−security_bits`.
    pub security_bits: f64,
    /// Abort probability must be at most `2^−correctness_bits`.
    pub correctness_bits: f64,
    /// The threat model.
    pub threat: Threat,
}

impl Requirements {
    /// The defaults of Bell et al.: σ = 40, η = 20, semi-honest server.
    pub fn new(clients: usize, dropout: f64, corrupted: f64) -> Self {
        Requirements {
            clients,
            dropout,
            corrupted,
            security_bits: 40.0,
            correctness_bits: 20.0,
            threat: Threat::SemiHonest,
        }
    }
}

/// A chosen parameter set and what it guarantees under the model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Graph degree `k` (`clients − 1` for the complete graph).
    pub neighbours: usize,
    /// Shamir threshold `t`.
    pub threshold: usize,
    /// Whether this is the complete graph.
    pub complete: bool,
    /// `log2` of the bound on the probability that the round aborts.
    pub log2_failure: f64,
    /// `log2` of the bound on the probability that some input is exposed.
    pub log2_insecurity: f64,
}

/// `ln P[Bin(k, p) >= t]`, summed in log space.
fn ln_tail_at_least(k: usize, p: f64, t: usize) -> f64 {
    if t == 0 {
        return 0.0;
    }
    if t > k || p <= 0.0 {
        return f64::NEG_INFINITY;
    }
    if p >= 1.0 {
        return 0.0;
    }
    let (lp, lq) = (p.ln(), (1.0 - p).ln());
    let mut ln_choose = 0.0f64;
    let mut terms = Vec::with_capacity(k + 1);
    for i in 0..=k {
        if i > 0 {
            ln_choose += ((k - i + 1) as f64).ln() - (i as f64).ln();
        }
        if i >= t {
            terms.push(ln_choose + i as f64 * lp + (k - i) as f64 * lq);
        }
    }
    let max = terms.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    max + terms.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

fn log2_union(n: usize, ln_p: f64) -> f64 {
    ((n as f64).ln() + ln_p) / std::f64::consts::LN_2
}

/// The guarantees of a given `(k, t)` (degree `k = clients − 1` means the complete graph).
pub fn evaluate(req: &Requirements, neighbours: usize, threshold: usize) -> Params {
    let n = req.clients;
    let complete = neighbours + 1 >= n;
    let k = neighbours.min(n.saturating_sub(1));
    let failure = log2_union(
        n,
        (1.0 - ln_tail_at_least(k, 1.0 - req.dropout, threshold).exp())
            .max(0.0)
            .ln(),
    );
    let needed = match req.threat {
        Threat::SemiHonest => threshold,
        Threat::Malicious => (2 * threshold).saturating_sub(k),
    };
    let exposure = log2_union(n, ln_tail_at_least(k, req.corrupted, needed));
    let disconnect = if complete {
        f64::NEG_INFINITY
    } else {
        log2_union(n, (k / 2) as f64 * (req.dropout + req.corrupted).ln())
    };
    Params {
        neighbours: k,
        threshold,
        complete,
        log2_failure: failure,
        log2_insecurity: exposure.max(disconnect),
    }
}

/// Picks the cheapest `(k, t)` meeting the requirements.
pub fn choose(req: &Requirements) -> Result<Params, String> {
    let n = req.clients;
    if n < 3 {
        return Err(format!(
            "secure aggregation needs at least 3 clients, got {n}"
        ));
    }
    for (name, v) in [
        ("dropout", req.dropout),
        ("corrupted fraction", req.corrupted),
    ] {
        if !(0.0..1.0).contains(&v) {
            return Err(format!("{name} must be in [0, 1), got {v}"));
        }
    }
    if req.dropout + req.corrupted >= 1.0 {
        return Err("dropout plus corrupted fraction must stay below 1".into());
    }
    let ok = |p: &Params| {
        p.log2_failure <= -req.correctness_bits && p.log2_insecurity <= -req.security_bits
    };
    let degrees = (2..n - 1).step_by(2).chain(std::iter::once(n - 1));
    for k in degrees {
        // Privacy improves and correctness worsens as t grows: take the smallest private t.
        let private_t = (1..=k).find(|&t| {
            let p = evaluate(req, k, t);
            p.log2_insecurity <= -req.security_bits
        });
        if let Some(t) = private_t {
            let p = evaluate(req, k, t);
            if ok(&p) {
                return Ok(p);
            }
        }
    }
    Err(format!(
        "no (k, t) gives 2^-{} privacy failure and 2^-{} abort probability for {n} clients with \
         dropout {} and corrupted fraction {}: lower the dropout or corrupted fraction, or add clients",
        req.security_bits, req.correctness_bits, req.dropout, req.corrupted
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_tail_matches_direct_sums() {
        // P[Bin(4, 0.5) >= 3] = 5/16.
        assert!((ln_tail_at_least(4, 0.5, 3).exp() - 5.0 / 16.0).abs() < 1e-12);
        assert_eq!(ln_tail_at_least(4, 0.5, 0), 0.0);
        assert_eq!(ln_tail_at_least(4, 0.5, 5), f64::NEG_INFINITY);
    }

    #[test]
    fn chosen_parameters_meet_the_requirements_and_are_minimal() {
        for (n, d, g) in [
            (500, 0.1, 0.0),
            (500, 0.1, 0.05),
            (1000, 0.05, 0.1),
            (100, 0.2, 0.1),
        ] {
            let req = Requirements::new(n, d, g);
            let p = choose(&req).unwrap();
            assert!(
                p.log2_failure <= -20.0 && p.log2_insecurity <= -40.0,
                "{p:?}"
            );
            assert!(p.threshold <= p.neighbours);
            // No smaller even degree works with any threshold.
            for k in (2..p.neighbours).step_by(2) {
                assert!((1..=k).all(|t| {
                    let q = evaluate(&req, k, t);
                    q.log2_failure > -20.0 || q.log2_insecurity > -40.0
                }));
            }
        }
    }

    #[test]
    fn small_federations_get_the_complete_graph_and_large_ones_do_not() {
        let small = choose(&Requirements::new(20, 0.1, 0.0)).unwrap();
        assert!(small.complete && small.neighbours == 19, "{small:?}");
        // Twenty clients cannot keep a 5% colluding fraction below 2^-40 with 10% dropout.
        assert!(choose(&Requirements::new(20, 0.1, 0.05)).is_err());
        let large = choose(&Requirements::new(10_000, 0.1, 0.05)).unwrap();
        assert!(!large.complete && large.neighbours < 200, "{large:?}");
    }

    #[test]
    fn a_malicious_server_needs_a_higher_threshold() {
        let mut req = Requirements::new(1000, 0.05, 0.05);
        let semi = choose(&req).unwrap();
        req.threat = Threat::Malicious;
        let mal = choose(&req).unwrap();
        assert!(2 * mal.threshold > mal.neighbours);
        assert!(mal.neighbours >= semi.neighbours);
    }

    #[test]
    fn impossible_requirements_are_refused() {
        assert!(choose(&Requirements::new(2, 0.1, 0.0)).is_err());
        assert!(choose(&Requirements::new(100, 0.6, 0.5)).is_err());
        assert!(choose(&Requirements::new(10, 0.5, 0.3)).is_err());
    }
}
