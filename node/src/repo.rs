//! The repo actor: owns the documents (inside the pure [`SyncHub`]), turns API calls into
//! changes, persists them through the store, and carries out the hub's effects.
//!
//! Local writes are acknowledged only once the store reports them durable. The actor never
//! waits for a commit itself: it queues writes in order and hands the wait to a small task,
//! so writes that arrive during a commit are committed together in the next one.

use std::collections::HashMap;

use automerge::{
    ActorId, Automerge, ChangeHash, ROOT, ReadDoc as _, transaction::Transactable as _,
};
use libp2p::Multiaddr;
use membrane_protocol::{
    Did, DocumentId,
    sync::{
        AccessKind, CloseReason, Effect, Input, SessionId, SyncHub,
        gate::{Cutoff, RevokedAuthors, actor_from_hex, cutoff_to_json, device_seqs, exceeds},
    },
};
use serde::Serialize;
use serde_json::{Value as Json, json};
use sha2::{Digest as _, Sha256};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

use crate::{
    json::{self, PathError},
    net::{NetCommand, NetEvent},
    random,
    store::{DeviceRecord, DocMeta, Pending, ReadDoc, StoreError, StoreHandle},
    time,
};

/// Why an API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// No document has this id or name.
    #[error("no document {0:?} (see `membrane doc list`)")]
    NoSuchDocument(String),
    /// Several documents have this name.
    #[error("{0:?} names several documents; use the id")]
    Ambiguous(String),
    /// The path or value does not fit the document.
    #[error(transparent)]
    Path(#[from] PathError),
    /// The change could not be made durable; it was not acknowledged.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The document is another person's, shared with this one for reading only.
    #[error("{0} is shared with you read-only; its owner would refuse your changes")]
    ReadOnly(String),
    /// The node is shutting down.
    #[error("the node is stopping")]
    Stopped,
    /// Bad input.
    #[error("{0}")]
    Invalid(String),
}

/// A document in a listing.
#[derive(Debug, Clone, Serialize)]
pub struct DocInfo {
    /// `automerge:…`
    pub id: String,
    /// Its name, if any.
    pub name: Option<String>,
    /// How many heads (more than one: concurrent changes not yet merged by a new change).
    pub heads: usize,
}

/// One change in a document's history.
#[derive(Debug, Clone, Serialize)]
pub struct ChangeInfo {
    /// Change hash (hex).
    pub hash: String,
    /// Author actor (hex).
    pub actor: String,
    /// Sequence number of the actor.
    pub seq: u64,
    /// Timestamp (milliseconds, as recorded by the author).
    pub time: i64,
    /// Commit message.
    pub message: Option<String>,
}

/// A document changed.
#[derive(Debug, Clone, Serialize)]
pub struct DocEvent {
    /// The document.
    pub doc: String,
    /// Its heads (hex).
    pub heads: Vec<String>,
    /// `local` or the peer's DID.
    pub by: String,
}

/// The node's state for `membrane status`.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// This device.
    pub device: String,
    /// The person.
    pub root: String,
    /// Where it listens.
    pub listen: Vec<String>,
    /// Connected devices.
    pub peers: Vec<String>,
    /// Devices this node has had a session with (the person's and other persons').
    pub devices: Vec<DeviceStatus>,
    /// The person's devices, from the replicated registry (this one included).
    pub own_devices: Vec<DeviceEntry>,
    /// Documents and their sync state with connected peers.
    pub documents: Vec<DocStatus>,
    /// Documents that failed to load.
    pub quarantined: Vec<(String, String)>,
    /// The latest changes kept out of documents, newest last, and why.
    pub refused: Vec<RefusedEntry>,
    /// The latest peers refused a session (or a grant), newest last, and why.
    pub refused_peers: Vec<RefusedPeer>,
}

/// A peer that was refused, and why.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedPeer {
    /// When (Unix seconds).
    pub at: u64,
    /// The peer's device DID.
    pub peer: String,
    /// Why.
    pub reason: String,
}

/// A change a peer sent that was kept out of a document.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedEntry {
    /// When (Unix seconds).
    pub at: u64,
    /// The peer that sent it (not necessarily its author).
    pub from: String,
    /// The document.
    pub doc: String,
    /// The change's hash (hex).
    pub change: String,
    /// Its author (actor id, hex).
    pub actor: String,
    /// Its sequence number.
    pub seq: u64,
    /// Why it was refused.
    pub reason: String,
}

/// A peer refused again for the same reason within this many seconds is logged quietly.
const REFUSAL_QUIET: u64 = 600;

/// How many refusals `status` remembers.
const REFUSALS_KEPT: usize = 100;

/// A device in the registry.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    /// Its DID.
    pub did: String,
    /// Connected now.
    pub online: bool,
    /// Last session (Unix seconds).
    pub last_seen: u64,
}

/// A device in the person's replicated registry.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceEntry {
    /// Its DID.
    pub did: String,
    /// Its name.
    pub name: Option<String>,
    /// When it was added (Unix seconds).
    pub added: Option<u64>,
    /// Which device added it.
    pub added_by: Option<String>,
    /// This device.
    pub this_device: bool,
    /// Connected to this node now.
    pub online: bool,
    /// Last session with this node (Unix seconds), if any.
    pub last_seen: Option<u64>,
    /// Revoked (a verified revocation is in the registry): every device refuses it.
    pub revoked: bool,
}

/// A document's sync state.
#[derive(Debug, Clone, Serialize)]
pub struct DocStatus {
    /// `automerge:…`
    pub id: String,
    /// Its name.
    pub name: Option<String>,
    /// Connected peers holding exactly our heads.
    pub in_sync_with: Vec<String>,
    /// Connected peers not yet at our heads.
    pub syncing_with: Vec<String>,
    /// What this device knows of each peer's copy: every device of the person (but this one
    /// and revoked ones), and any other person's device it is syncing this document with
    /// or has synced it with.
    pub peers: Vec<PeerSync>,
}

/// What this device knows of one peer's copy of a document.
///
/// A node learns a peer's heads only from the peer, during a session. So the comparison is
/// exact for a connected peer, and as of the last contact for one that is not: the peer
/// may have received changes from other devices since.
#[derive(Debug, Clone, Serialize)]
pub struct PeerSync {
    /// The peer's device DID.
    pub peer: String,
    /// Its name in the person's registry, for the person's own devices.
    pub name: Option<String>,
    /// One of the person's own devices (otherwise another person's, through a grant).
    pub own_device: bool,
    /// Connected now.
    pub online: bool,
    /// The comparison of the peer's known heads with ours.
    pub state: SyncState,
    /// How many of our changes the peer's known heads lack. Exact relative to those heads;
    /// `None` when no heads are known, or when the peer holds changes we lack (then which
    /// of ours it has is not known either).
    pub they_lack: Option<usize>,
    /// Where the peer's heads come from.
    pub known_from: KnownFrom,
}

/// How a peer's copy of a document compares with ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// The peer's known heads are ours.
    InSync,
    /// The peer lacks some of our changes (`they_lack`), and holds none we lack.
    TheyLack,
    /// The peer holds changes we lack (how many is not known here); it may lack some of
    /// ours too.
    WeLack,
    /// Connected, but the two have not yet compared this document.
    Syncing,
    /// Not connected, and no heads are remembered: this node remembers a peer's heads from
    /// its sessions since the node started, and from the sync state it saves whenever the
    /// two reach the same heads through sync messages (not when reconciliation finds the
    /// document already equal).
    Unknown,
    /// Not connected, and this node never had a session with that device.
    NeverSynced,
}

/// Where what is known of a peer's copy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KnownFrom {
    /// The session open now.
    Live,
    /// The end of the last session with the peer since this node started.
    LastSession,
    /// The sync state saved the last time the two reached the same heads.
    SavedState,
    /// Nothing.
    Nothing,
}

/// New documents arriving from peers, counted as they are stored: for progress displays.
/// The repo actor updates it, and readers never wait for the actor, which may be busy
/// applying a large batch.
#[derive(Debug, Default)]
pub struct Incoming {
    /// Documents the peers of the open sessions hold and this node lacked when they
    /// reconciled.
    expected: std::sync::atomic::AtomicU64,
    /// Of those, how many are stored.
    stored: std::sync::atomic::AtomicU64,
}

impl Incoming {
    /// `(stored, expected)`; `(0, 0)` when nothing is arriving.
    pub fn snapshot(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.stored.load(Relaxed), self.expected.load(Relaxed))
    }

    fn expect(&self, more: usize) {
        self.expected
            .fetch_add(more as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn stored_one(&self) {
        self.stored
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A session ended, or everything it announced arrived: `left` will not come.
    fn settle(&self, left: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let expected = self.expected.load(Relaxed).saturating_sub(left as u64);
        if self.stored.load(Relaxed) >= expected {
            self.expected.store(0, Relaxed);
            self.stored.store(0, Relaxed);
        } else {
            self.expected.store(expected, Relaxed);
        }
    }
}

/// Compares a peer's known heads with ours; `None` when they differ and telling who
/// lacks what needs the document's `content`, which is not loaded.
fn compare_heads(
    ours: &[ChangeHash],
    content: Option<&Automerge>,
    theirs: &[ChangeHash],
) -> Option<(SyncState, Option<usize>)> {
    let mut ours = ours.to_vec();
    let mut theirs = theirs.to_vec();
    ours.sort_unstable();
    theirs.sort_unstable();
    if ours == theirs {
        return Some((SyncState::InSync, Some(0)));
    }
    let doc = content?;
    Some(
        if theirs
            .iter()
            .any(|h| doc.get_change_meta_by_hash(h).is_none())
        {
            (SyncState::WeLack, None)
        } else {
            match doc.get_changes_meta(&theirs).len() {
                0 => (SyncState::InSync, Some(0)),
                n => (SyncState::TheyLack, Some(n)),
            }
        },
    )
}

/// How long a peer has to complete `Hello` before its session is closed.
const HELLO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// Most queued changes applied in one pass (across documents).
const MAX_EDIT_BATCH: usize = 1024;

/// A queued edit and where to answer it.
type QueuedEdit = (EditFn, Reply<Vec<String>>);

/// A document's queued write (if its edits changed it) and its callers' answers, to send
/// once that write is durable.
type EditsSettled = (
    Option<Pending>,
    Vec<(Reply<Vec<String>>, Result<Vec<String>, NodeError>)>,
);

/// Edits taken from the queue in one pass, grouped by document, each document's in the
/// order they were queued (documents are independent, so only that order matters).
struct EditBatches {
    batches: Vec<(DocumentId, Vec<QueuedEdit>)>,
    /// Where each document's batch is in `batches`.
    position: HashMap<DocumentId, usize>,
    edits: usize,
}

impl EditBatches {
    fn new(doc: DocumentId, edit: EditFn, reply: Reply<Vec<String>>) -> Self {
        let mut batches = Self {
            batches: Vec::new(),
            position: HashMap::new(),
            edits: 0,
        };
        batches.push(doc, edit, reply);
        batches
    }

    fn push(&mut self, doc: DocumentId, edit: EditFn, reply: Reply<Vec<String>>) {
        let batches = &mut self.batches;
        let at = *self.position.entry(doc).or_insert_with(|| {
            batches.push((doc, Vec::new()));
            batches.len() - 1
        });
        self.batches[at].1.push((edit, reply));
        self.edits += 1;
    }

    /// Edits taken.
    fn len(&self) -> usize {
        self.edits
    }
}

/// Chunks smaller than this in total never trigger a compaction on their own.
const MIN_COMPACTION_BYTES: u64 = 256 * 1024;

/// Most documents saved for compaction at once. Each save works on a copy of its
/// document, so this bounds the extra memory as well as the threads.
const MAX_COMPACTIONS_IN_FLIGHT: usize = 2;

/// When a document was last compacted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Compaction {
    chunks_at: u64,
    bytes_since: u64,
    snapshot_len: u64,
}

/// A compaction launched by [`RepoActor::after_append`]: its document, the chunk count
/// its copy covers, and the state to restore if it fails.
pub(crate) struct CompactionTask {
    doc: DocumentId,
    through: u64,
    before: Compaction,
    /// The document's chunk numbering restarted while it was saved (it was stored anew):
    /// `through` no longer means the same chunks, so the snapshot is dropped.
    void: bool,
}

pub(crate) type Reply<T> = oneshot::Sender<Result<T, NodeError>>;

/// A change made by the embedding application, run inside a transaction.
pub type EditFn =
    Box<dyn FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), String> + Send>;

