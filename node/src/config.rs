//! The node's configuration: an explicit struct passed to [`crate::Node::start`]. Only the
//! binary reads files and environment variables to build it.

use std::{path::PathBuf, time::Duration};

use libp2p::Multiaddr;

/// How a node runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The data directory made by `membrane init`.
    pub data_dir: PathBuf,
    /// Addresses to listen on. Default: every interface, TCP and QUIC, ports chosen by the
    /// OS.
    pub listen: Vec<Multiaddr>,
    /// Addresses to dial and keep dialing while disconnected (besides the addresses
    /// remembered for the person's devices).
    pub peers: Vec<Multiaddr>,
    /// Find the person's devices on the local network with mDNS.
    pub mdns: bool,
    /// Serve the local control socket (`<data dir>/control.sock`) for the CLI.
    pub control_socket: bool,
    /// Clock skew tolerated when checking peers' delegations.
    pub clock_skew_secs: u64,
    /// Most established connections, in and out together.
    pub max_connections: u32,
    /// How often disconnected peers are dialed again.
    pub redial_interval: Duration,
    /// Compact a document once this many chunks sit on its snapshot (it is also compacted
    /// when its chunks outweigh its snapshot).
    pub compact_after_chunks: u64,
    /// How often this device asks after the access requests it filed with others.
    pub request_poll: Duration,
    /// The addresses this device gives others (pairing invitations, grant codes, identify)
    /// instead of its listen addresses: say, a router's forwarded port in front of a home
    /// node, or nothing at all on a network where the device should not reveal where it
    /// listens. `None`: the listen addresses.
    pub announce: Option<Vec<Multiaddr>>,
}

impl Config {
    /// Defaults for a data dir: listen everywhere, mDNS on, control socket on.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            peers: Vec::new(),
            mdns: true,
            control_socket: true,
            clock_skew_secs: 60,
            max_connections: 128,
            redial_interval: Duration::from_secs(3),
            compact_after_chunks: 4096,
            request_poll: Duration::from_secs(30),
            announce: None,
        }
    }

    /// Loopback only, no mDNS: for tests and local experiments.
    pub fn loopback(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: vec![
                "/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr"),
                "/ip4/127.0.0.1/udp/0/quic-v1"
                    .parse()
                    .expect("valid multiaddr"),
            ],
            mdns: false,
            ..Self::new(data_dir)
        }
    }
}
