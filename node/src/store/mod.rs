//! Durable storage: one redb file, owned by one thread, reached through [`StoreHandle`].
//!
//! A document is stored as its last snapshot plus the incremental chunks appended since;
//! the node compacts a document (new snapshot, chunks dropped, one transaction) when its
//! chunks grow. Writes that arrive while a commit is in flight are committed together in
//! the next transaction (group commit, at most [`MAX_GROUP`] writes), and a write is
//! acknowledged only after that commit is durable. Commits use redb's two-phase commit,
//! since much of what we store was supplied by peers.
//!
//! At open the file's integrity is checked, and every document is listed with its stored
//! heads; documents load on demand. One that does not load is quarantined (its bytes kept,
//! its id reported) while the rest are served.

pub mod access_log;
pub(crate) mod tables;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    thread,
};

use automerge::{Automerge, ChangeHash};
use membrane_protocol::{Did, DocumentId, sync::wire::decode_heads, ucan::UnixTime};
use redb::{Database, Durability, ReadableDatabase as _, ReadableTable as _};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use self::{
    access_log::{AccessEntry, AccessEvent, GENESIS, LogBroken},
    tables::*,
};

/// Most writes committed in one transaction.
pub const MAX_GROUP: usize = 512;
/// Depth of the store's command queue.
const QUEUE_DEPTH: usize = 1024;

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenStoreError {
    /// Another process has the database open.
    #[error("{0} is in use by another process (is a membrane daemon already running?)")]
    InUse(PathBuf),
    /// The file is damaged beyond repair.
    #[error("{path} is corrupt and could not be repaired: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// redb's description.
        detail: String,
    },
    /// Written by a newer Membrane.
    #[error("{path} has schema version {found}; this Membrane understands up to {SCHEMA_VERSION}")]
    TooNew {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u64,
    },
    /// Any other database error.
    #[error("cannot open {path}: {detail}")]
    Database {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// Why a write failed. Nothing was acknowledged.
#[derive(Debug, thiserror::Error, Clone)]
#[non_exhaustive]
pub enum StoreError {
    /// The database refused the transaction.
    #[error("storage failure: {0}")]
    Database(String),
    /// The store thread is gone (the node is shutting down).
    #[error("the store is closed")]
    Closed,
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(error.to_string())
}

/// What a document is called and when it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocMeta {
    /// A human name, unique per person by convention.
    pub name: Option<String>,
    /// When it was created (Unix seconds).
    pub created: UnixTime,
}

/// One document as known at open: its heads, not its content (see
/// [`StoreHandle::read_docs`]).
#[derive(Debug)]
pub struct StoredDoc {
    /// Its id.
    pub id: DocumentId,
    /// Its heads as of its last stored data.
    pub heads: Vec<ChangeHash>,
    /// How many chunks sit on top of the snapshot.
    pub chunks: u64,
}

/// Everything read at open.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Documents not quarantined.
    pub docs: Vec<StoredDoc>,
    /// Documents that did not, with the reason.
    pub quarantined: Vec<(DocumentId, String)>,
    /// Whether the integrity check had to repair the file.
    pub repaired: bool,
    /// Access requests from outside the person, by number (JSON records).
    pub requests: Vec<(u64, Vec<u8>)>,
    /// The latest time this node has seen (Unix seconds): its clock never goes back
    /// below it, so turning the system clock back revives no expired grant.
    pub clock_floor: UnixTime,
}

/// A device in the person's registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Its name, if given.
    pub name: Option<String>,
    /// When this node first saw it.
    pub first_seen: UnixTime,
    /// When this node last had a session with it.
    pub last_seen: UnixTime,
}

enum Write {
    CreateDoc {
        id: DocumentId,
        meta: DocMeta,
        snapshot: Vec<u8>,
        heads: Vec<ChangeHash>,
    },
    Append {
        id: DocumentId,
        chunk: Vec<u8>,
        heads: Vec<ChangeHash>,
    },
    Compact {
        id: DocumentId,
        snapshot: Vec<u8>,
        through: u64,
    },
    SyncState {
        peer: [u8; 32],
        id: DocumentId,
        state: Vec<u8>,
    },
    Device {
        did: String,
        record: DeviceRecord,
    },
    Delegation {
        cid: Vec<u8>,
        token: Vec<u8>,
    },
    Access(AccessEvent),
    ClockFloor(UnixTime),
    Request {
        id: u64,
        record: Vec<u8>,
    },
}

enum Command {
    Write(Write, oneshot::Sender<Result<u64, StoreError>>),
    Devices(oneshot::Sender<Result<Vec<(String, DeviceRecord)>, StoreError>>),
    Quarantined(oneshot::Sender<Result<Vec<(DocumentId, String)>, StoreError>>),
    SyncStates(
        Option<[u8; 32]>,
        oneshot::Sender<Result<SyncStates, StoreError>>,
    ),
    ReadDocs(
        Vec<DocumentId>,
        oneshot::Sender<Result<Vec<ReadDoc>, StoreError>>,
    ),
    AccessLog(oneshot::Sender<Result<Vec<AccessEntry>, StoreError>>),
    VerifyAccessLog(oneshot::Sender<Result<Result<u64, LogBroken>, StoreError>>),
}

/// Persisted sync states: per peer (its public key), per document, `sync::State::encode()`.
pub type SyncStates = HashMap<[u8; 32], Vec<(DocumentId, Vec<u8>)>>;

