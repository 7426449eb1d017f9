//! The sync state machine: one per node, holding its documents and one session per
//! connected peer. The node feeds it [`Input`]s with the current time and carries out the
//! [`Effect`]s it returns; the simulator does the same with virtual time.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt,
    panic::{AssertUnwindSafe, catch_unwind},
};

use automerge::{
    Automerge, ChangeHash, ReadDoc as _,
    sync::{self, SyncDoc as _},
};
use serde_bytes::ByteBuf;

use super::{
    docs::DocSet,
    gate::{Refusal, RefusedChange, RevokedAuthors, actor_device, changes_in, screen},
    share::{HeldGrant, Lent, Level, Scope, grant_of, granted_documents, passed_on_without_leave},
    wire::{
        BUCKETS, DocMessage, Entry, Frame, MAX_FRAME_SIZE, PROTOCOL_VERSION, RevocationRecord,
        decode_heads, encode_heads,
    },
};
use crate::{
    did::Did,
    document_id::DocumentId,
    ucan::{
        Delegation, Invocation, Revocation, RevocationSet, UnixTime, ValidationError, Validator,
    },
};

/// Most revocation records read from one frame.
const MAX_RECORDS: usize = 1024;

/// Identifies one session (one ordered stream to one peer). Chosen by the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

/// Which side opened the stream. The initiator speaks first, so a listener reveals nothing
/// to a peer until that peer has proven who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opened the stream; sends `Hello` first.
    Initiator,
    /// Accepted the stream; answers only an authorized `Hello`.
    Responder,
}

/// What happens to the hub.
#[derive(Debug)]
pub enum Input {
    /// A stream to `peer` (authenticated by the transport) is open.
    Opened {
        /// The session.
        session: SessionId,
        /// The transport-authenticated peer.
        peer: Did,
        /// Who opened it.
        role: Role,
        /// Sync states persisted from earlier sessions with this peer.
        persisted: Vec<(DocumentId, Vec<u8>)>,
    },
    /// A frame arrived on a session.
    Received {
        /// The session.
        session: SessionId,
        /// The frame's bytes.
        frame: Vec<u8>,
    },
    /// The stream closed.
    Closed {
        /// The session.
        session: SessionId,
    },
    /// A document the hub asked for ([`Effect::Load`]) was read from storage: `None` when
    /// it could not be (it no longer loads, or is gone), and the hub then treats it as
    /// not held.
    Loaded {
        /// The document.
        doc: DocumentId,
        /// Its content (boxed: an `Automerge` is a few KiB even when empty).
        content: Option<Box<Automerge>>,
    },
    /// The node changed a document locally (it is already in [`SyncHub::docs_mut`]).
    LocalChange {
        /// The document.
        doc: DocumentId,
        /// The new changes' bytes, back to back (what `save_after` the heads before the
        /// change gives): pushed as they are to peers known to be up to date.
        changes: Vec<u8>,
    },
}

/// Why the hub ends a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer's `Hello` does not prove it is one of this person's devices.
    Unauthorized(String),
    /// A frame that does not decode, or an Automerge message that does not apply.
    Malformed(String),
    /// A frame at the wrong time (e.g. documents before `Hello`).
    ProtocolViolation(String),
    /// Nothing wrong with the peer: the session restarts so that changes refused earlier
    /// are offered again (a revoked device's cutoff was raised).
    Resync,
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unauthorized(why) => write!(f, "unauthorized: {why}"),
            Self::Malformed(why) => write!(f, "malformed: {why}"),
            Self::ProtocolViolation(why) => write!(f, "protocol violation: {why}"),
            Self::Resync => write!(f, "restarting to sync changes refused earlier"),
        }
    }
}

/// What the node must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read a held document that is not in memory from storage and hand it back with
    /// [`Input::Loaded`]. What needed it waits until then: messages about it are handled,
    /// in order, once it is loaded.
    Load {
        /// The document.
        doc: DocumentId,
    },
    /// Send a frame on a session.
    Send {
        /// The session.
        session: SessionId,
        /// The encoded frame.
        frame: Vec<u8>,
    },
    /// Close a session (the hub has already forgotten it).
    Close {
        /// The session.
        session: SessionId,
        /// Why, for the log.
        reason: CloseReason,
    },
    /// The peer proved it is one of this person's devices.
    Authorized {
        /// The session.
        session: SessionId,
        /// The device.
        peer: Did,
    },
    /// Both sides now know which documents differ.
    Reconciled {
        /// The session.
        session: SessionId,
        /// How many documents will sync.
        differing: usize,
        /// Of those, how many the peer holds and we lack: each will arrive whole.
        incoming: usize,
    },
    /// A peer's changes were applied: persist these bytes (`Automerge::load_incremental`
    /// form) for the document.
    StoreChanges {
        /// The document.
        doc: DocumentId,
        /// Incremental save since the previous heads.
        data: Vec<u8>,
        /// The document's heads with this data (stored with it, so the document can be
        /// reconciled without being loaded).
        heads: Vec<ChangeHash>,
    },
    /// A document arrived whole: persist it.
    StoreSnapshot {
        /// The document.
        doc: DocumentId,
        /// `Automerge::save()`.
        data: Vec<u8>,
        /// Its heads.
        heads: Vec<ChangeHash>,
        /// The session it came from.
        from: SessionId,
    },
    /// A document changed because of a peer (for watchers).
    DocChanged {
        /// The document.
        doc: DocumentId,
        /// Its new heads.
        heads: Vec<ChangeHash>,
    },
    /// Sync with a peer reached a common state: persist it for the next session.
    SaveSyncState {
        /// The peer.
        peer: Did,
        /// The document.
        doc: DocumentId,
        /// `sync::State::encode()`.
        state: Vec<u8>,
    },
    /// A peer outside the person used one of our documents through a grant: record it in
    /// the access log.
    Access {
        /// The peer.
        peer: Did,
        /// The document.
        doc: DocumentId,
        /// The grant it relied on.
        grant: cid::Cid,
        /// Whether the peer received content or brought changes.
        kind: AccessKind,
        /// Bytes of document data that crossed.
        bytes: u64,
    },
    /// A grant a peer presented was not accepted (the session may still go on through
    /// others).
    GrantRefused {
        /// The peer.
        peer: Did,
        /// Why.
        reason: String,
    },
    /// A whole message from a peer was dropped: it was about a document the session does
    /// not cover.
    Dropped {
        /// The peer.
        peer: Did,
        /// The document.
        doc: DocumentId,
        /// Why.
        reason: String,
    },
    /// Changes from a peer were kept out of a document (the rest of its data went in).
    Refused {
        /// The peer that sent them (not necessarily their author).
        peer: Did,
        /// The document.
        doc: DocumentId,
        /// What was kept out, and why.
        changes: Vec<RefusedChange>,
    },
    /// A peer told us of revocations we did not know, and they check out: persist them
    /// (they are already in force here).
    RevocationsLearned {
        /// The peer.
        peer: Did,
        /// The records.
        records: Vec<RevocationRecord>,
    },
    /// Applying a peer's message to a document panicked inside Automerge; the in-memory
    /// copy may be damaged and must be reloaded from storage.
    DocumentPoisoned {
        /// The document.
        doc: DocumentId,
    },
}

/// Which way document data went in an [`Effect::Access`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    /// We sent the peer content of the document.
    Read,
    /// The peer's changes to the document were applied.
    Write,
}

/// Configuration of a hub.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// This device.
    pub me: Did,
    /// The person's root: peers must prove delegation from it.
    pub root: Did,
    /// This device's authority chain, root first, sent in `Hello`.
    pub chain: Vec<Delegation>,
    /// Clock skew tolerated when validating peers' chains.
    pub clock_skew: UnixTime,
    /// Largest frame sent.
    pub max_frame_size: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for the peer's `Hello`.
    AwaitingHello,
    /// Authorized; reconciling which documents differ.
    Reconciling,
    /// Reconciled; documents sync as they change.
    Live,
}

