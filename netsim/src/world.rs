//! The simulated world: persons and their devices, each a real [`SyncHub`]; connections
//! over a seeded network model; an event queue in virtual time.
//!
//! What is modelled:
//! - **Connections** are ordered, reliable streams while they last (as TCP or QUIC streams
//!   are). Each direction has a latency drawn per frame (kept in order), and optionally a
//!   bandwidth cap.
//! - **Loss** breaks a connection: the frame and everything after it on that connection is
//!   lost, both sides see it close, and the nodes redial later.
//! - **Duplication and reordering** are hostile-network faults on top: a frame delivered
//!   twice, or overtaking the frames before it. The hubs must detect the damage and close
//!   the session; the redial heals it.
//! - **Partitions** split the nodes into groups that cannot reach each other.
//! - **Crashes** lose what the store had not made durable; a restart reloads the rest.
//! - **Clocks** are offset and drift per node, and can jump.
//!
//! Every choice is drawn from one seeded generator, and every collection iterated is
//! ordered, so one seed gives one history: the trace hash proves it.

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, BinaryHeap},
};

use automerge::{
    ActorId, Automerge, AutomergeError, ChangeHash, ROOT, ReadDoc as _,
    transaction::{CommitOptions, Transactable as _},
};
use membrane_protocol::{
    Did, DocumentId, SecretKey, capability,
    sync::{
        DocSet, Effect, HubConfig, Input, Role, SessionId, SyncHub,
        gate::{
            Cutoff, RevokedAuthors, cutoff_from_json, cutoff_of, cutoff_to_json, device_seqs,
            exceeds,
        },
        wire::{DocMessage, Frame, RevocationRecord},
    },
    ucan::{
        Cid, Command, Delegation, DelegationBuilder, Revocation, RevocationSet,
        decode_base64_loose, encode_base64,
    },
};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};

use crate::rng::Rng;

/// Unix time at virtual time zero.
pub const EPOCH: u64 = 1_800_000_000;

/// A node's index in [`Sim::nodes`].
pub type NodeId = usize;

/// The network model's parameters.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// One-way latency range per frame, milliseconds.
    pub latency_ms: (u64, u64),
    /// Probability that a frame breaks its connection.
    pub loss: f64,
    /// Probability that a frame is delivered twice.
    pub duplicate: f64,
    /// Probability that a frame overtakes the ones before it.
    pub reorder: f64,
    /// Bytes per millisecond per direction, if capped.
    pub bandwidth: Option<u64>,
    /// How often nodes redial peers they are not connected to.
    pub redial_ms: u64,
    /// How long the store takes to make a write durable (and to read a document).
    pub store_delay_ms: u64,
    /// How many documents a node keeps in memory between inputs (its index stays too);
    /// the rest are known by their heads and read from its store when needed, as the real
    /// node does. `None` keeps everything loaded.
    pub resident_docs: Option<usize>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            latency_ms: (5, 60),
            loss: 0.0,
            duplicate: 0.0,
            reorder: 0.0,
            bandwidth: None,
            redial_ms: 500,
            store_delay_ms: 5,
            resident_docs: Some(1),
        }
    }
}

/// A deliberately broken node, to prove the invariants can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Variant {
    /// The real behaviour.
    #[default]
    Correct,
    /// Nodes never apply the revocations that reach them.
    IgnoreRevocations,
}

/// A person: a root key and devices.
#[derive(Debug)]
pub struct Person {
    /// For reports.
    pub name: String,
    /// The root key.
    pub root: SecretKey,
    /// The person's index document (its registry: revocations live there).
    pub index: DocumentId,
    /// Their devices.
    pub devices: Vec<NodeId>,
    /// The documents they own.
    pub docs: Vec<DocumentId>,
}

/// A grant from one person's device to another person's device.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The grant's CID (what a revocation names).
    pub cid: Cid,
    /// The owner (a person).
    pub owner: usize,
    /// The grantee device.
    pub grantee: NodeId,
    /// The document.
    pub doc: DocumentId,
    /// Whether it allows writing.
    pub write: bool,
    /// Unix expiry.
    pub expires: Option<u64>,
    /// The chain, the owner's root first.
    pub chain: Vec<Delegation>,
}

struct Unflushed {
    due: u64,
    doc: DocumentId,
    data: Vec<u8>,
    snapshot: bool,
    write: Option<(String, String)>,
}

/// One simulated device.
pub struct SimNode {
    /// For reports.
    pub name: String,
    /// Its key.
    pub key: SecretKey,
    /// Its DID.
    pub did: Did,
    /// Its person.
    pub person: usize,
    /// root → device, command `/`.
    pub authority: Vec<Delegation>,
    /// The node's sync engine.
    pub hub: SyncHub,
    /// Running.
    pub up: bool,
    /// Left for good.
    pub gone: bool,
    /// Clock offset from true time, milliseconds.
    pub clock_offset_ms: i64,
    /// Clock drift, parts per million.
    pub drift_ppm: i64,
    /// Who it dials.
    pub peers: BTreeSet<NodeId>,
    /// Revocations present in its index document (whether applied or not).
    pub revocations_known: BTreeSet<Cid>,
    durable: BTreeMap<DocumentId, Vec<Vec<u8>>>,
    unflushed: Vec<Unflushed>,
    run: u32,
    held: Vec<Vec<Delegation>>,
    provenance: BTreeMap<DocumentId, Did>,
    index_heads: Vec<ChangeHash>,
}

impl SimNode {
    fn actor(&self) -> ActorId {
        let mut bytes = self.did.as_bytes().to_vec();
        bytes.extend(self.run.to_be_bytes());
        ActorId::from(bytes)
    }
}

