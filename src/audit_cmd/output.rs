//! What an audit prints and writes: the two ε side by side, the guess counts, the verdict
//! (a red line when the audit contradicts the accountant), `audit.json`, `scores.csv` and
//! `scores.svg` (the score distributions of included and excluded canaries).

use std::io::IsTerminal;
use std::path::Path;

use plotters::prelude::*;
use serde_json::{Value, json};

use super::dp_sgd::DpSgdAudit;
use super::{DpSgdPlan, Failure, Noise};

/// The audit as one JSON object (printed by `--json` and written to `audit.json`).
pub(super) fn to_json(plan: &DpSgdPlan, a: &DpSgdAudit) -> Value {
    let finite = |x: f64| if x.is_finite() { json!(x) } else { json!(null) };
    let best = a.audit.best;
    let included = a.included.iter().filter(|&&x| x).count();
    json!({
        "mode": plan.mode.name(),
        "model": plan.model,
        "data": plan.data.to_string(),
        "canaries": plan.canaries,
        "canaries_included": included,
        "parameters": a.parameters,
        "train_examples": a.train_examples,
        "steps": a.steps,
        "sample_rate": a.sample_rate,
        "noise_multiplier": a.noise_multiplier,
        "clip": plan.clip,
        "target_epsilon": match plan.noise { Noise::TargetEpsilon(e) => json!(e), Noise::Multiplier(_) => json!(null) },
        "danger_no_noise": plan.danger_no_noise,
        "delta": plan.delta,
        "confidence": plan.confidence,
        "accountant_epsilon": finite(a.accountant_epsilon),
        "audited_epsilon_lower_bound": a.audit.epsilon_lower_bound,
        "verdict": if a.contradicts() { "contradiction" } else { "consistent" },
        "best_rule": {
            "k_in": best.guess.k_in,
            "k_out": best.guess.k_out,
            "guesses": best.counts.guesses(),
            "correct": best.counts.correct(),
        },
        "per_rule_confidence": a.audit.per_rule_confidence,
        "rules": a.audit.rules.iter().map(|r| json!({
            "k_in": r.guess.k_in,
            "k_out": r.guess.k_out,
            "guesses": r.counts.guesses(),
            "correct": r.counts.correct(),
            "epsilon_lower_bound": r.epsilon_lower_bound,
        })).collect::<Vec<_>>(),
        "train_seconds": a.train_seconds,
        "score_seconds": a.score_seconds,
        "test_accuracy": finite(a.test_accuracy),
        "seed": plan.seed,
    })
}

/// Writes `audit.json`, `scores.csv` and `scores.svg` into the plan's `--out` folder.
pub(super) fn write_files(plan: &DpSgdPlan, a: &DpSgdAudit) -> Result<(), Failure> {
    let dir = &plan.out;
    let fail = |what: &Path, e: &dyn std::fmt::Display| {
        Failure::Failed(format!("cannot write {}: {e}", what.display()))
    };
    std::fs::create_dir_all(dir).map_err(|e| fail(dir, &e))?;
    let path = dir.join("audit.json");
    let text = serde_json::to_string_pretty(&to_json(plan, a)).map_err(|e| fail(&path, &e))?;
    std::fs::write(&path, text + "\n").map_err(|e| fail(&path, &e))?;
    let path = dir.join("scores.csv");
    let mut csv = String::from("canary,included,score\n");
    for (i, (s, inside)) in a.scores.iter().zip(&a.included).enumerate() {
        csv.push_str(&format!("{i},{},{s:e}\n", u8::from(*inside)));
    }
    std::fs::write(&path, csv).map_err(|e| fail(&path, &e))?;
    let path = dir.join("scores.svg");
    plot_scores(&path, plan, a).map_err(|e| fail(&path, &e))
}

