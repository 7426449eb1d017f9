//! Helpers shared by the node's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use membrane_node::Config;

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
