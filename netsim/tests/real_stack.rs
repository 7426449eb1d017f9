//! Real-stack mode: ten real nodes (libp2p over TCP, redb files, the daemon's actors)
//! through hostile loopback links, checked against the simulator's invariants.

use membrane_netsim::real::{RealConfig, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_real_nodes_converge_through_delay_resets_partitions_a_restart_and_a_revocation() {
    for seed in 1..=3 {
        let base = tempfile::tempdir().unwrap();
        let config = RealConfig::new(seed);
        let report = run(base.path(), &config).await.unwrap_or_else(|error| {
            panic!("{error} (run again: membrane-netsim real --seed {seed})")
        });
        eprintln!("{}", serde_json::to_string(&report).unwrap());
        assert!(report.nodes >= 10, "{report:?}");
        // The network really was hostile: connections died of injected resets and of the
        // partitions, and were made again.
        assert!(report.resets > 0, "{report:?}");
        assert!(report.cut > 0, "{report:?}");
        assert!(report.connections > report.links as u64, "{report:?}");
        assert!(report.acked_writes >= config.writes, "{report:?}");
    }
}
