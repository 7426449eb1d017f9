//! Starting a node and talking to it: [`Node::start`] returns a cloneable [`NodeHandle`].

use std::{
    collections::HashMap,
    fs::File,
    sync::{Arc, Mutex},
};

use automerge::Automerge;
use libp2p::Multiaddr;
use membrane_protocol::{
    Did, DocumentId,
    sync::{DocSet, HubConfig, SyncHub},
};
use serde_json::Value as Json;
use tokio::{
    sync::{broadcast, mpsc, oneshot, watch},
    task::JoinHandle,
};

use membrane_protocol::pairing::{Invitation, PairingTicket};

use crate::{
    config::Config,
    control,
    identity::{DataDir, DeviceIdentity, IdentityError, LinkBundle},
    net::{NetActor, NetCommand, NetError, Traffic},
    pairing::{InviteEvent, Pairing},
    repo::{
        self, ChangeInfo, DocEvent, DocInfo, EditFn, NodeError, RepoActor, RepoCommand, Status,
    },
    sharing::{GrantInfo, GrantRequest, IssuedGrant, ShareCommand, SharedInfo, WhoCan},
    store::{OpenStoreError, StoreHandle, access_log::AccessEntry},
};

/// Depth of the queues between the handle, the repo actor and the network actor.
const QUEUE_DEPTH: usize = 1024;
/// Document events buffered per watcher before a slow watcher misses some.
const EVENT_BUFFER: usize = 1024;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The identity is missing or incomplete.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Another daemon runs on this data dir.
    #[error(
        "another membrane daemon is already running on {0}; stop it first or use another --data-dir"
    )]
    AlreadyRunning(String),
    /// The store did not open.
    #[error(transparent)]
    Store(#[from] OpenStoreError),
    /// The network did not start.
    #[error(transparent)]
    Net(#[from] NetError),
    /// Anything else on the way.
    #[error("cannot start: {0}")]
    Other(String),
}

/// A running node.
#[derive(Debug)]
pub struct Node;

struct Running {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    store_thread: Option<std::thread::JoinHandle<()>>,
    _lock: File,
}

/// A cloneable handle to a running node: the API an app, a test or the control socket uses.
#[derive(Clone)]
pub struct NodeHandle {
    commands: mpsc::Sender<RepoCommand>,
    net: mpsc::Sender<NetCommand>,
    events: broadcast::Sender<DocEvent>,
    listen: watch::Receiver<Vec<Multiaddr>>,
    device: Did,
    root: Did,
    data_dir: DataDir,
    traffic: Arc<Traffic>,
    incoming: Arc<crate::repo::Incoming>,
    pairing: Pairing,
    identity: Arc<DeviceIdentity>,
    running: Arc<Mutex<Option<Running>>>,
    /// What to give others instead of the listen addresses ([`Config::announce`]).
    announce: Option<Vec<Multiaddr>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("device", &self.device)
            .finish()
    }
}

/// A change queued with [`NodeHandle::edit_queued`].
#[derive(Debug)]
pub struct QueuedEdit(oneshot::Receiver<Result<Vec<String>, NodeError>>);

impl QueuedEdit {
    /// Waits until the change is durable; returns the document's heads after it.
    pub async fn durable(self) -> Result<Vec<String>, NodeError> {
        self.0.await.map_err(|_| NodeError::Stopped)?
    }
}