pub(crate) enum RepoCommand {
    Create {
        name: Option<String>,
        content: Option<Json>,
        reply: Reply<DocumentId>,
    },
    Get {
        doc: String,
        path: String,
        reply: Reply<Option<Json>>,
    },
    Set {
        doc: String,
        path: String,
        value: Json,
        reply: Reply<Vec<String>>,
    },
    Edit {
        doc: DocumentId,
        edit: EditFn,
        reply: Reply<Vec<String>>,
    },
    Read {
        doc: DocumentId,
        read: Box<dyn FnOnce(&Automerge) + Send>,
    },
    RecordDevice {
        device: Did,
        name: Option<String>,
        authority: Vec<String>,
        powerline: Vec<String>,
        reply: Reply<()>,
    },
    RevokeDevice {
        target: String,
        reply: Reply<Vec<String>>,
    },
    Devices {
        reply: Reply<Vec<DeviceEntry>>,
    },
    List {
        reply: Reply<Vec<DocInfo>>,
    },
    History {
        doc: String,
        reply: Reply<Vec<ChangeInfo>>,
    },
    Status {
        reply: Reply<Status>,
    },
    Share(crate::sharing::ShareCommand),
    Request(crate::requests::RequestCommand),
    RecordAsked {
        addr: Multiaddr,
        id: u64,
        doc: String,
        can: String,
        reply: Reply<()>,
    },
    Asked {
        reply: Reply<Vec<crate::requests::AskedRequest>>,
    },
    SettleAsked {
        addr: String,
        id: u64,
        state: String,
        reason: Option<String>,
        reply: Reply<()>,
    },
}

pub(crate) struct RepoActor {
    pub(crate) hub: SyncHub,
    pub(crate) store: StoreHandle,
    pub(crate) net: mpsc::Sender<NetCommand>,
    pub(crate) commands: mpsc::Receiver<RepoCommand>,
    pub(crate) net_events: mpsc::Receiver<NetEvent>,
    pub(crate) events: broadcast::Sender<DocEvent>,
    pub(crate) actor: ActorId,
    pub(crate) root: Did,
    pub(crate) device: Did,
    pub(crate) index: DocumentId,
    pub(crate) chunks: HashMap<DocumentId, u64>,
    /// Per document: (chunk count at the last compaction, chunk bytes since, snapshot size).
    pub(crate) compaction: HashMap<DocumentId, Compaction>,
    pub(crate) compact_after: u64,
    /// Snapshots being saved off the actor (at most [`MAX_COMPACTIONS_IN_FLIGHT`]); the
    /// actor queues each to the store when it is done (see `compaction_ended`).
    pub(crate) compacting: tokio::task::JoinSet<Vec<u8>>,
    /// What each running compaction is for, by task.
    pub(crate) compaction_tasks: HashMap<tokio::task::Id, CompactionTask>,
    /// Per peer, the heads it last reported for each document, taken when its sessions
    /// ended (since this node started): what `status` knows of offline peers' copies.
    pub(crate) last_heads: HashMap<Did, HashMap<DocumentId, Vec<ChangeHash>>>,
    /// New documents arriving, for progress displays (shared with the handle).
    pub(crate) incoming: std::sync::Arc<Incoming>,
    /// Per session, how many announced new documents have not arrived yet.
    pub(crate) receiving: HashMap<SessionId, usize>,
    pub(crate) listen: Vec<Multiaddr>,
    pub(crate) sessions: HashMap<SessionId, Did>,
    pub(crate) quarantined: Vec<(DocumentId, String)>,
    pub(crate) listen_tx: watch::Sender<Vec<Multiaddr>>,
    /// What to give others instead of `listen` (`Config::announce`).
    pub(crate) announce: Option<Vec<Multiaddr>>,
    pub(crate) traffic: std::sync::Arc<crate::net::Traffic>,
    pub(crate) identity: std::sync::Arc<crate::identity::DeviceIdentity>,
    /// The registry changed: recompute the revocation set before the next input.
    pub(crate) revocations_dirty: bool,
    /// Sessions still waiting for the peer's `Hello`, and since when.
    pub(crate) awaiting_hello: HashMap<SessionId, std::time::Instant>,
    /// The latest refused changes, at most [`REFUSALS_KEPT`].
    pub(crate) refused: std::collections::VecDeque<RefusedEntry>,
    /// The latest refused peers, at most [`REFUSALS_KEPT`].
    pub(crate) refused_peers: std::collections::VecDeque<RefusedPeer>,
    /// The latest time seen: the clock never reads earlier (see [`RepoActor::now`]).
    pub(crate) clock_floor: u64,
    /// The floor last written to the store.
    pub(crate) clock_floor_stored: u64,
    /// The revoked delegations' CIDs, as text.
    pub(crate) revoked: std::collections::BTreeSet<String>,
    /// The devices whose verified revocations are in the registry.
    pub(crate) revoked_devices: std::collections::BTreeSet<Did>,
    /// Access requests from outside the person.
    pub(crate) requests: crate::requests::RequestQueue,
    /// Source documents → the views served for path-limited grants on them.
    pub(crate) views: crate::views::Views,
    /// Sources whose views must be brought up to date.
    pub(crate) stale_views: std::collections::BTreeSet<DocumentId>,
    /// Documents the hub asked to load ([`Effect::Load`]), read at the top of the next
    /// turn of the actor's loop, a batch at a time.
    pub(crate) to_load: std::collections::VecDeque<DocumentId>,
    /// Revocations whose device this node has checked it vouches for (see
    /// `refresh_registry`): once per revocation per run, as it loads every document.
    pub(crate) vouch_checked: std::collections::BTreeSet<String>,
    /// When to hand freed memory back (see `memory::Trimmer`).
    pub(crate) trimmer: crate::memory::Trimmer,
    /// The documents' use mark at each of the last sweeps, oldest first: what was not used
    /// since the oldest is idle.
    pub(crate) use_marks: std::collections::VecDeque<u64>,
}

/// Most frames handled as one batch, and most bytes (a frame can be 16 MiB).
const MAX_FRAME_BATCH: usize = 64;
/// Most documents in memory at once, checked between inputs (least recently used go
/// first; the index document always stays). The rest are known by their heads only.
const MAX_LOADED_DOCS: usize = 1024;
/// Most documents left loaded while serving a burst of loads.
const BURST_LOADED_DOCS: usize = 64;
/// A document not used for this many sweeps (about 30 s) is unloaded.
const IDLE_SWEEPS: usize = 6;
/// Most documents read from the store in one request.
const LOAD_BATCH: usize = 32;
const MAX_FRAME_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// How far the clock floor may run ahead of the stored one before it is written again.
const CLOCK_FLOOR_STEP: u64 = 60;

