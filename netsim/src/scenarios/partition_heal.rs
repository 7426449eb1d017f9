//! `partition-heal`: one person's four devices edit three documents while the network
//! splits and rejoins in random ways, with a little loss, duplication and reordering.

use crate::{
    scenario::Outcome,
    world::{NetConfig, Sim, Variant},
};

/// Runs it.
pub fn run(seed: u64, variant: Variant) -> Outcome {
    let net = NetConfig {
        latency_ms: (5, 80),
        loss: 0.003,
        duplicate: 0.001,
        reorder: 0.001,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, net, variant);
    let sarah = sim.add_person("sarah");
    let devices: Vec<usize> = ["laptop", "phone", "pi", "tablet"]
        .iter()
        .map(|name| sim.add_device(sarah, name))
        .collect();
    let docs: Vec<_> = (0..3)
        .map(|i| sim.create_doc(devices[i % devices.len()], &[("title", "doc")]))
        .collect();
    super::random_edits(&mut sim, &devices, &docs, 60, 0, 20_000);
    // Three splits, each lasting a while.
    for _ in 0..3 {
        let at = sim.rng().between(1_000, 18_000);
        let length = sim.rng().between(1_000, 4_000);
        let mut shuffled = devices.clone();
        for i in (1..shuffled.len()).rev() {
            let j = sim.rng().below(i as u64 + 1) as usize;
            shuffled.swap(i, j);
        }
        let cut = sim.rng().between(1, shuffled.len() as u64 - 1) as usize;
        let groups = vec![shuffled[..cut].to_vec(), shuffled[cut..].to_vec()];
        sim.at(at, move |sim| sim.partition(&groups));
        sim.at((at + length).min(20_000), |sim| sim.heal());
    }
    let healed_at = 20_000;
    sim.at(healed_at, |sim| sim.heal());
    super::finish(sim, "partition-heal", seed, healed_at, 60_000)
}