impl Node {
    /// Starts a node over `config.data_dir`: opens (and checks) the store, starts the
    /// network and, if configured, the control socket.
    pub async fn start(config: Config) -> Result<NodeHandle, StartError> {
        crate::memory::limit_arenas();
        let dir = DataDir::new(&config.data_dir);
        let identity = DeviceIdentity::load(&dir)?;
        let lock = lock_data_dir(&dir)?;

        let store_path = dir.path().join("store.redb");
        let (store, mut loaded, store_thread) =
            tokio::task::spawn_blocking(move || StoreHandle::open(&store_path))
                .await
                .map_err(|e| StartError::Other(e.to_string()))??;
        if loaded.repaired {
            tracing::warn!("the store was not closed cleanly; redb repaired it");
        }
        for (doc, reason) in &loaded.quarantined {
            tracing::error!(%doc, %reason, "quarantined document (not served; other devices can restore it)");
        }

        // Keep this device's delegations in the store too, next to those peers present.
        // They are queued, not waited for one by one: the identity file holds them
        // already, and queued together they share one commit instead of one fsync each.
        for delegation in identity.delegations() {
            let cid = delegation.cid().to_bytes();
            match store
                .enqueue_delegation(cid, delegation.as_bytes().to_vec())
                .await
            {
                Ok(pending) => {
                    tokio::spawn(async move {
                        if let Err(error) = pending.durable().await {
                            tracing::warn!(%error, "could not store this device's delegation");
                        }
                    });
                }
                Err(error) => tracing::warn!(%error, "could not store this device's delegation"),
            }
        }

        let mut docs = DocSet::new();
        let mut chunks = HashMap::new();
        let actor = repo::actor_for(&identity.device.did());
        let loaded_clock_floor = loaded.clock_floor;
        let loaded_requests = std::mem::take(&mut loaded.requests);
        // Documents are known by their heads; their content is read when first needed.
        for stored in loaded.docs {
            chunks.insert(stored.id, stored.chunks);
            docs.insert_unloaded(stored.id, stored.heads);
        }
        let hub = SyncHub::new(
            HubConfig {
                me: identity.device.did(),
                root: identity.root,
                chain: identity.authority.clone(),
                clock_skew: config.clock_skew_secs,
                max_frame_size: membrane_protocol::sync::wire::MAX_FRAME_SIZE,
            },
            docs,
        );

        let (command_tx, commands) = mpsc::channel(QUEUE_DEPTH);
        let (net_tx, net_commands) = mpsc::channel(QUEUE_DEPTH);
        let (net_event_tx, net_events) = mpsc::channel(QUEUE_DEPTH);
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (listen_tx, listen) = watch::channel(Vec::new());
        let (shutdown, shutdown_rx) = watch::channel(false);

        let traffic = Arc::new(Traffic::default());
        let incoming = Arc::new(crate::repo::Incoming::default());
        let net = NetActor::new(
            &identity.device,
            &config,
            net_event_tx,
            net_commands,
            traffic.clone(),
        )?;
        let repo = RepoActor {
            hub,
            store,
            net: net_tx.clone(),
            commands,
            net_events,
            events: events.clone(),
            actor,
            root: identity.root,
            device: identity.device.did(),
            index: repo::index_id(&identity.root),
            compaction: HashMap::new(),
            chunks,
            compact_after: config.compact_after_chunks,
            compacting: Default::default(),
            compaction_tasks: HashMap::new(),
            last_heads: HashMap::new(),
            incoming: incoming.clone(),
            receiving: HashMap::new(),
            listen: Vec::new(),
            sessions: HashMap::new(),
            quarantined: loaded.quarantined,
            identity: Arc::new(identity.clone()),
            revocations_dirty: true,
            awaiting_hello: HashMap::new(),
            refused: Default::default(),
            refused_peers: Default::default(),
            clock_floor: loaded_clock_floor,
            clock_floor_stored: loaded_clock_floor,
            revoked: Default::default(),
            revoked_devices: Default::default(),
            requests: crate::requests::RequestQueue::load(loaded_requests),
            views: Default::default(),
            stale_views: Default::default(),
            to_load: Default::default(),
            vouch_checked: Default::default(),
            trimmer: Default::default(),
            use_marks: Default::default(),
            listen_tx,
            announce: config.announce.clone(),
            traffic: traffic.clone(),
        };
        let request_control = net.control();
        let pairing = Pairing::default();
        let (joined_tx, mut joined) = mpsc::channel(16);
        let pairing_task = tokio::spawn(pairing.clone().serve(
            net.control(),
            Arc::new(identity.clone()),
            joined_tx,
        ));
        let mut tasks = vec![
            tokio::spawn(net.run(shutdown_rx.clone())),
            tokio::spawn(repo.run(shutdown_rx.clone())),
        ];
        let handle = NodeHandle {
            commands: command_tx,
            net: net_tx,
            events,
            listen,
            device: identity.device.did(),
            root: identity.root,
            data_dir: dir.clone(),
            traffic,
            incoming,
            pairing,
            identity: Arc::new(identity.clone()),
            running: Arc::new(Mutex::new(None)),
            announce: config.announce.clone(),
        };
        // Strangers may file access requests; this device asks after the ones it filed.
        let serving = crate::requests::serve(request_control, handle.clone());
        let server = async move {
            serving.await;
            std::future::pending::<()>().await;
        };
        let poller = handle.clone();
        let poll_every = config.request_poll;
        let polling = async move {
            let mut tick = tokio::time::interval(poll_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                crate::requests::check_asked(&poller, &poller.identity).await;
            }
        };
        let mut stopping = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                _ = stopping.changed() => {}
                () = server => {}
                () = polling => {}
            }
        }));
        // Record devices that join through this node in the replicated registry, and this
        // device itself the first time it runs.
        let recorder = handle.clone();
        let me = identity.device.did();
        let (own_authority, own_powerline) =
            (identity.authority.clone(), identity.powerline.clone());
        tasks.push(tokio::spawn(async move {
            let known = recorder
                .devices()
                .await
                .is_ok_and(|all| all.iter().any(|d| d.this_device));
            let own = LinkBundle {
                authority: own_authority,
                powerline: own_powerline,
            };
            if !known && let Err(error) = recorder.record_device(me, None, &own).await {
                tracing::error!(%error, "could not record this device in the registry");
            }
            while let Some((device, name, bundle)) = joined.recv().await {
                if let Err(error) = recorder.record_device(device, name, &bundle).await {
                    tracing::error!(%error, "could not record the new device");
                }
            }
        }));
        let mut stopping = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let _ = stopping.changed().await;
            pairing_task.abort();
        }));
        if config.control_socket {
            let listener = control::bind(&dir).map_err(|e| StartError::Other(e.to_string()))?;
            tasks.push(tokio::spawn(control::serve(
                listener,
                handle.clone(),
                shutdown_rx,
            )));
        }
        *handle.running.lock().expect("not poisoned") = Some(Running {
            shutdown,
            tasks,
            store_thread: Some(store_thread),
            _lock: lock,
        });
        tracing::info!(device = %identity.device.did(), root = %identity.root, "node started");
        Ok(handle)
    }
}