/// The id of a person's index document (document names and metadata), the same on all of
/// their devices.
pub fn index_id(root: &Did) -> DocumentId {
    let digest = Sha256::new()
        .chain_update(b"membrane/index/v1")
        .chain_update(root.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    DocumentId::from_bytes(bytes)
}

/// The actor id for this device's changes: its public key, then 4 random bytes so a restart
/// never reuses a sequence number that a crash lost.
pub(crate) fn actor_for(device: &Did) -> ActorId {
    let mut bytes = device.as_bytes().to_vec();
    bytes.extend(random::bytes::<4>().unwrap_or([0; 4]));
    ActorId::from(bytes)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    // Called for every head of every change acknowledged: no formatting machinery.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

fn heads_hex(doc: &Automerge) -> Vec<String> {
    doc.get_heads().iter().map(|h| hex(&h.0)).collect()
}

impl RepoActor {
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        // The index (names, registry, grants) is read on almost every call: it stays loaded.
        self.ensure_loaded(&[self.index]).await;
        self.refresh_registry().await;
        let mut sweep = tokio::time::interval(HELLO_TIMEOUT / 4);
        loop {
            if !self.stale_views.is_empty() {
                self.refresh_views().await;
            }
            self.serve_loads().await;
            self.unload_idle();
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                Some(ended) = self.compacting.join_next_with_id(),
                    if !self.compacting.is_empty() => self.compaction_ended(ended).await,
                _ = sweep.tick() => {
                    self.unload_unused();
                    self.close_silent_sessions().await;
                    let now = self.now();
                    let effects = self.hub.expire(now);
                    self.carry_out(effects).await;
                }
                Some(event) = self.net_events.recv() => match event {
                    NetEvent::Frame { session, frame } => {
                        // Frames already waiting are handled as one batch: changes pushed
                        // to a document apply together, so a busy node catches up.
                        let mut bytes = frame.len();
                        let mut frames = vec![Input::Received { session, frame }];
                        let mut next = None;
                        while frames.len() < MAX_FRAME_BATCH && bytes < MAX_FRAME_BATCH_BYTES {
                            match self.net_events.try_recv() {
                                Ok(NetEvent::Frame { session, frame }) => {
                                    bytes += frame.len();
                                    frames.push(Input::Received { session, frame });
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.hub_inputs(frames).await;
                        if let Some(event) = next {
                            self.on_net(event).await;
                        }
                    }
                    other => self.on_net(other).await,
                },
                command = self.commands.recv() => match command {
                    Some(RepoCommand::Edit { doc, edit, reply }) => {
                        // Edits queued back to back are applied in one pass, grouped by
                        // document in arrival order: exporting changes walks a document,
                        // so one walk (and one chunk) per document, and one task answers
                        // the whole pass.
                        let mut batches = EditBatches::new(doc, edit, reply);
                        let mut next = None;
                        while batches.len() < MAX_EDIT_BATCH {
                            match self.commands.try_recv() {
                                Ok(RepoCommand::Edit { doc, edit, reply }) => {
                                    batches.push(doc, edit, reply);
                                }
                                Ok(other) => {
                                    next = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        self.trimmer.worked(batches.len());
                        self.edit_batches(batches).await;
                        if let Some(command) = next {
                            self.trimmer.worked(1);
                            self.on_command(command).await;
                        }
                    }
                    Some(command) => {
                        self.trimmer.worked(1);
                        self.on_command(command).await;
                    }
                    None => break,
                },
            }
        }
        // A snapshot being saved is finished and queued, so a clean stop leaves the store
        // compacted as far as the node got (at most two saves, each bounded by one
        // document's size).
        while let Some(ended) = self.compacting.join_next_with_id().await {
            self.compaction_ended(ended).await;
        }
    }

    /// The time to judge grants by: the wall clock, but never earlier than the latest time
    /// this node has seen, so a clock turned back revives no expired grant. The floor is
    /// stored every [`CLOCK_FLOOR_STEP`] seconds.
    pub(crate) fn now(&mut self) -> u64 {
        let wall = time::now();
        if wall > self.clock_floor {
            self.clock_floor = wall;
            if wall >= self.clock_floor_stored + CLOCK_FLOOR_STEP {
                self.clock_floor_stored = wall;
                let store = self.store.clone();
                tokio::spawn(async move {
                    if let Ok(pending) = store.enqueue_clock_floor(wall).await {
                        let _ = pending.durable().await;
                    }
                });
            }
        }
        self.clock_floor
    }

    /// [`Self::now`] without advancing the floor.
    pub(crate) fn now_read_only(&self) -> u64 {
        time::now().max(self.clock_floor)
    }

    async fn hub_input(&mut self, input: Input) {
        self.hub_inputs(vec![input]).await;
    }

    /// Hands the hub several inputs as one batch (see `SyncHub::handle_all`).
    async fn hub_inputs(&mut self, inputs: Vec<Input>) {
        self.trimmer.worked(inputs.len());
        let now = self.now();
        let effects = self.hub.handle_all(now, inputs);
        self.carry_out(effects).await;
        if self.revocations_dirty {
            Box::pin(self.refresh_registry()).await;
        }
        if !self.stale_views.is_empty() {
            Box::pin(self.refresh_views()).await;
        }
    }

    async fn on_net(&mut self, event: NetEvent) {
        match event {
            NetEvent::Opened {
                session,
                peer,
                role,
            } => {
                let persisted = match self.store.sync_states(Some(&peer)).await {
                    Ok(mut states) => states.remove(peer.as_bytes()).unwrap_or_default(),
                    Err(error) => {
                        tracing::warn!(%error, "could not read the sync states; reconciling without");
                        Vec::new()
                    }
                };
                self.sessions.insert(session, peer);
                self.awaiting_hello
                    .insert(session, std::time::Instant::now());
                self.hub_input(Input::Opened {
                    session,
                    peer,
                    role,
                    persisted,
                })
                .await;
            }
            NetEvent::Frame { session, frame } => {
                self.hub_input(Input::Received { session, frame }).await;
            }
            NetEvent::Closed { session, reason } => {
                self.awaiting_hello.remove(&session);
                if let Some(left) = self.receiving.remove(&session) {
                    self.incoming.settle(left);
                }
                if let Some(peer) = self.sessions.get(&session) {
                    let heads = self.hub.session_heads(session);
                    if !heads.is_empty() {
                        self.last_heads.entry(*peer).or_default().extend(heads);
                    }
                }
                if let Some(peer) = self.sessions.remove(&session) {
                    tracing::info!(peer = %peer.fmt_short(), %reason, "session closed");
                }
                self.hub_input(Input::Closed { session }).await;
            }
            NetEvent::Listening(addr) => {
                self.listen.push(addr);
                let _ = self.listen_tx.send(self.listen.clone());
            }
            NetEvent::PeerAddresses { peer, addrs } => {
                // Remember how to reach the person's own devices.
                if self.hub.peers().iter().any(|(_, p)| *p == peer) {
                    let _ = self.net.send(NetCommand::Remember(addrs)).await;
                }
            }
        }
    }

    async fn carry_out(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Send { session, frame } => {
                    let _ = self.net.send(NetCommand::Send { session, frame }).await;
                }
                Effect::Close { session, reason } => {
                    let peer = self.sessions.remove(&session);
                    let mut repeated = false;
                    if let (CloseReason::Unauthorized(why), Some(peer)) = (&reason, peer) {
                        repeated = !self.note_refused_peer(peer, why.clone());
                    }
                    if repeated {
                        // A refused peer that keeps redialing would flood the log.
                        tracing::debug!(peer = ?peer.map(|p| p.to_string()), %reason, "closing session");
                    } else {
                        tracing::warn!(peer = ?peer.map(|p| p.to_string()), %reason, "closing session");
                    }
                    let disconnect = matches!(reason, CloseReason::Unauthorized(_));
                    let _ = self
                        .net
                        .send(NetCommand::Close {
                            session,
                            disconnect,
                        })
                        .await;
                }
                Effect::Authorized { peer, session } => {
                    self.awaiting_hello.remove(&session);
                    tracing::info!(peer = %peer, "device connected");
                    let now = time::now();
                    let record = DeviceRecord {
                        name: None,
                        first_seen: now,
                        last_seen: now,
                    };
                    let store = self.store.clone();
                    tokio::spawn(async move {
                        let first_seen = store
                            .devices()
                            .await
                            .ok()
                            .and_then(|all| all.into_iter().find(|(d, _)| *d == peer.to_string()))
                            .map_or(now, |(_, r)| r.first_seen);
                        let _ = store
                            .put_device(
                                &peer,
                                DeviceRecord {
                                    first_seen,
                                    ..record
                                },
                            )
                            .await;
                    });
                }
                Effect::Reconciled {
                    session,
                    differing,
                    incoming,
                } => {
                    tracing::debug!(?session, differing, incoming, "reconciled");
                    if incoming > 0 {
                        self.incoming.expect(incoming);
                        *self.receiving.entry(session).or_default() += incoming;
                    }
                    self.traffic
                        .reconciled
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Effect::Load { doc } => self.to_load.push_back(doc),
                Effect::StoreChanges { doc, data, heads } => {
                    let len = data.len();
                    if let Ok(pending) = self.store.enqueue_append(doc, data, heads).await {
                        watch_failure(pending, doc);
                        self.after_append(doc, len);
                    }
                }
                Effect::StoreSnapshot {
                    doc,
                    data,
                    heads,
                    from,
                } => {
                    let meta = DocMeta {
                        name: None,
                        created: time::now(),
                    };
                    if let Ok(pending) = self.store.enqueue_create_doc(doc, meta, data, heads).await
                    {
                        watch_failure(pending, doc);
                        self.chunks_restart(doc);
                    }
                    self.count_incoming(from);
                }
                Effect::DocChanged { doc, heads } => {
                    if doc == self.index {
                        self.revocations_dirty = true;
                    }
                    if self.views.contains_key(&doc) {
                        self.stale_views.insert(doc);
                    }
                    let _ = self.events.send(DocEvent {
                        doc: doc.to_string(),
                        heads: heads.iter().map(|h| hex(&h.0)).collect(),
                        by: "peer".into(),
                    });
                }
                Effect::SaveSyncState { peer, doc, state } => {
                    if let Ok(pending) = self.store.enqueue_sync_state(&peer, doc, state).await {
                        watch_failure(pending, doc);
                    }
                }
                Effect::Access {
                    peer,
                    doc,
                    grant,
                    kind,
                    bytes,
                } => {
                    let event = crate::store::access_log::AccessEvent {
                        at: self.now_read_only(),
                        peer: peer.to_string(),
                        grant: grant.to_string(),
                        doc: doc.to_string(),
                        kind: match kind {
                            AccessKind::Read => "read",
                            AccessKind::Write => "write",
                        }
                        .into(),
                        bytes,
                    };
                    if let Err(error) = self.store.enqueue_access(event).await {
                        tracing::error!(%error, "could not log an access");
                    }
                }
                Effect::GrantRefused { peer, reason } => {
                    if self.note_refused_peer(peer, format!("grant refused: {reason}")) {
                        tracing::warn!(%peer, %reason, "refused a grant");
                    } else {
                        tracing::debug!(%peer, %reason, "refused a grant");
                    }
                }
                Effect::Dropped { peer, doc, reason } => {
                    tracing::warn!(%peer, %doc, %reason, "dropped a message");
                }
                Effect::Refused { peer, doc, changes } => {
                    for change in changes {
                        tracing::warn!(
                            %peer, %doc, actor = %change.actor, seq = change.seq,
                            reason = %change.reason, "refused a change"
                        );
                        if self.refused.len() == REFUSALS_KEPT {
                            self.refused.pop_front();
                        }
                        self.refused.push_back(RefusedEntry {
                            at: time::now(),
                            from: peer.to_string(),
                            doc: doc.to_string(),
                            change: hex(&change.hash.0),
                            actor: change.actor.to_hex_string(),
                            seq: change.seq,
                            reason: change.reason.to_string(),
                        });
                    }
                }
                Effect::RevocationsLearned { peer, records } => {
                    if let Err(error) = Box::pin(self.record_learned(peer, records)).await {
                        tracing::error!(%error, "could not record revocations learned");
                    }
                }
                Effect::DocumentPoisoned { doc } => {
                    tracing::error!(%doc, "document damaged in memory by a peer's message; reloading");
                    if let Ok(Some(reloaded)) = self.store.read_doc(doc).await {
                        self.hub.docs_mut().insert(doc, reloaded);
                    }
                }
            }
        }
    }

    /// Records a refusal; returns whether it is news: not the same as this peer's previous
    /// refusal within [`REFUSAL_QUIET`] (then it is worth a warning in the log).
    fn note_refused_peer(&mut self, peer: Did, reason: String) -> bool {
        let now = time::now();
        let text = peer.to_string();
        let news = !self
            .refused_peers
            .iter()
            .rev()
            .find(|r| r.peer == text)
            .is_some_and(|last| {
                last.reason == reason && now.saturating_sub(last.at) < REFUSAL_QUIET
            });
        if self.refused_peers.len() == REFUSALS_KEPT {
            self.refused_peers.pop_front();
        }
        self.refused_peers.push_back(RefusedPeer {
            at: now,
            peer: text,
            reason,
        });
        news
    }

    /// Closes sessions whose peer has not completed `Hello` within [`HELLO_TIMEOUT`]: a
    /// silent peer must not hold a session (and a connection slot) open.
    async fn close_silent_sessions(&mut self) {
        let silent: Vec<SessionId> = self
            .awaiting_hello
            .iter()
            .filter(|(_, since)| since.elapsed() > HELLO_TIMEOUT)
            .map(|(session, _)| *session)
            .collect();
        for session in silent {
            self.awaiting_hello.remove(&session);
            let peer = self.sessions.remove(&session);
            tracing::warn!(peer = ?peer.map(|p| p.to_string()), "no Hello in time; closing");
            self.hub_input(Input::Closed { session }).await;
            let _ = self
                .net
                .send(NetCommand::Close {
                    session,
                    disconnect: true,
                })
                .await;
        }
    }

    /// Counts a chunk and compacts the document when its chunks outweigh its snapshot (or
    /// grow too many), so compaction costs stay proportional to the data written.
    fn after_append(&mut self, doc: DocumentId, chunk_len: usize) {
        let count = self.chunks.entry(doc).or_insert(0);
        *count += 1;
        let through = *count;
        let state = self.compaction.entry(doc).or_default();
        state.bytes_since += chunk_len as u64;
        // Saturating: a failed compaction puts back an older count (see `compaction_ended`).
        let chunks_since = through.saturating_sub(state.chunks_at);
        let heavy = state.bytes_since > state.snapshot_len.max(MIN_COMPACTION_BYTES);
        if !heavy && chunks_since < self.compact_after {
            return;
        }
        // One compaction per document at a time: the store must receive a document's
        // compactions in the order of the chunk counts they cover, or an older snapshot
        // could replace a newer one after the newer dropped its chunks.
        if self.compacting.len() >= MAX_COMPACTIONS_IN_FLIGHT
            || self.compaction_tasks.values().any(|task| task.doc == doc)
        {
            // Tried again at the document's next chunk.
            return;
        }
        // Saving a large document takes tens of milliseconds or more; the actor only
        // copies it (a third of that) and goes on serving while a blocking thread saves.
        let Some(copy) = self.hub.docs().get(&doc).cloned() else {
            return;
        };
        // Counted as done now; undone in `compaction_ended` if it fails.
        let before = *state;
        *state = Compaction {
            chunks_at: through,
            bytes_since: 0,
            snapshot_len: before.snapshot_len,
        };
        let task = self.compacting.spawn_blocking(move || copy.save());
        self.compaction_tasks.insert(
            task.id(),
            CompactionTask {
                doc,
                through,
                before,
                void: false,
            },
        );
    }

    /// Queues a finished compaction's snapshot to the store, from the actor: a
    /// document's compactions and chunk restarts thus reach the store in the order the
    /// actor decided them. Chunks numbered from `through` on stay (the copy lacks them).
    /// On failure the chunks it would have dropped count again.
    async fn compaction_ended(
        &mut self,
        ended: Result<(tokio::task::Id, Vec<u8>), tokio::task::JoinError>,
    ) {
        let (id, snapshot) = match ended {
            Ok((id, snapshot)) => (id, Some(snapshot)),
            Err(error) => (error.id(), None),
        };
        let Some(task) = self.compaction_tasks.remove(&id) else {
            return;
        };
        if task.void {
            return;
        }
        let doc = task.doc;
        let queued = match snapshot {
            Some(snapshot) => {
                let len = snapshot.len() as u64;
                match self
                    .store
                    .enqueue_compact(doc, snapshot, task.through)
                    .await
                {
                    Ok(pending) => {
                        tokio::spawn(async move {
                            if let Err(error) = pending.durable().await {
                                tracing::warn!(%doc, %error, "could not store a compaction; the chunks stay");
                            }
                        });
                        Some(len)
                    }
                    Err(_) => None,
                }
            }
            None => None,
        };
        let state = self.compaction.entry(doc).or_default();
        match queued {
            Some(len) => state.snapshot_len = len,
            None => {
                tracing::warn!(%doc, "could not compact the document; its chunks stay");
                state.chunks_at = task.before.chunks_at;
                state.bytes_since += task.before.bytes_since;
            }
        }
    }

    /// A document was stored anew (a snapshot, no chunks): its chunk numbering restarts
    /// at zero, and a compaction still saving it is void.
    fn chunks_restart(&mut self, doc: DocumentId) {
        self.chunks.insert(doc, 0);
        self.compaction.insert(doc, Compaction::default());
        for task in self.compaction_tasks.values_mut() {
            if task.doc == doc {
                task.void = true;
            }
        }
    }

    /// Reads the documents the hub asked for, a batch at a time, unloading between
    /// batches so memory stays bounded however many a peer's reconciliation touches.
    async fn serve_loads(&mut self) {
        // A burst (a device fetching everything) keeps only a few documents loaded at a
        // time: each is needed for a moment, and the peak would stay resident.
        let burst = self.to_load.len() > LOAD_BATCH;
        while !self.to_load.is_empty() {
            let take = self.to_load.len().min(LOAD_BATCH);
            let batch: Vec<DocumentId> = self.to_load.drain(..take).collect();
            self.load(batch).await;
            self.unload_beyond(if burst {
                BURST_LOADED_DOCS
            } else {
                MAX_LOADED_DOCS
            });
        }
    }

    /// Unloads the least recently used documents beyond [`MAX_LOADED_DOCS`]. Called only
    /// between inputs: every change in memory has been queued to the store by then, and a
    /// store read sees every queued write.
    fn unload_idle(&mut self) {
        self.unload_beyond(MAX_LOADED_DOCS);
    }

    /// Unloads the least recently used documents until at most `keep` are loaded (the
    /// index stays), under the same rule as [`Self::unload_idle`].
    fn unload_beyond(&mut self, keep: usize) {
        let index = self.index;
        let unloaded = self.hub.docs_mut().unload_beyond(keep, |id| *id == index);
        self.trimmer.unloaded(unloaded);
    }

    /// At a sweep: unloads the documents not used for [`IDLE_SWEEPS`] sweeps, and hands
    /// freed memory back when the trimmer says so.
    fn unload_unused(&mut self) {
        self.use_marks.push_back(self.hub.docs().use_mark());
        if self.use_marks.len() > IDLE_SWEEPS
            && let Some(mark) = self.use_marks.pop_front()
        {
            let index = self.index;
            let unloaded = self
                .hub
                .docs_mut()
                .unload_unused_since(mark, |id| *id == index);
            self.trimmer.unloaded(unloaded);
        }
        if self.trimmer.sweep() {
            crate::memory::release_freed();
        }
    }

    /// Makes sure held documents are in memory, reading those that are not, and marks them
    /// used. Loads the hub asks for meanwhile wait for the next turn of the loop, so
    /// nothing is unloaded under the caller.
    pub(crate) async fn ensure_loaded(&mut self, ids: &[DocumentId]) {
        let missing: Vec<DocumentId> = ids
            .iter()
            .filter(|id| self.hub.docs().contains(id) && !self.hub.docs().is_loaded(id))
            .copied()
            .collect();
        for batch in missing.chunks(LOAD_BATCH) {
            self.load(batch.to_vec()).await;
        }
        for id in ids {
            self.hub.docs_mut().touch(id);
        }
    }

    /// Reads documents from the store and hands them to the hub, which runs the work
    /// that waited for them. One that does not load is quarantined and forgotten here.
    async fn load(&mut self, ids: Vec<DocumentId>) {
        let ids: Vec<DocumentId> = ids
            .into_iter()
            .filter(|id| !self.hub.docs().is_loaded(id) || self.hub.loading().any(|l| l == id))
            .collect();
        if ids.is_empty() {
            return;
        }
        let read = match self.store.read_docs(ids.clone()).await {
            Ok(read) => read,
            Err(error) => {
                tracing::error!(%error, "cannot read documents from the store");
                ids.into_iter()
                    .map(|id| ReadDoc {
                        id,
                        content: Err(error.to_string()),
                    })
                    .collect()
            }
        };
        let mut inputs = Vec::with_capacity(read.len());
        for ReadDoc { id, content } in read {
            let content = match content {
                Ok(doc) => Some(Box::new(doc)),
                Err(reason) => {
                    tracing::error!(doc = %id, %reason, "document not available; not served");
                    if !self.quarantined.iter().any(|(q, _)| *q == id) {
                        self.quarantined.push((id, reason));
                    }
                    None
                }
            };
            inputs.push(Input::Loaded { doc: id, content });
        }
        let now = self.now();
        let effects = self.hub.handle_all(now, inputs);
        Box::pin(self.carry_out(effects)).await;
    }

    /// What this device holds of `device`'s changes across every document (its cutoff,
    /// were it revoked now), loading documents a batch at a time.
    async fn cutoff_of_all(&mut self, device: &Did) -> Cutoff {
        let ids: Vec<DocumentId> = self.hub.docs().ids().copied().collect();
        let mut cutoff = Cutoff::new();
        self.visit_loaded(&ids, |this, id| {
            if let Some(doc) = this.hub.docs().get(id) {
                let actors = device_seqs(device, doc);
                if !actors.is_empty() {
                    cutoff.insert(*id, actors);
                }
            }
        })
        .await;
        cutoff
    }

    /// Calls `visit` on each of `ids` with its content loaded, reading them a batch at a
    /// time and unloading afterwards what this read, so memory stays bounded however many
    /// there are. `visit` finds the content with `this.hub.docs().get(id)`.
    async fn visit_loaded(
        &mut self,
        ids: &[DocumentId],
        mut visit: impl FnMut(&Self, &DocumentId) + Send,
    ) {
        for batch in ids.chunks(LOAD_BATCH) {
            let was_loaded: Vec<bool> = batch
                .iter()
                .map(|id| self.hub.docs().is_loaded(id))
                .collect();
            self.ensure_loaded(batch).await;
            for (id, was_loaded) in batch.iter().zip(was_loaded) {
                visit(self, id);
                // Only what this loaded goes back: callers may rely on the rest.
                if !was_loaded && !self.hub.loading().any(|l| l == id) {
                    self.hub.docs_mut().unload(id);
                }
            }
        }
    }

    pub(crate) fn resolve(&self, text: &str) -> Result<DocumentId, NodeError> {
        if let Ok(id) = text.parse::<DocumentId>()
            && self.hub.docs().contains(&id)
        {
            return Ok(id);
        }
        let Some(index) = self.hub.docs().get(&self.index) else {
            return Err(NodeError::NoSuchDocument(text.to_owned()));
        };
        let mut found = Vec::new();
        for key in index.keys(ROOT) {
            if index_name(index, &key).as_deref() == Some(text)
                && let Ok(id) = key.parse::<DocumentId>()
            {
                found.push(id);
            }
        }
        match found.as_slice() {
            [one] if self.hub.docs().contains(one) => Ok(*one),
            [] | [_] => Err(NodeError::NoSuchDocument(text.to_owned())),
            _ => Err(NodeError::Ambiguous(text.to_owned())),
        }
    }

    pub(crate) fn name_of(&self, id: &DocumentId) -> Option<String> {
        index_name(self.hub.docs().get(&self.index)?, &id.to_string())
    }

    /// Applies a local change, queues it durably, and answers once it is durable.
    pub(crate) async fn change(
        &mut self,
        doc: DocumentId,
        edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>) -> Result<(), NodeError>,
    ) -> Result<Option<Pending>, NodeError> {
        if self.hub.borrowed_read_only(&doc) {
            return Err(NodeError::ReadOnly(doc.to_string()));
        }
        if self.views.contains_key(&doc) {
            self.stale_views.insert(doc);
        }
        self.ensure_loaded(&[doc]).await;
        let actor = self.actor.clone();
        let outcome = self
            .hub
            .docs_mut()
            .update(&doc, |d| {
                // Setting the actor costs a lookup; do it only when it changes.
                if d.get_actor() != &actor {
                    d.set_actor(actor);
                }
                let before = d.get_heads();
                let mut tx = d.transaction();
                match edit(&mut tx) {
                    Ok(()) => {
                        tx.commit();
                        let after = d.get_heads();
                        // One local change: its own bytes are a chunk `load_incremental`
                        // takes, and far cheaper to get than `save_after`.
                        Ok((after != before).then(|| {
                            d.get_last_local_change()
                                .map(|change| change.raw_bytes().to_vec())
                                .unwrap_or_else(|| d.save_after(&before))
                        }))
                    }
                    Err(error) => {
                        tx.rollback();
                        Err(error)
                    }
                }
            })
            .ok_or_else(|| NodeError::NoSuchDocument(doc.to_string()))?;
        let Some(chunk) = outcome? else {
            return Ok(None);
        };
        let len = chunk.len();
        let heads = self.hub.docs().heads(&doc).unwrap_or_default().to_vec();
        let pending = self.store.enqueue_append(doc, chunk.clone(), heads).await?;
        self.after_append(doc, len);
        let effects = self.hub.handle(
            time::now(),
            Input::LocalChange {
                doc,
                changes: chunk,
            },
        );
        self.carry_out(effects).await;
        if let Some(d) = self.hub.docs().get(&doc) {
            let _ = self.events.send(DocEvent {
                doc: doc.to_string(),
                heads: heads_hex(d),
                by: "local".into(),
            });
        }
        Ok(Some(pending))
    }

    /// Applies a pass of queued edits (see [`EditBatches`]) and answers each caller once
    /// its document's chunk is durable.
    async fn edit_batches(&mut self, batches: EditBatches) {
        let mut settled = Vec::with_capacity(batches.batches.len());
        let mut batches = batches.batches.into_iter().peekable();
        while batches.peek().is_some() {
            // A pass may touch up to `MAX_EDIT_BATCH` documents: load them a batch at a
            // time, and unload between batches (each document's changes are queued to the
            // store by then), so the pass keeps the bound on loaded documents.
            let group: Vec<_> = batches.by_ref().take(LOAD_BATCH).collect();
            let docs: Vec<DocumentId> = group.iter().map(|(doc, _)| *doc).collect();
            self.ensure_loaded(&docs).await;
            for (doc, batch) in group {
                if let Some(done) = self.edit_batch(doc, batch).await {
                    settled.push(done);
                }
            }
            if batches.peek().is_some() {
                self.unload_beyond(MAX_LOADED_DOCS);
            }
        }
        tokio::spawn(async move {
            for (pending, answers) in settled {
                let durable = match pending {
                    Some(p) => p.durable().await.map(drop),
                    None => Ok(()),
                };
                for (reply, answer) in answers {
                    let outcome = match (&durable, answer) {
                        (Err(error), _) => Err(NodeError::Store(error.clone())),
                        (Ok(()), answer) => answer,
                    };
                    let _ = reply.send(outcome);
                }
            }
        });
    }

    /// Applies queued changes to one document, each in its own transaction, and queues
    /// them as one chunk. Returns the chunk's pending write and each caller's answer, to
    /// be sent once that write is durable; callers already answered (the document is
    /// missing or read-only, or the store refused the chunk) are not returned.
    async fn edit_batch(
        &mut self,
        doc: DocumentId,
        batch: Vec<QueuedEdit>,
    ) -> Option<EditsSettled> {
        if self.views.contains_key(&doc) {
            self.stale_views.insert(doc);
        }
        if self.hub.borrowed_read_only(&doc) {
            for (_, reply) in batch {
                let _ = reply.send(Err(NodeError::ReadOnly(doc.to_string())));
            }
            return None;
        }
        // Usually loaded already, with the pass's other documents.
        self.ensure_loaded(&[doc]).await;
        let actor = self.actor.clone();
        let Some(before) = self.hub.docs().heads(&doc).map(<[_]>::to_vec) else {
            for (_, reply) in batch {
                let _ = reply.send(Err(NodeError::NoSuchDocument(doc.to_string())));
            }
            return None;
        };
        let mut answers = Vec::with_capacity(batch.len());
        let chunk = self
            .hub
            .docs_mut()
            .update(&doc, |d| {
                if d.get_actor() != &actor {
                    d.set_actor(actor);
                }
                for (edit, reply) in batch {
                    let mut tx = d.transaction();
                    match edit(&mut tx) {
                        Ok(()) => {
                            tx.commit();
                            answers.push((reply, Ok(heads_hex(d))));
                        }
                        Err(error) => {
                            tx.rollback();
                            answers.push((reply, Err(NodeError::Invalid(error))));
                        }
                    }
                }
                (d.get_heads() != before).then(|| d.save_after(&before))
            })
            .flatten();
        let pending = match chunk {
            Some(chunk) => {
                let len = chunk.len();
                let heads = self.hub.docs().heads(&doc).unwrap_or_default().to_vec();
                match self.store.enqueue_append(doc, chunk.clone(), heads).await {
                    Ok(pending) => {
                        self.after_append(doc, len);
                        let effects = self.hub.handle(
                            time::now(),
                            Input::LocalChange {
                                doc,
                                changes: chunk,
                            },
                        );
                        self.carry_out(effects).await;
                        if let Some(d) = self.hub.docs().get(&doc) {
                            let _ = self.events.send(DocEvent {
                                doc: doc.to_string(),
                                heads: heads_hex(d),
                                by: "local".into(),
                            });
                        }
                        Some(pending)
                    }
                    Err(error) => {
                        for (reply, _) in answers {
                            let _ = reply.send(Err(error.clone().into()));
                        }
                        return None;
                    }
                }
            }
            None => None,
        };
        Some((pending, answers))
    }

    pub(crate) async fn ensure_index(&mut self) -> Result<Option<Pending>, NodeError> {
        if self.hub.docs().contains(&self.index) {
            return Ok(None);
        }
        let doc = Automerge::new().with_actor(self.actor.clone());
        let pending = self
            .store
            .enqueue_create_doc(
                self.index,
                DocMeta {
                    name: None,
                    created: time::now(),
                },
                doc.save(),
                doc.get_heads(),
            )
            .await?;
        self.chunks_restart(self.index);
        self.hub.docs_mut().insert(self.index, doc);
        Ok(Some(pending))
    }

    async fn create(
        &mut self,
        name: Option<String>,
        content: Option<Json>,
    ) -> Result<(DocumentId, Vec<Pending>), NodeError> {
        let id =
            DocumentId::from_bytes(random::bytes().map_err(|e| NodeError::Invalid(e.to_string()))?);
        let pending = self.create_with_id(id, name, content, json!({})).await?;
        Ok((id, pending))
    }

    /// Creates document `id`, recording it in the index with its name and `extra` fields.
    pub(crate) async fn create_with_id(
        &mut self,
        id: DocumentId,
        name: Option<String>,
        content: Option<Json>,
        extra: Json,
    ) -> Result<Vec<Pending>, NodeError> {
        if let Some(content) = &content
            && !content.is_object()
        {
            return Err(NodeError::Invalid(
                "a document's content is a JSON object".into(),
            ));
        }
        let mut doc = Automerge::new().with_actor(self.actor.clone());
        if let Some(content) = &content {
            let mut tx = doc.transaction();
            json::set(&mut tx, "/", content)?;
            tx.commit();
        }
        let now = time::now();
        let mut pending = Vec::new();
        let saved = doc.save();
        pending.push(
            self.store
                .enqueue_create_doc(
                    id,
                    DocMeta {
                        name: name.clone(),
                        created: now,
                    },
                    saved.clone(),
                    doc.get_heads(),
                )
                .await?,
        );
        self.chunks_restart(id);
        self.hub.docs_mut().insert(id, doc);
        if let Some(p) = self.ensure_index().await? {
            pending.push(p);
        }
        let mut entry = json!({ "name": name, "created": now });
        if let (Some(entry), Some(extra)) = (entry.as_object_mut(), extra.as_object()) {
            entry.extend(extra.clone());
        }
        let key = id.to_string();
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(
                    tx,
                    &format!("/{}", key.replace('~', "~0").replace('/', "~1")),
                    &entry,
                )?;
                Ok(())
            })
            .await?
        {
            pending.push(p);
        }
        let effects = self.hub.handle(
            now,
            Input::LocalChange {
                doc: id,
                changes: saved,
            },
        );
        self.carry_out(effects).await;
        Ok(pending)
    }

    async fn on_command(&mut self, command: RepoCommand) {
        match command {
            RepoCommand::Create {
                name,
                content,
                reply,
            } => {
                let result = self.create(name, content).await;
                reply_when_durable(result, reply);
            }
            RepoCommand::Get { doc, path, reply } => {
                let result = match self.resolve(&doc) {
                    Ok(id) => {
                        self.ensure_loaded(&[id]).await;
                        match self.hub.docs().get(&id) {
                            Some(doc) => json::get(doc, &path).map_err(NodeError::from),
                            None => Err(NodeError::NoSuchDocument(id.to_string())),
                        }
                    }
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            RepoCommand::Set {
                doc,
                path,
                value,
                reply,
            } => {
                let result = match self.resolve(&doc) {
                    Ok(id) => self
                        .change(id, |tx| {
                            json::set(tx, &path, &value).map_err(NodeError::from)
                        })
                        .await
                        .map(|pending| (id, pending)),
                    Err(error) => Err(error),
                };
                self.answer_when_durable(result, reply);
            }
            RepoCommand::Edit { doc, edit, reply } => {
                let result = self
                    .change(doc, |tx| edit(tx).map_err(NodeError::Invalid))
                    .await
                    .map(|pending| (doc, pending));
                self.answer_when_durable(result, reply);
            }
            RepoCommand::Read { doc, read } => {
                self.ensure_loaded(&[doc]).await;
                if let Some(d) = self.hub.docs().get(&doc) {
                    read(d);
                }
            }
            RepoCommand::List { reply } => {
                let list = self
                    .hub
                    .docs()
                    .ids()
                    .filter(|id| **id != self.index)
                    .map(|id| DocInfo {
                        id: id.to_string(),
                        name: self.name_of(id),
                        heads: self.hub.docs().heads(id).map_or(0, <[_]>::len),
                    })
                    .collect();
                let _ = reply.send(Ok(list));
            }
            RepoCommand::History { doc, reply } => {
                if let Ok(id) = self.resolve(&doc) {
                    self.ensure_loaded(&[id]).await;
                }
                let result = self.resolve(&doc).and_then(|id| {
                    let doc = self
                        .hub
                        .docs()
                        .get(&id)
                        .ok_or_else(|| NodeError::NoSuchDocument(id.to_string()))?;
                    Ok(doc
                        .get_changes(&[])
                        .iter()
                        .map(|c| ChangeInfo {
                            hash: hex(&c.hash().0),
                            actor: c.actor_id().to_hex_string(),
                            seq: c.seq(),
                            time: c.timestamp(),
                            message: c.message().map(str::to_owned),
                        })
                        .collect())
                });
                let _ = reply.send(result);
            }
            RepoCommand::RecordDevice {
                device,
                name,
                authority,
                powerline,
                reply,
            } => {
                let result = self.record_device(device, name, authority, powerline).await;
                self.answer_unit_when_durable(result, reply);
            }
            RepoCommand::Share(command) => self.on_share(command).await,
            RepoCommand::Request(command) => self.on_request(command).await,
            RepoCommand::RecordAsked {
                addr,
                id,
                doc,
                can,
                reply,
            } => {
                let result = self.record_asked(&addr, id, &doc, &can).await;
                self.answer_unit_when_durable(result, reply);
            }
            RepoCommand::Asked { reply } => {
                let _ = reply.send(Ok(self.asked()));
            }
            RepoCommand::SettleAsked {
                addr,
                id,
                state,
                reason,
                reply,
            } => {
                let result = self.settle_asked(&addr, id, &state, reason).await;
                self.answer_unit_when_durable(result, reply);
            }
            RepoCommand::Status { reply } => {
                let status = self.status().await;
                let _ = reply.send(Ok(status));
            }
            RepoCommand::Devices { reply } => {
                let devices = self.devices().await;
                let _ = reply.send(Ok(devices));
            }
            RepoCommand::RevokeDevice { target, reply } => {
                let result = self.revoke_device(&target).await;
                reply_when_durable(result, reply);
            }
        }
    }

    /// Writes a device into the person's index document (`device:<did>`), which every
    /// device syncs: the replicated device registry.
    async fn record_device(
        &mut self,
        device: Did,
        name: Option<String>,
        authority: Vec<String>,
        powerline: Vec<String>,
    ) -> Result<Vec<Pending>, NodeError> {
        let mut pending = Vec::new();
        if let Some(p) = self.ensure_index().await? {
            pending.push(p);
        }
        let entry = json!({
            "name": name,
            "added": time::now(),
            "added_by": self.device.to_string(),
            "authority": authority,
            "powerline": powerline,
        });
        let key = format!("/device:{device}");
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(tx, &key, &entry).map_err(NodeError::from)
            })
            .await?
        {
            pending.push(p);
        }
        Ok(pending)
    }

    /// Revokes a device's delegations: signs a revocation of the last link of each of its
    /// chains on the root's behalf (this device holds `/` for the root, which covers
    /// `/ucan/revoke`) and records it in the registry with the proofs any device needs to
    /// check it.
    async fn revoke_device(
        &mut self,
        target: &str,
    ) -> Result<(Vec<String>, Vec<Pending>), NodeError> {
        let devices = self.devices().await;
        let entry = devices
            .iter()
            .find(|d| d.did == target || d.name.as_deref() == Some(target))
            .ok_or_else(|| {
                NodeError::Invalid(format!(
                    "no device {target:?} in the registry (see `membrane devices`)"
                ))
            })?;
        if entry.did == self.root.to_string() {
            return Err(NodeError::Invalid("the root cannot be revoked".into()));
        }
        if entry.this_device {
            return Err(NodeError::Invalid(
                "a device cannot revoke itself; revoke it from another of your devices".into(),
            ));
        }
        let index = self
            .hub
            .docs()
            .get(&self.index)
            .expect("the registry lives in the index");
        let record = json::get(index, &format!("/device:{}", entry.did))?.unwrap_or_default();
        // What this device holds of the revoked device's changes stays; anything later is
        // refused everywhere (see `membrane_protocol::sync::gate`).
        let device: Did = entry
            .did
            .parse()
            .map_err(|e| NodeError::Invalid(format!("registry entry {}: {e}", entry.did)))?;
        let cutoff = cutoff_to_json(&self.cutoff_of_all(&device).await);
        let mut revoked = Vec::new();
        let mut pending = Vec::new();
        for field in ["authority", "powerline"] {
            let theirs = crate::sharing::chain_from_json(&record[field]);
            let Some(last) = theirs.last() else { continue };
            revoked.push(last.cid().to_string());
            let extra = json!({ "device": entry.did, "cutoff": cutoff });
            pending.extend(self.record_revocation(&theirs, extra).await?);
        }
        if revoked.is_empty() {
            return Err(NodeError::Invalid(format!(
                "no delegation of {} is on record",
                entry.did
            )));
        }
        Ok((revoked, pending))
    }

    /// Revokes the last delegation of `revoked_chain` on the root's behalf (this device
    /// holds `/` for the root, which covers `/ucan/revoke`), records the revocation in the
    /// registry with the proofs any device needs to check it (plus `extra` fields), and
    /// applies it here at once.
    pub(crate) async fn record_revocation(
        &mut self,
        revoked_chain: &[membrane_protocol::ucan::Delegation],
        extra: Json,
    ) -> Result<Vec<Pending>, NodeError> {
        use membrane_protocol::ucan::{Revocation, encode_base64};
        let last = revoked_chain
            .last()
            .ok_or_else(|| NodeError::Invalid("nothing to revoke".into()))?;
        let now = self.now();
        let my_proofs = self
            .identity
            .authority
            .iter()
            .map(membrane_protocol::ucan::Delegation::cid)
            .collect();
        let revocation =
            Revocation::sign(&self.identity.device, self.root, last.cid(), my_proofs, now)
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let encode = |chain: &[membrane_protocol::ucan::Delegation]| -> Vec<String> {
            chain.iter().map(|d| encode_base64(d.as_bytes())).collect()
        };
        let mut record = json!({
            "token": encode_base64(revocation.invocation().as_bytes()),
            "proofs": encode(&self.identity.authority),
            "revoked_chain": encode(revoked_chain),
            "by": self.device.to_string(),
            "at": now,
        });
        if let (Some(record), Some(extra)) = (record.as_object_mut(), extra.as_object()) {
            record.extend(extra.clone());
        }
        let key = format!("/revocation:{}", last.cid());
        let mut pending = Vec::new();
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(tx, &key, &record).map_err(NodeError::from)
            })
            .await?
        {
            pending.push(p);
        }
        self.revocations_dirty = true;
        self.refresh_registry().await;
        Ok(pending)
    }

    /// Keeps revocations a peer told us of in the registry, like our own, so they survive
    /// restarts and reach our other devices.
    async fn record_learned(
        &mut self,
        peer: Did,
        records: Vec<membrane_protocol::sync::wire::RevocationRecord>,
    ) -> Result<(), NodeError> {
        use membrane_protocol::ucan::{Delegation, encode_base64};
        if let Some(p) = self.ensure_index().await? {
            watch_failure(p, self.index);
        }
        for record in records {
            let Some(cid) = record
                .revoked
                .last()
                .and_then(|d| Delegation::decode(d).ok())
                .map(|d| d.cid())
            else {
                continue;
            };
            let list = |items: &[serde_bytes::ByteBuf]| -> Vec<String> {
                items.iter().map(|b| encode_base64(b)).collect()
            };
            let entry = json!({
                "token": encode_base64(&record.token),
                "proofs": list(&record.proofs),
                "revoked_chain": list(&record.revoked),
                "learned_from": peer.to_string(),
                "at": self.now_read_only(),
            });
            let key = format!("/revocation:{cid}");
            if let Some(p) = self
                .change(self.index, move |tx| {
                    json::set(tx, &key, &entry).map_err(NodeError::from)
                })
                .await?
            {
                watch_failure(p, self.index);
            }
        }
        self.revocations_dirty = true;
        Ok(())
    }

    /// Re-reads the registry after the index document changed: rebuilds the revocation set
    /// (keeping only revocations that verify; sessions that relied on a revoked delegation
    /// close), the revoked devices' cutoffs, and the grants this device holds on other
    /// persons' documents (whose sharers' addresses the network keeps dialing).
    pub(crate) async fn refresh_registry(&mut self) {
        use membrane_protocol::ucan::{
            Invocation, Revocation, RevocationSet, Validator, decode_base64_loose,
        };
        if !std::mem::take(&mut self.revocations_dirty) {
            return;
        }
        let Some(index) = self.hub.docs().get(&self.index) else {
            return;
        };
        let now = self.now_read_only();
        let mut set = RevocationSet::new();
        let mut authors = RevokedAuthors::new();
        let mut held = Vec::new();
        let mut addrs = Vec::new();
        let mut records = Vec::new();
        // Revoked devices by revocation CID, and cutoff amendments (see `gate::exceeds`).
        let mut revoked_devices: Vec<(String, Did)> = Vec::new();
        let mut amendments: Vec<(String, String, Cutoff)> = Vec::new();
        // Only the registry's key ranges are read, field by field: the registry shares the
        // index document with every document's entry, and is read on each change to it.
        let registry = ["revocation-cutoff:", "revocation:", "shared:"]
            .into_iter()
            .flat_map(|prefix| index_entries(index, prefix));
        for (key, entry) in registry {
            let is_revocation = key.starts_with("revocation:");
            let is_amendment = key.starts_with("revocation-cutoff:");
            if is_amendment {
                let mut parts = key["revocation-cutoff:".len()..].splitn(2, ':');
                if let (Some(cid), Some(by)) = (parts.next(), parts.next()) {
                    let by = by.to_owned();
                    amendments.push((cid.to_owned(), by, read_cutoff(index, &entry)));
                }
                continue;
            }
            if !is_revocation {
                held.push(entry_tokens(index, &entry, "chain"));
                addrs.extend(
                    entry_texts(index, &entry, "addrs")
                        .into_iter()
                        .filter_map(|a| a.parse::<Multiaddr>().ok()),
                );
                continue;
            }
            let Some(revocation) = entry_text(index, &entry, "token")
                .and_then(|t| decode_base64_loose(&t).ok())
                .and_then(|b| Invocation::decode(&b).ok())
                .and_then(|i| Revocation::from_invocation(i).ok())
            else {
                tracing::warn!(%key, "ignoring an unreadable revocation");
                continue;
            };
            let proofs = entry_tokens(index, &entry, "proofs");
            let revoked_chain = entry_tokens(index, &entry, "revoked_chain");
            match revocation.verify(
                &Validator::new(now).with_clock_skew(60),
                &proofs,
                &revoked_chain,
            ) {
                Ok(()) => {
                    set.insert(revocation.revoked());
                    let bytes = |chain: &[membrane_protocol::ucan::Delegation]| {
                        chain
                            .iter()
                            .map(|d| serde_bytes::ByteBuf::from(d.as_bytes().to_vec()))
                            .collect()
                    };
                    records.push(membrane_protocol::sync::wire::RevocationRecord {
                        token: serde_bytes::ByteBuf::from(
                            revocation.invocation().as_bytes().to_vec(),
                        ),
                        proofs: bytes(&proofs),
                        revoked: bytes(&revoked_chain),
                    });
                    // A device's revocation also bars its later changes.
                    let of_device = entry_text(index, &entry, "device").is_some();
                    if let Some(revoked) = revoked_chain.last().filter(|_| of_device) {
                        let cutoff = read_cutoff(index, &entry);
                        authors.insert(revoked.payload().audience, cutoff);
                        revoked_devices
                            .push((revocation.revoked().to_string(), revoked.payload().audience));
                    }
                }
                Err(error) => {
                    tracing::warn!(%key, %error, "ignoring a revocation that does not verify")
                }
            }
        }
        for (cid, _, cutoff) in &amendments {
            if let Some((_, device)) = revoked_devices.iter().find(|(c, _)| c == cid) {
                authors.insert(*device, cutoff.clone());
            }
        }
        // Did this device take the revoked device's changes before it heard of the
        // revocation? Then it vouches for them, once, so all devices converge. Finding
        // out reads every document, so each revocation is checked once per run: changes
        // that arrive later are judged against the cutoff and cannot exceed it.
        let me = self.device.to_string();
        let to_check: Vec<(String, Did, Option<Cutoff>)> = revoked_devices
            .iter()
            .filter(|(cid, _)| !self.vouch_checked.contains(cid))
            .filter(|(cid, _)| !amendments.iter().any(|(c, by, _)| c == cid && *by == me))
            .map(|(cid, device)| (cid.clone(), *device, authors.cutoff(device).cloned()))
            .collect();
        self.revoked = set.iter().map(ToString::to_string).collect();
        self.revoked_devices = revoked_devices.iter().map(|(_, d)| *d).collect();
        self.views = self.views_from_registry(index);
        self.stale_views.extend(self.views.keys().copied());
        for (chain, reason) in self.hub.set_held_grants(now, held) {
            let cid = chain
                .last()
                .map(|d| d.cid().to_string())
                .unwrap_or_default();
            tracing::warn!(grant = %cid, %reason, "not using a grant held by this person");
        }
        // Whose documents we hold matters only for those the held grants name.
        let provenance = self
            .hub
            .held_documents()
            .filter_map(|doc| Some((doc, self.shared_from(&doc)?.parse().ok()?)))
            .collect();
        self.hub.set_provenance(provenance);
        let mut effects = self.hub.set_revoked_authors(authors);
        effects.extend(self.hub.set_revocations(set));
        effects.extend(self.hub.set_revocation_records(records));
        self.carry_out(effects).await;
        if !addrs.is_empty() {
            let _ = self.net.send(NetCommand::Remember(addrs)).await;
        }
        let mut amend = Vec::new();
        for (cid, device, cutoff) in to_check {
            let view = self.cutoff_of_all(&device).await;
            if exceeds(&view, cutoff.as_ref()) {
                amend.push((format!("/revocation-cutoff:{cid}:{me}"), view));
            }
            self.vouch_checked.insert(cid);
        }
        for (key, view) in amend {
            let entry = json!({ "cutoff": cutoff_to_json(&view), "at": self.now_read_only() });
            tracing::info!(%key, "vouching for a revoked device's changes taken before its revocation");
            match self
                .change(self.index, move |tx| {
                    json::set(tx, &key, &entry).map_err(NodeError::from)
                })
                .await
            {
                Ok(Some(p)) => watch_failure(p, self.index),
                Ok(None) => {}
                Err(error) => tracing::error!(%error, "could not record a cutoff amendment"),
            }
            self.revocations_dirty = true;
        }
    }

    async fn devices(&self) -> Vec<DeviceEntry> {
        let online: Vec<Did> = self.hub.peers().into_iter().map(|(_, p)| p).collect();
        let seen = self.store.devices().await.unwrap_or_default();
        let Some(index) = self.hub.docs().get(&self.index) else {
            return Vec::new();
        };
        // Only the `device:` keys: the index also holds an entry per document, and turning
        // all of it into JSON takes seconds once there are many.
        let mut out = Vec::new();
        for item in index.map_range(ROOT, "device:".to_owned().."device;".to_owned()) {
            let Some(did) = item.key.strip_prefix("device:") else {
                continue;
            };
            let entry = item.id();
            out.push(DeviceEntry {
                did: did.to_owned(),
                name: entry_text(index, &entry, "name"),
                added: entry_number(index, &entry, "added"),
                added_by: entry_text(index, &entry, "added_by"),
                this_device: did == self.device.to_string(),
                online: online.iter().any(|p| p.to_string() == did),
                last_seen: seen
                    .iter()
                    .find(|(d, _)| d == did)
                    .map(|(_, r)| r.last_seen),
                revoked: self.revoked_devices.iter().any(|d| d.to_string() == did),
            });
        }
        out
    }

    fn answer_unit_when_durable(&self, result: Result<Vec<Pending>, NodeError>, reply: Reply<()>) {
        reply_when_durable(result.map(|pending| ((), pending)), reply);
    }

    fn answer_when_durable(
        &self,
        result: Result<(DocumentId, Option<Pending>), NodeError>,
        reply: Reply<Vec<String>>,
    ) {
        match result {
            Err(error) => {
                let _ = reply.send(Err(error));
            }
            Ok((id, pending)) => {
                let heads = self.hub.docs().get(&id).map(heads_hex).unwrap_or_default();
                tokio::spawn(async move {
                    let outcome = match pending {
                        Some(p) => p.durable().await.map(|_| heads).map_err(NodeError::from),
                        None => Ok(heads),
                    };
                    let _ = reply.send(outcome);
                });
            }
        }
    }

    async fn status(&mut self) -> Status {
        let peers: Vec<Did> = self.hub.peers().into_iter().map(|(_, p)| p).collect();
        let seen = self.store.devices().await.unwrap_or_default();
        let devices = seen
            .iter()
            .map(|(did, record)| DeviceStatus {
                online: peers.iter().any(|p| p.to_string() == *did),
                did: did.clone(),
                last_seen: record.last_seen,
            })
            .collect();
        let own_devices: Vec<DeviceEntry> = self.devices().await;
        let states = self.store.sync_states(None).await.unwrap_or_else(|error| {
            tracing::warn!(%error, "could not read the sync states; peers' copies show as unknown");
            Default::default()
        });
        let index = StatusIndex::new(&own_devices, states);
        let ids: Vec<DocumentId> = self
            .hub
            .docs()
            .ids()
            .filter(|id| **id != self.index)
            .copied()
            .collect();
        let mut documents = Vec::with_capacity(ids.len());
        // Where a peer's known heads differ from ours, telling who lacks what needs the
        // document's content: those are loaded afterwards, a batch at a time.
        let mut needs_content = Vec::new();
        for id in ids {
            match self.doc_status_of(&id, &peers, &index) {
                Some(status) => documents.push((id, status)),
                None => needs_content.push(id),
            }
        }
        self.visit_loaded(&needs_content, |this, id| {
            if let Some(status) = this.doc_status_of(id, &peers, &index) {
                documents.push((*id, status));
            }
        })
        .await;
        documents.sort_by_key(|(id, _)| *id);
        let documents = documents.into_iter().map(|(_, status)| status).collect();
        Status {
            device: self.device.to_string(),
            root: self.root.to_string(),
            listen: self.listen.iter().map(ToString::to_string).collect(),
            peers: peers.iter().map(ToString::to_string).collect(),
            devices,
            own_devices,
            documents,
            quarantined: self
                .quarantined
                .iter()
                .map(|(id, why)| (id.to_string(), why.clone()))
                .collect(),
            refused: self.refused.iter().cloned().collect(),
            refused_peers: self.refused_peers.iter().cloned().collect(),
        }
    }
}

