//! `churn`: devices crash (losing what was not durable) and restart, a new device joins
//! halfway, an old one leaves for good, all while everyone edits.

use crate::{
    scenario::Outcome,
    world::{NetConfig, Sim, Variant},
};

/// Runs it.
pub fn run(seed: u64, variant: Variant) -> Outcome {
    let net = NetConfig {
        latency_ms: (5, 60),
        loss: 0.002,
        store_delay_ms: 20,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, net, variant);
    let sarah = sim.add_person("sarah");
    let mut devices: Vec<usize> = (0..5)
        .map(|i| sim.add_device(sarah, &format!("device{i}")))
        .collect();
    let docs: Vec<_> = (0..3)
        .map(|i| sim.create_doc(devices[i], &[("title", "doc")]))
        .collect();
    super::random_edits(&mut sim, &devices, &docs, 50, 0, 18_000);
    // Crashes and restarts.
    for _ in 0..8 {
        let node = devices[sim.rng().below(devices.len() as u64) as usize];
        let at = sim.rng().between(500, 15_000);
        let down = sim.rng().between(200, 3_000);
        sim.at(at, move |sim| sim.crash(node));
        sim.at(at + down, move |sim| sim.restart(node));
    }
    // A new device joins and edits; the first one leaves for good.
    let newcomer = sim.add_device(sarah, "newcomer");
    sim.crash(newcomer);
    sim.at(8_000, move |sim| sim.restart(newcomer));
    devices.push(newcomer);
    super::random_edits(&mut sim, &[newcomer], &docs, 10, 9_000, 18_000);
    let leaving = devices[0];
    sim.at(12_000, move |sim| sim.retire(leaving));
    let healed_at = 20_000;
    let all = devices.clone();
    sim.at(healed_at, move |sim| {
        for node in all {
            sim.restart(node);
        }
    });
    super::finish(sim, "churn", seed, healed_at, 60_000)
}
