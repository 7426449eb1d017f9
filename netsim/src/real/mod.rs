//! Real-stack mode: real `membrane-node` instances (libp2p, redb, the control flow the
//! daemon runs) talking through hostile loopback [`link::Link`]s, checked against the same
//! invariants as the simulator.
//!
//! The story is Sarah's, at the scale of real processes: Sarah's devices, her friend Tom's
//! devices, a shop and a stranger, every connection through its own link. Every node
//! announces no address of its own ([`membrane_node::Config::announce`]), so peers reach
//! each other only through the links the harness wires up: no byte takes a clean path.
//!
//! What happens, in order: pairing and sharing on clean links; then faults on every link
//! while Sarah's devices write (acknowledged writes are recorded), her devices split into
//! two halves and heal, the home node stops right after an acknowledged write and starts
//! again, and the phone, cut off, is revoked from the laptop and writes on regardless.
//! Then the partitions heal, and the checks run:
//! - every one of Sarah's remaining devices holds each of her documents with the same heads
//!   and the same content; Tom's node and the shop's hold what they were granted, equal to
//!   Sarah's;
//! - every acknowledged write (except the revoked phone's after it was cut off) is there;
//! - the phone's writes after its revocation reached nobody;
//! - Tom's, the shop's and the stranger's nodes hold nothing they were not granted, and
//!   Sarah's nodes refused the stranger.
//!
//! Unlike the simulator, this mode is not deterministic: the operating system schedules
//! the nodes. The seed decides the faults and the workload.

pub mod link;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use membrane_node::{
    Config, DataDir, DeviceIdentity, Multiaddr, Node, NodeHandle,
    pairing::{InviteEvent, join},
    sharing::{Can, GrantRequest},
};
use membrane_protocol::DocumentId;
use serde::Serialize;
use serde_json::{Value, json};

use crate::rng::Rng;
use link::{Faults, Link};

/// How a real-stack run goes.
#[derive(Debug, Clone)]
pub struct RealConfig {
    /// Decides the faults and the workload.
    pub seed: u64,
    /// Sarah's devices (at least 3: laptop, phone, home node).
    pub sarah_devices: usize,
    /// Tom's devices (at least 1).
    pub tom_devices: usize,
    /// Writes by Sarah's devices during the hostile phase.
    pub writes: usize,
    /// What the links do during the hostile phase.
    pub faults: Faults,
    /// How long to wait for anything that should happen.
    pub patience: Duration,
}