impl RepoActor {
    /// A document arrived whole: if its session announced it, count it stored.
    fn count_incoming(&mut self, session: SessionId) {
        let Some(left) = self.receiving.get_mut(&session) else {
            return;
        };
        *left -= 1;
        self.incoming.stored_one();
        if *left == 0 {
            self.receiving.remove(&session);
            self.incoming.settle(0);
        }
    }

    /// One document's line in `status`; `None` when it needs the document's content and
    /// that is not loaded.
    fn doc_status_of(
        &self,
        id: &DocumentId,
        peers: &[Did],
        index: &StatusIndex<'_>,
    ) -> Option<DocStatus> {
        let status = self.hub.doc_status(id);
        Some(DocStatus {
            id: id.to_string(),
            name: self.name_of(id),
            in_sync_with: status
                .iter()
                .filter(|s| s.in_sync)
                .map(|s| s.peer.to_string())
                .collect(),
            syncing_with: status
                .iter()
                .filter(|s| !s.in_sync)
                .map(|s| s.peer.to_string())
                .collect(),
            peers: self.peer_sync(id, &status, peers, index)?,
        })
    }

    /// What is known of each relevant peer's copy of `doc` (see [`PeerSync`]); `None`
    /// when some peer's heads differ from ours and the content is not loaded.
    fn peer_sync(
        &self,
        doc: &DocumentId,
        live: &[membrane_protocol::sync::PeerDocStatus],
        connected: &[Did],
        index: &StatusIndex<'_>,
    ) -> Option<Vec<PeerSync>> {
        let ours = self.hub.docs().heads(doc)?;
        let content = self.hub.docs().get(doc);
        let saved = index.saved.get(doc).map_or(&[][..], Vec::as_slice);
        // The person's devices first, in registry order, then anyone else we know of.
        let mut order: Vec<Did> = Vec::new();
        let candidates = index
            .own
            .iter()
            .map(|(did, _)| *did)
            .chain(live.iter().map(|status| status.peer))
            .chain(
                self.last_heads
                    .iter()
                    .filter(|(_, docs)| docs.contains_key(doc))
                    .map(|(peer, _)| *peer),
            )
            .chain(saved.iter().map(|(peer, _)| *peer));
        for did in candidates {
            if did != self.device && !self.revoked_devices.contains(&did) && !order.contains(&did) {
                order.push(did);
            }
        }
        order
            .into_iter()
            .map(|peer| {
                let entry = index
                    .own
                    .iter()
                    .find(|(did, _)| *did == peer)
                    .map(|(_, e)| *e);
                let online = connected.contains(&peer);
                // Several sessions with one peer: the best-informed one counts.
                let live_heads = live
                    .iter()
                    .filter(|s| s.peer == peer)
                    .filter_map(|s| s.their_heads.as_deref())
                    .max_by_key(|heads| {
                        compare_heads(ours, content, heads).map(|c| c.0) == Some(SyncState::InSync)
                    });
                let saved_heads = || {
                    saved
                        .iter()
                        .find(|(p, _)| *p == peer)
                        .and_then(|(_, bytes)| automerge::sync::State::decode(bytes).ok())
                        .map(|state| state.shared_heads)
                };
                let (known_from, heads) = if let Some(heads) = live_heads {
                    (KnownFrom::Live, Some(heads.to_vec()))
                } else if online {
                    (KnownFrom::Nothing, None)
                } else if let Some(heads) = self.last_heads.get(&peer).and_then(|d| d.get(doc)) {
                    (KnownFrom::LastSession, Some(heads.clone()))
                } else if let Some(heads) = saved_heads() {
                    (KnownFrom::SavedState, Some(heads))
                } else {
                    (KnownFrom::Nothing, None)
                };
                let (state, they_lack) = match &heads {
                    Some(heads) => compare_heads(ours, content, heads)?,
                    None if online => (SyncState::Syncing, None),
                    None if entry.is_some_and(|e| e.last_seen.is_none()) => {
                        (SyncState::NeverSynced, None)
                    }
                    None => (SyncState::Unknown, None),
                };
                Some(PeerSync {
                    peer: peer.to_string(),
                    name: entry.and_then(|e| e.name.clone()),
                    own_device: entry.is_some(),
                    online,
                    state,
                    they_lack,
                    known_from,
                })
            })
            .collect()
    }
}

