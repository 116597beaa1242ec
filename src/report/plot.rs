//! The two plots a researcher looks at first: test accuracy by round, and test accuracy
//! against the privacy spent (the largest record-level ε of any client).
//!
//! Drawn with plotters' SVG backend only: no font files, no image codecs, and the result
//! opens in any browser.

use std::path::Path;

use plotters::prelude::*;

use super::{ReportError, RoundRecord};

/// Writes `accuracy_vs_round.svg` and `accuracy_vs_epsilon.svg` into `dir`.
pub fn write_plots(dir: &Path, records: &[RoundRecord]) -> Result<(), ReportError> {
    let by_round: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.round as f64, r.accuracy))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    let by_epsilon: Vec<(f64, f64)> = records
        .iter()
        .map(|r| (r.epsilon_record_max, r.accuracy))
        .filter(|(x, y)| x.is_finite() && y.is_finite())
        .collect();
    line_plot(
        &dir.join("accuracy_vs_round.svg"),
        "Test accuracy by round",
        "round",
        &by_round,
    )?;
    line_plot(
        &dir.join("accuracy_vs_epsilon.svg"),
        "Test accuracy against privacy spent",
        "record-level epsilon (largest of any client)",
        &by_epsilon,
    )
}

/// One accuracy curve with markers, x from 0 to just past the largest x.
fn line_plot(
    path: &Path,
    title: &str,
    x_label: &str,
    points: &[(f64, f64)],
) -> Result<(), ReportError> {
    let fail = |e: &dyn std::fmt::Display| ReportError::new(path, e);
    let x_max = points.iter().map(|p| p.0).fold(0.0f64, f64::max).max(1.0) * 1.05;
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..x_max, 0f64..1f64)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("test accuracy")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), &BLUE))
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(
            points
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())),
        )
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}