/// An acknowledged local write: durable before it was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// Who wrote it.
    pub node: NodeId,
    /// Where.
    pub doc: DocumentId,
    /// The key (unique per write).
    pub key: String,
    /// The value.
    pub value: String,
}

/// Counters for the report.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Frames delivered.
    pub frames: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// Connections broken by loss.
    pub broken: u64,
    /// Sessions closed by a hub (bad frames, refusals).
    pub refused: u64,
    /// Why hubs closed sessions, with counts.
    pub close_reasons: BTreeMap<String, u64>,
}

struct Conn {
    a: NodeId,
    b: NodeId,
    open: bool,
    /// Per direction (a→b, b→a): when the last frame arrives, to keep order.
    last: [u64; 2],
}

type Action = Box<dyn FnOnce(&mut Sim)>;

enum Event {
    Opened {
        node: NodeId,
        conn: u64,
        peer: NodeId,
        role: Role,
    },
    Deliver {
        to: NodeId,
        conn: u64,
        frame: Vec<u8>,
    },
    Closed {
        node: NodeId,
        conn: u64,
    },
    Flush {
        node: NodeId,
    },
    /// A document read from a node's store arrives (for the run that asked).
    Load {
        node: NodeId,
        run: u32,
        doc: DocumentId,
    },
    Redial,
    Action(Action),
}

/// The simulated world.
pub struct Sim {
    /// Virtual time, milliseconds.
    pub now: u64,
    /// The network model.
    pub net: NetConfig,
    /// Devices.
    pub nodes: Vec<SimNode>,
    /// Persons.
    pub persons: Vec<Person>,
    /// Grants issued.
    pub grants: Vec<Grant>,
    /// Acknowledged writes.
    pub acked: Vec<Acked>,
    /// Invariant violations seen while running.
    pub violations: Vec<String>,
    /// Counters.
    pub stats: Stats,
    /// Which variant runs.
    pub variant: Variant,
    rng: Rng,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    conns: BTreeMap<u64, Conn>,
    next_conn: u64,
    partition: Option<BTreeMap<NodeId, u32>>,
    trace: Sha256,
    redialing: bool,
    edits: u64,
}

impl Sim {
    /// An empty world for `seed`.
    pub fn new(seed: u64, net: NetConfig, variant: Variant) -> Self {
        let mut trace = Sha256::new();
        trace.update(seed.to_be_bytes());
        Self {
            now: 0,
            net,
            nodes: Vec::new(),
            persons: Vec::new(),
            grants: Vec::new(),
            acked: Vec::new(),
            violations: Vec::new(),
            stats: Stats::default(),
            variant,
            rng: Rng::new(seed),
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            conns: BTreeMap::new(),
            next_conn: 1,
            partition: None,
            trace,
            redialing: false,
            edits: 0,
        }
    }

    /// The seeded generator, for scenarios' own choices.
    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// The hash of everything that happened so far.
    pub fn trace_hash(&self) -> String {
        let digest = self.trace.clone().finalize();
        digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
    }

    fn key(&mut self) -> SecretKey {
        let mut seed = [0u8; 32];
        for chunk in seed.chunks_mut(8) {
            chunk.copy_from_slice(&self.rng.next_u64().to_be_bytes());
        }
        SecretKey::from_seed(seed)
    }

    fn doc_id(&mut self) -> DocumentId {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        bytes[8..].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        DocumentId::from_bytes(bytes)
    }

    /// Adds a person with an (empty) index document.
    pub fn add_person(&mut self, name: &str) -> usize {
        let root = self.key();
        let index = self.doc_id();
        self.persons.push(Person {
            name: name.to_owned(),
            root,
            index,
            devices: Vec::new(),
            docs: Vec::new(),
        });
        self.persons.len() - 1
    }

    /// Adds a device to `person`; it dials the person's other devices.
    pub fn add_device(&mut self, person: usize, name: &str) -> NodeId {
        let key = self.key();
        let root = &self.persons[person].root;
        let nonce = self.rng.next_u64().to_be_bytes().to_vec();
        let authority = vec![
            DelegationBuilder::new(root.did(), key.did(), Command::top())
                .subject(root.did())
                .nonce(nonce)
                .sign(root)
                .expect("a delegation signs"),
        ];
        let id = self.nodes.len();
        let hub = new_hub(&key, root.did(), &authority, DocSet::new());
        let peers: BTreeSet<NodeId> = self.persons[person].devices.iter().copied().collect();
        for &other in &peers {
            self.nodes[other].peers.insert(id);
        }
        self.nodes.push(SimNode {
            name: name.to_owned(),
            did: key.did(),
            key,
            person,
            authority,
            hub,
            up: true,
            gone: false,
            clock_offset_ms: 0,
            drift_ppm: 0,
            peers,
            revocations_known: BTreeSet::new(),
            durable: BTreeMap::new(),
            unflushed: Vec::new(),
            run: 0,
            held: Vec::new(),
            provenance: BTreeMap::new(),
            index_heads: Vec::new(),
        });
        self.persons[person].devices.push(id);
        let index = self.persons[person].index;
        if self.persons[person].devices.len() == 1 {
            self.create_doc_with_id(id, index, &[]);
        }
        if !self.redialing {
            self.redialing = true;
            self.schedule(self.net.redial_ms, Event::Redial);
        }
        id
    }

    /// Creates a document on `node` (owned by its person) with initial keys.
    pub fn create_doc(&mut self, node: NodeId, content: &[(&str, &str)]) -> DocumentId {
        let id = self.doc_id();
        self.create_doc_with_id(node, id, content);
        let person = self.nodes[node].person;
        self.persons[person].docs.push(id);
        id
    }

