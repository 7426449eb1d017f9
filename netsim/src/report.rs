//! Summaries over many runs: min, median and p99 of what each run cost.

use serde::Serialize;

use crate::scenario::Outcome;

/// Min, median and p99 of one measure.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
pub struct Spread {
    /// Smallest.
    pub min: u64,
    /// Median.
    pub median: u64,
    /// 99th percentile.
    pub p99: u64,
}

impl Spread {
    /// Over `values` (empty gives zeros).
    pub fn of(mut values: Vec<u64>) -> Self {
        if values.is_empty() {
            return Self {
                min: 0,
                median: 0,
                p99: 0,
            };
        }
        values.sort_unstable();
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        Self {
            min: values[0],
            median: at(0.5),
            p99: at(0.99),
        }
    }
}

/// A scenario's summary over seeds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: String,
    /// Runs.
    pub runs: usize,
    /// Runs whose invariants all held.
    pub passed: usize,
    /// Frames per run.
    pub messages: Spread,
    /// Bytes per run.
    pub bytes: Spread,
    /// Round trips from healing to convergence.
    pub rounds: Spread,
    /// Virtual milliseconds from healing to convergence.
    pub time_to_converge_ms: Spread,
    /// The failing runs' replay commands and first violation.
    pub failures: Vec<(String, String)>,
}

impl Summary {
    /// Summarizes `outcomes` (all of one scenario).
    pub fn of(scenario: &str, outcomes: &[Outcome]) -> Self {
        let converged: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.converged_at.is_some())
            .collect();
        Self {
            scenario: scenario.to_owned(),
            runs: outcomes.len(),
            passed: outcomes.iter().filter(|o| o.ok()).count(),
            messages: Spread::of(outcomes.iter().map(|o| o.frames).collect()),
            bytes: Spread::of(outcomes.iter().map(|o| o.bytes).collect()),
            rounds: Spread::of(converged.iter().filter_map(|o| o.rounds).collect()),
            time_to_converge_ms: Spread::of(
                converged
                    .iter()
                    .filter_map(|o| o.converged_at.map(|t| t - o.healed_at))
                    .collect(),
            ),
            failures: outcomes
                .iter()
                .filter(|o| !o.ok())
                .map(|o| {
                    (
                        o.replay(),
                        o.violations.first().cloned().unwrap_or_default(),
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Spread;

    #[test]
    fn spreads_pick_the_right_ranks() {
        assert_eq!(
            Spread::of((1..=100).collect()),
            Spread {
                min: 1,
                median: 51,
                p99: 99
            }
        );
        assert_eq!(Spread::of(vec![]).median, 0);
    }
}
