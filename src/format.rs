//! How the commands show numbers, instants and tables, so that `cohort budgets`, `cohort
//! demo` and the dashboard print ε, δ and times the same way. Commands share these instead of
//! reaching into each other's modules.

use comfy_table::{CellAlignment, Table, TableStyle};
use time::OffsetDateTime;
use time::macros::format_description;

/// ε as the dashboard shows it: three decimals, `—` when not finite.
pub fn fmt_eps(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.3}")
    } else {
        "—".into()
    }
}

/// δ as the dashboard shows it (JavaScript's `toExponential()` and Rust's `{:e}` agree).
pub fn fmt_delta(d: f64) -> String {
    if d == 0.0 {
        "0".into()
    } else {
        format!("{d:e}")
    }
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds). An instant beyond
/// the years 1970–9999 cannot come from a real clock; it is shown as the raw number.
pub fn fmt_utc(ms: u64) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    i64::try_from(ms / 1000)
        .ok()
        .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{ms} ms after 1970-01-01"))
}

/// A borderless text table: a header line, then one line per row, columns two spaces apart,
/// the columns flagged in `right` aligned to the right (numbers), trailing spaces trimmed.
/// Ends with a newline.
pub fn plain_table<const N: usize>(
    headers: [&str; N],
    rows: impl IntoIterator<Item = [String; N]>,
    right: [bool; N],
) -> String {
    let mut table = Table::new();
    table.load_style(TableStyle::new());
    table.set_header(headers);
    for row in rows {
        table.add_row(row);
    }
    for (i, column) in table.column_iter_mut().enumerate() {
        // Two spaces between columns and none at the edges.
        let left = if i == 0 { 0 } else { 1 };
        let right_pad = if i + 1 == N { 0 } else { 1 };
        column.set_padding((left, right_pad));
        if right[i] {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    let mut out = table.trim_fmt();
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_instants() {
        assert_eq!(fmt_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(fmt_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(fmt_utc(1_795_000_000_123), "2026-11-18T11:06:40Z");
        assert_eq!(
            fmt_utc(u64::MAX),
            format!("{} ms after 1970-01-01", u64::MAX)
        );
        assert_eq!(fmt_delta(1e-5), "1e-5");
        assert_eq!(fmt_delta(2.5e-7), "2.5e-7");
        assert_eq!(fmt_eps(1.0005), "1.000");
    }

    #[test]
    fn tables_align_columns_two_spaces_apart() {
        let text = plain_table(
            ["NAME", "EPS", "STATUS"],
            [
                ["hospital-a".into(), "0.123".into(), "ok".into()],
                ["b".into(), "12.500".into(), "—".into()],
            ],
            [false, true, false],
        );
        assert_eq!(
            text,
            "NAME           EPS  STATUS\n\
             hospital-a   0.123  ok\n\
             b           12.500  —\n"
        );
    }
}