/// Histograms (as step lines) of the scores of included and excluded canaries.
fn plot_scores(path: &Path, plan: &DpSgdPlan, a: &DpSgdAudit) -> Result<(), String> {
    const BINS: usize = 40;
    let lo = a.scores.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = a.scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 1.0, lo + 1.0)
    };
    let width = (hi - lo) / BINS as f64;
    let histogram = |inside: bool| -> Vec<(f64, f64)> {
        let mut counts = [0usize; BINS];
        for (s, &x) in a.scores.iter().zip(&a.included) {
            if x == inside {
                let bin = (((s - lo) / width) as usize).min(BINS - 1);
                counts[bin] += 1;
            }
        }
        let mut points = vec![(lo, 0.0)];
        for (b, &c) in counts.iter().enumerate() {
            let left = lo + b as f64 * width;
            points.push((left, c as f64));
            points.push((left + width, c as f64));
        }
        points.push((hi, 0.0));
        points
    };
    let (ins, outs) = (histogram(true), histogram(false));
    let y_max = ins.iter().chain(&outs).map(|p| p.1).fold(1.0, f64::max) * 1.1;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let title = format!(
        "{} canary scores: ε_LB {:.2} vs accountant ε {:.2}",
        plan.mode.name(),
        a.audit.epsilon_lower_bound,
        a.accountant_epsilon
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(lo..hi, 0f64..y_max)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc(match plan.mode {
            super::Mode::WhiteBox => "score: −⟨model change, canary direction⟩",
            super::Mode::BlackBox => "score: −loss on the mislabelled canary",
        })
        .y_desc("canaries")
        .draw()
        .map_err(|x| e(&x))?;
    chart
        .draw_series(LineSeries::new(ins, &RED))
        .map_err(|x| e(&x))?
        .label("included")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    chart
        .draw_series(LineSeries::new(outs, &BLUE))
        .map_err(|x| e(&x))?
        .label("not included")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE));
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE)
        .draw()
        .map_err(|x| e(&x))?;
    root.present().map_err(|x| e(&x))
}

/// Prints the result: sentences, or one JSON object with `--json`. A contradiction is always
/// also written to stderr in red, so that it shows even when stdout goes to a file.
pub(super) fn print(plan: &DpSgdPlan, a: &DpSgdAudit) {
    if plan.json {
        println!("{}", to_json(plan, a));
    } else {
        let best = a.audit.best;
        let included = a.included.iter().filter(|&&x| x).count();
        println!(
            "{} audit of DP-SGD ({} on {}): {} canaries ({included} included), {} steps at q = \
             {:.5}, σ = {:.4}, C = {}, {:.1} s training",
            plan.mode.name(),
            plan.model,
            plan.data,
            plan.canaries,
            a.steps,
            a.sample_rate,
            a.noise_multiplier,
            plan.clip,
            a.train_seconds
        );
        if plan.danger_no_noise {
            println!(
                "danger: --danger-no-noise trained without noise while the accountant charged σ \
                 = {:.4} (a negative control: the audit must fail)",
                a.noise_multiplier
            );
        }
        println!(
            "accountant ε = {:.4} at δ = {}",
            a.accountant_epsilon, plan.delta
        );
        println!(
            "audited ε ≥ {:.4} at {:.0} % confidence: best rule {} 'in' + {} 'out' guesses, {} \
             of {} correct ({} rules, each at {:.4} confidence)",
            a.audit.epsilon_lower_bound,
            plan.confidence * 100.0,
            best.guess.k_in,
            best.guess.k_out,
            best.counts.correct(),
            best.counts.guesses(),
            a.audit.rules.len(),
            a.audit.per_rule_confidence
        );
        println!(
            "test accuracy {:.4}; files in {}",
            a.test_accuracy,
            plan.out.display()
        );
        if !a.contradicts() {
            println!("consistent: the audit does not contradict the accountant (ε_LB ≤ ε)");
        }
    }
    if a.contradicts() {
        let line = format!(
            "AUDIT FAILED: audited ε ≥ {:.4} exceeds the accountant's ε = {:.4}: this run leaked \
             more than it claims (noise dropped, a clip skipped or steps under-charged)",
            a.audit.epsilon_lower_bound, a.accountant_epsilon
        );
        if std::io::stderr().is_terminal() {
            eprintln!("\x1b[1;31m{line}\x1b[0m");
        } else {
            eprintln!("{line}");
        }
    }
}
