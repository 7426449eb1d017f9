//! `scale`: many persons, each with two to four devices and two documents, and random
//! friendships (a read grant on one document to one of the friend's devices).

use crate::{
    scenario::Outcome,
    world::{NetConfig, Sim, Variant},
};

/// Runs it with about `target` devices.
pub fn run(seed: u64, variant: Variant, target: usize) -> Outcome {
    let net = NetConfig {
        latency_ms: (5, 120),
        loss: 0.001,
        redial_ms: 1_000,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, net, variant);
    let mut people = Vec::new();
    while sim.nodes.len() < target {
        let person = sim.add_person(&format!("p{}", people.len()));
        let count = sim.rng().between(2, 4) as usize;
        let devices: Vec<usize> = (0..count)
            .map(|d| sim.add_device(person, &format!("p{}-d{d}", people.len())))
            .collect();
        let docs: Vec<_> = (0..2)
            .map(|i| sim.create_doc(devices[i % devices.len()], &[("owner", "me")]))
            .collect();
        people.push((devices, docs));
    }
    for (i, (devices, docs)) in people.iter().enumerate() {
        let friend = sim.rng().below(people.len() as u64) as usize;
        if friend != i {
            let (friend_devices, _) = &people[friend];
            let grantee = friend_devices[sim.rng().below(friend_devices.len() as u64) as usize];
            sim.grant(devices[0], grantee, docs[0], false, None);
        }
        super::random_edits(&mut sim, devices, docs, 3, 0, 5_000);
    }
    let healed_at = 6_000;
    super::finish(sim, "scale", seed, healed_at, 120_000)
}
