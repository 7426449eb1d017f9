//! Running a scenario for one seed, and what came out of it.

use serde::Serialize;

use crate::{scenarios, world::Variant};

/// The scenarios, by name.
pub const SCENARIOS: &[&str] = &[
    "sarah",
    "partition-heal",
    "churn",
    "scale",
    "concurrent-traces",
];

/// What one run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The scenario.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Whether the deliberately broken variant ran.
    pub broken_variant: bool,
    /// Simulated devices.
    pub nodes: usize,
    /// Local edits made.
    pub edits: u64,
    /// Frames delivered.
    pub frames: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Connections broken by loss, and sessions closed by a hub.
    pub broken: u64,
    /// When the network healed (virtual ms).
    pub healed_at: u64,
    /// When everything had converged (virtual ms), if it did.
    pub converged_at: Option<u64>,
    /// Convergence after healing, in round trips of the network model.
    pub rounds: Option<u64>,
    /// Every invariant violation.
    pub violations: Vec<String>,
    /// Why hubs closed sessions, with counts.
    pub close_reasons: std::collections::BTreeMap<String, u64>,
    /// The hash of the event history.
    pub trace: String,
}

impl Outcome {
    /// Whether every invariant held.
    pub fn ok(&self) -> bool {
        self.violations.is_empty() && self.converged_at.is_some()
    }

    /// The command that replays this run.
    pub fn replay(&self) -> String {
        format!(
            "cargo run -p membrane-netsim -- run --scenario {} --seed {}{}",
            self.scenario,
            self.seed,
            if self.broken_variant { " --broken" } else { "" }
        )
    }
}

/// Why a scenario could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No scenario by that name.
    #[error("no scenario {0:?}; the scenarios are: {list}", list = SCENARIOS.join(", "))]
    Unknown(String),
    /// Its input data is missing.
    #[error("{0}")]
    Data(String),
}

/// Runs `scenario` for `seed`.
pub fn run(scenario: &str, seed: u64, variant: Variant) -> Result<Outcome, RunError> {
    match scenario {
        "sarah" => Ok(scenarios::sarah::run(seed, variant)),
        "partition-heal" => Ok(scenarios::partition_heal::run(seed, variant)),
        "churn" => Ok(scenarios::churn::run(seed, variant)),
        "scale" => Ok(scenarios::scale::run(seed, variant, 1_000)),
        "concurrent-traces" => scenarios::traces::run(seed, variant),
        other => Err(RunError::Unknown(other.to_owned())),
    }
}