impl RealConfig {
    /// Ten nodes (Sarah 5, Tom 3, a shop, a stranger), 1–40 ms of delay per chunk and one
    /// chunk in 300 killing its connection.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            sarah_devices: 5,
            tom_devices: 3,
            writes: 120,
            faults: Faults {
                delay_ms: (1, 40),
                reset_chance: 1.0 / 300.0,
                bandwidth: Some(2 * 1024 * 1024),
            },
            patience: Duration::from_secs(120),
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct RealReport {
    /// The seed.
    pub seed: u64,
    /// Real nodes.
    pub nodes: usize,
    /// Links (one per dialer and target).
    pub links: usize,
    /// Writes acknowledged (durable) during the run.
    pub acked_writes: usize,
    /// Bytes that crossed the links.
    pub bytes: u64,
    /// Connections made through the links.
    pub connections: u64,
    /// Connections killed by injected resets.
    pub resets: u64,
    /// Connections refused or closed by partitions.
    pub cut: u64,
    /// From the last heal until every check held (milliseconds).
    pub converge_ms: u128,
    /// The whole run (milliseconds).
    pub total_ms: u128,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RealError {
    /// The harness could not set up or drive a node.
    #[error("setup: {0}")]
    Setup(String),
    /// An invariant did not hold.
    #[error("invariant violated: {0}")]
    Violation(String),
}

fn setup(e: impl std::fmt::Display) -> RealError {
    RealError::Setup(e.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Person {
    Sarah,
    Tom,
    Shop,
    Stranger,
}

struct Member {
    name: String,
    person: Person,
    dir: PathBuf,
    peer_id: String,
    node: Option<NodeHandle>,
    /// Links this member dials.
    dials: Vec<usize>,
}

struct Wire {
    target: usize,
    dialer: usize,
    link: Link,
}

struct Net {
    members: Vec<Member>,
    wires: Vec<Wire>,
    patience: Duration,
}

const LAPTOP: usize = 0;
const PHONE: usize = 1;
const HOME: usize = 2;

impl Net {
    fn node(&self, member: usize) -> &NodeHandle {
        self.members[member]
            .node
            .as_ref()
            .expect("the member is running")
    }

    fn of(&self, person: Person) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&m| self.members[m].person == person)
            .collect()
    }

    async fn connect(&mut self, dialer: usize, target: usize, seed: u64) -> Result<(), RealError> {
        let link = Link::open(seed).await.map_err(setup)?;
        self.members[dialer].dials.push(self.wires.len());
        self.wires.push(Wire {
            target,
            dialer,
            link,
        });
        Ok(())
    }

    fn config(&self, member: usize) -> Config {
        let m = &self.members[member];
        let mut config = Config::loopback(&m.dir);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
        config.control_socket = false;
        config.redial_interval = Duration::from_millis(300);
        config.request_poll = Duration::from_secs(3600);
        // Peers learn no direct address: every byte goes through a link.
        config.announce = Some(Vec::new());
        config.peers = m
            .dials
            .iter()
            .map(|&w| {
                let wire = &self.wires[w];
                format!(
                    "/ip4/127.0.0.1/tcp/{}/p2p/{}",
                    wire.link.addr().port(),
                    self.members[wire.target].peer_id
                )
                .parse::<Multiaddr>()
                .expect("valid multiaddr")
            })
            .collect();
        config
    }

    async fn start(&mut self, member: usize) -> Result<(), RealError> {
        let node = Node::start(self.config(member)).await.map_err(setup)?;
        let listen = node.listen_addrs(1).await;
        let addr = socket_addr(&listen[0]).ok_or_else(|| setup("no TCP listen address"))?;
        for wire in self.wires.iter().filter(|w| w.target == member) {
            wire.link.set_target(addr);
        }
        self.members[member].node = Some(node);
        Ok(())
    }

    fn set_faults(&self, faults: Faults) {
        for wire in &self.wires {
            wire.link.set_faults(faults);
        }
    }

    /// Cuts (or heals) every link with one end in `side` and the other outside it.
    fn split(&self, side: &[usize], up: bool) {
        for wire in &self.wires {
            if side.contains(&wire.dialer) != side.contains(&wire.target) {
                wire.link.set_up(up);
            }
        }
    }

    async fn eventually<F, Fut>(&self, what: &str, mut check: F) -> Result<(), RealError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<bool, RealError>>,
    {
        let deadline = Instant::now() + self.patience;
        loop {
            if check().await? {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(RealError::Violation(format!(
                    "after {:?}: {what}",
                    self.patience
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    use membrane_node::multiaddr::Protocol;
    let mut ip = None;
    for part in addr.iter() {
        match part {
            Protocol::Ip4(v4) => ip = Some(std::net::IpAddr::V4(v4)),
            Protocol::Tcp(port) => return ip.map(|ip| SocketAddr::new(ip, port)),
            _ => {}
        }
    }
    None
}

/// A document's heads and content on one node; `None` if it does not hold it.
async fn snapshot(
    node: &NodeHandle,
    doc: DocumentId,
) -> Result<Option<(Vec<String>, Value)>, RealError> {
    node.read(doc, |d| {
        let mut heads: Vec<String> = d.get_heads().iter().map(ToString::to_string).collect();
        heads.sort();
        (heads, membrane_node::json::to_json(d))
    })
    .await
    .map_err(setup)
}

async fn holds(node: &NodeHandle, doc: DocumentId) -> Result<bool, RealError> {
    Ok(node
        .list()
        .await
        .map_err(setup)?
        .iter()
        .any(|d| d.id == doc.to_string()))
}

/// Runs the real-stack scenario under `base` (a fresh directory).
pub async fn run(base: &Path, config: &RealConfig) -> Result<RealReport, RealError> {
    assert!(config.sarah_devices >= 3 && config.tom_devices >= 1);
    let started = Instant::now();
    let mut rng = Rng::new(config.seed);

    // Identities: the first device of each person makes the root; the others will join.
    let mut members = Vec::new();
    let mut add = |person: Person, name: String, first: bool| -> Result<(), RealError> {
        let dir = base.join(&name);
        let data = DataDir::new(&dir);
        let peer_id = if first {
            DeviceIdentity::init(&data, membrane_node::time::now())
                .map_err(setup)?
                .device
                .did()
        } else {
            DeviceIdentity::init_joining(&data).map_err(setup)?.did()
        }
        .to_peer_id()
        .map_err(setup)?
        .to_string();
        members.push(Member {
            name,
            person,
            dir,
            peer_id,
            node: None,
            dials: Vec::new(),
        });
        Ok(())
    };
    let sarah_names = ["laptop", "phone", "home", "tablet", "watch"];
    for i in 0..config.sarah_devices {
        let name = sarah_names
            .get(i)
            .map_or(format!("sarah-{i}"), |n| format!("sarah-{n}"));
        add(Person::Sarah, name, i == 0)?;
    }
    for i in 0..config.tom_devices {
        add(Person::Tom, format!("tom-{i}"), i == 0)?;
    }
    add(Person::Shop, "shop".into(), true)?;
    add(Person::Stranger, "stranger".into(), true)?;
    let mut net = Net {
        members,
        wires: Vec::new(),
        patience: config.patience,
    };
    let sarah = net.of(Person::Sarah);
    let tom = net.of(Person::Tom);
    let shop = net.of(Person::Shop)[0];
    let stranger = net.of(Person::Stranger)[0];

    // Links: each person's devices all to all; Tom's first device and the shop reach
    // Sarah's home node (and Tom her laptop); the stranger tries both.
    let mut pairs = Vec::new();
    for group in [&sarah, &tom] {
        for (i, &a) in group.iter().enumerate() {
            for &b in &group[i + 1..] {
                pairs.push((a, b));
            }
        }
    }
    pairs.extend([
        (tom[0], sarah[LAPTOP]),
        (tom[0], sarah[HOME]),
        (shop, sarah[HOME]),
        (stranger, sarah[LAPTOP]),
        (stranger, sarah[HOME]),
    ]);
    for (dialer, target) in pairs {
        let seed = rng.next_u64();
        net.connect(dialer, target, seed).await?;
    }

    // Pairing, on the first devices' direct addresses (pairing over hostile links is
    // tested elsewhere; here it only builds the people).
    for group in [&sarah, &tom] {
        net.start(group[0]).await?;
        for &joiner in &group[1..] {
            let first = net.node(group[0]);
            let (mut ticket, mut events) = first
                .invite(600, Some(net.members[joiner].name.clone()))
                .await
                .map_err(setup)?;
            ticket.addrs = first
                .listen_addrs(1)
                .await
                .iter()
                .map(|a| {
                    a.iter()
                        .filter(|p| !matches!(p, membrane_node::multiaddr::Protocol::P2p(_)))
                        .collect::<Multiaddr>()
                        .to_vec()
                })
                .collect();
            join(&DataDir::new(&net.members[joiner].dir), &ticket, None)
                .await
                .map_err(setup)?;
            match events.recv().await {
                Some(InviteEvent::Joined { .. }) => {}
                other => return Err(setup(format!("pairing ended with {other:?}"))),
            }
        }
    }
    for member in 0..net.members.len() {
        if net.members[member].node.is_none() {
            net.start(member).await?;
        }
    }

    // Sarah's documents, Tom's, and the two grants.
    let laptop = net.node(sarah[LAPTOP]).clone();
    let mut docs = BTreeMap::new();
    for (name, initial) in [
        ("contacts", json!({"log": {}})),
        ("calendar", json!({"log": {}, "saturday": "tennis"})),
        ("fitness", json!({"log": {}})),
        ("inbox", json!({"offers": {}})),
    ] {
        let id = laptop
            .create_doc(Some(name.into()), Some(initial))
            .await
            .map_err(setup)?;
        docs.insert(name, id);
    }
    let tom_notes = net
        .node(tom[0])
        .create_doc(Some("notes".into()), Some(json!({"log": {}})))
        .await
        .map_err(setup)?;
    let grant = |to: &NodeHandle, doc: &str, can: Can| GrantRequest {
        to: to.device(),
        doc: doc.into(),
        can,
        expires_in: Some(86_400),
        terms: None,
        note: None,
        delegable: false,
        path: None,
    };
    let for_tom = laptop
        .grant(grant(net.node(tom[0]), "calendar", Can::Read))
        .await
        .map_err(setup)?;
    net.node(tom[0])
        .accept(&for_tom.code)
        .await
        .map_err(setup)?;
    let for_shop = laptop
        .grant(grant(net.node(shop), "inbox", Can::Write))
        .await
        .map_err(setup)?;
    net.node(shop).accept(&for_shop.code).await.map_err(setup)?;
    // Its content, not just its entry: a borrowed document is listed (empty) as soon as the
    // session starts, and an offer written into the empty copy would create a second
    // `offers` map, which loses to Sarah's when the two merge.
    net.eventually("the shop receives the inbox", || {
        let shop = net.node(shop).clone();
        let inbox = docs["inbox"];
        async move {
            Ok(holds(&shop, inbox).await?
                && shop
                    .get(&inbox.to_string(), "/offers")
                    .await
                    .map_err(setup)?
                    .is_some())
        }
    })
    .await?;

    // The hostile phase.
    net.set_faults(config.faults);
    let mut acked: Vec<(usize, DocumentId, String)> = Vec::new();
    let writable = ["contacts", "calendar", "fitness"];
    let halves = &sarah[..2];
    for n in 0..config.writes {
        if n == config.writes / 3 {
            net.split(halves, false);
        }
        if n == 2 * config.writes / 3 {
            net.split(halves, true);
        }
        if n == config.writes / 2 {
            // The home node stops right after an acknowledged write, then starts again.
            let home = sarah[HOME];
            let key = format!("/log/{}-before-restart", net.members[home].name);
            net.node(home)
                .set(&docs["calendar"].to_string(), &key, json!(n))
                .await
                .map_err(setup)?;
            acked.push((home, docs["calendar"], key));
            net.node(home).shutdown().await;
            net.members[home].node = None;
            net.start(home).await?;
        }
        let writer = sarah[rng.below(sarah.len() as u64) as usize];
        let doc = docs[writable[rng.below(writable.len() as u64) as usize]];
        let key = format!("/log/{}-{n}", net.members[writer].name);
        net.node(writer)
            .set(&doc.to_string(), &key, json!(n))
            .await
            .map_err(setup)?;
        acked.push((writer, doc, key));
        if n % 10 == 0 {
            let key = format!("/log/tom-{n}");
            net.node(tom[0])
                .set(&tom_notes.to_string(), &key, json!(n))
                .await
                .map_err(setup)?;
            acked.push((tom[0], tom_notes, key));
        }
        if n % 20 == 0 {
            let key = format!("/offers/offer-{n}");
            net.node(shop)
                .set(&docs["inbox"].to_string(), &key, json!("10% off"))
                .await
                .map_err(setup)?;
            acked.push((shop, docs["inbox"], key));
        }
        tokio::time::sleep(Duration::from_millis(rng.between(0, 40))).await;
    }

    // The phone is lost: cut off, revoked from the laptop, and written to by whoever has it.
    let phone = sarah[PHONE];
    net.split(&[phone], false);
    let phone_did = net.node(phone).device().to_string();
    laptop.revoke_device(&phone_did).await.map_err(setup)?;
    let stolen_key = "/stolen".to_owned();
    net.node(phone)
        .set(
            &docs["calendar"].to_string(),
            &stolen_key,
            json!("the thief was here"),
        )
        .await
        .map_err(setup)?;
    for &device in &sarah {
        if device == phone {
            continue;
        }
        let node = net.node(device).clone();
        let phone_did = phone_did.clone();
        net.eventually("every device learns of the revocation", move || {
            let node = node.clone();
            let phone_did = phone_did.clone();
            async move {
                Ok(node
                    .devices()
                    .await
                    .map_err(setup)?
                    .iter()
                    .any(|d| d.did == phone_did && d.revoked))
            }
        })
        .await?;
    }

    // The network heals (links still slow, no more resets) and everything must converge.
    net.split(&[phone], true);
    net.set_faults(Faults {
        reset_chance: 0.0,
        ..config.faults
    });
    let healed = Instant::now();
    let remaining: Vec<usize> = sarah.iter().copied().filter(|&d| d != phone).collect();
    net.eventually("Sarah's devices, Tom and the shop converge", || {
        let net = &net;
        let (docs, remaining, tom) = (&docs, &remaining, &tom);
        async move {
            for (name, &doc) in docs {
                let reference = snapshot(net.node(remaining[0]), doc).await?;
                let mut holders: Vec<usize> = remaining.clone();
                match *name {
                    "calendar" => holders.push(tom[0]),
                    "inbox" => holders.push(shop),
                    _ => {}
                }
                for &h in &holders {
                    if snapshot(net.node(h), doc).await? != reference || reference.is_none() {
                        return Ok(false);
                    }
                }
            }
            let reference = snapshot(net.node(tom[0]), tom_notes).await?;
            for &t in tom {
                if snapshot(net.node(t), tom_notes).await? != reference {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    })
    .await?;
    let converge_ms = healed.elapsed().as_millis();

    // No acknowledged write lost.
    for (writer, doc, key) in &acked {
        if *writer == phone {
            continue;
        }
        let holders: Vec<usize> = if *doc == tom_notes {
            tom.clone()
        } else {
            remaining.clone()
        };
        for h in holders {
            let got = net
                .node(h)
                .get(&doc.to_string(), key)
                .await
                .map_err(setup)?;
            if got.is_none() {
                return Err(RealError::Violation(format!(
                    "{} lost the write {key} acknowledged by {}",
                    net.members[h].name, net.members[*writer].name
                )));
            }
        }
    }
    // The revoked phone's writes reached no one.
    for member in 0..net.members.len() {
        if member == phone {
            continue;
        }
        if let Some((_, content)) = snapshot(net.node(member), docs["calendar"]).await?
            && content.get("stolen").is_some()
        {
            return Err(RealError::Violation(format!(
                "{} holds the revoked phone's write",
                net.members[member].name
            )));
        }
    }
    // Nobody holds what they were not granted.
    for (member, allowed) in [
        (tom.clone(), vec!["calendar"]),
        (vec![shop], vec!["inbox"]),
        (vec![stranger], vec![]),
    ] {
        for m in member {
            for (name, &doc) in &docs {
                if !allowed.contains(name) && holds(net.node(m), doc).await? {
                    return Err(RealError::Violation(format!(
                        "{} holds Sarah's {name} without a grant",
                        net.members[m].name
                    )));
                }
            }
        }
    }
    let stranger_did = net.node(stranger).device().to_string();
    let mut refused = false;
    for &device in &remaining {
        let status = net.node(device).status().await.map_err(setup)?;
        refused |= status.refused_peers.iter().any(|r| r.peer == stranger_did);
    }
    if !refused {
        return Err(RealError::Violation(
            "no device of Sarah's recorded refusing the stranger".into(),
        ));
    }

    let report = RealReport {
        seed: config.seed,
        nodes: net.members.len(),
        links: net.wires.len(),
        acked_writes: acked.len(),
        bytes: sum(&net, |s| &s.bytes),
        connections: sum(&net, |s| &s.connections),
        resets: sum(&net, |s| &s.resets),
        cut: sum(&net, |s| &s.cut),
        converge_ms,
        total_ms: started.elapsed().as_millis(),
    };
    for member in &net.members {
        if let Some(node) = &member.node {
            node.shutdown().await;
        }
    }
    Ok(report)
}

fn sum(net: &Net, counter: impl Fn(&link::LinkStats) -> &std::sync::atomic::AtomicU64) -> u64 {
    net.wires
        .iter()
        .map(|w| counter(w.link.stats()).load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}