fn lock_data_dir(dir: &DataDir) -> Result<File, StartError> {
    let path = dir.path().join("daemon.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StartError::Other(format!("{}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(StartError::AlreadyRunning(dir.path().display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(StartError::Other(format!("{}: {e}", path.display())))
        }
    }
}

impl NodeHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> RepoCommand,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// This device's DID.
    pub fn device(&self) -> Did {
        self.device
    }

    /// The person's root DID.
    pub fn root(&self) -> Did {
        self.root
    }

    /// Opens an invitation for a new device, valid for `ttl_secs`; replaces any open one.
    /// `name` is recorded for the device if it gives none itself.
    /// Returns the ticket (for the QR code) and the invitation's events.
    pub async fn invite(
        &self,
        ttl_secs: u64,
        name: Option<String>,
    ) -> Result<(PairingTicket, mpsc::Receiver<InviteEvent>), NodeError> {
        let addrs = match &self.announce {
            Some(announced) => announced.clone(),
            None => self.listen_addrs(1).await,
        };
        let secret = crate::random::bytes::<16>().map_err(|e| NodeError::Invalid(e.to_string()))?;
        let ticket = PairingTicket {
            inviter: self.device,
            root: self.root,
            addrs: addrs
                .iter()
                .map(|addr| {
                    addr.iter()
                        .filter(|p| !matches!(p, libp2p::multiaddr::Protocol::P2p(_)))
                        .collect::<Multiaddr>()
                        .to_vec()
                })
                .collect(),
            secret,
            expires: crate::time::now() + ttl_secs,
        };
        let events = self.pairing.open(Invitation::new(ticket.clone()), name);
        Ok((ticket, events))
    }

    /// The person's devices, from the replicated registry.
    pub async fn devices(&self) -> Result<Vec<crate::repo::DeviceEntry>, NodeError> {
        self.ask(|reply| RepoCommand::Devices { reply }).await
    }

    /// Adds a device to the person's replicated registry. `bundle` holds the chains that
    /// make it a device of the person; they are kept so any device can later revoke it.
    pub async fn record_device(
        &self,
        device: Did,
        name: Option<String>,
        bundle: &LinkBundle,
    ) -> Result<(), NodeError> {
        let chain = |c: &[membrane_protocol::ucan::Delegation]| -> Vec<String> {
            c.iter()
                .map(|d| membrane_protocol::ucan::encode_base64(d.as_bytes()))
                .collect()
        };
        let (authority, powerline) = (chain(&bundle.authority), chain(&bundle.powerline));
        self.ask(|reply| RepoCommand::RecordDevice {
            device,
            name,
            authority,
            powerline,
            reply,
        })
        .await
    }

    /// Revokes a device (by DID or name) from this device: a revocation of its delegations
    /// goes into the replicated registry, and every device then refuses it.
    pub async fn revoke_device(&self, device: &str) -> Result<Vec<String>, NodeError> {
        let target = device.to_owned();
        self.ask(|reply| RepoCommand::RevokeDevice { target, reply })
            .await
    }

    /// Grants another person's device (or person) access to one document: signs a UCAN
    /// delegation from this device on the root's behalf, records it in the replicated
    /// registry, and returns the code to hand the grantee.
    pub async fn grant(&self, request: GrantRequest) -> Result<IssuedGrant, NodeError> {
        self.ask(|reply| RepoCommand::Share(ShareCommand::Grant(request, reply)))
            .await
    }

    /// The grants this person issued.
    pub async fn grants(&self) -> Result<Vec<GrantInfo>, NodeError> {
        self.ask(|reply| RepoCommand::Share(ShareCommand::Grants(reply)))
            .await
    }

    /// Accepts a grant code from another person: the grant is recorded, and this device
    /// syncs the documents it covers with that person's devices.
    pub async fn accept(&self, code: &str) -> Result<SharedInfo, NodeError> {
        let code = code.to_owned();
        let shared = self
            .ask(|reply| RepoCommand::Share(ShareCommand::Accept(code, reply)))
            .await?;
        // Reach the sharer now rather than at the next redial round. The addresses are
        // also remembered, so a failed dial here is retried there.
        for addr in shared
            .addrs
            .iter()
            .filter_map(|a| a.parse::<Multiaddr>().ok())
        {
            let _ = self.dial(addr).await;
        }
        Ok(shared)
    }

    /// What others share with this person.
    pub async fn shared(&self) -> Result<Vec<SharedInfo>, NodeError> {
        self.ask(|reply| RepoCommand::Share(ShareCommand::Shared(reply)))
            .await
    }

    /// Revokes a grant (by CID, or a prefix of at least 8 characters): every device of
    /// the person refuses it once the revocation reaches it.
    pub async fn revoke_grant(&self, grant: &str) -> Result<Vec<String>, NodeError> {
        let grant = grant.to_owned();
        self.ask(|reply| RepoCommand::Share(ShareCommand::Revoke(grant, reply)))
            .await
    }

    /// Who can reach a document (by id or name), and through which grants.
    pub async fn who_can(&self, doc: &str) -> Result<WhoCan, NodeError> {
        let doc = doc.to_owned();
        self.ask(|reply| RepoCommand::Share(ShareCommand::WhoCan(doc, reply)))
            .await
    }

    /// This node's access log, oldest first.
    pub async fn access_log(&self) -> Result<Vec<AccessEntry>, NodeError> {
        self.ask(|reply| RepoCommand::Share(ShareCommand::Log(reply)))
            .await
    }

    /// Checks the access log's hash chain; returns the number of entries, or where it was
    /// altered.
    pub async fn verify_access_log(&self) -> Result<u64, NodeError> {
        self.ask(|reply| RepoCommand::Share(ShareCommand::VerifyLog(reply)))
            .await
    }

    /// Files a request for access with another person's device at `addr` (ending in
    /// `/p2p/<peer id>`). Returns the request's number there; this node asks after it and
    /// accepts the grant by itself once it is approved.
    pub async fn request(
        &self,
        addr: &Multiaddr,
        doc: &str,
        can: crate::sharing::Can,
        terms: Option<String>,
        note: Option<String>,
        expires_in: Option<u64>,
    ) -> Result<u64, crate::requests::RequestError> {
        let message = crate::requests::RequestMessage::Ask {
            doc: doc.to_owned(),
            can: can.as_str().to_owned(),
            terms,
            note,
            expires_in,
        };
        let id = crate::requests::file(&self.identity, addr, &message).await?;
        let (addr, doc, can) = (addr.clone(), doc.to_owned(), can.as_str().to_owned());
        self.ask(|reply| RepoCommand::RecordAsked {
            addr,
            id,
            doc,
            can,
            reply,
        })
        .await?;
        Ok(id)
    }

    /// The requests this device filed with others, and where they stand.
    pub async fn asked(&self) -> Result<Vec<crate::requests::AskedRequest>, NodeError> {
        self.ask(|reply| RepoCommand::Asked { reply }).await
    }

    pub(crate) async fn settle_asked(
        &self,
        addr: &str,
        id: u64,
        state: &str,
        reason: Option<String>,
    ) -> Result<(), NodeError> {
        let (addr, state) = (addr.to_owned(), state.to_owned());
        self.ask(|reply| RepoCommand::SettleAsked {
            addr,
            id,
            state,
            reason,
            reply,
        })
        .await
    }

    pub(crate) async fn incoming_request(
        &self,
        peer: Did,
        message: crate::requests::RequestMessage,
    ) -> Result<crate::requests::RequestAnswer, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(RepoCommand::Request(
                crate::requests::RequestCommand::Incoming(peer, message, reply),
            ))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)
    }

    /// The access requests others filed with this person.
    pub async fn requests(&self) -> Result<Vec<crate::requests::AccessRequest>, NodeError> {
        self.ask(|reply| RepoCommand::Request(crate::requests::RequestCommand::List(reply)))
            .await
    }

    /// Approves request `id`: issues the grant it asked for (for `expires_in` seconds, else
    /// what it asked, else 30 days); the requester's node picks it up.
    pub async fn approve(
        &self,
        id: u64,
        expires_in: Option<u64>,
    ) -> Result<IssuedGrant, NodeError> {
        self.ask(|reply| {
            RepoCommand::Request(crate::requests::RequestCommand::Approve(
                id, expires_in, reply,
            ))
        })
        .await
    }

    /// Denies request `id`, telling the requester `reason`.
    pub async fn deny(&self, id: u64, reason: &str) -> Result<(), NodeError> {
        let reason = reason.to_owned();
        self.ask(|reply| {
            RepoCommand::Request(crate::requests::RequestCommand::Deny(id, reason, reply))
        })
        .await
    }

    /// Frames and bytes on sync streams since start.
    pub fn traffic(&self) -> &Traffic {
        &self.traffic
    }

    /// The data directory.
    pub fn data_dir(&self) -> &DataDir {
        &self.data_dir
    }

    /// Creates a document (optionally named, optionally with JSON content); returns once it
    /// is durable.
    pub async fn create_doc(
        &self,
        name: Option<String>,
        content: Option<Json>,
    ) -> Result<DocumentId, NodeError> {
        self.ask(|reply| RepoCommand::Create {
            name,
            content,
            reply,
        })
        .await
    }

    /// The JSON at `path` (a JSON pointer; `/` or empty for the whole document). `doc` is
    /// an id or a name.
    pub async fn get(&self, doc: &str, path: &str) -> Result<Option<Json>, NodeError> {
        let (doc, path) = (doc.to_owned(), path.to_owned());
        self.ask(|reply| RepoCommand::Get { doc, path, reply })
            .await
    }

    /// Writes `value` at `path`; returns the new heads once the change is durable.
    pub async fn set(&self, doc: &str, path: &str, value: Json) -> Result<Vec<String>, NodeError> {
        let (doc, path) = (doc.to_owned(), path.to_owned());
        self.ask(|reply| RepoCommand::Set {
            doc,
            path,
            value,
            reply,
        })
        .await
    }

    /// Runs an arbitrary change in one transaction; returns once it is durable.
    pub async fn edit(&self, doc: DocumentId, edit: EditFn) -> Result<Vec<String>, NodeError> {
        self.ask(|reply| RepoCommand::Edit { doc, edit, reply })
            .await
    }

    /// Queues a change without waiting for it: returns once the change is queued, with a
    /// [`QueuedEdit`] that resolves when it is durable. Queued changes to one document
    /// apply in the order they were queued (changes to different documents queued together
    /// may apply in another order), and the store commits those that arrive together in
    /// one transaction.
    pub async fn edit_queued(
        &self,
        doc: DocumentId,
        edit: EditFn,
    ) -> Result<QueuedEdit, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(RepoCommand::Edit { doc, edit, reply })
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(QueuedEdit(answer))
    }

    /// Reads a document with a closure; `None` if it is not held.
    pub async fn read<T: Send + 'static>(
        &self,
        doc: DocumentId,
        read: impl FnOnce(&Automerge) -> T + Send + 'static,
    ) -> Result<Option<T>, NodeError> {
        let (reply, answer) = oneshot::channel();
        let read = Box::new(move |d: &Automerge| {
            let _ = reply.send(read(d));
        });
        self.commands
            .send(RepoCommand::Read { doc, read })
            .await
            .map_err(|_| NodeError::Stopped)?;
        Ok(answer.await.ok())
    }

    /// Every document (not the index).
    pub async fn list(&self) -> Result<Vec<DocInfo>, NodeError> {
        self.ask(|reply| RepoCommand::List { reply }).await
    }

    /// A document's changes, oldest first.
    pub async fn history(&self, doc: &str) -> Result<Vec<ChangeInfo>, NodeError> {
        let doc = doc.to_owned();
        self.ask(|reply| RepoCommand::History { doc, reply }).await
    }

    /// Identity, peers and per-document sync state.
    pub async fn status(&self) -> Result<Status, NodeError> {
        self.ask(|reply| RepoCommand::Status { reply }).await
    }

    /// New documents arriving from peers (a new device's first sync), counted as they are
    /// stored; readable while the node is busy applying them.
    pub fn incoming(&self) -> &crate::repo::Incoming {
        &self.incoming
    }

    /// Document change events.
    pub fn watch(&self) -> broadcast::Receiver<DocEvent> {
        self.events.subscribe()
    }

    /// Dials an address now and keeps redialing it while disconnected.
    pub async fn dial(&self, addr: Multiaddr) -> Result<(), NodeError> {
        self.net
            .send(NetCommand::Dial(addr))
            .await
            .map_err(|_| NodeError::Stopped)
    }

    /// The addresses the node listens on (with `/p2p/<peer id>`), once it listens on at
    /// least `count` of them.
    pub async fn listen_addrs(&self, count: usize) -> Vec<Multiaddr> {
        let mut listen = self.listen.clone();
        let _ = listen.wait_for(|addrs| addrs.len() >= count).await;
        listen.borrow().clone()
    }

    /// Stops the node: network and repo actors end, queued writes are committed, the store
    /// closes. Waits for all of it.
    pub async fn shutdown(&self) {
        let running = self.running.lock().expect("not poisoned").take();
        let Some(mut running) = running else { return };
        let _ = running.shutdown.send(true);
        for task in running.tasks.drain(..) {
            let _ = task.await;
        }
        if let Some(thread) = running.store_thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
        let socket = control::socket_path(&self.data_dir);
        let _ = std::fs::remove_file(socket);
    }
}