/// What `status` looks up for every document, gathered once.
struct StatusIndex<'a> {
    /// The person's devices that are not revoked, with their DIDs parsed.
    own: Vec<(Did, &'a DeviceEntry)>,
    /// Per document, the peers with a saved sync state for it, and that state.
    saved: HashMap<DocumentId, Vec<(Did, Vec<u8>)>>,
}

impl<'a> StatusIndex<'a> {
    fn new(own_devices: &'a [DeviceEntry], sync_states: crate::store::SyncStates) -> Self {
        let own = own_devices
            .iter()
            .filter(|d| !d.revoked)
            .filter_map(|d| Some((d.did.parse().ok()?, d)))
            .collect();
        let mut saved: HashMap<DocumentId, Vec<(Did, Vec<u8>)>> = HashMap::new();
        for (key, states) in sync_states {
            let Ok(key) = membrane_protocol::PublicKey::from_bytes(&key) else {
                continue;
            };
            let peer = Did::from(key);
            for (doc, bytes) in states {
                saved.entry(doc).or_default().push((peer, bytes));
            }
        }
        Self { own, saved }
    }
}

/// A whole-number field of a registry entry.
fn entry_number(index: &Automerge, entry: &automerge::ObjId, field: &str) -> Option<u64> {
    match index.get(entry, field).ok()??.0 {
        automerge::Value::Scalar(v) => match v.as_ref() {
            automerge::ScalarValue::Uint(n) => Some(*n),
            automerge::ScalarValue::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        },
        automerge::Value::Object(_) => None,
    }
}