    fn create_doc_with_id(&mut self, node: NodeId, id: DocumentId, content: &[(&str, &str)]) {
        let time = self.unix_ms(node) as i64 / 1000;
        let n = &mut self.nodes[node];
        let mut doc = Automerge::new().with_actor(n.actor());
        doc.transact_with::<_, _, AutomergeError, _>(
            |_| CommitOptions::default().with_time(time),
            |tx| {
                for (k, v) in content {
                    tx.put(ROOT, *k, *v)?;
                }
                Ok(())
            },
        )
        .expect("a fresh document takes puts");
        // Created before the run starts its clocks: durable at once.
        let saved = doc.save();
        n.durable.insert(id, vec![saved.clone()]);
        n.hub.docs_mut().insert(id, doc);
        let now = self.unix_secs(node);
        let effects = self.nodes[node].hub.handle(
            now,
            Input::LocalChange {
                doc: id,
                changes: saved,
            },
        );
        self.carry_out(node, effects);
    }

    /// Issues a grant on `doc` from `owner_device` to `grantee`, held by the grantee's hub.
    pub fn grant(
        &mut self,
        owner_device: NodeId,
        grantee: NodeId,
        doc: DocumentId,
        write: bool,
        expires_in_secs: Option<u64>,
    ) -> usize {
        let command = if write {
            capability::DOC_WRITE
        } else {
            capability::DOC_READ
        };
        let owner = self.nodes[owner_device].person;
        let expires = expires_in_secs.map(|s| self.unix_secs(owner_device) + s);
        let nonce = self.rng.next_u64().to_be_bytes().to_vec();
        let issuer = &self.nodes[owner_device];
        let delegation = DelegationBuilder::new(
            issuer.did,
            self.nodes[grantee].did,
            capability::command(command),
        )
        .subject(self.persons[owner].root.did())
        .policy(capability::policy_for_document(&doc.to_string()))
        .expiration(expires)
        .nonce(nonce)
        .sign(&issuer.key)
        .expect("a delegation signs");
        let cid = delegation.cid();
        let mut chain = issuer.authority.clone();
        chain.push(delegation);
        let now = self.unix_secs(grantee);
        let g = &mut self.nodes[grantee];
        g.held.push(chain.clone());
        let refused = g.hub.set_held_grants(now, g.held.clone());
        assert!(refused.is_empty(), "a fresh grant is usable: {refused:?}");
        g.provenance.insert(doc, self.persons[owner].root.did());
        g.hub.set_provenance(g.provenance.clone());
        for &device in &self.persons[owner].devices {
            self.nodes[grantee].peers.insert(device);
        }
        self.grants.push(Grant {
            cid,
            owner,
            grantee,
            doc,
            write,
            expires,
            chain,
        });
        self.grants.len() - 1
    }

    /// Makes `stranger` dial every device of `person` (it holds nothing).
    pub fn pester(&mut self, stranger: NodeId, person: usize) {
        let devices = self.persons[person].devices.clone();
        self.nodes[stranger].peers.extend(devices);
    }

    /// A node's clock, Unix milliseconds.
    pub fn unix_ms(&self, node: NodeId) -> u64 {
        let n = &self.nodes[node];
        let drift = self.now as i64 * n.drift_ppm / 1_000_000;
        (EPOCH as i64 * 1000 + self.now as i64 + n.clock_offset_ms + drift).max(0) as u64
    }

    /// A node's clock, Unix seconds.
    pub fn unix_secs(&self, node: NodeId) -> u64 {
        self.unix_ms(node) / 1000
    }

    /// Sets a node's clock offset and drift.
    pub fn set_clock(&mut self, node: NodeId, offset_ms: i64, drift_ppm: i64) {
        self.nodes[node].clock_offset_ms = offset_ms;
        self.nodes[node].drift_ppm = drift_ppm;
    }

    /// Runs `action` at virtual time `at`.
    pub fn at(&mut self, at: u64, action: impl FnOnce(&mut Sim) + 'static) {
        let delay = at.saturating_sub(self.now);
        self.schedule(delay, Event::Action(Box::new(action)));
    }

