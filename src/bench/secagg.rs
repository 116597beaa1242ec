//! `cohort bench secagg`: one whole SecAgg+ round in process, the way `cohort simulate` runs it.
//!
//! Every client gets a random quantised vector (integers in `[−2^p, 2^p]`, encoded mod `2^b`
//! with `b` from the quantiser for `n` clients), masks it, and hands it straight to the
//! server's running sum; `--dropout` of the clients go silent after sharing their keys and
//! before sending their input, which is the costly case for the server (it must rebuild their
//! mask keys and strip their pairwise masks). Clients run one after another on one thread, as
//! separate devices would; the server's unmasking uses every core.

use std::process::ExitCode;

use clap::Args;
use cohort_privacy::quantize::{Quantizer, QuantizerConfig};
use cohort_privacy::secagg::harness::{self, Dropouts, Stage};
use cohort_privacy::secagg::params::{self, Requirements};
use cohort_privacy::secagg::{Lane, MaskPrg, RoundConfig};
use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;

/// Options of `cohort bench secagg`.
#[derive(Debug, Args)]
pub struct SecaggArgs {
    /// Number of clients in the round.
    #[arg(long)]
    clients: u32,
    /// Number of model parameters (vector length).
    #[arg(long)]
    params: usize,
    /// Fraction of clients that drop out after sharing keys, before sending their input.
    #[arg(long, default_value_t = 0.0)]
    dropout: f64,
    /// Graph degree k; chosen from clients, dropout and --corrupted when omitted.
    #[arg(long)]
    neighbors: Option<usize>,
    /// Shamir threshold t; chosen with k when omitted (k/2 + 1 when --neighbors is given).
    #[arg(long)]
    threshold: Option<usize>,
    /// Tolerated fraction of clients colluding with the server, used to choose k and t.
    #[arg(long, default_value_t = 0.05)]
    corrupted: f64,
    /// Quantisation precision: the clip norm maps to 2^precision steps.
    #[arg(long, default_value_t = 16)]
    precision: u32,
    /// The generator that expands mask seeds.
    #[arg(long, value_enum, default_value_t = PrgArg::default())]
    prg: PrgArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// `--prg` values, one per [`MaskPrg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PrgArg {
    Chacha20,
    #[value(name = "aes256-ctr")]
    Aes256Ctr,
}

impl Default for PrgArg {
    fn default() -> Self {
        match MaskPrg::default() {
            MaskPrg::ChaCha20 => PrgArg::Chacha20,
            _ => PrgArg::Aes256Ctr,
        }
    }
}

impl From<PrgArg> for MaskPrg {
    fn from(p: PrgArg) -> Self {
        match p {
            PrgArg::Chacha20 => MaskPrg::ChaCha20,
            PrgArg::Aes256Ctr => MaskPrg::Aes256Ctr,
        }
    }
}

/// What one run measured.
#[derive(Debug, Serialize)]
struct Report {
    clients: u32,
    params: usize,
    dropout: f64,
    neighbors: usize,
    threshold: usize,
    complete_graph: bool,
    bits: u32,
    lane_bits: u32,
    mask_prg: String,
    survivors: usize,
    /// Slowest client's masking stage (authenticate shares, expand and add every mask).
    client_mask_ms: f64,
    client_mask_mean_ms: f64,
    /// Slowest client's compute over all four stages.
    client_total_ms: f64,
    /// Server time adding masked inputs into the running sum, all clients together.
    server_sum_ms: f64,
    /// Server time for the threshold check, reconstruction and mask removal.
    server_unmask_s: f64,
    threads: usize,
    peak_rss_mb: Option<f64>,
    exact: bool,
    aborted: Option<String>,
    log2_abort_probability: f64,
    log2_privacy_failure: f64,
}

fn usage(message: String) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