struct Session {
    peer: Did,
    role: Role,
    phase: Phase,
    /// The CIDs of the delegations the peer proved itself with (empty before `Hello`).
    chain: Vec<cid::Cid>,
    /// What we told the peer in `Summary`; both sides compare the same two values.
    sent_summary: Option<(u64, [u8; 16])>,
    /// Documents changed since `sent_summary` was taken.
    dirty: BTreeSet<DocumentId>,
    /// Automerge sync states. A document in `pushing` may have none: the peer then holds
    /// exactly our heads, and a state is made from them when something needs one (see
    /// [`Session::state`]), so thousands of idle documents cost no state per peer.
    states: HashMap<DocumentId, sync::State>,
    persisted: HashMap<DocumentId, Vec<u8>>,
    /// Documents of which the peer holds everything we hold, once our frames so far arrive:
    /// new changes go to it as they are ([`DocMessage::Changes`]), and its state's
    /// `their_heads` are our heads as of the last push (or it has no state, and holds our
    /// current heads).
    pushing: BTreeSet<DocumentId>,
    /// Documents in which we refused some of the peer's changes. The peer keeps offering
    /// their heads and we keep lacking them, so Automerge's sync would ping-pong forever;
    /// for these, a reply that carries no changes is not sent.
    stalled: BTreeSet<DocumentId>,
    /// `Some` for a session with another person's device: what it may carry. `None` for
    /// one of our own devices (and before `Hello`).
    shared: Option<Scope>,
    /// Revocations already told to this peer.
    told: BTreeSet<cid::Cid>,
}

impl Session {
    fn drives(&self, me: &Did) -> bool {
        me.as_bytes() < self.peer.as_bytes()
    }

    /// The sync state for `doc`, made when missing: seeded with `ours` (the heads we hold
    /// now) when the peer is known to hold them, else fresh.
    fn state(&mut self, doc: DocumentId, ours: &[ChangeHash]) -> &mut sync::State {
        let level = self.pushing.contains(&doc);
        self.states.entry(doc).or_insert_with(|| {
            if level {
                seeded_state(ours.to_vec())
            } else {
                sync::State::new()
            }
        })
    }

    /// The peer's last known heads of `doc`, given ours.
    fn their_heads(
        &self,
        doc: &DocumentId,
        ours: Option<&[ChangeHash]>,
    ) -> Option<Vec<ChangeHash>> {
        match self.states.get(doc) {
            Some(state) => state.their_heads.clone(),
            None if self.pushing.contains(doc) => ours.map(<[ChangeHash]>::to_vec),
            None => None,
        }
    }

    /// The peer is known to hold exactly our heads of `doc`: no state is kept for it.
    fn level(&mut self, doc: DocumentId) {
        self.states.remove(&doc);
        self.pushing.insert(doc);
    }
}

/// The sync state machine of one node.
pub struct SyncHub {
    config: HubConfig,
    docs: DocSet,
    sessions: BTreeMap<SessionId, Session>,
    revocations: RevocationSet,
    revoked_authors: RevokedAuthors,
    /// Grants we hold on other persons' documents.
    held: Vec<HeldGrant>,
    /// Our person's revocations, checked, with their CIDs: told to grantees.
    records: Vec<(cid::Cid, RevocationRecord)>,
    /// Documents we hold because another person shared them, and whose they are. Any other
    /// document we hold is ours: no held grant can make it "borrowed".
    provenance: BTreeMap<DocumentId, Did>,
    /// Document messages gathered while handling one input, sent as few frames per session
    /// at its end.
    outbox: BTreeMap<SessionId, Vec<DocMessage>>,
    /// Changes pushed to us and not applied yet, per document, in order of arrival (see
    /// [`SyncHub::handle_all`]). Empty between calls.
    pushed: BTreeMap<DocumentId, Vec<Pushed>>,
    /// Documents asked for with [`Effect::Load`], with the work waiting for each, in order.
    loading: BTreeMap<DocumentId, Vec<Parked>>,
}

/// Work on a document that waits for it to be loaded.
#[derive(Debug)]
enum Parked {
    /// A message a peer sent about it.
    Message(SessionId, DocMessage),
    /// What reconciliation (or a shared session's start) decided to tell a peer: the whole
    /// document, or an Automerge sync message.
    Offer { session: SessionId, whole: bool },
}

/// Queues `work` until `doc` is loaded, asking for it the first time.
fn park(
    loading: &mut BTreeMap<DocumentId, Vec<Parked>>,
    doc: DocumentId,
    work: Parked,
    effects: &mut Vec<Effect>,
) {
    let waiting = loading.entry(doc).or_default();
    if waiting.is_empty() {
        effects.push(Effect::Load { doc });
    }
    waiting.push(work);
}

/// Changes a peer pushed ([`DocMessage::Changes`]), screened, waiting to be applied.
struct Pushed {
    session: SessionId,
    /// The peer's heads after these changes.
    heads: Vec<ChangeHash>,
    changes: Vec<automerge::Change>,
    /// Bytes of document data the message brought (for the access log).
    brought: u64,
    /// The grant under which the peer writes, when the document is ours and lent.
    lent: Option<Lent>,
}

impl fmt::Debug for SyncHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SyncHub")
            .field("me", &self.config.me)
            .field("docs", &self.docs.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// Per-document sync with one peer: in sync, or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerDocStatus {
    /// The peer.
    pub peer: Did,
    /// Whether the peer's last known heads equal ours.
    pub in_sync: bool,
    /// The heads the peer last reported for this document in this session (or that
    /// reconciliation found equal to ours, or ours when we last pushed it changes);
    /// `None` until then.
    pub their_heads: Option<Vec<ChangeHash>>,
}

impl SyncHub {
    /// A hub with the given documents.
    pub fn new(config: HubConfig, docs: DocSet) -> Self {
        Self {
            config,
            docs,
            sessions: BTreeMap::new(),
            revocations: RevocationSet::new(),
            revoked_authors: RevokedAuthors::new(),
            held: Vec::new(),
            records: Vec::new(),
            provenance: BTreeMap::new(),
            outbox: BTreeMap::new(),
            pushed: BTreeMap::new(),
            loading: BTreeMap::new(),
        }
    }

    /// This device.
    pub fn me(&self) -> Did {
        self.config.me
    }

    /// The documents.
    pub fn docs(&self) -> &DocSet {
        &self.docs
    }

    /// The documents, for local changes; follow each change with [`Input::LocalChange`].
    pub fn docs_mut(&mut self) -> &mut DocSet {
        &mut self.docs
    }

    /// Replaces the revocation set: a revoked device is refused at its next `Hello`, and
    /// every open session that relies on a revoked delegation is closed now (the returned
    /// effects say which).
    pub fn set_revocations(&mut self, revocations: RevocationSet) -> Vec<Effect> {
        self.revocations = revocations;
        self.close_revoked()
    }

