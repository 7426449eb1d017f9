//! The scenarios, each a small script over [`crate::world::Sim`].

pub mod churn;
pub mod partition_heal;
pub mod sarah;
pub mod scale;
pub mod traces;

use crate::{scenario::Outcome, world::Sim};

/// Lets the world settle after `healed_at`, checks the invariants, and reports.
pub(crate) fn finish(sim: Sim, scenario: &str, seed: u64, healed_at: u64, budget: u64) -> Outcome {
    finish_with(sim, scenario, seed, healed_at, budget, |_| Vec::new())
}

/// [`finish`], with the scenario's own checks on the final state.
pub(crate) fn finish_with(
    mut sim: Sim,
    scenario: &str,
    seed: u64,
    healed_at: u64,
    budget: u64,
    extra: impl FnOnce(&Sim) -> Vec<String>,
) -> Outcome {
    sim.run_until(healed_at);
    let converged_at = sim.settle(100, healed_at + budget);
    let mut violations = std::mem::take(&mut sim.violations);
    if converged_at.is_none() {
        violations.push(format!(
            "did not converge within {} s of virtual time after healing",
            budget / 1000
        ));
    }
    violations.extend(sim.lost_writes());
    violations.extend(extra(&sim));
    let rounds = converged_at.map(|t| t.saturating_sub(healed_at) / sim.round_trip_ms().max(1));
    Outcome {
        scenario: scenario.to_owned(),
        seed,
        broken_variant: sim.variant != crate::world::Variant::Correct,
        nodes: sim.nodes.len(),
        edits: sim.edits(),
        frames: sim.stats.frames,
        bytes: sim.stats.bytes,
        broken: sim.stats.broken + sim.stats.refused,
        healed_at,
        converged_at,
        rounds,
        violations,
        close_reasons: sim.stats.close_reasons.clone(),
        trace: sim.trace_hash(),
    }
}

/// Schedules `count` random edits by random nodes among `writers` on random documents among
/// `docs`, between `from` and `until` ms; each writes a unique key.
pub(crate) fn random_edits(
    sim: &mut Sim,
    writers: &[usize],
    docs: &[membrane_protocol::DocumentId],
    count: usize,
    from: u64,
    until: u64,
) {
    let batch = sim.rng().next_u64() % 1_000_000;
    for n in 0..count {
        let at = sim.rng().between(from, until);
        let node = writers[sim.rng().below(writers.len() as u64) as usize];
        let doc = docs[sim.rng().below(docs.len() as u64) as usize];
        sim.at(at, move |sim| {
            let key = format!("w{node}-{batch}-{n}");
            sim.edit(node, doc, &key, &format!("v{n}@{at}"));
        });
    }
}
