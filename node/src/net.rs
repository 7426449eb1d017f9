//! The network actor: owns the libp2p Swarm, keeps one ordered sync stream per peer, and
//! moves frames between those streams and the repo actor.
//!
//! Transports are TCP and QUIC, authenticated by Noise (TCP) or TLS (QUIC) with the device
//! key, multiplexed by yamux. `/membrane/sync/1` streams carry length-prefixed frames of at
//! most [`MAX_FRAME_SIZE`] bytes; a peer that announces a larger one is cut off.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, connection_limits, identify, mdns,
    multiaddr::Protocol,
    noise, ping,
    swarm::{NetworkBehaviour, SwarmEvent, behaviour::toggle::Toggle},
    tcp, yamux,
};
use membrane_protocol::{
    Did, SecretKey,
    sync::{
        Role, SessionId,
        wire::{MAX_FRAME_SIZE, PROTOCOL},
    },
};
use tokio::sync::mpsc;

use crate::config::Config;

/// Bytes and frames on sync streams (length prefixes included), for status and
/// benchmarks.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Frames written.
    pub frames_sent: std::sync::atomic::AtomicU64,
    /// Bytes written.
    pub bytes_sent: std::sync::atomic::AtomicU64,
    /// Frames read.
    pub frames_received: std::sync::atomic::AtomicU64,
    /// Bytes read.
    pub bytes_received: std::sync::atomic::AtomicU64,
    /// Sessions that finished reconciling (knew which documents differ).
    pub reconciled: std::sync::atomic::AtomicU64,
}

impl Traffic {
    /// `(frames sent, bytes sent, frames received, bytes received)`.
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.frames_sent.load(Relaxed),
            self.bytes_sent.load(Relaxed),
            self.frames_received.load(Relaxed),
            self.bytes_received.load(Relaxed),
        )
    }
}

/// How long one attempt to open a sync stream may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// Frames queued for one peer before the peer counts as too slow and is cut off.
const WRITE_QUEUE: usize = 64;

/// What the network tells the repo.
#[derive(Debug)]
pub(crate) enum NetEvent {
    Opened {
        session: SessionId,
        peer: Did,
        role: Role,
    },
    Frame {
        session: SessionId,
        frame: Vec<u8>,
    },
    Closed {
        session: SessionId,
        reason: String,
    },
    Listening(Multiaddr),
    PeerAddresses {
        peer: Did,
        addrs: Vec<Multiaddr>,
    },
}

/// What the repo asks of the network.
#[derive(Debug)]
pub(crate) enum NetCommand {
    Send {
        session: SessionId,
        frame: Vec<u8>,
    },
    /// Close a session; `disconnect` also drops the peer's connections.
    Close {
        session: SessionId,
        disconnect: bool,
    },
    Dial(Multiaddr),
    Remember(Vec<Multiaddr>),
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    stream: libp2p_stream::Behaviour,
}

/// Why the network could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The transport stack could not be built.
    #[error("cannot build the network stack: {0}")]
    Build(String),
    /// A listen address was refused.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: Multiaddr,
        /// Why.
        detail: String,
    },
}

/// An error and its causes in one line (libp2p's transport errors print nothing of their
/// own: the reason is in their source).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut parts = vec![error.to_string()];
    let mut source = error.source();
    while let Some(cause) = source {
        parts.push(cause.to_string());
        source = cause.source();
    }
    parts.retain(|part| !part.is_empty());
    parts.dedup();
    parts.join(": ")
}

struct SessionIo {
    peer: PeerId,
    role: Role,
    writer: mpsc::Sender<Vec<u8>>,
    reader: tokio::task::JoinHandle<()>,
}

enum Internal {
    Stream {
        peer: PeerId,
        stream: libp2p::Stream,
        role: Role,
    },
    OpenFailed {
        peer: PeerId,
    },
    ReaderDone {
        session: SessionId,
        reason: String,
    },
}