    fn close_revoked(&mut self) -> Vec<Effect> {
        let revoked: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.chain.iter().any(|cid| self.revocations.contains(cid)))
            .map(|(id, _)| *id)
            .collect();
        revoked
            .into_iter()
            .map(|session| {
                self.sessions.remove(&session);
                Effect::Close {
                    session,
                    reason: CloseReason::Unauthorized(
                        "a delegation it relied on was revoked".into(),
                    ),
                }
            })
            .collect()
    }

    /// Replaces the checked revocation records this node tells grantees about (the node
    /// keeps them in its registry). Live sessions with grantees hear of new ones at once.
    pub fn set_revocation_records(&mut self, records: Vec<RevocationRecord>) -> Vec<Effect> {
        self.records = records
            .into_iter()
            .filter_map(|record| {
                let revoked = record.revoked.last()?;
                Some((Delegation::decode(revoked).ok()?.cid(), record))
            })
            .collect();
        let ids: Vec<SessionId> = self.sessions.keys().copied().collect();
        let mut effects = Vec::new();
        for id in ids {
            self.tell_revocations(id, &mut effects);
        }
        effects
    }

    /// Sends a grantee the revocations it should know and has not been told: every revoked
    /// device of ours, and its own revoked grants.
    fn tell_revocations(&mut self, id: SessionId, effects: &mut Vec<Effect>) {
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let lends = session
            .shared
            .as_ref()
            .is_some_and(|scope| !scope.lent.is_empty());
        if !lends || session.phase != Phase::Live {
            return;
        }
        let peer = session.peer;
        let fresh: Vec<(cid::Cid, RevocationRecord)> = self
            .records
            .iter()
            .filter(|(cid, _)| !session.told.contains(cid))
            .filter(|(_, record)| {
                record
                    .revoked
                    .last()
                    .and_then(|d| Delegation::decode(d).ok())
                    .is_some_and(|d| {
                        d.payload().command.as_str() == "/" || d.payload().audience == peer
                    })
            })
            .cloned()
            .collect();
        if fresh.is_empty() {
            return;
        }
        let session = self.sessions.get_mut(&id).expect("present");
        session.told.extend(fresh.iter().map(|(cid, _)| *cid));
        let records = fresh.into_iter().map(|(_, record)| record).collect();
        self.send(id, &Frame::Revocations { records }, effects);
    }

    /// Checks revocations a peer told us of; applies and reports the new ones.
    fn learn_revocations(
        &mut self,
        now: UnixTime,
        id: SessionId,
        records: Vec<RevocationRecord>,
        effects: &mut Vec<Effect>,
    ) {
        let validator = Validator::new(now).with_clock_skew(self.config.clock_skew);
        let decode = |list: &[ByteBuf]| -> Option<Vec<Delegation>> {
            list.iter().map(|b| Delegation::decode(b).ok()).collect()
        };
        // Only revocations that concern this session are taken: of a delegation we rely on
        // with this peer or in a grant we hold, or of a device of the peer's person. Anything
        // else would let a peer fill our registry with its own made-up revocations.
        let Some(session) = self.sessions.get(&id) else {
            return;
        };
        let mut relied: BTreeSet<cid::Cid> = session.chain.iter().copied().collect();
        relied.extend(
            self.held
                .iter()
                .flat_map(|h| h.chain.iter().map(Delegation::cid)),
        );
        let peer_root = session.shared.as_ref().and_then(|s| s.peer_root);
        let concerns = |revoked: &[Delegation]| {
            let Some(last) = revoked.last() else {
                return false;
            };
            let device_of_peer = revoked.first().map(|d| d.payload().issuer) == peer_root
                && peer_root.is_some()
                && revoked.iter().all(|d| d.payload().command.as_str() == "/");
            relied.contains(&last.cid()) || device_of_peer
        };
        let mut learned = Vec::new();
        for record in records.into_iter().take(MAX_RECORDS) {
            let checked = Invocation::decode(&record.token)
                .ok()
                .and_then(|i| Revocation::from_invocation(i).ok())
                .zip(decode(&record.proofs))
                .zip(decode(&record.revoked))
                .filter(|((revocation, proofs), revoked)| {
                    concerns(revoked) && revocation.verify(&validator, proofs, revoked).is_ok()
                })
                .map(|((revocation, _), _)| revocation.revoked());
            if let Some(cid) = checked
                && self.revocations.insert(cid)
            {
                learned.push(record);
            }
        }
        if learned.is_empty() {
            return;
        }
        let peer = self.sessions.get(&id).map(|s| s.peer);
        effects.extend(self.close_revoked());
        if let Some(peer) = peer {
            effects.push(Effect::RevocationsLearned {
                peer,
                records: learned,
            });
        }
    }

    /// Replaces the set of revoked devices whose changes past their cutoff are refused,
    /// whichever peer relays them. When a cutoff rose, sessions in which we refused
    /// changes restart (the returned effects close them), so the peers offer them again.
    pub fn set_revoked_authors(&mut self, authors: RevokedAuthors) -> Vec<Effect> {
        if authors == self.revoked_authors {
            return Vec::new();
        }
        self.revoked_authors = authors;
        let stalled: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| !s.stalled.is_empty())
            .map(|(id, _)| *id)
            .collect();
        stalled
            .into_iter()
            .map(|session| {
                self.sessions.remove(&session);
                Effect::Close {
                    session,
                    reason: CloseReason::Resync,
                }
            })
            .collect()
    }

    /// Replaces the grants this device holds on other persons' documents: it presents them
    /// in every `Hello`, and syncs the documents they cover with those persons' devices.
    /// Chains that do not validate now, or do not end at this device, are returned with
    /// the reason and left out.
    pub fn set_held_grants(
        &mut self,
        now: UnixTime,
        chains: Vec<Vec<Delegation>>,
    ) -> Vec<(Vec<Delegation>, String)> {
        let mut refused = Vec::new();
        self.held.clear();
        for chain in chains {
            let valid = match Validator::new(now)
                .with_clock_skew(self.config.clock_skew)
                .validate_delegation_chain(&chain)
            {
                Ok(valid) => valid,
                Err(error) => {
                    refused.push((chain, error.to_string()));
                    continue;
                }
            };
            let (Some(subject), true) = (valid.subject(), valid.audience() == &self.config.me)
            else {
                refused.push((chain, "the grant is not for this device".into()));
                continue;
            };
            let documents = granted_documents(&chain, &valid);
            if documents.is_empty() {
                refused.push((chain, "the grant covers no whole document".into()));
                continue;
            }
            self.held.push(HeldGrant {
                subject: *subject,
                documents,
                chain,
            });
        }
        refused
    }

    /// Whether `doc` belongs to another person who granted us read but not write: local
    /// changes to it would be refused by its owner.
    pub fn borrowed_read_only(&self, doc: &DocumentId) -> bool {
        let mut levels = self
            .held
            .iter()
            .flat_map(|h| &h.documents)
            .filter(|(d, _)| d == doc)
            .map(|(_, level)| *level);
        levels
            .next()
            .is_some_and(|first| first == Level::Read && levels.all(|l| l == Level::Read))
    }

    /// The documents the grants this device holds from other persons name (see
    /// [`SyncHub::set_held_grants`]); a document may appear once per grant.
    pub fn held_documents(&self) -> impl Iterator<Item = DocumentId> + '_ {
        self.held
            .iter()
            .flat_map(|held| held.documents.iter().map(|(doc, _)| *doc))
    }

    /// Records which of the documents we hold were shared with us, and by whom. A held
    /// grant covers a document only if we do not hold it, or hold it from that same person:
    /// a grant naming one of our own documents (say, our index, whose id anyone can
    /// derive) must not make it flow to the grant's issuer.
    pub fn set_provenance(&mut self, shared_from: BTreeMap<DocumentId, Did>) {
        self.provenance = shared_from;
    }

    /// Closes shared sessions whose grants have expired by `now` (the node calls this
    /// periodically; `Hello` checks expiry too).
    pub fn expire(&mut self, now: UnixTime) -> Vec<Effect> {
        let expired: Vec<SessionId> = self
            .sessions
            .iter()
            .filter(|(_, s)| {
                s.shared
                    .as_ref()
                    .and_then(|scope| scope.valid_until)
                    .is_some_and(|until| now > until)
            })
            .map(|(id, _)| *id)
            .collect();
        expired
            .into_iter()
            .map(|session| {
                self.sessions.remove(&session);
                Effect::Close {
                    session,
                    reason: CloseReason::Unauthorized("the peer's grant expired".into()),
                }
            })
            .collect()
    }

    /// The scope of a shared session with `session`, if it is one.
    pub fn scope(&self, session: SessionId) -> Option<&Scope> {
        self.sessions.get(&session)?.shared.as_ref()
    }

    /// Authorized peers with an open session.
    pub fn peers(&self) -> Vec<(SessionId, Did)> {
        self.sessions
            .iter()
            .filter(|(_, s)| s.phase != Phase::AwaitingHello)
            .map(|(id, s)| (*id, s.peer))
            .collect()
    }

    /// Whether each live peer that syncs this document (every device of the person; another
    /// person's device only if its session's scope covers the document) has it at our
    /// heads.
    pub fn doc_status(&self, doc: &DocumentId) -> Vec<PeerDocStatus> {
        let heads = self.docs.heads(doc).map(<[ChangeHash]>::to_vec);
        self.sessions
            .values()
            .filter(|s| s.phase == Phase::Live)
            .filter(|s| s.shared.as_ref().is_none_or(|scope| scope.covers(doc)))
            .map(|s| {
                let their_heads = s.their_heads(doc, heads.as_deref());
                PeerDocStatus {
                    peer: s.peer,
                    in_sync: heads.is_some() && their_heads == heads,
                    their_heads,
                }
            })
            .collect()
    }

    /// The heads a session's peer last reported, per document, for the documents where it
    /// has: what is known of the peer's copies once the session ends.
    pub fn session_heads(&self, session: SessionId) -> Vec<(DocumentId, Vec<ChangeHash>)> {
        self.sessions
            .get(&session)
            .map(|s| {
                let known: BTreeSet<&DocumentId> = s.states.keys().chain(&s.pushing).collect();
                known
                    .into_iter()
                    .filter_map(|doc| Some((*doc, s.their_heads(doc, self.docs.heads(doc))?)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Handles one input at time `now`.
    pub fn handle(&mut self, now: UnixTime, input: Input) -> Vec<Effect> {
        self.handle_all(now, [input])
    }

    /// Handles inputs at time `now`, in order, as one batch: changes that peers pushed to
    /// a document are applied together, before anything else reads that document and at
    /// the end. Automerge applies a batch of changes in about the time one takes, so a
    /// node that falls behind catches up instead of falling further behind.
    pub fn handle_all(
        &mut self,
        now: UnixTime,
        inputs: impl IntoIterator<Item = Input>,
    ) -> Vec<Effect> {
        // A grant ends at its expiry, not at the node's next periodic check: sessions that
        // rely on an expired grant close before anything else is handled.
        let mut effects = self.expire(now);
        for input in inputs {
            self.handle_one(now, input, &mut effects);
        }
        let docs: Vec<DocumentId> = self.pushed.keys().copied().collect();
        for doc in docs {
            self.apply_pushed(doc, &mut effects);
        }
        for (session, items) in std::mem::take(&mut self.outbox) {
            if self.sessions.contains_key(&session) {
                self.send_docs(session, items, &mut effects);
            }
        }
        effects
    }

    fn handle_one(&mut self, now: UnixTime, input: Input, effects: &mut Vec<Effect>) {
        match input {
            Input::Opened {
                session,
                peer,
                role,
                persisted,
            } => {
                self.sessions.insert(
                    session,
                    Session {
                        peer,
                        role,
                        phase: Phase::AwaitingHello,
                        sent_summary: None,
                        dirty: BTreeSet::new(),
                        states: HashMap::new(),
                        persisted: persisted.into_iter().collect(),
                        chain: Vec::new(),
                        stalled: BTreeSet::new(),
                        pushing: BTreeSet::new(),
                        shared: None,
                        told: BTreeSet::new(),
                    },
                );
                if role == Role::Initiator {
                    self.send(session, &self.hello(), effects);
                }
            }
            Input::Received { session, frame } => {
                if let Err(reason) = self.receive(now, session, &frame, effects) {
                    self.sessions.remove(&session);
                    effects.push(Effect::Close { session, reason });
                }
            }
            Input::Closed { session } => {
                self.sessions.remove(&session);
            }
            Input::Loaded { doc, content } => self.loaded(doc, content, effects),
            Input::LocalChange { doc, changes } => {
                self.apply_pushed(doc, effects);
                self.changed(doc, None, Some(&changes));
            }
        }
    }

    /// Documents asked for with [`Effect::Load`] and not handed back yet.
    pub fn loading(&self) -> impl Iterator<Item = &DocumentId> {
        self.loading.keys()
    }

    /// A document arrived from storage: the work that waited for it runs, in order.
    fn loaded(
        &mut self,
        doc_id: DocumentId,
        content: Option<Box<Automerge>>,
        effects: &mut Vec<Effect>,
    ) {
        match content {
            // Content already in memory may have moved on: `load` keeps it.
            Some(doc) => {
                self.docs.load(doc_id, *doc);
            }
            None if !self.docs.is_loaded(&doc_id) => {
                self.docs.remove(&doc_id);
            }
            None => {}
        }
        for work in self.loading.remove(&doc_id).unwrap_or_default() {
            match work {
                Parked::Message(session, item) => {
                    if !self.sessions.contains_key(&session) {
                        continue;
                    }
                    if let Err(reason) = self.receive_doc(session, item, effects) {
                        self.sessions.remove(&session);
                        effects.push(Effect::Close { session, reason });
                    }
                }
                Parked::Offer { session, whole } => {
                    let Some(doc) = self.docs.get(&doc_id) else {
                        continue; // it did not load: as if we never held it
                    };
                    let Some(s) = self.sessions.get_mut(&session) else {
                        continue;
                    };
                    if let Some(item) = offer(doc, doc_id, s, whole) {
                        self.queue(session, item);
                    }
                }
            }
        }
    }

    fn queue(&mut self, session: SessionId, item: DocMessage) {
        self.outbox.entry(session).or_default().push(item);
    }

    fn hello(&self) -> Frame {
        Frame::Hello {
            version: PROTOCOL_VERSION,
            chain: self
                .config
                .chain
                .iter()
                .map(|d| ByteBuf::from(d.as_bytes().to_vec()))
                .collect(),
            grants: self
                .held
                .iter()
                .map(|held| {
                    held.chain
                        .iter()
                        .map(|d| ByteBuf::from(d.as_bytes().to_vec()))
                        .collect()
                })
                .collect(),
        }
    }

    fn send(&self, session: SessionId, frame: &Frame, effects: &mut Vec<Effect>) {
        effects.push(Effect::Send {
            session,
            frame: frame.encode(),
        });
    }

    fn send_docs(&self, session: SessionId, items: Vec<DocMessage>, effects: &mut Vec<Effect>) {
        if let Some(s) = self.sessions.get(&session)
            && let Some(scope) = &s.shared
        {
            for item in &items {
                let Some(lent) = scope.lent.get(&item.doc()) else {
                    continue;
                };
                let bytes = match item {
                    DocMessage::Snapshot { data, .. } => data.len() as u64,
                    DocMessage::Sync { message, .. } => sync::Message::decode(message)
                        .map_or(0, |m| m.changes.iter().map(|c| c.len() as u64).sum()),
                    DocMessage::Changes { changes, .. } => changes.len() as u64,
                };
                if bytes > 0 {
                    effects.push(Effect::Access {
                        peer: s.peer,
                        doc: item.doc(),
                        grant: lent.grant,
                        kind: AccessKind::Read,
                        bytes,
                    });
                }
            }
        }
        let limit = self.config.max_frame_size.min(MAX_FRAME_SIZE) / 2;
        for frame in Frame::pack_docs(items, limit) {
            self.send(session, &frame, effects);
        }
    }

    /// Checks a `Hello`. The peer is either one of our person's devices (its chain runs
    /// from our root to its key with full authority), or another person's device that
    /// holds grants on our documents, or on whose person's documents we hold grants.
    /// Returns the CIDs the session relies on, and its scope when it is shared.
    fn authorize(
        &self,
        now: UnixTime,
        peer: &Did,
        chain: &[ByteBuf],
        grants: &[Vec<ByteBuf>],
        effects: &mut Vec<Effect>,
    ) -> Result<(Vec<cid::Cid>, Option<Scope>), CloseReason> {
        let unauthorized = |why: String| CloseReason::Unauthorized(why);
        let validator = Validator::new(now)
            .with_clock_skew(self.config.clock_skew)
            .with_revocations(&self.revocations);
        let decode = |chain: &[ByteBuf]| {
            chain
                .iter()
                .map(|bytes| Delegation::decode(bytes))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("undecodable delegation: {e}"))
        };
        // The peer's own authority: from its person's root to its key, with `/`.
        let authority = decode(chain).and_then(|chain| {
            let valid = validator
                .validate_delegation_chain(&chain)
                .map_err(|e: ValidationError| e.to_string())?;
            if valid.audience() != peer {
                return Err("the chain is for another key than the connected peer".into());
            }
            if valid.command().as_str() != "/" {
                return Err("the chain does not grant full device authority".into());
            }
            Ok(valid)
        });
        if let Ok(valid) = &authority
            && valid.subject() == Some(&self.config.root)
        {
            return Ok((valid.proofs().to_vec(), None));
        }

        // The session with a grantee is closed at its grant's expiry (`expire`), so its
        // grants are judged by the same strict clock.
        let validator = validator.with_strict_expiry();
        let mut scope = Scope::default();
        let mut relied_on = Vec::new();
        let mut first_reason = None;
        for presented in grants {
            let checked = decode(presented).and_then(|chain| {
                let valid = validator
                    .validate_delegation_chain(&chain)
                    .map_err(|e| e.to_string())?;
                if valid.subject() != Some(&self.config.root) {
                    return Err("a grant on another person's documents".into());
                }
                if valid.audience() != peer {
                    return Err("a grant for another key than the connected peer".into());
                }
                if passed_on_without_leave(&chain) {
                    return Err("a grant passed on by a grantee who may not pass it on".into());
                }
                let documents = granted_documents(&chain, &valid);
                if documents.is_empty() {
                    return Err("a grant that covers no whole document".into());
                }
                let grant = grant_of(&chain).ok_or("a grant with no narrowed delegation")?;
                Ok((valid, documents, grant))
            });
            match checked {
                Ok((valid, documents, grant)) => {
                    for (doc, level) in documents {
                        let lent = scope.lent.entry(doc).or_insert(Lent { level, grant });
                        if level > lent.level {
                            *lent = Lent { level, grant };
                        }
                    }
                    relied_on.extend_from_slice(valid.proofs());
                    if let Some(until) = valid.valid_until() {
                        scope.valid_until = Some(scope.valid_until.map_or(until, |u| u.min(until)));
                    }
                }
                Err(reason) => {
                    effects.push(Effect::GrantRefused {
                        peer: *peer,
                        reason: reason.clone(),
                    });
                    first_reason.get_or_insert(reason);
                }
            }
        }
        if let Ok(valid) = &authority {
            let their_root = valid.subject();
            for held in self.held.iter().filter(|h| Some(&h.subject) == their_root) {
                for (doc, level) in &held.documents {
                    let theirs =
                        !self.docs.contains(doc) || self.provenance.get(doc) == Some(&held.subject);
                    if !theirs {
                        effects.push(Effect::GrantRefused {
                            peer: *peer,
                            reason: format!("a grant we hold names {doc}, which is not theirs"),
                        });
                        continue;
                    }
                    let slot = scope.borrowed.entry(*doc).or_insert(*level);
                    *slot = (*slot).max(*level);
                }
            }
            if !scope.borrowed.is_empty() {
                relied_on.extend_from_slice(valid.proofs());
            }
        }
        scope.peer_root = authority.as_ref().ok().and_then(|v| v.subject().copied());
        if scope.is_empty() {
            let why = first_reason
                .or(authority.err())
                .unwrap_or_else(|| "not one of this person's devices, and no grant".into());
            return Err(unauthorized(why));
        }
        Ok((relied_on, Some(scope)))
    }

    fn receive(
        &mut self,
        now: UnixTime,
        id: SessionId,
        bytes: &[u8],
        effects: &mut Vec<Effect>,
    ) -> Result<(), CloseReason> {
        if !self.sessions.contains_key(&id) {
            return Ok(()); // a late frame for a session we closed
        }
        let frame = Frame::decode(bytes).map_err(|e| CloseReason::Malformed(e.to_string()))?;
        if !matches!(frame, Frame::Docs { .. }) && !self.pushed.is_empty() {
            // Reconciliation and grants look at every document: bring them up to date.
            let docs: Vec<DocumentId> = self.pushed.keys().copied().collect();
            for doc in docs {
                self.apply_pushed(doc, effects);
            }
        }
        let Some(session) = self.sessions.get(&id) else {
            return Ok(()); // closed while applying what was pushed
        };
        let violation = |what: &str| Err(CloseReason::ProtocolViolation(what.to_owned()));
        match (&session.phase, frame) {
            (
                Phase::AwaitingHello,
                Frame::Hello {
                    version,
                    chain,
                    grants,
                },
            ) => {
                if version != PROTOCOL_VERSION {
                    return violation("unsupported protocol version");
                }
                let peer = session.peer;
                let role = session.role;
                let (chain, scope) = self.authorize(now, &peer, &chain, &grants, effects)?;
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.chain = chain;
                }
                effects.push(Effect::Authorized { session: id, peer });
                if role == Role::Responder {
                    self.send(id, &self.hello(), effects);
                }
                if let Some(scope) = scope {
                    self.start_shared(id, scope, effects);
                    return Ok(());
                }
                let (count, fingerprint) = self.docs.summary();
                let session = self.sessions.get_mut(&id).expect("present");
                session.phase = Phase::Reconciling;
                session.sent_summary = Some((count, fingerprint));
                self.send(
                    id,
                    &Frame::Summary {
                        count,
                        fingerprint: ByteBuf::from(fingerprint.to_vec()),
                    },
                    effects,
                );
                Ok(())
            }
            (Phase::AwaitingHello, _) => violation("a frame before Hello"),
            (_, Frame::Hello { .. }) => violation("a second Hello"),
            (Phase::Reconciling, Frame::Summary { count, fingerprint }) => {
                let sent = session.sent_summary;
                if sent == Some((count, fingerprint.as_ref().try_into().unwrap_or([0; 16]))) {
                    self.finish_reconciling(id, &BTreeSet::new(), &[], effects);
                } else if session.drives(&self.config.me) {
                    let fingerprints = self.docs.bucket_fingerprints().to_vec();
                    self.send(id, &Frame::Buckets { fingerprints }, effects);
                }
                Ok(())
            }
            (Phase::Reconciling, Frame::Buckets { fingerprints }) => {
                if session.drives(&self.config.me) || fingerprints.len() != BUCKETS {
                    return violation("unexpected Buckets");
                }
                let mine = self.docs.bucket_fingerprints();
                let differing: Vec<u8> = (0..BUCKETS)
                    .filter(|&i| mine[i] != fingerprints[i])
                    .map(|i| i as u8)
                    .collect();
                let entries = self.docs.entries_in(&differing);
                self.send(
                    id,
                    &Frame::Entries {
                        buckets: ByteBuf::from(differing),
                        entries,
                        reply: false,
                    },
                    effects,
                );
                Ok(())
            }
            (
                Phase::Reconciling,
                Frame::Entries {
                    buckets,
                    entries,
                    reply,
                },
            ) => {
                if reply == session.drives(&self.config.me) {
                    return violation("unexpected Entries");
                }
                if !reply {
                    let mine = self.docs.entries_in(&buckets);
                    self.send(
                        id,
                        &Frame::Entries {
                            buckets: buckets.clone(),
                            entries: mine,
                            reply: true,
                        },
                        effects,
                    );
                }
                let buckets: BTreeSet<u8> = buckets.iter().copied().collect();
                self.finish_reconciling(id, &buckets, &entries, effects);
                Ok(())
            }
            (
                Phase::Live,
                Frame::Summary { .. } | Frame::Buckets { .. } | Frame::Entries { .. },
            ) => violation("reconciliation frames after reconciling (or in a shared session)"),
            (Phase::Live, Frame::Revocations { records }) => {
                self.learn_revocations(now, id, records, effects);
                Ok(())
            }
            (_, Frame::Revocations { .. }) => violation("revocations before reconciling"),
            (_, Frame::Docs { items }) => {
                for item in items {
                    self.receive_doc(id, item, effects)?;
                }
                Ok(())
            }
        }
    }

    /// A shared session skips reconciliation: it starts syncing the documents in its scope
    /// at once, creating empty copies of borrowed documents not held yet.
    fn start_shared(&mut self, id: SessionId, scope: Scope, effects: &mut Vec<Effect>) {
        let mut items = Vec::new();
        let session = self.sessions.get_mut(&id).expect("present");
        for doc_id in scope.lent.keys().chain(scope.borrowed.keys()) {
            if !self.docs.contains(doc_id) {
                if !scope.borrowed.contains_key(doc_id) {
                    continue; // lent but deleted since: nothing to say
                }
                self.docs.insert(*doc_id, Automerge::new());
            }
            match self.docs.get(doc_id) {
                Some(doc) => items.extend(offer(doc, *doc_id, session, false)),
                None => park(
                    &mut self.loading,
                    *doc_id,
                    Parked::Offer {
                        session: id,
                        whole: false,
                    },
                    effects,
                ),
            }
        }
        session.phase = Phase::Live;
        session.shared = Some(scope);
        session.persisted.clear();
        self.outbox.entry(id).or_default().extend(items);
        self.tell_revocations(id, effects);
    }

    /// Both sides know the differing buckets (empty when summaries matched) and the peer's
    /// entries in them: seed states for documents known to be in sync, start syncing the
    /// rest.
    fn finish_reconciling(
        &mut self,
        id: SessionId,
        differing_buckets: &BTreeSet<u8>,
        their_entries: &[Entry],
        effects: &mut Vec<Effect>,
    ) {
        let theirs: HashMap<DocumentId, u64> =
            their_entries.iter().map(|e| (e.doc, e.digest)).collect();
        let session = self.sessions.get_mut(&id).expect("present");
        let mut items = Vec::new();
        let mut differing = 0;
        for doc_id in self.docs.ids() {
            let in_differing_bucket = differing_buckets.contains(&DocSet::bucket(doc_id));
            let dirty = session.dirty.contains(doc_id);
            let their_digest = theirs.get(doc_id);
            let same =
                !in_differing_bucket || their_digest == self.docs.short_digest(doc_id).as_ref();
            if same && !dirty {
                session.level(*doc_id);
                continue;
            }
            differing += 1;
            // The peer has none of it: send it whole.
            let whole = in_differing_bucket && their_digest.is_none() && !dirty;
            if !whole {
                session.states.entry(*doc_id).or_insert_with(|| {
                    session
                        .persisted
                        .remove(doc_id)
                        .and_then(|bytes| sync::State::decode(&bytes).ok())
                        .unwrap_or_default()
                });
            }
            match self.docs.get(doc_id) {
                Some(doc) => items.extend(offer(doc, *doc_id, session, whole)),
                None => park(
                    &mut self.loading,
                    *doc_id,
                    Parked::Offer { session: id, whole },
                    effects,
                ),
            }
        }
        // Documents the peer has and we lack arrive from its side.
        let incoming = theirs.keys().filter(|d| !self.docs.contains(d)).count();
        differing += incoming;
        session.phase = Phase::Live;
        session.dirty.clear();
        session.persisted.clear();
        effects.push(Effect::Reconciled {
            session: id,
            differing,
            incoming,
        });
        self.outbox.entry(id).or_default().extend(items);
    }

    fn receive_doc(
        &mut self,
        id: SessionId,
        item: DocMessage,
        effects: &mut Vec<Effect>,
    ) -> Result<(), CloseReason> {
        let doc_id = item.doc();
        let session = self.sessions.get(&id).expect("present");
        if let Some(scope) = &session.shared
            && !scope.covers(&doc_id)
        {
            effects.push(Effect::Dropped {
                peer: session.peer,
                doc: doc_id,
                reason: "no grant covers this document".into(),
            });
            return Ok(());
        }
        let lent = session
            .shared
            .as_ref()
            .and_then(|scope| scope.lent.get(&doc_id).cloned());
        if lent.is_some() && !self.docs.contains(&doc_id) {
            // Lent but gone (or a view not built yet): a grantee never creates our documents.
            effects.push(Effect::Dropped {
                peer: session.peer,
                doc: doc_id,
                reason: "not held here".into(),
            });
            return Ok(());
        }
        if self.docs.contains(&doc_id) && !self.docs.is_loaded(&doc_id) {
            park(
                &mut self.loading,
                doc_id,
                Parked::Message(id, item),
                effects,
            );
            return Ok(());
        }
        if let DocMessage::Changes { heads, changes, .. } = item {
            let heads = decode_heads(&heads)
                .ok_or_else(|| CloseReason::Malformed("bad heads in changes".into()))?;
            let brought = changes.len() as u64;
            let changes = match self.screen(id, doc_id, [&changes[..]], effects)? {
                Some(allowed) => allowed.concat(),
                None => changes.into_vec(),
            };
            let changes = changes_in(&changes).map_err(CloseReason::Malformed)?;
            if !self.docs.contains(&doc_id) {
                self.docs.insert(doc_id, Automerge::new());
            }
            self.pushed.entry(doc_id).or_default().push(Pushed {
                session: id,
                heads,
                changes,
                brought,
                lent,
            });
            return Ok(());
        }
        // What was pushed to this document so far goes in first.
        self.apply_pushed(doc_id, effects);
        let before = self.docs.heads(&doc_id).map(<[ChangeHash]>::to_vec);
        let brought: u64;
        let mut added = None;
        match item {
            DocMessage::Snapshot { data, .. } => {
                brought = data.len() as u64;
                match self.screen(id, doc_id, [&data[..]], effects)? {
                    Some(allowed) => {
                        if before.is_none() {
                            self.docs.insert(doc_id, Automerge::new());
                        }
                        added = self.apply(
                            id,
                            doc_id,
                            |doc| load_chunks(doc, &allowed),
                            None,
                            effects,
                        )?;
                    }
                    None if before.is_none() => {
                        let loaded = catch_unwind(|| Automerge::load(&data))
                            .map_err(|_| {
                                CloseReason::Malformed("a snapshot crashed the loader".into())
                            })?
                            .map_err(|e| CloseReason::Malformed(format!("bad snapshot: {e}")))?;
                        let heads = loaded.get_heads();
                        self.docs.insert(doc_id, loaded);
                        effects.push(Effect::StoreSnapshot {
                            doc: doc_id,
                            data: data.into_vec(),
                            heads: heads.clone(),
                            from: id,
                        });
                        if let Some(session) = self.sessions.get_mut(&id) {
                            session.level(doc_id);
                        }
                    }
                    None => {
                        added = self.apply(
                            id,
                            doc_id,
                            |doc| doc.load_incremental(&data).map(|_| ()),
                            None,
                            effects,
                        )?;
                    }
                }
            }
            DocMessage::Sync { message, .. } => {
                let mut message = sync::Message::decode(&message)
                    .map_err(|e| CloseReason::Malformed(format!("bad sync message: {e}")))?;
                if let Some(allowed) = self.screen(id, doc_id, message.changes.iter(), effects)? {
                    message.changes = allowed.into();
                }
                brought = message.changes.iter().map(|c| c.len() as u64).sum();
                if before.is_none() {
                    self.docs.insert(doc_id, Automerge::new());
                }
                let session = self.sessions.get_mut(&id).expect("present");
                let ours = before.clone().unwrap_or_default();
                session.state(doc_id, &ours);
                // The peer runs the sync protocol on this document again (it may lack
                // something): our pushes wait until it reports our heads.
                session.pushing.remove(&doc_id);
                let mut state = session.states.remove(&doc_id).unwrap_or_default();
                let result = self.apply(
                    id,
                    doc_id,
                    |doc| doc.receive_sync_message(&mut state, message),
                    None,
                    effects,
                );
                let session = self.sessions.get_mut(&id).expect("present");
                session.states.insert(doc_id, state);
                added = result?;
            }
            DocMessage::Changes { .. } => unreachable!("deferred above"),
        }
        let after = self.docs.heads(&doc_id).map(<[ChangeHash]>::to_vec);
        if after != before {
            if let Some(lent) = lent {
                let peer = self.sessions.get(&id).expect("present").peer;
                effects.push(Effect::Access {
                    peer,
                    doc: doc_id,
                    grant: lent.grant,
                    kind: AccessKind::Write,
                    bytes: brought,
                });
            }
            // `apply` stored the changes; tell the other peers.
            self.changed(doc_id, Some(id), added.as_deref());
        }
        let stalled = self
            .sessions
            .get(&id)
            .is_some_and(|s| s.stalled.contains(&doc_id));
        self.respond(id, doc_id, effects, stalled && after == before);
        Ok(())
    }

    /// Applies the changes pushed to `doc_id` ([`DocMessage::Changes`]) since the last
    /// time: each peer's in one batch, as far as their dependencies are here, and notes
    /// each peer's heads. A peer whose changes cannot all apply believed wrongly that we
    /// were up to date: it gets a sync message, and Automerge's protocol finds what is
    /// missing. Peers' batches apply separately, so changes that Automerge rejects close
    /// only the session that sent them.
    fn apply_pushed(&mut self, doc_id: DocumentId, effects: &mut Vec<Effect>) {
        let Some(batches) = self.pushed.remove(&doc_id) else {
            return;
        };
        // Each session's batches, in the order the sessions were first heard from.
        let mut by_session: Vec<(SessionId, Vec<Pushed>)> = Vec::new();
        for batch in batches {
            match by_session.iter_mut().find(|(s, _)| *s == batch.session) {
                Some((_, group)) => group.push(batch),
                None => by_session.push((batch.session, vec![batch])),
            }
        }
        for (session, group) in by_session {
            self.apply_pushed_by(session, doc_id, group, effects);
        }
    }

    fn apply_pushed_by(
        &mut self,
        id: SessionId,
        doc_id: DocumentId,
        batches: Vec<Pushed>,
        effects: &mut Vec<Effect>,
    ) {
        let Some(doc) = self.docs.get(&doc_id) else {
            return;
        };
        // Whether `hash` is applied (or queued) here: normally one lookup, as changes
        // queued for missing dependencies are rare.
        let held = |hash: &ChangeHash| !doc.get_missing_deps(&[*hash]).contains(hash);
        let queue_was_empty = doc.get_missing_deps(&[]).is_empty();
        let mut readied = BTreeSet::new();
        let mut chunk = Vec::new();
        let mut missing = false;
        for change in batches.iter().flat_map(|b| &b.changes) {
            let hash = change.hash();
            if readied.contains(&hash) || held(&hash) {
                continue;
            }
            if change.deps().iter().all(|d| readied.contains(d) || held(d)) {
                readied.insert(hash);
                chunk.extend_from_slice(change.raw_bytes());
            } else {
                missing = true;
            }
        }
        let last = batches.last().expect("a group is never empty");
        let known = last.heads.iter().all(|h| readied.contains(h) || held(h));
        let mut added = None;
        if !chunk.is_empty() {
            // Changes applied from the queue would be missing from `chunk`.
            let exact = queue_was_empty.then(|| chunk.clone());
            match self.apply(
                id,
                doc_id,
                |doc| doc.load_incremental(&chunk).map(|_| ()),
                exact,
                effects,
            ) {
                Ok(applied) => added = applied,
                Err(reason) => {
                    if self.sessions.remove(&id).is_some() {
                        effects.push(Effect::Close {
                            session: id,
                            reason,
                        });
                    }
                    return;
                }
            }
        }
        let ours = self.docs.heads(&doc_id).unwrap_or_default().to_vec();
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        if let (Some(lent), true) = (&last.lent, added.is_some()) {
            effects.push(Effect::Access {
                peer: session.peer,
                doc: doc_id,
                grant: lent.grant,
                kind: AccessKind::Write,
                bytes: batches.iter().map(|b| b.brought).sum(),
            });
        }
        let state = session.state(doc_id, &ours);
        if known {
            state.shared_heads.clone_from(&last.heads);
        }
        state.their_heads = Some(last.heads.clone());
        if missing {
            // Say where we are even if our heads did not move; the peer stops pushing
            // this document until the sync protocol finds us level. (When the document
            // is stalled, the quiet rule in `respond` still ends the exchange.)
            state.have_responded = false;
            state.in_flight = false;
            let doc = self.docs.get(&doc_id).expect("held");
            if let Some(message) = doc.generate_sync_message(state) {
                let item = DocMessage::Sync {
                    doc: doc_id,
                    message: ByteBuf::from(message.encode()),
                };
                self.queue(id, item);
            }
        }
        // Tell the other peers: the changes as they are when we know them exactly.
        if let Some(added) = added {
            let exact = queue_was_empty.then_some(&added[..]);
            self.changed(doc_id, Some(id), exact);
        }
    }

    /// Keeps out of `doc_id` the changes in `chunks` that no one may bring in (today: those
    /// of revoked devices past their cutoff). Returns the chunks to apply instead, or `None`
    /// when all of them may go in as they are.
    fn screen<'a>(
        &mut self,
        id: SessionId,
        doc_id: DocumentId,
        chunks: impl IntoIterator<Item = &'a [u8]>,
        effects: &mut Vec<Effect>,
    ) -> Result<Option<Vec<Vec<u8>>>, CloseReason> {
        let session = self.sessions.get(&id).expect("present");
        let lent = session
            .shared
            .as_ref()
            .and_then(|scope| scope.lent.get(&doc_id));
        if self.revoked_authors.is_empty() && lent.is_none() {
            return Ok(None);
        }
        let sender = session.peer;
        let revoked = &self.revoked_authors;
        let held = self.docs.get(&doc_id);
        let screened = screen(chunks, |change| {
            // What we already hold was judged when it came in.
            if held.is_some_and(|doc| doc.get_change_by_hash(&change.hash()).is_some()) {
                return None;
            }
            match lent {
                Some(Lent {
                    level: Level::Read,
                    grant,
                }) => return Some(Refusal::ReadOnly { grant: *grant }),
                Some(_) if actor_device(change.actor_id()) != Some(*sender.as_bytes()) => {
                    return Some(Refusal::ForeignActor { sender });
                }
                _ => {}
            }
            revoked.judge(&doc_id, change.actor_id(), change.seq())
        })
        .map_err(CloseReason::Malformed)?;
        let Some(screened) = screened else {
            return Ok(None);
        };
        let session = self.sessions.get_mut(&id).expect("present");
        session.stalled.insert(doc_id);
        effects.push(Effect::Refused {
            peer: session.peer,
            doc: doc_id,
            changes: screened.refused,
        });
        Ok(Some(screened.allowed))
    }

    /// Applies a peer's data to a document, persisting what it added. `added`, when
    /// given, is exactly what the data adds (else it is found with `save_after`, which
    /// walks the history). Returns what was added, if anything.
    fn apply<E: fmt::Display>(
        &mut self,
        from: SessionId,
        doc_id: DocumentId,
        change: impl FnOnce(&mut Automerge) -> Result<(), E>,
        added: Option<Vec<u8>>,
        effects: &mut Vec<Effect>,
    ) -> Result<Option<Vec<u8>>, CloseReason> {
        let before = self.docs.heads(&doc_id).unwrap_or_default().to_vec();
        // Peers known to hold our heads get their state from the heads before the change.
        for session in self.sessions.values_mut() {
            if session.pushing.contains(&doc_id) {
                session.state(doc_id, &before);
            }
        }
        let outcome = self
            .docs
            .update(&doc_id, |doc| {
                catch_unwind(AssertUnwindSafe(|| change(doc)))
            })
            .expect("the document is held");
        match outcome {
            Err(_) => {
                effects.push(Effect::DocumentPoisoned { doc: doc_id });
                Err(CloseReason::Malformed(format!(
                    "a message for {doc_id} crashed Automerge"
                )))
            }
            Ok(Err(error)) => Err(CloseReason::Malformed(format!("{doc_id}: {error}"))),
            Ok(Ok(())) => {
                let doc = self.docs.get(&doc_id).expect("held");
                let heads = doc.get_heads();
                if heads == before {
                    return Ok(None);
                }
                let data = match added {
                    _ if before.is_empty() => doc.save(),
                    Some(added) => added,
                    None => doc.save_after(&before),
                };
                effects.push(if before.is_empty() {
                    Effect::StoreSnapshot {
                        doc: doc_id,
                        data: data.clone(),
                        heads: heads.clone(),
                        from,
                    }
                } else {
                    Effect::StoreChanges {
                        doc: doc_id,
                        data: data.clone(),
                        heads: heads.clone(),
                    }
                });
                effects.push(Effect::DocChanged { doc: doc_id, heads });
                Ok(Some(data))
            }
        }
    }

    /// After receiving for `doc_id` on a session: answer if Automerge has more to say, or
    /// remember the common state once both sides agree.
    /// When `quiet`, a reply without changes is not sent (see `Session::stalled`).
    fn respond(
        &mut self,
        id: SessionId,
        doc_id: DocumentId,
        effects: &mut Vec<Effect>,
        quiet: bool,
    ) {
        let Some(doc) = self.docs.get(&doc_id) else {
            return;
        };
        let session = self.sessions.get_mut(&id).expect("present");
        session.state(doc_id, &doc.get_heads());
        let state = session.states.get_mut(&doc_id).expect("made above");
        match doc.generate_sync_message(state) {
            Some(message) if quiet && message.changes.is_empty() => {}
            Some(message) => {
                let item = DocMessage::Sync {
                    doc: doc_id,
                    message: ByteBuf::from(message.encode()),
                };
                let peer_in_sync = state.their_heads.as_deref() == Some(&doc.get_heads()[..]);
                let encoded = state.encode();
                let peer = session.peer;
                if peer_in_sync {
                    session.pushing.insert(doc_id);
                }
                self.queue(id, item);
                if peer_in_sync {
                    effects.push(Effect::SaveSyncState {
                        peer,
                        doc: doc_id,
                        state: encoded,
                    });
                }
            }
            None => {
                if state.their_heads.as_deref() == Some(&doc.get_heads()[..]) {
                    session.pushing.insert(doc_id);
                    effects.push(Effect::SaveSyncState {
                        peer: session.peer,
                        doc: doc_id,
                        state: state.encode(),
                    });
                }
            }
        }
    }

    /// A document changed (locally, or from session `from`): bring every other live peer
    /// up to date, and mark it dirty for sessions still reconciling. `changes` are the new
    /// changes' bytes when known: peers known to be up to date get them as they are.
    fn changed(&mut self, doc_id: DocumentId, from: Option<SessionId>, changes: Option<&[u8]>) {
        let Some(doc) = self.docs.get(&doc_id) else {
            return;
        };
        let heads = doc.get_heads();
        let mut outgoing = Vec::new();
        for (id, session) in &mut self.sessions {
            if Some(*id) == from {
                continue;
            }
            match session.phase {
                Phase::AwaitingHello => {}
                Phase::Reconciling => {
                    session.dirty.insert(doc_id);
                }
                Phase::Live => {
                    if let Some(scope) = &session.shared {
                        let sends = scope.lent.contains_key(&doc_id)
                            || scope.borrowed.get(&doc_id) == Some(&Level::Write);
                        if !sends {
                            continue;
                        }
                    }
                    let item = match session.states.get_mut(&doc_id) {
                        Some(state) => match changes {
                            Some(changes) if session.pushing.contains(&doc_id) => {
                                state.their_heads = Some(heads.clone());
                                Some(DocMessage::Changes {
                                    doc: doc_id,
                                    heads: encode_heads(&heads),
                                    changes: ByteBuf::from(changes.to_vec()),
                                })
                            }
                            _ => doc
                                .generate_sync_message(state)
                                .map(|message| DocMessage::Sync {
                                    doc: doc_id,
                                    message: ByteBuf::from(message.encode()),
                                }),
                        },
                        // Level with us before this change: it stays level.
                        None if session.pushing.contains(&doc_id) && changes.is_some() => {
                            Some(DocMessage::Changes {
                                doc: doc_id,
                                heads: encode_heads(&heads),
                                changes: ByteBuf::from(changes.unwrap_or_default().to_vec()),
                            })
                        }
                        None if session.pushing.contains(&doc_id) => {
                            let state = session.states.entry(doc_id).or_default();
                            doc.generate_sync_message(state)
                                .map(|message| DocMessage::Sync {
                                    doc: doc_id,
                                    message: ByteBuf::from(message.encode()),
                                })
                        }
                        None if session.shared.is_some() => None,
                        None => {
                            // Unknown to this peer since reconciliation: a new document.
                            session.level(doc_id);
                            Some(DocMessage::Snapshot {
                                doc: doc_id,
                                data: ByteBuf::from(doc.save()),
                            })
                        }
                    };
                    if let Some(item) = item {
                        outgoing.push((*id, item));
                    }
                }
            }
        }
        for (id, item) in outgoing {
            self.queue(id, item);
        }
    }
}

/// What to tell a peer about a document reconciliation found differing: the whole
/// document, after which the peer is known to hold it, or an Automerge sync message.
fn offer(
    doc: &Automerge,
    doc_id: DocumentId,
    session: &mut Session,
    whole: bool,
) -> Option<DocMessage> {
    if whole {
        session.level(doc_id);
        return Some(DocMessage::Snapshot {
            doc: doc_id,
            data: ByteBuf::from(doc.save()),
        });
    }
    let state = session.state(doc_id, &doc.get_heads());
    doc.generate_sync_message(state)
        .map(|message| DocMessage::Sync {
            doc: doc_id,
            message: ByteBuf::from(message.encode()),
        })
}

/// Loads screened chunks one by one.
fn load_chunks(doc: &mut Automerge, chunks: &[Vec<u8>]) -> Result<(), automerge::AutomergeError> {
    for chunk in chunks {
        doc.load_incremental(chunk)?;
    }
    Ok(())
}

/// A sync state for a peer known to hold exactly `heads`.
fn seeded_state(heads: Vec<ChangeHash>) -> sync::State {
    let mut state = sync::State::new();
    state.shared_heads = heads.clone();
    state.last_sent_heads = heads.clone();
    state.their_heads = Some(heads.clone());
    state.their_need = Some(Vec::new());
    state.their_have = Some(vec![sync::Have {
        last_sync: heads,
        bloom: sync::BloomFilter::default(),
    }]);
    state.have_responded = true;
    state
}