/// A text field of a registry entry.
pub(crate) fn entry_text(
    index: &Automerge,
    entry: &automerge::ObjId,
    field: &str,
) -> Option<String> {
    match index.get(entry, field).ok()??.0 {
        automerge::Value::Scalar(v) => match v.as_ref() {
            automerge::ScalarValue::Str(s) => Some(s.to_string()),
            _ => None,
        },
        automerge::Value::Object(_) => None,
    }
}

/// A list-of-text field of a registry entry.
fn entry_texts(index: &Automerge, entry: &automerge::ObjId, field: &str) -> Vec<String> {
    let Ok(Some((_, list))) = index.get(entry, field) else {
        return Vec::new();
    };
    (0..index.length(&list))
        .filter_map(|i| match index.get(&list, i).ok()??.0 {
            automerge::Value::Scalar(v) => match v.as_ref() {
                automerge::ScalarValue::Str(s) => Some(s.to_string()),
                _ => None,
            },
            automerge::Value::Object(_) => None,
        })
        .collect()
}

/// A field of a registry entry holding a chain of base64 tokens.
fn entry_tokens(
    index: &Automerge,
    entry: &automerge::ObjId,
    field: &str,
) -> Vec<membrane_protocol::ucan::Delegation> {
    entry_texts(index, entry, field)
        .iter()
        .filter_map(|t| membrane_protocol::ucan::decode_base64_loose(t).ok())
        .filter_map(|b| membrane_protocol::ucan::Delegation::decode(&b).ok())
        .collect()
}