/// Runs the benchmark and prints its report.
pub fn run(args: &SecaggArgs) -> ExitCode {
    let n = args.clients;
    if n < 3 {
        return usage(format!("--clients must be at least 3, got {n}"));
    }
    if args.params == 0 {
        return usage("--params must be at least 1".into());
    }
    if !(0.0..1.0).contains(&args.dropout) {
        return usage(format!("--dropout must be in [0, 1), got {}", args.dropout));
    }
    let req = Requirements::new(n as usize, args.dropout, args.corrupted);
    let chosen = match (args.neighbors, args.threshold) {
        (Some(k), t) => {
            if k < 1 || k as u32 >= n {
                return usage(format!("--neighbors must be in 1..{n}, got {k}"));
            }
            let t = t.unwrap_or(k / 2 + 1);
            if t < 1 || t > k {
                return usage(format!("--threshold must be in 1..={k}, got {t}"));
            }
            params::evaluate(&req, k, t)
        }
        (None, Some(_)) => return usage("--threshold needs --neighbors".into()),
        (None, None) => match params::choose(&req) {
            Ok(p) => p,
            Err(why) => return usage(format!("{why}; or pass --neighbors and --threshold")),
        },
    };
    let quantizer = match Quantizer::new(QuantizerConfig {
        clients: n as usize,
        clip: 1.0,
        precision_bits: args.precision,
        noise_headroom: 0,
    }) {
        Ok(q) => q,
        Err(e) => return usage(format!("{e} (--precision)")),
    };
    let config = RoundConfig {
        round: 1,
        dimension: args.params,
        bits: quantizer.bits(),
        neighbours: chosen.neighbours,
        threshold: chosen.threshold,
        mask_prg: args.prg.into(),
    };
    let result = if quantizer.bits() <= 32 {
        measure::<u32>(args, &config, &quantizer, chosen)
    } else {
        measure::<u64>(args, &config, &quantizer, chosen)
    };
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: the round failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    print(&report, args.json);
    if report.exact {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn measure<L: Lane>(
    args: &SecaggArgs,
    config: &RoundConfig,
    quantizer: &Quantizer,
    chosen: params::Params,
) -> Result<Report, cohort_privacy::secagg::SecAggError> {
    let n = args.clients;
    let max = 1i64 << args.precision;
    let bits = quantizer.bits();
    let dropouts = Dropouts::random(n, args.dropout, Stage::MaskedInput, 0x5eca99);
    let outcome = harness::run_round::<L>(config, n, &dropouts, |id| {
        let mut rng = ChaCha8Rng::seed_from_u64(u64::from(id));
        (0..args.params)
            .map(|_| L::from_u64(rng.random_range(-max..=max) as u64).reduce(bits))
            .collect()
    })?;
    let t = &outcome.timings;
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    Ok(Report {
        clients: n,
        params: args.params,
        dropout: args.dropout,
        neighbors: chosen.neighbours,
        threshold: chosen.threshold,
        complete_graph: chosen.complete,
        bits,
        lane_bits: L::BITS,
        mask_prg: format!("{:?}", config.mask_prg),
        survivors: outcome.result.as_ref().map_or(0, |a| a.survivors.len()),
        client_mask_ms: ms(t.client_mask_max),
        client_mask_mean_ms: ms(t.client_mask_mean),
        client_total_ms: ms(t.client_total_max),
        server_sum_ms: ms(t.server_sum),
        server_unmask_s: t.server_unmask.as_secs_f64(),
        threads: std::thread::available_parallelism().map_or(1, |p| p.get()),
        peak_rss_mb: super::peak_rss_mb(),
        exact: outcome.exact(),
        aborted: outcome.result.as_ref().err().map(ToString::to_string),
        log2_abort_probability: chosen.log2_failure,
        log2_privacy_failure: chosen.log2_insecurity,
    })
}

fn print(r: &Report, json: bool) {
    if json {
        match serde_json::to_string(r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot serialise the report: {e}"),
        }
        return;
    }
    println!(
        "SecAgg+ round: {} clients x {} params, dropout {}, k = {}{}, t = {}, Z_2^{} in u{} lanes",
        r.clients,
        r.params,
        r.dropout,
        r.neighbors,
        if r.complete_graph {
            " (complete graph)"
        } else {
            ""
        },
        r.threshold,
        r.bits,
        r.lane_bits
    );
    println!("  survivors            {}", r.survivors);
    println!(
        "  client mask (max)    {:.2} ms   (mean {:.2} ms)",
        r.client_mask_ms, r.client_mask_mean_ms
    );
    println!("  client total (max)   {:.2} ms", r.client_total_ms);
    println!(
        "  server running sum   {:.2} ms (all inputs)",
        r.server_sum_ms
    );
    println!(
        "  server unmask        {:.3} s on {} threads",
        r.server_unmask_s, r.threads
    );
    match r.peak_rss_mb {
        Some(mb) => println!("  peak RSS             {mb:.1} MiB (whole process)"),
        None => println!("  peak RSS             not reported by this OS"),
    }
    println!("  exact                {}", r.exact);
    if let Some(why) = &r.aborted {
        println!("  aborted              {why}");
    }
    println!(
        "  model bounds         log2 P[abort] <= {:.1}, log2 P[privacy failure] <= {:.1}",
        r.log2_abort_probability, r.log2_privacy_failure
    );
}
