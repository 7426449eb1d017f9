//! The demo's stage: a fresh directory with one data dir per node, the real nodes started
//! in it, and waiting for things to happen on them.

use std::{
    cell::RefCell,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use membrane_node::{
    Config, DataDir, DeviceIdentity, Multiaddr, Node, NodeHandle, multiaddr::Protocol, random, time,
};
use serde_json::{Value, json};

/// How long anything the story waits for may take: generous, for slow and busy machines.
pub(super) const PATIENCE: Duration = Duration::from_secs(30);
/// How often a condition is checked while waiting.
const POLL: Duration = Duration::from_millis(25);

/// A node started by the demo.
pub(super) struct Member {
    /// Its data dir's name under the stage.
    pub(super) name: &'static str,
    /// Whose device it is, for people.
    pub(super) role: &'static str,
    pub(super) node: NodeHandle,
}

/// The demo's directory and the nodes running over it.
pub(super) struct Stage {
    dir: PathBuf,
    /// Every node started, so all of them are shut down whatever happens. The story runs
    /// on one task, so a `RefCell` (never borrowed across an `.await`) is enough.
    members: RefCell<Vec<Member>>,
}

impl Stage {
    /// Makes a new directory under the system's temporary directory.
    pub(super) fn create() -> anyhow::Result<Self> {
        let suffix: String = random::bytes::<4>()?
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        let dir = std::env::temp_dir().join(format!("membrane-demo-{suffix}"));
        // `create_dir`, not `create_dir_all`: the directory must be new, since it is
        // removed as a whole at the end.
        std::fs::create_dir(&dir)
            .with_context(|| format!("cannot create the demo directory {}", dir.display()))?;
        Ok(Self {
            dir,
            members: RefCell::new(Vec::new()),
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The data dir named `name` under the stage.
    pub(super) fn data_dir(&self, name: &str) -> DataDir {
        DataDir::new(self.dir.join(name))
    }

    /// Creates a new person (a root identity and this device's key) and starts their node.
    pub(super) async fn new_person(
        &self,
        name: &'static str,
        role: &'static str,
    ) -> anyhow::Result<NodeHandle> {
        DeviceIdentity::init(&self.data_dir(name), time::now())
            .with_context(|| format!("cannot create {role}'s identity"))?;
        self.start(name, role, Vec::new()).await
    }

    /// Starts the node over the (initialized) data dir `name`, dialing `peers`: loopback
    /// only, no mDNS, with its control socket, so `--keep` leaves it reachable by the CLI.
    pub(super) async fn start(
        &self,
        name: &'static str,
        role: &'static str,
        peers: Vec<Multiaddr>,
    ) -> anyhow::Result<NodeHandle> {
        let mut config = Config::loopback(self.data_dir(name).path());
        config.control_socket = true;
        config.peers = peers;
        let node = Node::start(config)
            .await
            .with_context(|| format!("cannot start {role}'s node"))?;
        self.members.borrow_mut().push(Member {
            name,
            role,
            node: node.clone(),
        });
        Ok(node)
    }

    /// Shuts down the node started as `name`, if it runs.
    pub(super) async fn stop(&self, name: &str) {
        let stopping = {
            let mut members = self.members.borrow_mut();
            let found = members.iter().position(|m| m.name == name);
            found.map(|at| members.remove(at))
        };
        if let Some(member) = stopping {
            member.node.shutdown().await;
        }
    }

    /// Shuts every node down (each commits what it queued and closes its store).
    pub(super) async fn stop_all(&self) {
        let members = std::mem::take(&mut *self.members.borrow_mut());
        // Concurrently: one by one, the shutdowns would add up.
        let mut stopping = tokio::task::JoinSet::new();
        for member in members {
            stopping.spawn(async move { member.node.shutdown().await });
        }
        stopping.join_all().await;
    }

    /// The running nodes, with how to reach each from the CLI.
    pub(super) async fn directory(&self) -> Vec<Value> {
        let members: Vec<(&'static str, &'static str, NodeHandle)> = self
            .members
            .borrow()
            .iter()
            .map(|m| (m.name, m.role, m.node.clone()))
            .collect();
        let mut nodes = Vec::new();
        for (name, role, node) in members {
            let listen = node.listen_addrs(1).await;
            nodes.push(json!({
                "name": name,
                "role": role,
                "data_dir": node.data_dir().path(),
                "device": node.device().to_string(),
                "listen": listen.iter().map(ToString::to_string).collect::<Vec<_>>(),
            }));
        }
        nodes
    }

    /// Removes the directory and everything in it (after [`Stage::stop_all`]).
    pub(super) fn remove(&self) -> anyhow::Result<()> {
        std::fs::remove_dir_all(&self.dir)
            .with_context(|| format!("cannot remove the demo directory {}", self.dir.display()))
    }
}

/// The node's TCP listen address (with `/p2p/…`): what others dial in the story.
pub(super) async fn tcp_address(node: &NodeHandle) -> anyhow::Result<Multiaddr> {
    // A loopback node listens on two addresses, TCP and QUIC.
    node.listen_addrs(2)
        .await
        .into_iter()
        .find(|addr| addr.iter().any(|p| matches!(p, Protocol::Tcp(_))))
        .context("the node listens on no TCP address")
}

/// Checks `condition` until it holds; fails after [`PATIENCE`], saying what it waited for.
pub(super) async fn eventually(
    what: &str,
    mut condition: impl AsyncFnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if condition().await {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("waited {} s in vain for {what}", PATIENCE.as_secs());
        }
        tokio::time::sleep(POLL).await;
    }
}