/// Reads the cutoff of a revocation record (the `cutoff` field of `entry` in the index),
/// skipping parts that do not parse.
fn read_cutoff(index: &Automerge, entry: &automerge::ObjId) -> Cutoff {
    use automerge::{ScalarValue, Value};
    let mut cutoff = Cutoff::new();
    let Ok(Some((_, docs))) = index.get(entry, "cutoff") else {
        return cutoff;
    };
    for doc in index.keys(&docs) {
        let (Ok(id), Ok(Some((_, actors)))) = (doc.parse::<DocumentId>(), index.get(&docs, &doc))
        else {
            continue;
        };
        let actors = index
            .keys(&actors)
            .filter_map(|actor| {
                let seq = match index.get(&actors, &actor).ok()??.0 {
                    Value::Scalar(v) => match v.as_ref() {
                        ScalarValue::Uint(n) => *n,
                        ScalarValue::Int(n) => u64::try_from(*n).ok()?,
                        _ => return None,
                    },
                    Value::Object(_) => return None,
                };
                Some((actor_from_hex(&actor)?, seq))
            })
            .collect();
        cutoff.insert(id, actors);
    }
    cutoff
}

/// The index's entries whose keys start with `prefix`, read as one key range: the index
/// also holds an entry per document, so reading the registry by ranges costs the same
/// with ten documents or ten thousand.
pub(crate) fn index_entries(index: &Automerge, prefix: &str) -> Vec<(String, automerge::ObjId)> {
    index
        .map_range(ROOT, prefix.to_owned()..)
        .take_while(|item| item.key.starts_with(prefix))
        .filter(|item| matches!(item.value, automerge::ValueRef::Object(_)))
        .map(|item| {
            let id = item.id();
            (item.key.into_owned(), id)
        })
        .collect()
}