    fn schedule(&mut self, delay: u64, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + delay, self.seq)));
        self.events.insert(self.seq, event);
    }

    /// A local write on `node`: sets `key` to `value` in `doc`. Acknowledged once durable.
    pub fn edit(&mut self, node: NodeId, doc: DocumentId, key: &str, value: &str) -> bool {
        let time = self.unix_secs(node) as i64;
        if !self.nodes[node].up || !self.nodes[node].hub.docs().contains(&doc) {
            return false;
        }
        self.ensure_loaded(node, doc);
        let n = &mut self.nodes[node];
        if !n.hub.docs().contains(&doc) {
            return false;
        }
        let actor = n.actor();
        let before = n.hub.docs().heads(&doc).unwrap_or_default().to_vec();
        let data = n
            .hub
            .docs_mut()
            .update(&doc, |d| {
                d.set_actor(actor);
                d.transact_with::<_, _, AutomergeError, _>(
                    |_| CommitOptions::default().with_time(time),
                    |tx| tx.put(ROOT, key, value),
                )
                .expect("a put applies");
                d.save_after(&before)
            })
            .expect("held");
        self.edits += 1;
        let due = self.now + self.net.store_delay_ms;
        n.unflushed.push(Unflushed {
            due,
            doc,
            data: data.clone(),
            snapshot: false,
            write: Some((key.to_owned(), value.to_owned())),
        });
        self.schedule(self.net.store_delay_ms, Event::Flush { node });
        let now = self.unix_secs(node);
        let effects = self.nodes[node]
            .hub
            .handle(now, Input::LocalChange { doc, changes: data });
        self.carry_out(node, effects);
        self.after_input(node);
        true
    }

    /// Creates a document on `node` from saved bytes (owned by its person).
    pub fn create_doc_from(&mut self, node: NodeId, saved: &[u8]) -> DocumentId {
        let id = self.doc_id();
        let doc = Automerge::load(saved).expect("a saved document loads");
        let n = &mut self.nodes[node];
        n.durable.insert(id, vec![saved.to_vec()]);
        n.hub.docs_mut().insert(id, doc);
        let person = n.person;
        self.persons[person].docs.push(id);
        let now = self.unix_secs(node);
        let effects = self.nodes[node].hub.handle(
            now,
            Input::LocalChange {
                doc: id,
                changes: saved.to_vec(),
            },
        );
        self.carry_out(node, effects);
        id
    }

    /// Applies changes made elsewhere (a trace's) as `node`'s own local edits, in one
    /// batch: one durable chunk, one round of sync messages.
    pub fn apply_local(&mut self, node: NodeId, doc: DocumentId, changes: Vec<automerge::Change>) {
        if changes.is_empty() {
            return;
        }
        self.ensure_loaded(node, doc);
        let n = &mut self.nodes[node];
        let before = n.hub.docs().heads(&doc).unwrap_or_default().to_vec();
        self.edits += changes.len() as u64;
        let data = n
            .hub
            .docs_mut()
            .update(&doc, |d| {
                d.apply_changes(changes).expect("their parents are here");
                d.save_after(&before)
            })
            .expect("held");
        let due = self.now + self.net.store_delay_ms;
        n.unflushed.push(Unflushed {
            due,
            doc,
            data: data.clone(),
            snapshot: false,
            write: None,
        });
        self.schedule(self.net.store_delay_ms, Event::Flush { node });
        let now = self.unix_secs(node);
        let effects = self.nodes[node]
            .hub
            .handle(now, Input::LocalChange { doc, changes: data });
        self.carry_out(node, effects);
        self.after_input(node);
    }

    /// Signs a revocation of the last delegation of `revoked` on the person's behalf, writes
    /// it into the index of `node`'s person (with a device's cutoff when `device` is given),
    /// and applies it there, as `membrane devices revoke` and `membrane revoke` do.
    pub fn revoke(&mut self, node: NodeId, revoked: &[Delegation], device: Option<NodeId>) {
        let n = &self.nodes[node];
        let cid = revoked.last().expect("a chain").cid();
        let root = self.persons[n.person].root.did();
        let proofs: Vec<Cid> = n.authority.iter().map(Delegation::cid).collect();
        let revocation = Revocation::sign(&n.key, root, cid, proofs, self.unix_secs(node))
            .expect("a revocation signs");
        let list = |chain: &[Delegation]| -> Vec<String> {
            chain.iter().map(|d| encode_base64(d.as_bytes())).collect()
        };
        let mut record = serde_json::json!({
            "token": encode_base64(revocation.invocation().as_bytes()),
            "proofs": list(&n.authority),
            "revoked": list(revoked),
        });
        if let Some(device) = device {
            let ids: Vec<DocumentId> = n.hub.docs().ids().copied().collect();
            for id in ids {
                self.ensure_loaded(node, id);
            }
            let n = &self.nodes[node];
            let cutoff = cutoff_of(&self.nodes[device].did, n.hub.docs());
            record["device"] = self.nodes[device].did.to_string().into();
            record["cutoff"] = cutoff_to_json(&cutoff);
        }
        let index = self.persons[self.nodes[node].person].index;
        self.edit(
            node,
            index,
            &format!("revocation:{cid}"),
            &record.to_string(),
        );
    }

    /// Revokes a device from another device of the same person.
    pub fn revoke_device(&mut self, by: NodeId, device: NodeId) {
        let chain = self.nodes[device].authority.clone();
        self.revoke(by, &chain, Some(device));
    }

    /// Revokes grant `grant` from `by`, a device of its owner.
    pub fn revoke_grant(&mut self, by: NodeId, grant: usize) {
        let chain = self.grants[grant].chain.clone();
        self.revoke(by, &chain, None);
    }

    /// Crashes a node: what its store had not made durable is lost.
    pub fn crash(&mut self, node: NodeId) {
        if !self.nodes[node].up {
            return;
        }
        self.nodes[node].up = false;
        self.nodes[node].unflushed.clear();
        self.drop_connections_of(node);
        self.hash_event(b"crash", node, &[]);
    }

    /// Restarts a crashed node from its durable state.
    pub fn restart(&mut self, node: NodeId) {
        let n = &mut self.nodes[node];
        if n.up || n.gone {
            return;
        }
        n.run += 1;
        // Known by heads, as the real node's store records them; content on demand.
        let mut docs = DocSet::new();
        for (id, chunks) in &n.durable {
            let mut doc = Automerge::new();
            for chunk in chunks {
                doc.load_incremental(chunk).expect("durable chunks load");
            }
            docs.insert_unloaded(*id, doc.get_heads());
        }
        let root = self.persons[n.person].root.did();
        n.hub = new_hub(&n.key, root, &n.authority, docs);
        let now = self.unix_secs(node);
        let n = &mut self.nodes[node];
        let _ = n.hub.set_held_grants(now, n.held.clone());
        n.hub.set_provenance(n.provenance.clone());
        n.index_heads.clear();
        n.up = true;
        self.hash_event(b"restart", node, &[]);
        let index = self.persons[self.nodes[node].person].index;
        self.ensure_loaded(node, index);
        self.after_input(node);
    }

    /// Takes a node away for good.
    pub fn retire(&mut self, node: NodeId) {
        self.crash(node);
        self.nodes[node].gone = true;
    }

    /// Splits the nodes: only nodes in the same group reach each other. Nodes not named
    /// are alone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut map = BTreeMap::new();
        for (g, group) in groups.iter().enumerate() {
            for &n in group {
                map.insert(n, g as u32);
            }
        }
        for n in 0..self.nodes.len() {
            map.entry(n).or_insert(1_000 + n as u32);
        }
        let cut: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && map[&c.a] != map[&c.b])
            .map(|(id, _)| *id)
            .collect();
        for id in cut {
            self.break_conn(id);
        }
        self.partition = Some(map);
        self.hash_event(b"partition", 0, &[]);
    }

    /// Ends the partition.
    pub fn heal(&mut self) {
        self.partition = None;
        self.hash_event(b"heal", 0, &[]);
    }

    fn reachable(&self, a: NodeId, b: NodeId) -> bool {
        let (na, nb) = (&self.nodes[a], &self.nodes[b]);
        na.up && nb.up && self.partition.as_ref().is_none_or(|p| p[&a] == p[&b])
    }

    fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.conns
            .values()
            .any(|c| c.open && ((c.a == a && c.b == b) || (c.a == b && c.b == a)))
    }

    fn latency(&mut self) -> u64 {
        let (low, high) = self.net.latency_ms;
        self.rng.between(low, high)
    }

    fn redial(&mut self) {
        for a in 0..self.nodes.len() {
            let peers: Vec<NodeId> = self.nodes[a].peers.iter().copied().collect();
            for b in peers {
                if b == a || !self.reachable(a, b) || self.connected(a, b) {
                    continue;
                }
                let id = self.next_conn;
                self.next_conn += 1;
                self.conns.insert(
                    id,
                    Conn {
                        a,
                        b,
                        open: true,
                        last: [0, 0],
                    },
                );
                self.stats.connections += 1;
                let (la, lb) = (self.latency(), self.latency());
                // The dialer learns the connection is up after a round trip, the listener
                // after one way.
                self.schedule(
                    la + lb,
                    Event::Opened {
                        node: a,
                        conn: id,
                        peer: b,
                        role: Role::Initiator,
                    },
                );
                self.schedule(
                    la,
                    Event::Opened {
                        node: b,
                        conn: id,
                        peer: a,
                        role: Role::Responder,
                    },
                );
            }
        }
        self.schedule(self.net.redial_ms, Event::Redial);
    }

    fn break_conn(&mut self, id: u64) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if !conn.open {
            return;
        }
        conn.open = false;
        let (a, b) = (conn.a, conn.b);
        let (la, lb) = (self.latency(), self.latency());
        self.schedule(la, Event::Closed { node: a, conn: id });
        self.schedule(lb, Event::Closed { node: b, conn: id });
    }

    fn drop_connections_of(&mut self, node: NodeId) {
        let ids: Vec<u64> = self
            .conns
            .iter()
            .filter(|(_, c)| c.open && (c.a == node || c.b == node))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.break_conn(id);
        }
    }

    fn hash_event(&mut self, kind: &[u8], node: NodeId, bytes: &[u8]) {
        self.trace.update(self.now.to_be_bytes());
        self.trace.update(kind);
        self.trace.update((node as u64).to_be_bytes());
        self.trace.update(Sha256::digest(bytes));
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((time, seq))) = self.queue.peek().copied() {
            if time > until {
                break;
            }
            self.queue.pop();
            self.now = time;
            let event = self.events.remove(&seq).expect("scheduled");
            self.dispatch(event);
        }
        self.now = self.now.max(until);
    }

    fn dispatch(&mut self, event: Event) {
        match event {
            Event::Redial => self.redial(),
            Event::Action(action) => action(self),
            Event::Flush { node } => self.flush(node),
            Event::Load { node, run, doc } => {
                if !self.nodes[node].up || self.nodes[node].run != run {
                    return; // asked before a crash: the new run asks again
                }
                self.hash_event(b"load", node, doc.as_bytes());
                let content = self.stored(node, &doc).map(Box::new);
                self.input(node, Input::Loaded { doc, content });
            }
            Event::Opened {
                node,
                conn,
                peer,
                role,
            } => {
                let open = self.conns.get(&conn).is_some_and(|c| c.open);
                if !open || !self.nodes[node].up {
                    return;
                }
                self.hash_event(b"opened", node, &conn.to_be_bytes());
                let peer = self.nodes[peer].did;
                let input = Input::Opened {
                    session: SessionId(conn),
                    peer,
                    role,
                    persisted: Vec::new(),
                };
                self.input(node, input);
            }
            Event::Deliver { to, conn, frame } => {
                let open = self.conns.get(&conn).is_some_and(|c| c.open);
                if !open || !self.nodes[to].up {
                    return;
                }
                self.hash_event(b"deliver", to, &frame);
                self.stats.frames += 1;
                self.stats.bytes += frame.len() as u64;
                let input = Input::Received {
                    session: SessionId(conn),
                    frame,
                };
                self.input(to, input);
            }
            Event::Closed { node, conn } => {
                if !self.nodes[node].up {
                    return;
                }
                self.hash_event(b"closed", node, &conn.to_be_bytes());
                self.input(
                    node,
                    Input::Closed {
                        session: SessionId(conn),
                    },
                );
            }
        }
    }

    fn input(&mut self, node: NodeId, input: Input) {
        let now = self.unix_secs(node);
        let effects = self.nodes[node].hub.handle(now, input);
        self.carry_out(node, effects);
        self.after_input(node);
        self.unload_idle(node);
    }

    /// What `node`'s store holds of `doc`, with the writes still queued (a store read sees
    /// them, as the real one does); `None` when it holds nothing.
    fn stored(&self, node: NodeId, doc: &DocumentId) -> Option<Automerge> {
        let n = &self.nodes[node];
        let mut chunks: Vec<&[u8]> = n
            .durable
            .get(doc)
            .map_or_else(Vec::new, |c| c.iter().map(Vec::as_slice).collect());
        for u in n.unflushed.iter().filter(|u| u.doc == *doc) {
            if u.snapshot {
                chunks.clear();
            }
            chunks.push(&u.data);
        }
        if chunks.is_empty() {
            return None;
        }
        let mut loaded = Automerge::new();
        for chunk in chunks {
            loaded.load_incremental(chunk).expect("stored chunks load");
        }
        Some(loaded)
    }

    /// A document's content as `node` would read it: from memory, or from its store.
    pub fn content(&self, node: NodeId, doc: &DocumentId) -> Option<Cow<'_, Automerge>> {
        let n = &self.nodes[node];
        if let Some(held) = n.hub.docs().get(doc) {
            return Some(Cow::Borrowed(held));
        }
        if !n.hub.docs().contains(doc) {
            return None;
        }
        self.stored(node, doc).map(Cow::Owned)
    }

    /// Reads `doc` into `node`'s memory now if it is held there but not loaded (a local
    /// call that needs it, as `RepoActor::ensure_loaded` does).
    fn ensure_loaded(&mut self, node: NodeId, doc: DocumentId) {
        let docs = self.nodes[node].hub.docs();
        if docs.contains(&doc) && !docs.is_loaded(&doc) {
            let content = self.stored(node, &doc).map(Box::new);
            let now = self.unix_secs(node);
            let effects = self.nodes[node]
                .hub
                .handle(now, Input::Loaded { doc, content });
            self.carry_out(node, effects);
        }
    }

    /// Unloads what is beyond the node's resident budget; only between inputs, when every
    /// change in memory has been handed to its store.
    fn unload_idle(&mut self, node: NodeId) {
        let Some(keep) = self.net.resident_docs else {
            return;
        };
        let index = self.persons[self.nodes[node].person].index;
        self.nodes[node]
            .hub
            .docs_mut()
            .unload_beyond(keep + 1, |id| *id == index);
    }

    fn flush(&mut self, node: NodeId) {
        let now = self.now;
        let n = &mut self.nodes[node];
        if !n.up {
            return;
        }
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut n.unflushed)
            .into_iter()
            .partition(|u| u.due <= now);
        n.unflushed = later;
        for u in due {
            let chunks = n.durable.entry(u.doc).or_default();
            if u.snapshot {
                chunks.clear();
            }
            chunks.push(u.data);
            if let Some((key, value)) = u.write {
                self.acked.push(Acked {
                    node,
                    doc: u.doc,
                    key,
                    value,
                });
            }
        }
    }

    fn carry_out(&mut self, node: NodeId, effects: Vec<Effect>) {
        for effect in effects {
            let is_snapshot = matches!(effect, Effect::StoreSnapshot { .. });
            match effect {
                Effect::Send { session, frame } => self.send(node, session.0, frame),
                Effect::Close { session, reason } => {
                    self.stats.refused += 1;
                    let why = reason.to_string();
                    let why = if std::env::var_os("NETSIM_FULL_REASONS").is_some() {
                        why
                    } else {
                        why.split(':').take(2).collect::<Vec<_>>().join(":")
                    };
                    *self.stats.close_reasons.entry(why).or_default() += 1;
                    self.break_conn(session.0);
                }
                Effect::StoreChanges { doc, data, .. }
                | Effect::StoreSnapshot { doc, data, .. } => {
                    let snapshot = is_snapshot;
                    let due = self.now + self.net.store_delay_ms;
                    self.nodes[node].unflushed.push(Unflushed {
                        due,
                        doc,
                        data,
                        snapshot,
                        write: None,
                    });
                    self.schedule(self.net.store_delay_ms, Event::Flush { node });
                }
                Effect::RevocationsLearned { records, .. } => {
                    // Kept in the registry, like the node does.
                    let index = self.persons[self.nodes[node].person].index;
                    for record in records {
                        let Some(cid) = record
                            .revoked
                            .last()
                            .and_then(|d| Delegation::decode(d).ok())
                            .map(|d| d.cid())
                        else {
                            continue;
                        };
                        let list = |items: &[ByteBuf]| -> Vec<String> {
                            items.iter().map(|b| encode_base64(b)).collect()
                        };
                        let entry = serde_json::json!({
                            "token": encode_base64(&record.token),
                            "proofs": list(&record.proofs),
                            "revoked": list(&record.revoked),
                        });
                        if !self.nodes[node].hub.docs().contains(&index) {
                            self.create_doc_with_id(node, index, &[]);
                        }
                        self.edit(
                            node,
                            index,
                            &format!("revocation:{cid}"),
                            &entry.to_string(),
                        );
                    }
                }
                Effect::Load { doc } => {
                    let run = self.nodes[node].run;
                    self.schedule(self.net.store_delay_ms, Event::Load { node, run, doc });
                }
                Effect::DocumentPoisoned { doc } => {
                    self.violations
                        .push(format!("{} poisoned {doc}", self.nodes[node].name));
                }
                _ => {}
            }
        }
    }

    /// After a node handled something: if its index document changed, the registry is
    /// read again, as the real node does.
    fn after_input(&mut self, node: NodeId) {
        let index = self.persons[self.nodes[node].person].index;
        let n = &self.nodes[node];
        let Some(heads) = n.hub.docs().heads(&index) else {
            return;
        };
        if heads == n.index_heads.as_slice() {
            return;
        }
        let heads = heads.to_vec();
        let doc = n.hub.docs().get(&index).expect("held");
        let mut set = RevocationSet::new();
        let mut authors = RevokedAuthors::new();
        let mut records = Vec::new();
        let mut devices: Vec<(Cid, Did)> = Vec::new();
        let mut amendments: Vec<(String, String, Cutoff)> = Vec::new();
        for key in doc.keys(ROOT) {
            let read = || -> serde_json::Value {
                doc.get(ROOT, key.as_str())
                    .ok()
                    .flatten()
                    .and_then(|(v, _)| v.into_string().ok())
                    .and_then(|s| serde_json::from_str(&s).ok())
                    .unwrap_or_default()
            };
            if let Some(rest) = key.strip_prefix("revocation-cutoff:") {
                let mut parts = rest.splitn(2, ':');
                if let (Some(cid), Some(by)) = (parts.next(), parts.next()) {
                    let cutoff = cutoff_from_json(&read()["cutoff"]);
                    amendments.push((cid.to_owned(), by.to_owned(), cutoff));
                }
                continue;
            }
            let Some(cid) = key.strip_prefix("revocation:") else {
                continue;
            };
            let Ok(cid) = cid.parse::<Cid>() else {
                continue;
            };
            set.insert(cid);
            let record = read();
            if let Some(device) = record["device"].as_str().and_then(|d| d.parse().ok()) {
                authors.insert(device, cutoff_from_json(&record["cutoff"]));
                devices.push((cid, device));
            }
            let bytes = |value: &serde_json::Value| -> Vec<ByteBuf> {
                value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|t| decode_base64_loose(t.as_str()?).ok())
                    .map(ByteBuf::from)
                    .collect()
            };
            if let Some(token) = record["token"]
                .as_str()
                .and_then(|t| decode_base64_loose(t).ok())
            {
                records.push(RevocationRecord {
                    token: ByteBuf::from(token),
                    proofs: bytes(&record["proofs"]),
                    revoked: bytes(&record["revoked"]),
                });
            }
        }
        for (cid, _, cutoff) in &amendments {
            if let Some((_, device)) = devices.iter().find(|(c, _)| c.to_string() == *cid) {
                authors.insert(*device, cutoff.clone());
            }
        }
        let me = n.did.to_string();
        let mut amend = Vec::new();
        for (cid, device) in &devices {
            let mine = amendments
                .iter()
                .any(|(c, by, _)| *c == cid.to_string() && *by == me);
            // Every document counts, loaded or not (read from the store if need be).
            let mut view = Cutoff::new();
            for id in n.hub.docs().ids() {
                if let Some(doc) = self.content(node, id) {
                    let actors = device_seqs(device, &doc);
                    if !actors.is_empty() {
                        view.insert(*id, actors);
                    }
                }
            }
            if !mine && exceeds(&view, authors.cutoff(device)) {
                amend.push((format!("revocation-cutoff:{cid}:{me}"), view));
            }
        }
        let n = &mut self.nodes[node];
        n.index_heads = heads;
        n.revocations_known = set.iter().copied().collect();
        if self.variant == Variant::IgnoreRevocations {
            return;
        }
        if !amend.is_empty() {
            // Writing the amendments changes the index again, and that pass applies all.
            for (key, view) in amend {
                let entry = serde_json::json!({ "cutoff": cutoff_to_json(&view) });
                self.edit(node, index, &key, &entry.to_string());
            }
            return;
        }
        let n = &mut self.nodes[node];
        let mut effects = n.hub.set_revoked_authors(authors);
        effects.extend(n.hub.set_revocations(set));
        effects.extend(n.hub.set_revocation_records(records));
        self.carry_out(node, effects);
    }

    fn send(&mut self, from: NodeId, conn_id: u64, frame: Vec<u8>) {
        let Some(conn) = self.conns.get(&conn_id) else {
            return;
        };
        if !conn.open {
            return;
        }
        let (to, direction) = if conn.a == from {
            (conn.b, 0)
        } else {
            (conn.a, 1)
        };
        self.check_send(from, to, &frame);
        if self.rng.chance(self.net.loss) {
            self.stats.broken += 1;
            self.break_conn(conn_id);
            return;
        }
        let transmit = self
            .net
            .bandwidth
            .map_or(0, |bw| frame.len() as u64 / bw.max(1));
        let mut arrive = self.now + self.latency() + transmit;
        let reorder = self.rng.chance(self.net.reorder);
        let conn = self.conns.get_mut(&conn_id).expect("present");
        if !reorder {
            arrive = arrive.max(conn.last[direction]);
            conn.last[direction] = arrive;
        }
        let copies = if self.rng.chance(self.net.duplicate) {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = arrive - self.now;
            self.schedule(
                delay,
                Event::Deliver {
                    to,
                    conn: conn_id,
                    frame: frame.clone(),
                },
            );
        }
    }

    /// The authorization invariant, checked on every frame a node sends: document content
    /// goes to another person's device only under a live grant the sender knows no
    /// revocation of, and never to a device the sender knows is revoked.
    fn check_send(&mut self, from: NodeId, to: NodeId, frame: &[u8]) {
        let Ok(Frame::Docs { items }) = Frame::decode(frame) else {
            return;
        };
        let (sender, receiver) = (&self.nodes[from], &self.nodes[to]);
        for item in items {
            let doc = item.doc();
            let carries = match &item {
                DocMessage::Snapshot { .. } => true,
                DocMessage::Sync { message, .. } => {
                    automerge::sync::Message::decode(message).is_ok_and(|m| !m.changes.is_empty())
                }
                DocMessage::Changes { changes, .. } => !changes.is_empty(),
            };
            if !carries {
                continue;
            }
            if sender.person == receiver.person {
                let revoked = receiver
                    .authority
                    .iter()
                    .any(|d| sender.revocations_known.contains(&d.cid()));
                if revoked {
                    self.violations.push(format!(
                        "t={} {} sent {doc} to its revoked device {}",
                        self.now, sender.name, receiver.name
                    ));
                }
                continue;
            }
            let owner = self.persons.iter().position(|p| p.docs.contains(&doc));
            if owner == Some(receiver.person) {
                continue; // a grantee writing back to the owner
            }
            let now = self.unix_secs(from);
            let live = self.grants.iter().any(|g| {
                g.grantee == to
                    && g.doc == doc
                    && Some(g.owner) == owner
                    && g.owner == sender.person
                    && g.expires.is_none_or(|exp| now <= exp)
                    && !sender.revocations_known.contains(&g.cid)
            });
            if !live {
                self.violations.push(format!(
                    "t={} {} sent {doc} to {} without a live grant",
                    self.now, sender.name, receiver.name
                ));
            }
        }
    }

    /// Which up nodes are entitled to `doc` now: the owner's devices not revoked, and
    /// grantees with a live, unrevoked grant.
    pub fn entitled(&self, doc: DocumentId) -> Vec<NodeId> {
        let Some(owner) = self.persons.iter().position(|p| p.docs.contains(&doc)) else {
            return Vec::new();
        };
        let revoked = self.all_revocations(owner);
        let mut nodes: Vec<NodeId> = self.persons[owner]
            .devices
            .iter()
            .copied()
            .filter(|&d| {
                let n = &self.nodes[d];
                n.up && !n.authority.iter().any(|a| revoked.contains(&a.cid()))
            })
            .collect();
        let now = EPOCH + self.now / 1000;
        for g in &self.grants {
            if g.doc == doc
                && self.nodes[g.grantee].up
                && !revoked.contains(&g.cid)
                && g.expires.is_none_or(|exp| now + 120 < exp)
            {
                nodes.push(g.grantee);
            }
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    fn all_revocations(&self, person: usize) -> BTreeSet<Cid> {
        self.persons[person]
            .devices
            .iter()
            .flat_map(|&d| self.nodes[d].revocations_known.iter().copied())
            .collect()
    }

    /// Whether every document is identical (heads) on every node entitled to it.
    pub fn converged(&self) -> bool {
        self.persons.iter().all(|p| {
            p.docs.iter().chain(std::iter::once(&p.index)).all(|doc| {
                let holders = if *doc == p.index {
                    p.devices
                        .iter()
                        .copied()
                        .filter(|&d| {
                            let n = &self.nodes[d];
                            let revoked = self.all_revocations(n.person);
                            n.up && !n.authority.iter().any(|a| revoked.contains(&a.cid()))
                        })
                        .collect()
                } else {
                    self.entitled(*doc)
                };
                let mut heads = holders.iter().map(|&n| self.nodes[n].hub.docs().heads(doc));
                match heads.next() {
                    None => true,
                    Some(first) => first.is_some() && heads.all(|h| h == first),
                }
            })
        })
    }

    /// Runs until everything converged (checked every `step` ms) or `deadline`; returns
    /// when it converged.
    pub fn settle(&mut self, step: u64, deadline: u64) -> Option<u64> {
        loop {
            if self.converged() {
                return Some(self.now);
            }
            if self.now >= deadline {
                return None;
            }
            let next = (self.now + step).min(deadline);
            self.run_until(next);
        }
    }

    /// Every acknowledged write by a device not revoked is on every node entitled to its
    /// document; returns the writes that are missing somewhere.
    pub fn lost_writes(&self) -> Vec<String> {
        let mut lost = Vec::new();
        for w in &self.acked {
            let writer = &self.nodes[w.node];
            if writer.gone {
                continue; // a device destroyed takes what it never shared with it
            }
            let revoked = self.all_revocations(writer.person);
            if writer.authority.iter().any(|a| revoked.contains(&a.cid())) {
                continue;
            }
            for holder in self.entitled(w.doc) {
                let value = self.content(holder, &w.doc).and_then(|d| {
                    let (v, _) = d.get(ROOT, w.key.as_str()).ok().flatten()?;
                    v.into_string().ok()
                });
                if value.as_deref() != Some(w.value.as_str()) {
                    lost.push(format!(
                        "{}'s acknowledged write {} is not on {}",
                        writer.name, w.key, self.nodes[holder].name
                    ));
                }
            }
        }
        lost
    }

    /// How many local edits were made.
    pub fn edits(&self) -> u64 {
        self.edits
    }

    /// The mean round trip of the network model, milliseconds.
    pub fn round_trip_ms(&self) -> u64 {
        self.net.latency_ms.0 + self.net.latency_ms.1
    }
}

fn new_hub(key: &SecretKey, root: Did, authority: &[Delegation], docs: DocSet) -> SyncHub {
    SyncHub::new(
        HubConfig {
            me: key.did(),
            root,
            chain: authority.to_vec(),
            clock_skew: 60,
            max_frame_size: 1 << 20,
        },
        docs,
    )
}
