//! Helpers shared by the node's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use membrane_node::{
    Config, DataDir, DeviceIdentity, Node, NodeHandle,
    pairing::{InviteEvent, join},
};

/// Generous: CI machines are slow and busy.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A loopback node without control socket, redialing quickly.
pub fn config(dir: &std::path::Path) -> Config {
    let mut config = Config::loopback(dir);
    config.control_socket = false;
    config.redial_interval = Duration::from_millis(300);
    config.request_poll = Duration::from_millis(300);
    config
}

/// Polls `check` until it holds; fails the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A data dir with a device key but no root, ready to join (`membrane init --join`).
pub fn joining_device(base: &std::path::Path, name: &str) -> DataDir {
    let dir = DataDir::new(base.join(name));
    DeviceIdentity::init_joining(&dir).unwrap();
    dir
}

/// Pairs a new device named `name` with `inviter` and returns its data dir (not started).
pub async fn pair_with(inviter: &NodeHandle, base: &std::path::Path, name: &str) -> DataDir {
    let (ticket, mut events) = inviter.invite(600, Some(name.into())).await.unwrap();
    let dir = joining_device(base, name);
    join(&dir, &ticket, None).await.unwrap();
    assert!(matches!(
        events.recv().await,
        Some(InviteEvent::Joined { .. })
    ));
    dir
}

/// Starts a loopback node over `dir` that dials `peers`.
pub async fn start(dir: &std::path::Path, peers: Vec<libp2p::Multiaddr>) -> NodeHandle {
    let mut config = config(dir);
    config.peers = peers;
    Node::start(config).await.unwrap()
}