/// The name recorded for a document key in the index document.
fn index_name(index: &Automerge, key: &str) -> Option<String> {
    let (_, entry) = index.get(ROOT, key).ok()??;
    match index.get(&entry, "name").ok()?? {
        (automerge::Value::Scalar(value), _) => match value.as_ref() {
            automerge::ScalarValue::Str(name) => Some(name.to_string()),
            _ => None,
        },
        _ => None,
    }
}

/// Answers `reply` with the value once every queued write is durable (or with the first
/// failure).
pub(crate) fn reply_when_durable<T: Send + 'static>(
    result: Result<(T, Vec<Pending>), NodeError>,
    reply: Reply<T>,
) {
    match result {
        Err(error) => {
            let _ = reply.send(Err(error));
        }
        Ok((value, pending)) => {
            tokio::spawn(async move {
                for p in pending {
                    if let Err(error) = p.durable().await {
                        let _ = reply.send(Err(error.into()));
                        return;
                    }
                }
                let _ = reply.send(Ok(value));
            });
        }
    }
}

/// Logs a queued write that later fails to commit (nothing waits on it).
fn watch_failure(pending: Pending, doc: DocumentId) {
    tokio::spawn(async move {
        if let Err(error) = pending.durable().await {
            tracing::error!(%doc, %error, "could not persist data received from a peer");
        }
    });
}

/// Reads a text object at a map key of the root (used by benchmarks and tests).
pub fn root_text(doc: &Automerge, key: &str) -> Option<String> {
    let (_, id) = doc.get(ROOT, key).ok()??;
    doc.text(&id).ok()
}

/// Ensures a text object at a root key and splices into it.
pub fn splice_root_text(
    tx: &mut automerge::transaction::Transaction<'_>,
    key: &str,
    position: usize,
    delete: isize,
    insert: &str,
) -> Result<(), String> {
    let text = match tx.get(ROOT, key).map_err(|e| e.to_string())? {
        Some((automerge::Value::Object(automerge::ObjType::Text), id)) => id,
        _ => tx
            .put_object(ROOT, key, automerge::ObjType::Text)
            .map_err(|e| e.to_string())?,
    };
    tx.splice_text(&text, position, delete, insert)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued() -> (
        QueuedEdit,
        oneshot::Receiver<Result<Vec<String>, NodeError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        ((Box::new(|_| Ok(())), reply), answer)
    }

    #[test]
    fn a_pass_groups_edits_by_document_in_queue_order() {
        let [a, b, c] = [1, 2, 3].map(|n| DocumentId::from_bytes([n; 16]));
        let ((edit, reply), a1) = queued();
        let mut batches = EditBatches::new(a, edit, reply);
        let mut answers = vec![a1];
        for doc in [b, a, c, b, a] {
            let ((edit, reply), answer) = queued();
            batches.push(doc, edit, reply);
            answers.push(answer);
        }
        assert_eq!(batches.len(), 6);
        let order: Vec<DocumentId> = batches.batches.iter().map(|(doc, _)| *doc).collect();
        assert_eq!(order, [a, b, c], "documents in order of first arrival");
        // Number the edits as the pass would apply them.
        let mut n = 0;
        for (_, batch) in batches.batches {
            for (_, reply) in batch {
                let _ = reply.send(Ok(vec![n.to_string()]));
                n += 1;
            }
        }
        let applied: Vec<String> = answers
            .into_iter()
            .map(|mut answer| answer.try_recv().unwrap().unwrap().remove(0))
            .collect();
        // Queued as a, b, a, c, b, a: a's three first, in order, then b's two, then c.
        assert_eq!(applied, ["0", "3", "1", "5", "4", "2"]);
    }
}
