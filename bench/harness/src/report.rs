//! Measurements as JSON lines on stdout.

use serde_json::{Value, json};

/// Prints one measurement: `{"scenario", "system", "case", "ms", ...extra}`.
pub(crate) fn emit(scenario: &str, system: &str, case: &str, ms: f64, extra: Value) {
    let mut line = json!({"scenario": scenario, "system": system, "case": case, "ms": ms});
    if let (Some(line), Some(extra)) = (line.as_object_mut(), extra.as_object()) {
        line.extend(extra.clone());
    }
    println!("{line}");
}

/// Milliseconds since `start`, as a float.
pub(crate) fn ms_since(start: std::time::Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// The value at `q` (0..=1) of `sorted`.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}
