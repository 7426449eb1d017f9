//! `concurrent-traces`: not built yet.

use crate::{
    scenario::{Outcome, RunError},
    world::Variant,
};

/// Runs it.
pub fn run(_seed: u64, _variant: Variant) -> Result<Outcome, RunError> {
    Err(RunError::Data(
        "the concurrent-traces scenario is not built yet".into(),
    ))
}