/// Memory redb may use to cache pages. Its default (1 GiB) lets the cache grow with
/// everything ever read, which on a node holding thousands of documents is most of its
/// memory; pages not cached are read again through the OS page cache.
const STORE_CACHE_BYTES: usize = 8 * 1024 * 1024;

/// A cloneable handle to the store thread.
#[derive(Clone, Debug)]
pub struct StoreHandle {
    commands: mpsc::Sender<Command>,
}

impl StoreHandle {
    /// Opens (or creates) the store at `path`, checks it, loads everything and starts the
    /// store thread. Blocking: call it before starting the runtime's work, or from
    /// `spawn_blocking`.
    pub fn open(path: &Path) -> Result<(Self, Loaded, thread::JoinHandle<()>), OpenStoreError> {
        let mut db = match Database::builder()
            .set_cache_size(STORE_CACHE_BYTES)
            .create(path)
        {
            Ok(db) => db,
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                return Err(OpenStoreError::InUse(path.to_path_buf()));
            }
            Err(redb::DatabaseError::Storage(redb::StorageError::Corrupted(detail))) => {
                return Err(OpenStoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail,
                });
            }
            Err(other) => {
                return Err(OpenStoreError::Database {
                    path: path.to_path_buf(),
                    detail: other.to_string(),
                });
            }
        };
        let database_error = |detail: String| OpenStoreError::Database {
            path: path.to_path_buf(),
            detail,
        };
        let repaired = match db.check_integrity() {
            Ok(true) => false,
            Ok(false) => true,
            Err(error) => {
                return Err(OpenStoreError::Corrupt {
                    path: path.to_path_buf(),
                    detail: error.to_string(),
                });
            }
        };
        let found = prepare_schema(&db).map_err(|e| database_error(e.to_string()))?;
        if found > SCHEMA_VERSION {
            return Err(OpenStoreError::TooNew {
                path: path.to_path_buf(),
                found,
            });
        }
        let mut loaded = load(&db).map_err(|e| database_error(e.to_string()))?;
        loaded.repaired = repaired;
        let mut next_seq = HashMap::new();
        for doc in &loaded.docs {
            next_seq.insert(doc.id, doc.chunks);
        }
        let log_head = log_head(&db).map_err(|e| database_error(e.to_string()))?;
        let (commands, inbox) = mpsc::channel(QUEUE_DEPTH);
        let mut actor = StoreActor {
            db,
            next_seq,
            log_head,
            inbox,
        };
        let thread = thread::Builder::new()
            .name("membrane-store".into())
            .spawn(move || actor.run())
            .map_err(|e| database_error(e.to_string()))?;
        Ok((Self { commands }, loaded, thread))
    }

    async fn write(&self, write: Write) -> Result<u64, StoreError> {
        self.enqueue(write).await?.durable().await
    }

    /// Queues a write in order and returns once it is queued (waiting only when the queue
    /// is full); the returned [`Pending`] resolves when it is durable. Writes queued one
    /// after another are applied in that order.
    async fn enqueue(&self, write: Write) -> Result<Pending, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Write(write, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        Ok(Pending(answer))
    }

    /// Queues a new document; see [`StoreHandle::create_doc`].
    pub async fn enqueue_create_doc(
        &self,
        id: DocumentId,
        meta: DocMeta,
        snapshot: Vec<u8>,
        heads: Vec<ChangeHash>,
    ) -> Result<Pending, StoreError> {
        self.enqueue(Write::CreateDoc {
            id,
            meta,
            snapshot,
            heads,
        })
        .await
    }

    /// Queues a chunk; see [`StoreHandle::append`].
    pub async fn enqueue_append(
        &self,
        id: DocumentId,
        chunk: Vec<u8>,
        heads: Vec<ChangeHash>,
    ) -> Result<Pending, StoreError> {
        self.enqueue(Write::Append { id, chunk, heads }).await
    }

    /// Queues a compaction; see [`StoreHandle::compact`].
    pub async fn enqueue_compact(
        &self,
        id: DocumentId,
        snapshot: Vec<u8>,
        through: u64,
    ) -> Result<Pending, StoreError> {
        self.enqueue(Write::Compact {
            id,
            snapshot,
            through,
        })
        .await
    }

    /// Queues a sync state; see [`StoreHandle::save_sync_state`].
    pub async fn enqueue_sync_state(
        &self,
        peer: &Did,
        id: DocumentId,
        state: Vec<u8>,
    ) -> Result<Pending, StoreError> {
        let peer = *peer.as_bytes();
        self.enqueue(Write::SyncState { peer, id, state }).await
    }

    /// Stores a new document durably, with its heads.
    pub async fn create_doc(
        &self,
        id: DocumentId,
        meta: DocMeta,
        snapshot: Vec<u8>,
        heads: Vec<ChangeHash>,
    ) -> Result<(), StoreError> {
        self.write(Write::CreateDoc {
            id,
            meta,
            snapshot,
            heads,
        })
        .await
        .map(drop)
    }

    /// Appends an incremental chunk durably, with the document's heads after it; returns
    /// how many chunks the document has now.
    pub async fn append(
        &self,
        id: DocumentId,
        chunk: Vec<u8>,
        heads: Vec<ChangeHash>,
    ) -> Result<u64, StoreError> {
        self.write(Write::Append { id, chunk, heads }).await
    }

    /// Replaces the snapshot and drops chunks numbered below `through`, atomically.
    pub async fn compact(
        &self,
        id: DocumentId,
        snapshot: Vec<u8>,
        through: u64,
    ) -> Result<(), StoreError> {
        self.write(Write::Compact {
            id,
            snapshot,
            through,
        })
        .await
        .map(drop)
    }

    /// Persists the sync state with a peer.
    pub async fn save_sync_state(
        &self,
        peer: &Did,
        id: DocumentId,
        state: Vec<u8>,
    ) -> Result<(), StoreError> {
        let peer = *peer.as_bytes();
        self.write(Write::SyncState { peer, id, state })
            .await
            .map(drop)
    }

    /// Records a device in the registry.
    pub async fn put_device(&self, did: &Did, record: DeviceRecord) -> Result<(), StoreError> {
        let did = did.to_string();
        self.write(Write::Device { did, record }).await.map(drop)
    }

    /// Queues a delegation, stored by CID.
    pub async fn enqueue_delegation(
        &self,
        cid: Vec<u8>,
        token: Vec<u8>,
    ) -> Result<Pending, StoreError> {
        self.enqueue(Write::Delegation { cid, token }).await
    }

    /// The device registry.
    pub async fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Devices(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The quarantined documents.
    pub async fn quarantined(&self) -> Result<Vec<(DocumentId, String)>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::Quarantined(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// The sync states persisted for `peer`, or for every peer: read when a session opens
    /// rather than kept in memory, where they would cost a state per document and peer.
    /// Sees every write queued before.
    pub async fn sync_states(&self, peer: Option<&Did>) -> Result<SyncStates, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::SyncStates(peer.map(|p| *p.as_bytes()), reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends to the access log; the returned [`Pending`] resolves once it is durable.
    pub async fn enqueue_access(&self, event: AccessEvent) -> Result<Pending, StoreError> {
        self.enqueue(Write::Access(event)).await
    }

    /// Stores (or replaces) access request `id`.
    pub async fn enqueue_request(&self, id: u64, record: Vec<u8>) -> Result<Pending, StoreError> {
        self.enqueue(Write::Request { id, record }).await
    }

    /// Raises the stored clock floor (see [`Loaded::clock_floor`]).
    pub async fn enqueue_clock_floor(&self, now: UnixTime) -> Result<Pending, StoreError> {
        self.enqueue(Write::ClockFloor(now)).await
    }

    /// The whole access log, oldest first.
    pub async fn access_log(&self) -> Result<Vec<AccessEntry>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::AccessLog(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Checks the access log's hash chain: how many entries, or where it was altered.
    pub async fn verify_access_log(&self) -> Result<Result<u64, LogBroken>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::VerifyAccessLog(reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Reads one document from disk: `None` when it is not stored, or does not load (it
    /// is then quarantined).
    pub async fn read_doc(&self, id: DocumentId) -> Result<Option<Automerge>, StoreError> {
        let read = self.read_docs(vec![id]).await?;
        Ok(read.into_iter().next().and_then(|r| r.content.ok()))
    }

    /// Reads documents from disk in one read transaction, seeing every write queued
    /// before. A document that does not load is quarantined (its bytes stay) and comes
    /// back as an error.
    pub async fn read_docs(&self, ids: Vec<DocumentId>) -> Result<Vec<ReadDoc>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command::ReadDocs(ids, reply))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

/// One document read by [`StoreHandle::read_docs`].
#[derive(Debug)]
pub struct ReadDoc {
    /// Its id.
    pub id: DocumentId,
    /// Its content; `Err` with the reason when it is not stored or does not load.
    pub content: Result<Automerge, String>,
}

/// A queued write; [`Pending::durable`] resolves once it is committed durably.
#[derive(Debug)]
pub struct Pending(oneshot::Receiver<Result<u64, StoreError>>);

impl Pending {
    /// Waits until the write is durable (or failed).
    pub async fn durable(self) -> Result<u64, StoreError> {
        self.0.await.map_err(|_| StoreError::Closed)?
    }
}

struct StoreActor {
    db: Database,
    next_seq: HashMap<DocumentId, u64>,
    /// The access log's last position and hash.
    log_head: (u64, [u8; 32]),
    inbox: mpsc::Receiver<Command>,
}

impl StoreActor {
    fn run(&mut self) {
        // Ends when every handle is dropped.
        while let Some(first) = self.inbox.blocking_recv() {
            let mut writes = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next.take() {
                if !matches!(command, Command::Write(..)) && !writes.is_empty() {
                    // A read sees every write queued before it.
                    self.commit(std::mem::take(&mut writes));
                }
                match command {
                    Command::Write(write, reply) => writes.push((write, reply)),
                    Command::Devices(reply) => {
                        let _ = reply.send(self.devices());
                    }
                    Command::Quarantined(reply) => {
                        let _ = reply.send(self.quarantined());
                    }
                    Command::SyncStates(peer, reply) => {
                        let _ = reply.send(self.sync_states(peer));
                    }
                    Command::ReadDocs(ids, reply) => {
                        let _ = reply.send(self.read_docs(&ids));
                    }
                    Command::AccessLog(reply) => {
                        let _ = reply.send(self.access_log());
                    }
                    Command::VerifyAccessLog(reply) => {
                        let _ = reply.send(self.access_log_rows().map(access_log::verify));
                    }
                }
                if writes.len() < MAX_GROUP {
                    next = self.inbox.try_recv().ok();
                }
            }
            if !writes.is_empty() {
                self.commit(writes);
            }
        }
    }

    fn commit(&mut self, writes: Vec<(Write, oneshot::Sender<Result<u64, StoreError>>)>) {
        let log_before = self.log_head;
        let (writes, replies): (Vec<_>, Vec<_>) = writes.into_iter().unzip();
        let outcome = self.apply(&writes);
        match outcome {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(error) => {
                // Nothing was committed. The access log's chain must stay unbroken, so its
                // head goes back. Chunk numbers handed out stay used: the repo actor
                // counted those chunks too, and a compaction drops chunks below the count
                // it took, so the store's numbers must never fall behind that count (a
                // gap in the numbers is harmless; chunks are read by range).
                self.log_head = log_before;
                tracing::error!(%error, "store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }

    fn apply(&mut self, writes: &[Write]) -> Result<Vec<u64>, StoreError> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_two_phase_commit(true);
        txn.set_durability(Durability::Immediate)
            .map_err(db_error)?;
        let mut results = Vec::with_capacity(writes.len());
        {
            // Open only the tables this group touches: opening costs a lookup each.
            let needs = |pred: fn(&Write) -> bool| writes.iter().any(pred);
            let docs_needed =
                needs(|w| matches!(w, Write::CreateDoc { .. } | Write::Append { .. }));
            let mut docs = docs_needed
                .then(|| txn.open_table(DOCS))
                .transpose()
                .map_err(db_error)?;
            let mut heads_table = docs_needed
                .then(|| txn.open_table(DOC_HEADS))
                .transpose()
                .map_err(db_error)?;
            let mut snapshots = needs(|w| {
                matches!(
                    w,
                    Write::CreateDoc { .. } | Write::Append { .. } | Write::Compact { .. }
                )
            })
            .then(|| txn.open_table(SNAPSHOTS))
            .transpose()
            .map_err(db_error)?;
            let mut chunks = needs(|w| matches!(w, Write::Append { .. } | Write::Compact { .. }))
                .then(|| txn.open_table(CHUNKS))
                .transpose()
                .map_err(db_error)?;
            let mut states = needs(|w| matches!(w, Write::SyncState { .. }))
                .then(|| txn.open_table(SYNC_STATES))
                .transpose()
                .map_err(db_error)?;
            let mut devices = needs(|w| matches!(w, Write::Device { .. }))
                .then(|| txn.open_table(DEVICES))
                .transpose()
                .map_err(db_error)?;
            let mut delegations = needs(|w| matches!(w, Write::Delegation { .. }))
                .then(|| txn.open_table(DELEGATIONS))
                .transpose()
                .map_err(db_error)?;
            let mut log = needs(|w| matches!(w, Write::Access(_)))
                .then(|| txn.open_table(ACCESS_LOG))
                .transpose()
                .map_err(db_error)?;
            let mut requests = needs(|w| matches!(w, Write::Request { .. }))
                .then(|| txn.open_table(REQUESTS))
                .transpose()
                .map_err(db_error)?;
            let mut meta = needs(|w| matches!(w, Write::ClockFloor(_)))
                .then(|| txn.open_table(META))
                .transpose()
                .map_err(db_error)?;
            let opened = "the table was opened for this kind of write";
            for write in writes {
                let result = match write {
                    Write::CreateDoc {
                        id,
                        meta,
                        snapshot,
                        heads,
                    } => {
                        heads_table
                            .as_mut()
                            .expect(opened)
                            .insert(id.as_bytes(), encode_heads(heads).as_slice())
                            .map_err(db_error)?;
                        let meta = serde_json::to_vec(meta).map_err(db_error)?;
                        let docs = docs.as_mut().expect(opened);
                        docs.insert(id.as_bytes(), meta.as_slice())
                            .map_err(db_error)?;
                        let snapshots = snapshots.as_mut().expect(opened);
                        snapshots
                            .insert(id.as_bytes(), snapshot.as_slice())
                            .map_err(db_error)?;
                        self.next_seq.insert(*id, 0);
                        0
                    }
                    Write::Append { id, chunk, heads } => {
                        heads_table
                            .as_mut()
                            .expect(opened)
                            .insert(id.as_bytes(), encode_heads(heads).as_slice())
                            .map_err(db_error)?;
                        if !self.next_seq.contains_key(id)
                            && docs
                                .as_mut()
                                .expect(opened)
                                .get(id.as_bytes())
                                .map_err(db_error)?
                                .is_none()
                        {
                            let docs = docs.as_mut().expect(opened);
                            // A chunk for a document not stored yet.
                            let meta = serde_json::to_vec(&DocMeta::default()).map_err(db_error)?;
                            docs.insert(id.as_bytes(), meta.as_slice())
                                .map_err(db_error)?;
                            let snapshots = snapshots.as_mut().expect(opened);
                            snapshots.insert(id.as_bytes(), &[][..]).map_err(db_error)?;
                        }
                        let seq = self.next_seq.entry(*id).or_insert(0);
                        let chunks = chunks.as_mut().expect(opened);
                        chunks
                            .insert((id.as_bytes(), *seq), chunk.as_slice())
                            .map_err(db_error)?;
                        *seq += 1;
                        *seq
                    }
                    Write::Compact {
                        id,
                        snapshot,
                        through,
                    } => {
                        let snapshots = snapshots.as_mut().expect(opened);
                        snapshots
                            .insert(id.as_bytes(), snapshot.as_slice())
                            .map_err(db_error)?;
                        chunks
                            .as_mut()
                            .expect(opened)
                            .retain_in((id.as_bytes(), 0)..(id.as_bytes(), *through), |_, _| false)
                            .map_err(db_error)?;
                        0
                    }
                    Write::SyncState { peer, id, state } => {
                        let states = states.as_mut().expect(opened);
                        states
                            .insert((peer, id.as_bytes()), state.as_slice())
                            .map_err(db_error)?;
                        0
                    }
                    Write::Device { did, record } => {
                        let record = serde_json::to_vec(record).map_err(db_error)?;
                        let devices = devices.as_mut().expect(opened);
                        devices
                            .insert(did.as_str(), record.as_slice())
                            .map_err(db_error)?;
                        0
                    }
                    Write::Delegation { cid, token } => {
                        let delegations = delegations.as_mut().expect(opened);
                        delegations
                            .insert(cid.as_slice(), token.as_slice())
                            .map_err(db_error)?;
                        0
                    }
                    Write::Access(event) => {
                        let (last, prev) = self.log_head;
                        let seq = last + 1;
                        let (entry, hash) = access_log::chain(seq, event.clone(), &prev);
                        let bytes = serde_json::to_vec(&entry).map_err(db_error)?;
                        let log = log.as_mut().expect(opened);
                        log.insert(seq, bytes.as_slice()).map_err(db_error)?;
                        self.log_head = (seq, hash);
                        seq
                    }
                    Write::Request { id, record } => {
                        let requests = requests.as_mut().expect(opened);
                        requests.insert(*id, record.as_slice()).map_err(db_error)?;
                        0
                    }
                    Write::ClockFloor(now) => {
                        let meta = meta.as_mut().expect(opened);
                        let floor = meta
                            .get(CLOCK_FLOOR)
                            .map_err(db_error)?
                            .map_or(0, |v| v.value());
                        meta.insert(CLOCK_FLOOR, floor.max(*now))
                            .map_err(db_error)?;
                        0
                    }
                };
                results.push(result);
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(results)
    }

    fn access_log_rows(&self) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(ACCESS_LOG).map_err(db_error)?;
        let mut rows = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (seq, bytes) = row.map_err(db_error)?;
            rows.push((seq.value(), bytes.value().to_vec()));
        }
        Ok(rows)
    }

    fn access_log(&self) -> Result<Vec<AccessEntry>, StoreError> {
        Ok(self
            .access_log_rows()?
            .into_iter()
            .filter_map(|(_, bytes)| serde_json::from_slice(&bytes).ok())
            .collect())
    }

    fn devices(&self) -> Result<Vec<(String, DeviceRecord)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(DEVICES).map_err(db_error)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (did, record) = row.map_err(db_error)?;
            let record = serde_json::from_slice(record.value()).unwrap_or_default();
            out.push((did.value().to_owned(), record));
        }
        Ok(out)
    }

    fn sync_states(&self, peer: Option<[u8; 32]>) -> Result<SyncStates, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(SYNC_STATES).map_err(db_error)?;
        let rows = match &peer {
            Some(peer) => table.range((peer, &[0; 16])..=(peer, &[0xff; 16])),
            None => table.range::<(&[u8; 32], &[u8; 16])>(..),
        }
        .map_err(db_error)?;
        let mut out = SyncStates::new();
        for row in rows {
            let (key, state) = row.map_err(db_error)?;
            let (peer, doc) = key.value();
            out.entry(*peer)
                .or_default()
                .push((DocumentId::from_bytes(*doc), state.value().to_vec()));
        }
        Ok(out)
    }

    fn quarantined(&self) -> Result<Vec<(DocumentId, String)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(QUARANTINE).map_err(db_error)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(db_error)? {
            let (id, reason) = row.map_err(db_error)?;
            out.push((
                DocumentId::from_bytes(*id.value()),
                reason.value().to_owned(),
            ));
        }
        Ok(out)
    }

    fn read_docs(&self, ids: &[DocumentId]) -> Result<Vec<ReadDoc>, StoreError> {
        let mut read = Vec::with_capacity(ids.len());
        let mut broken = Vec::new();
        {
            let txn = self.db.begin_read().map_err(db_error)?;
            let snapshots = txn.open_table(SNAPSHOTS).map_err(db_error)?;
            let chunks = txn.open_table(CHUNKS).map_err(db_error)?;
            let quarantine = txn.open_table(QUARANTINE).map_err(db_error)?;
            for id in ids {
                let content =
                    if let Some(reason) = quarantine.get(id.as_bytes()).map_err(db_error)? {
                        Err(format!("quarantined: {}", reason.value()))
                    } else if let Some(snapshot) = snapshots.get(id.as_bytes()).map_err(db_error)? {
                        assemble(id, snapshot.value(), &chunks)
                            .map(|(doc, _)| doc)
                            .inspect_err(|reason| broken.push((*id, reason.clone())))
                    } else {
                        Err("not stored".to_owned())
                    };
                read.push(ReadDoc { id: *id, content });
            }
        }
        if !broken.is_empty() {
            for (id, reason) in &broken {
                tracing::error!(doc = %id, %reason, "document does not load; quarantined");
            }
            quarantine(&self.db, &broken).map_err(db_error)?;
        }
        Ok(read)
    }
}

/// The access log's last position and hash (0 and [`GENESIS`] when empty).
fn log_head(db: &Database) -> Result<(u64, [u8; 32]), redb::Error> {
    let txn = db.begin_read()?;
    let table = txn.open_table(ACCESS_LOG)?;
    let Some(last) = table.last()? else {
        return Ok((0, GENESIS));
    };
    let (seq, bytes) = (last.0.value(), last.1.value());
    // An unreadable tail keeps its position; `verify` reports it.
    let hash = serde_json::from_slice::<AccessEntry>(bytes)
        .ok()
        .and_then(|entry| access_log::unhex(&entry.hash))
        .unwrap_or(GENESIS);
    Ok((seq, hash))
}

/// Creates the tables and records the schema version; returns the version found.
fn prepare_schema(db: &Database) -> Result<u64, redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    let found = {
        let mut meta = txn.open_table(META)?;
        let found = meta.get("schema")?.map(|v| v.value());
        if found.is_none() {
            meta.insert("schema", SCHEMA_VERSION)?;
        }
        txn.open_table(DOCS)?;
        txn.open_table(DOC_HEADS)?;
        txn.open_table(SNAPSHOTS)?;
        txn.open_table(CHUNKS)?;
        txn.open_table(SYNC_STATES)?;
        txn.open_table(QUARANTINE)?;
        txn.open_table(DELEGATIONS)?;
        txn.open_table(REVOCATIONS)?;
        txn.open_table(DEVICES)?;
        txn.open_table(ACCESS_LOG)?;
        txn.open_table(REQUESTS)?;
        found.unwrap_or(SCHEMA_VERSION)
    };
    txn.commit()?;
    Ok(found)
}

/// A snapshot plus its chunks, in order; returns the document and the chunk count.
fn assemble(
    id: &DocumentId,
    snapshot: &[u8],
    chunks: &impl redb::ReadableTable<(&'static [u8; 16], u64), &'static [u8]>,
) -> Result<(Automerge, u64), String> {
    let mut doc = if snapshot.is_empty() {
        Automerge::new()
    } else {
        catch_load(|| Automerge::load(snapshot)).map_err(|e| format!("snapshot: {e}"))?
    };
    // All chunks go to Automerge in one call: applying them one by one re-validates the
    // whole document each time, which made opening quadratic in the number of chunks.
    let mut count = 0;
    let mut joined = Vec::new();
    let range = chunks
        .range((id.as_bytes(), 0)..=(id.as_bytes(), u64::MAX))
        .map_err(|e| e.to_string())?;
    for row in range {
        let (key, chunk) = row.map_err(|e| e.to_string())?;
        joined.extend_from_slice(chunk.value());
        count = key.value().1 + 1;
    }
    if !joined.is_empty() {
        catch_load(|| doc.load_incremental(&joined)).map_err(|e| format!("chunks: {e}"))?;
    }
    Ok((doc, count))
}

/// Runs an Automerge load, turning a panic inside it into an error.
fn catch_load<T>(load: impl FnOnce() -> Result<T, automerge::AutomergeError>) -> Result<T, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(load)) {
        Ok(result) => result.map_err(|e| e.to_string()),
        Err(_) => Err("Automerge panicked while loading".to_owned()),
    }
}

/// The heads as stored in [`DOC_HEADS`]: the same form as in a `Changes` sync item.
fn encode_heads(heads: &[ChangeHash]) -> Vec<u8> {
    membrane_protocol::sync::wire::encode_heads(heads).into_vec()
}

fn quarantine(db: &Database, broken: &[(DocumentId, String)]) -> Result<(), redb::Error> {
    let mut txn = db.begin_write()?;
    txn.set_two_phase_commit(true);
    {
        let mut table = txn.open_table(QUARANTINE)?;
        for (id, reason) in broken {
            table.insert(id.as_bytes(), reason.as_str())?;
        }
    }
    txn.commit()?;
    Ok(())
}

/// Reads what the node needs at open. Documents stay on disk: each is known by the heads
/// recorded with its last data. A document stored before heads were recorded is loaded
/// once to find them (and quarantined if it does not load).
fn load(db: &Database) -> Result<Loaded, redb::Error> {
    let mut loaded = Loaded::default();
    let mut newly_quarantined = Vec::new();
    let mut found_heads = Vec::new();
    {
        let txn = db.begin_read()?;
        let docs = txn.open_table(DOCS)?;
        let heads_table = txn.open_table(DOC_HEADS)?;
        let snapshots = txn.open_table(SNAPSHOTS)?;
        let chunks = txn.open_table(CHUNKS)?;
        let quarantine = txn.open_table(QUARANTINE)?;
        loaded.clock_floor = txn
            .open_table(META)?
            .get(CLOCK_FLOOR)?
            .map_or(0, |v| v.value());
        for row in txn.open_table(REQUESTS)?.iter()? {
            let (id, record) = row?;
            loaded.requests.push((id.value(), record.value().to_vec()));
        }
        for row in docs.iter()? {
            let (id, _) = row?;
            let id = DocumentId::from_bytes(*id.value());
            if let Some(reason) = quarantine.get(id.as_bytes())? {
                loaded.quarantined.push((id, reason.value().to_owned()));
                continue;
            }
            let recorded = heads_table
                .get(id.as_bytes())?
                .and_then(|bytes| decode_heads(bytes.value()));
            if let Some(heads) = recorded {
                let chunk_count = chunks
                    .range((id.as_bytes(), 0)..=(id.as_bytes(), u64::MAX))?
                    .next_back()
                    .transpose()?
                    .map_or(0, |(key, _)| key.value().1 + 1);
                loaded.docs.push(StoredDoc {
                    id,
                    heads,
                    chunks: chunk_count,
                });
                continue;
            }
            let snapshot = snapshots.get(id.as_bytes())?;
            let snapshot = snapshot.as_ref().map(|s| s.value()).unwrap_or(&[]);
            match assemble(&id, snapshot, &chunks) {
                Ok((doc, count)) => {
                    let heads = doc.get_heads();
                    found_heads.push((id, encode_heads(&heads)));
                    loaded.docs.push(StoredDoc {
                        id,
                        heads,
                        chunks: count,
                    });
                }
                Err(reason) => {
                    tracing::error!(doc = %id, %reason, "document does not load; quarantined");
                    newly_quarantined.push((id, reason));
                }
            }
        }
    }
    if !found_heads.is_empty() {
        let mut txn = db.begin_write()?;
        txn.set_two_phase_commit(true);
        {
            let mut table = txn.open_table(DOC_HEADS)?;
            for (id, heads) in &found_heads {
                table.insert(id.as_bytes(), heads.as_slice())?;
            }
        }
        txn.commit()?;
    }
    if !newly_quarantined.is_empty() {
        quarantine(db, &newly_quarantined)?;
        loaded.quarantined.extend(newly_quarantined);
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use automerge::{ROOT, ReadDoc as _, transaction::Transactable as _};

    use super::*;

    fn doc_with(key: &str, value: &str) -> Automerge {
        let mut doc = Automerge::new();
        doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, key, value))
            .unwrap();
        doc
    }

    #[tokio::test]
    async fn documents_survive_reopen_with_chunks_and_compaction() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let id = DocumentId::from_bytes([3; 16]);
        let mut doc = doc_with("a", "1");
        {
            let (store, loaded, thread) = StoreHandle::open(&path).unwrap();
            assert!(loaded.docs.is_empty());
            store
                .create_doc(
                    id,
                    DocMeta {
                        name: Some("notes".into()),
                        created: 5,
                    },
                    doc.save(),
                    doc.get_heads(),
                )
                .await
                .unwrap();
            let before = doc.get_heads();
            doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "b", "2"))
                .unwrap();
            let chunk = doc.save_after(&before);
            assert_eq!(store.append(id, chunk, doc.get_heads()).await.unwrap(), 1);
            drop(store);
            thread.join().unwrap();
        }
        let (store, loaded, thread) = StoreHandle::open(&path).unwrap();
        assert_eq!(loaded.docs.len(), 1);
        let known = &loaded.docs[0];
        assert_eq!((known.id, known.chunks), (id, 1));
        // Known by heads at open; the content comes on demand.
        assert_eq!(known.heads, doc.get_heads());
        let restored = store.read_doc(id).await.unwrap().unwrap();
        assert_eq!(restored.get_heads(), doc.get_heads());
        store.compact(id, doc.save(), 1).await.unwrap();
        drop(store);
        thread.join().unwrap();
        let (store, loaded, _thread) = StoreHandle::open(&path).unwrap();
        assert_eq!(loaded.docs[0].chunks, 0);
        assert_eq!(loaded.docs[0].heads, doc.get_heads());
        let restored = store.read_doc(id).await.unwrap().unwrap();
        let value = restored.get(ROOT, "b").unwrap().unwrap().0;
        assert_eq!(value.into_string().unwrap(), "2");
    }

    #[tokio::test]
    async fn a_store_written_before_heads_were_recorded_finds_them_once_at_open() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let id = DocumentId::from_bytes([5; 16]);
        let doc = doc_with("k", "v");
        {
            let (store, _, thread) = StoreHandle::open(&path).unwrap();
            store
                .create_doc(id, DocMeta::default(), doc.save(), doc.get_heads())
                .await
                .unwrap();
            drop(store);
            thread.join().unwrap();
        }
        {
            // What an older node left: the same tables without the heads.
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(DOC_HEADS).unwrap();
            txn.commit().unwrap();
        }
        for _ in 0..2 {
            let (store, loaded, thread) = StoreHandle::open(&path).unwrap();
            assert_eq!(loaded.docs.len(), 1);
            assert_eq!(loaded.docs[0].heads, doc.get_heads());
            drop(store);
            thread.join().unwrap();
        }
        let db = Database::create(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let recorded = txn.open_table(DOC_HEADS).unwrap();
        let bytes = recorded.get(id.as_bytes()).unwrap().unwrap();
        assert_eq!(decode_heads(bytes.value()).unwrap(), doc.get_heads());
    }

    #[tokio::test]
    async fn thousands_of_chunks_reopen_in_order() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let id = DocumentId::from_bytes([4; 16]);
        let mut doc = Automerge::new();
        {
            let (store, _, thread) = StoreHandle::open(&path).unwrap();
            store
                .create_doc(id, DocMeta::default(), doc.save(), doc.get_heads())
                .await
                .unwrap();
            let mut pending = Vec::new();
            for i in 0..3_000_i64 {
                doc.transact::<_, _, automerge::AutomergeError>(|tx| tx.put(ROOT, "k", i))
                    .unwrap();
                let chunk = doc.get_last_local_change().unwrap().raw_bytes().to_vec();
                let heads = doc.get_heads();
                pending.push(store.enqueue_append(id, chunk, heads).await.unwrap());
            }
            for p in pending {
                p.durable().await.unwrap();
            }
            drop(store);
            thread.join().unwrap();
        }
        let (store, loaded, _thread) = StoreHandle::open(&path).unwrap();
        assert_eq!(loaded.docs[0].chunks, 3_000);
        assert_eq!(loaded.docs[0].heads, doc.get_heads());
        let restored = store.read_doc(id).await.unwrap().unwrap();
        assert_eq!(restored.get_heads(), doc.get_heads());
    }

    #[tokio::test]
    async fn a_second_open_of_the_same_file_is_refused() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let (_store, _loaded, _thread) = StoreHandle::open(&path).unwrap();
        assert!(matches!(
            StoreHandle::open(&path),
            Err(OpenStoreError::InUse(_))
        ));
    }

    #[tokio::test]
    async fn a_document_that_does_not_load_is_quarantined_and_the_rest_served() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let (good, bad) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        );
        {
            let (store, _, thread) = StoreHandle::open(&path).unwrap();
            let fine = doc_with("k", "v");
            store
                .create_doc(good, DocMeta::default(), fine.save(), fine.get_heads())
                .await
                .unwrap();
            // Heads recorded as for any document; the bytes are what went bad.
            store
                .create_doc(
                    bad,
                    DocMeta::default(),
                    b"not automerge".to_vec(),
                    Vec::new(),
                )
                .await
                .unwrap();
            let read = store.read_docs(vec![good, bad]).await.unwrap();
            assert!(read[0].content.is_ok());
            assert!(read[1].content.as_ref().unwrap_err().contains("snapshot"));
            assert_eq!(store.quarantined().await.unwrap().len(), 1);
            // Asked again, it is refused without another attempt.
            let again = store.read_docs(vec![bad]).await.unwrap();
            assert!(
                again[0]
                    .content
                    .as_ref()
                    .unwrap_err()
                    .starts_with("quarantined")
            );
            drop(store);
            thread.join().unwrap();
        }
        let (store, loaded, _thread) = StoreHandle::open(&path).unwrap();
        assert_eq!(loaded.docs.len(), 1);
        assert_eq!(loaded.docs[0].id, good);
        assert_eq!(loaded.quarantined.len(), 1);
        assert_eq!(loaded.quarantined[0].0, bad);
        assert_eq!(store.quarantined().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_store_from_before_heads_quarantines_what_does_not_load_at_open() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let bad = DocumentId::from_bytes([2; 16]);
        {
            let (store, _, thread) = StoreHandle::open(&path).unwrap();
            store
                .create_doc(
                    bad,
                    DocMeta::default(),
                    b"not automerge".to_vec(),
                    Vec::new(),
                )
                .await
                .unwrap();
            drop(store);
            thread.join().unwrap();
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(DOC_HEADS).unwrap();
            txn.commit().unwrap();
        }
        let (_store, loaded, _thread) = StoreHandle::open(&path).unwrap();
        assert!(loaded.docs.is_empty());
        assert_eq!(loaded.quarantined.len(), 1);
    }

    #[tokio::test]
    async fn sync_states_are_read_per_peer_or_all_after_reopen() {
        let temp = tempfile::tempdir().unwrap();
        let path = temp.path().join("store.redb");
        let phone = membrane_protocol::SecretKey::from_seed([1; 32]).did();
        let pi = membrane_protocol::SecretKey::from_seed([2; 32]).did();
        let (a, b) = (
            DocumentId::from_bytes([1; 16]),
            DocumentId::from_bytes([2; 16]),
        );
        {
            let (store, _, thread) = StoreHandle::open(&path).unwrap();
            store.save_sync_state(&phone, a, vec![1]).await.unwrap();
            store.save_sync_state(&phone, b, vec![2]).await.unwrap();
            store.save_sync_state(&pi, a, vec![3]).await.unwrap();
            // A newer state replaces the older one.
            store.save_sync_state(&phone, a, vec![4]).await.unwrap();
            drop(store);
            thread.join().unwrap();
        }
        let (store, _, _thread) = StoreHandle::open(&path).unwrap();
        let of_phone = store.sync_states(Some(&phone)).await.unwrap();
        assert_eq!(of_phone.len(), 1);
        assert_eq!(of_phone[phone.as_bytes()], vec![(a, vec![4]), (b, vec![2])]);
        let all = store.sync_states(None).await.unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[pi.as_bytes()], vec![(a, vec![3])]);
        // A write queued before the read is seen by it.
        let pending = store.enqueue_sync_state(&pi, b, vec![5]).await.unwrap();
        let of_pi = store.sync_states(Some(&pi)).await.unwrap();
        assert_eq!(of_pi[pi.as_bytes()], vec![(a, vec![3]), (b, vec![5])]);
        pending.durable().await.unwrap();
    }
}