pub(crate) struct NetActor {
    swarm: Swarm<Behaviour>,
    me: PeerId,
    control: libp2p_stream::Control,
    events: mpsc::Sender<NetEvent>,
    commands: mpsc::Receiver<NetCommand>,
    internal_tx: mpsc::Sender<Internal>,
    internal: mpsc::Receiver<Internal>,
    sessions: HashMap<SessionId, SessionIo>,
    by_peer: HashMap<PeerId, SessionId>,
    opening: HashSet<PeerId>,
    /// Peers we dialed: we open their sync stream, and open it again on the next redial
    /// tick if opening failed (the peer may not have been ready for it yet).
    dialed: HashSet<PeerId>,
    next_session: u64,
    /// Addresses to keep dialing while no connection came from them.
    wanted: Vec<Multiaddr>,
    connected_addrs: HashMap<Multiaddr, PeerId>,
    redial_interval: Duration,
    traffic: std::sync::Arc<Traffic>,
}

impl NetActor {
    pub(crate) fn new(
        key: &SecretKey,
        config: &Config,
        events: mpsc::Sender<NetEvent>,
        commands: mpsc::Receiver<NetCommand>,
        traffic: std::sync::Arc<Traffic>,
    ) -> Result<Self, NetError> {
        let build = |e: &dyn std::fmt::Display| NetError::Build(e.to_string());
        let mdns_on = config.mdns;
        let max = config.max_connections;
        let announce = config.announce.clone();
        let mut swarm = SwarmBuilder::with_existing_identity(key.to_libp2p_keypair())
            .with_tokio()
            .with_tcp(
                tcp::Config::default().nodelay(true),
                noise::Config::new,
                yamux::Config::default,
            )
            .map_err(|e| build(&e))?
            .with_quic()
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let limits = connection_limits::ConnectionLimits::default()
                    .with_max_pending_incoming(Some(32))
                    .with_max_established_incoming(Some(max))
                    .with_max_established(Some(max))
                    .with_max_established_per_peer(Some(2));
                let mdns = if mdns_on {
                    Some(mdns::tokio::Behaviour::new(mdns::Config::default(), id)?)
                } else {
                    None
                };
                Ok(Behaviour {
                    limits: connection_limits::Behaviour::new(limits),
                    identify: identify::Behaviour::new(
                        identify::Config::new("/membrane/0.1.0".into(), key.public())
                            // With announced addresses, peers learn only those (they are
                            // the swarm's external addresses below).
                            .with_hide_listen_addrs(announce.is_some()),
                    ),
                    ping: ping::Behaviour::default(),
                    mdns: Toggle::from(mdns),
                    stream: libp2p_stream::Behaviour::new(),
                })
            })
            .map_err(|e| build(&e))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
            .build();
        for addr in &config.listen {
            swarm
                .listen_on(addr.clone())
                .map_err(|e| NetError::Listen {
                    addr: addr.clone(),
                    detail: error_chain(&e),
                })?;
        }
        for addr in config.announce.iter().flatten() {
            swarm.add_external_address(addr.clone());
        }
        let control = swarm.behaviour().stream.new_control();
        let (internal_tx, internal) = mpsc::channel(256);
        Ok(Self {
            me: *swarm.local_peer_id(),
            swarm,
            control,
            events,
            commands,
            internal_tx,
            internal,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            opening: HashSet::new(),
            dialed: HashSet::new(),
            next_session: 1,
            wanted: config.peers.clone(),
            connected_addrs: HashMap::new(),
            redial_interval: config.redial_interval,
            traffic,
        })
    }

    /// A handle for opening and accepting other stream protocols (pairing).
    pub(crate) fn control(&self) -> libp2p_stream::Control {
        self.control.clone()
    }

    pub(crate) async fn run(mut self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let mut incoming = match self.control.accept(StreamProtocol::new(PROTOCOL)) {
            Ok(incoming) => incoming,
            Err(error) => {
                tracing::error!(%error, "cannot accept sync streams");
                return;
            }
        };
        let mut redial = tokio::time::interval(self.redial_interval);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.changed() => break,
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => break,
                },
                Some(internal) = self.internal.recv() => self.on_internal(internal).await,
                Some((peer, stream)) = incoming.next() => {
                    self.on_stream(peer, stream, Role::Responder).await;
                }
                event = self.swarm.select_next_some() => self.on_swarm(event).await,
                _ = redial.tick() => self.redial(),
            }
        }
        for (_, io) in self.sessions.drain() {
            io.reader.abort();
        }
    }

    fn redial(&mut self) {
        let without_session: Vec<PeerId> = self
            .dialed
            .iter()
            .filter(|peer| !self.by_peer.contains_key(peer) && self.swarm.is_connected(peer))
            .copied()
            .collect();
        for peer in without_session {
            self.open_stream(peer);
        }
        for addr in self.wanted.clone() {
            let connected = self
                .connected_addrs
                .get(&addr)
                .is_some_and(|peer| self.swarm.is_connected(peer));
            if !connected && let Err(error) = self.swarm.dial(addr.clone()) {
                tracing::debug!(%addr, %error, "dial failed");
            }
        }
    }

    fn on_command(&mut self, command: NetCommand) {
        match command {
            NetCommand::Send { session, frame } => {
                let Some(io) = self.sessions.get(&session) else {
                    return;
                };
                if io.writer.try_send(frame).is_err() {
                    tracing::warn!(?session, peer = %io.peer, "peer is not reading its frames; closing");
                    self.close(session, false);
                }
            }
            NetCommand::Close {
                session,
                disconnect,
            } => self.close(session, disconnect),
            NetCommand::Dial(addr) => {
                if !self.wanted.contains(&addr) {
                    self.wanted.push(addr.clone());
                }
                if let Err(error) = self.swarm.dial(addr.clone()) {
                    tracing::warn!(%addr, %error, "dial failed");
                }
            }
            NetCommand::Remember(addrs) => {
                for addr in addrs {
                    if !self.wanted.contains(&addr) {
                        self.wanted.push(addr);
                    }
                }
            }
        }
    }

    fn close(&mut self, session: SessionId, disconnect: bool) {
        if let Some(io) = self.sessions.remove(&session) {
            io.reader.abort();
            if self.by_peer.get(&io.peer) == Some(&session) {
                self.by_peer.remove(&io.peer);
            }
            if disconnect {
                let _ = self.swarm.disconnect_peer_id(io.peer);
            }
        }
    }

    async fn on_internal(&mut self, internal: Internal) {
        match internal {
            Internal::Stream { peer, stream, role } => {
                self.opening.remove(&peer);
                self.on_stream(peer, stream, role).await;
            }
            Internal::OpenFailed { peer } => {
                self.opening.remove(&peer);
            }
            Internal::ReaderDone { session, reason } => {
                if self.sessions.contains_key(&session) {
                    self.close(session, false);
                    let _ = self.events.send(NetEvent::Closed { session, reason }).await;
                }
            }
        }
    }

    /// A new stream, either direction. One session per peer: when both sides opened one,
    /// the stream opened by the peer with the smaller PeerId wins, on both sides alike.
    async fn on_stream(&mut self, peer: PeerId, stream: libp2p::Stream, role: Role) {
        let Ok(did) = Did::from_peer_id(&peer) else {
            tracing::debug!(%peer, "not an ed25519 peer; refusing its stream");
            return;
        };
        if let Some(&existing) = self.by_peer.get(&peer) {
            let opener_of_new = if role == Role::Initiator {
                self.me
            } else {
                peer
            };
            let existing_role = self.sessions.get(&existing).map(|io| io.role);
            let opener_of_existing = if existing_role == Some(Role::Initiator) {
                self.me
            } else {
                peer
            };
            if opener_of_existing.to_bytes() <= opener_of_new.to_bytes() {
                return; // keep the existing one; the new stream drops here
            }
            self.close(existing, false);
            let _ = self
                .events
                .send(NetEvent::Closed {
                    session: existing,
                    reason: "replaced by the peer's simultaneous stream".into(),
                })
                .await;
        }
        let session = SessionId(self.next_session);
        self.next_session += 1;
        let (writer, mut frames) = mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
        let (mut read_half, mut write_half) = stream.split();
        let traffic = self.traffic.clone();
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while let Some(frame) = frames.recv().await {
                let Ok(len) = u32::try_from(frame.len()) else {
                    break;
                };
                if write_half.write_all(&len.to_be_bytes()).await.is_err()
                    || write_half.write_all(&frame).await.is_err()
                    || write_half.flush().await.is_err()
                {
                    break;
                }
                traffic.frames_sent.fetch_add(1, Relaxed);
                traffic.bytes_sent.fetch_add(4 + u64::from(len), Relaxed);
            }
            let _ = write_half.close().await;
        });
        // `Opened` must reach the repo before any frame of this session: both travel on the
        // same channel, so send it before the reader starts.
        let _ = self
            .events
            .send(NetEvent::Opened {
                session,
                peer: did,
                role,
            })
            .await;
        let events = self.events.clone();
        let internal = self.internal_tx.clone();
        let traffic = self.traffic.clone();
        let reader = tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            let reason = loop {
                let mut len = [0u8; 4];
                if let Err(error) = read_half.read_exact(&mut len).await {
                    break format!("stream ended: {error}");
                }
                let len = u32::from_be_bytes(len) as usize;
                if len > MAX_FRAME_SIZE {
                    break format!("peer announced a {len}-byte frame (limit {MAX_FRAME_SIZE})");
                }
                let mut frame = vec![0u8; len];
                if let Err(error) = read_half.read_exact(&mut frame).await {
                    break format!("stream ended mid-frame: {error}");
                }
                traffic.frames_received.fetch_add(1, Relaxed);
                traffic.bytes_received.fetch_add(4 + len as u64, Relaxed);
                if events
                    .send(NetEvent::Frame { session, frame })
                    .await
                    .is_err()
                {
                    break "node stopping".to_owned();
                }
            };
            let _ = internal
                .send(Internal::ReaderDone { session, reason })
                .await;
        });
        self.sessions.insert(
            session,
            SessionIo {
                peer,
                role,
                writer,
                reader,
            },
        );
        self.by_peer.insert(peer, session);
    }

    fn open_stream(&mut self, peer: PeerId) {
        if self.by_peer.contains_key(&peer) || !self.opening.insert(peer) {
            return;
        }
        let mut control = self.control.clone();
        let internal = self.internal_tx.clone();
        tokio::spawn(async move {
            // Bounded: libp2p-stream can leave a request pending forever when it races the
            // connection's setup; the next redial tick tries again.
            let attempt = control.open_stream(peer, StreamProtocol::new(PROTOCOL));
            let message = match tokio::time::timeout(OPEN_TIMEOUT, attempt).await {
                Ok(Ok(stream)) => Internal::Stream {
                    peer,
                    stream,
                    role: Role::Initiator,
                },
                Ok(Err(error)) => {
                    tracing::debug!(%peer, %error, "cannot open a sync stream");
                    Internal::OpenFailed { peer }
                }
                Err(_) => {
                    tracing::debug!(%peer, "opening a sync stream timed out");
                    Internal::OpenFailed { peer }
                }
            };
            let _ = internal.send(message).await;
        });
    }

    async fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                let address = address.with(Protocol::P2p(self.me));
                let _ = self.events.send(NetEvent::Listening(address)).await;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id, endpoint, ..
            } => {
                tracing::debug!(peer = %peer_id, dialer = endpoint.is_dialer(), "connected");
                if endpoint.is_dialer() {
                    let addr = endpoint.get_remote_address().clone();
                    let bare: Multiaddr = addr
                        .iter()
                        .filter(|p| !matches!(p, Protocol::P2p(_)))
                        .collect();
                    // Remember the address both with and without `/p2p/…`, whichever form
                    // it was dialed in, so the redial tick sees it connected.
                    self.connected_addrs
                        .insert(bare.clone().with(Protocol::P2p(peer_id)), peer_id);
                    self.connected_addrs.insert(bare, peer_id);
                    self.dialed.insert(peer_id);
                    self.open_stream(peer_id);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.dialed.remove(&peer_id);
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if let Ok(peer) = Did::from_peer_id(&peer_id) {
                    let addrs = info
                        .listen_addrs
                        .into_iter()
                        .map(|a| a.with(Protocol::P2p(peer_id)))
                        .collect();
                    let _ = self
                        .events
                        .send(NetEvent::PeerAddresses { peer, addrs })
                        .await;
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if !self.swarm.is_connected(&peer) {
                        let _ = self.swarm.dial(addr.with(Protocol::P2p(peer)));
                    }
                }
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(%error, "incoming connection failed");
            }
            _ => {}
        }
    }
}