#[cfg(test)]
mod tests {
    use automerge::ReadDoc as _;
    use redb::ReadableDatabase as _;

    use super::*;
    use crate::{DataDir, DeviceIdentity, store::tables};

    /// A new person's only device in `base/node`: its data dir and a loopback TCP config
    /// without control socket.
    fn fresh_node(base: &std::path::Path) -> (std::path::PathBuf, Config) {
        let dir = base.join("node");
        DeviceIdentity::init(&DataDir::new(&dir), crate::time::now()).unwrap();
        let mut config = Config::loopback(&dir);
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().unwrap()];
        config.control_socket = false;
        (dir, config)
    }

    /// Chunk rows left in the store for `doc`, read from the redb file itself.
    fn stored_chunks(dir: &std::path::Path, doc: DocumentId) -> usize {
        let db = redb::Database::open(dir.join("store.redb")).unwrap();
        let read = db.begin_read().unwrap();
        let chunks = read.open_table(tables::CHUNKS).unwrap();
        chunks
            .range((doc.as_bytes(), 0)..=(doc.as_bytes(), u64::MAX))
            .unwrap()
            .count()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn compaction_runs_beside_the_actor_and_loses_nothing() {
        const WRITERS: usize = 4;
        const EDITS_EACH: usize = 30;
        const TEXT: usize = 200_000;
        let temp = tempfile::tempdir().unwrap();
        let (dir, mut config) = fresh_node(temp.path());
        config.compact_after_chunks = 4;
        let node = Node::start(config.clone()).await.unwrap();
        let doc = node.create_doc(Some("notes".into()), None).await.unwrap();
        // A document large enough that saving it takes a while: edits keep landing (each
        // `set` is one change and one chunk) while compactions save their copies.
        node.edit(
            doc,
            Box::new(|tx| crate::repo::splice_root_text(tx, "text", 0, 0, &"x".repeat(TEXT))),
        )
        .await
        .unwrap();
        let mut writers = Vec::new();
        for writer in 0..WRITERS {
            let node = node.clone();
            let name = doc.to_string();
            writers.push(tokio::spawn(async move {
                for i in 0..EDITS_EACH {
                    node.set(&name, &format!("/w{writer}_{i}"), serde_json::json!(i))
                        .await
                        .unwrap();
                }
            }));
        }
        for writer in writers {
            writer.await.unwrap();
        }
        node.shutdown().await;

        // Each change was its own chunk (a `set` is one change), so at least one per
        // edit was written; compactions dropped most of them.
        let left = stored_chunks(&dir, doc);
        assert!(
            left < EDITS_EACH,
            "{left} of at least {} chunks left uncompacted",
            WRITERS * EDITS_EACH
        );

        // Nothing acknowledged is missing, including the edits that landed while a copy
        // was being saved (on this machine most compactions see one to three). A later
        // compaction's copy holds those too, so this checks the whole, not each step.
        let node = Node::start(config).await.unwrap();
        let name = doc.to_string();
        for writer in 0..WRITERS {
            for i in 0..EDITS_EACH {
                assert_eq!(
                    node.get(&name, &format!("/w{writer}_{i}")).await.unwrap(),
                    Some(serde_json::json!(i)),
                    "/w{writer}_{i} lost across compaction and restart"
                );
            }
        }
        let text = node
            .read(doc, |d| crate::repo::root_text(d, "text"))
            .await
            .unwrap()
            .flatten();
        assert_eq!(text.map(|t| t.len()), Some(TEXT));
        node.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_edits_across_documents_keep_each_documents_order() {
        // 40 documents × 20 rounds = 800 edits: within the command queue (1,024) and one
        // pass (1,024 edits), and more documents than one load batch (32).
        const DOCS: usize = 40;
        const ROUNDS: usize = 20;
        let temp = tempfile::tempdir().unwrap();
        let (_, config) = fresh_node(temp.path());
        let node = Node::start(config.clone()).await.unwrap();
        let mut docs = Vec::new();
        for i in 0..DOCS {
            docs.push(node.create_doc(Some(format!("d{i}")), None).await.unwrap());
        }
        // Hold the actor inside a read until every edit is queued, so it then takes them
        // all in one pass, interleaved across the documents.
        let (held_tx, held) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let reader = node.clone();
        let first = docs[0];
        let gate = tokio::spawn(async move {
            reader
                .read(first, move |_| {
                    let _ = held_tx.send(());
                    let _ = released.recv();
                })
                .await
        });
        held.await.unwrap();
        // Each edit appends its round number; every seventh edit to document 1 fails.
        let mut queued = Vec::new();
        for round in 0..ROUNDS {
            for (which, doc) in docs.iter().enumerate() {
                let fails = which == 1 && round % 7 == 0;
                let edit: crate::repo::EditFn = Box::new(move |tx| {
                    if fails {
                        return Err(format!("refused round {round}"));
                    }
                    let at = match tx.get(automerge::ROOT, "log").unwrap() {
                        Some((_, id)) => tx.length(&id),
                        None => 0,
                    };
                    crate::repo::splice_root_text(tx, "log", at, 0, &format!("{round},"))
                });
                queued.push((fails, node.edit_queued(*doc, edit).await.unwrap()));
            }
        }
        release.send(()).unwrap();
        gate.await.unwrap().unwrap();
        for (fails, edit) in queued {
            assert_eq!(edit.durable().await.is_err(), fails);
        }
        node.shutdown().await;

        let node = Node::start(config).await.unwrap();
        for (which, doc) in docs.iter().enumerate() {
            let expected: String = (0..ROUNDS)
                .filter(|round| !(which == 1 && round % 7 == 0))
                .map(|round| format!("{round},"))
                .collect();
            let log = node
                .read(*doc, |d| crate::repo::root_text(d, "log"))
                .await
                .unwrap()
                .flatten();
            assert_eq!(log.as_deref(), Some(expected.as_str()), "document {which}");
        }
        node.shutdown().await;
    }
}
