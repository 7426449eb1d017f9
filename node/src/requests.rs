//! Access requests from outside the person: `/membrane/request/1`.
//!
//! A stranger or vendor never reaches the data protocol without a grant. What it may do is
//! file a request for one: it lands in a bounded queue on the owner's node (rate-limited per
//! peer), where the person approves it (issuing a grant) or denies it. The requester's node
//! asks again from time to time, and accepts the grant by itself once it is approved.
//!
//! The answer to a request never reveals whether the document asked for exists.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Duration,
};

use futures::StreamExt as _;
use libp2p::{Multiaddr, PeerId, StreamProtocol, multiaddr::Protocol};
use membrane_protocol::Did;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::oneshot;

use crate::{
    exchange::{ExchangeError, ask, read_message, write_message},
    identity::DeviceIdentity,
    json,
    node::NodeHandle,
    repo::{NodeError, RepoActor},
    sharing::{Can, GrantRequest, IssuedGrant},
    store::Pending,
};

/// The libp2p protocol name.
pub const REQUEST_PROTOCOL: &str = "/membrane/request/1";
/// Most pending requests the queue holds; later ones are refused until the person answers.
pub const MAX_PENDING: usize = 100;
/// Most requests one peer may file per [`RATE_WINDOW`].
pub const MAX_PER_PEER: usize = 3;
/// The rate limit's window.
pub const RATE_WINDOW: u64 = 600;
/// Longest text in a request field.
const MAX_FIELD: usize = 2_048;
/// How long asking the owner's node may take.
const ASK_TIMEOUT: Duration = Duration::from_secs(20);
/// Expiry of a grant approved from a request that named none: 30 days.
const DEFAULT_EXPIRY: u64 = 30 * 86_400;
/// The longest expiry a request can obtain unless the person sets one: a year.
const MAX_REQUESTED_EXPIRY: u64 = 365 * 86_400;

/// What a requester sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RequestMessage {
    /// File a request.
    Ask {
        doc: String,
        can: String,
        terms: Option<String>,
        note: Option<String>,
        expires_in: Option<u64>,
    },
    /// Ask what became of request `id`.
    Check { id: u64 },
}

/// What the owner's node answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum RequestAnswer {
    Queued { id: u64 },
    Pending,
    Granted { code: String },
    Denied { reason: String },
    Refused { reason: String },
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum RequestState {
    /// Waiting for the person.
    Pending,
    /// Approved: a grant was issued.
    Granted {
        /// The grant's CID.
        grant: String,
        /// Its code, handed to the requester when it asks again.
        code: String,
    },
    /// Denied.
    Denied {
        /// Why, as told to the requester.
        reason: String,
    },
}

/// A request in the owner's queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessRequest {
    /// Its number.
    pub id: u64,
    /// The requesting device.
    pub from: String,
    /// The document asked for, as the requester named it.
    pub doc: String,
    /// `read`, `write` or `admin`.
    pub can: String,
    /// The requester's terms.
    pub terms: Option<String>,
    /// The requester's note.
    pub note: Option<String>,
    /// How long the requester asks it to last.
    pub expires_in: Option<u64>,
    /// When it arrived.
    pub at: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: RequestState,
}

/// A request this device filed with another person.
#[derive(Debug, Clone, Serialize)]
pub struct AskedRequest {
    /// The owner's device address.
    pub addr: String,
    /// The request's number there.
    pub id: u64,
    /// What was asked.
    pub doc: String,
    /// `read`, `write` or `admin`.
    pub can: String,
    /// `pending`, `granted` or `denied`.
    pub state: String,
    /// Why it was denied.
    pub reason: Option<String>,
}

/// The owner's side: the queue and the per-peer rate limit.
#[derive(Debug, Default)]
pub(crate) struct RequestQueue {
    pub(crate) requests: std::collections::BTreeMap<u64, AccessRequest>,
    recent: HashMap<Did, VecDeque<u64>>,
}

impl RequestQueue {
    pub(crate) fn load(rows: Vec<(u64, Vec<u8>)>) -> Self {
        let requests = rows
            .into_iter()
            .filter_map(|(id, bytes)| Some((id, serde_json::from_slice(&bytes).ok()?)))
            .collect();
        Self {
            requests,
            recent: HashMap::new(),
        }
    }

    fn pending(&self) -> usize {
        self.requests
            .values()
            .filter(|r| r.state == RequestState::Pending)
            .count()
    }

    /// Whether `peer` may file another request at `now`; records it if so.
    fn admit(&mut self, peer: Did, now: u64) -> bool {
        let times = self.recent.entry(peer).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= RATE_WINDOW)
        {
            times.pop_front();
        }
        if times.len() >= MAX_PER_PEER {
            return false;
        }
        times.push_back(now);
        // Forget peers whose window is empty, so the map stays bounded by recent peers.
        self.recent.retain(|_, t| !t.is_empty());
        true
    }
}

/// Requests about access requests, served by the repo actor.
pub(crate) enum RequestCommand {
    Incoming(Did, RequestMessage, oneshot::Sender<RequestAnswer>),
    List(oneshot::Sender<Result<Vec<AccessRequest>, NodeError>>),
    Approve(
        u64,
        Option<u64>,
        oneshot::Sender<Result<IssuedGrant, NodeError>>,
    ),
    Deny(u64, String, oneshot::Sender<Result<(), NodeError>>),
}

impl RepoActor {
    pub(crate) async fn on_request(&mut self, command: RequestCommand) {
        match command {
            RequestCommand::Incoming(peer, message, reply) => {
                let answer = self.incoming_request(peer, message).await;
                let _ = reply.send(answer);
            }
            RequestCommand::List(reply) => {
                let _ = reply.send(Ok(self.requests.requests.values().cloned().collect()));
            }
            RequestCommand::Approve(id, expires_in, reply) => {
                let result = self.approve(id, expires_in).await;
                crate::repo::reply_when_durable(result, reply);
            }
            RequestCommand::Deny(id, reason, reply) => {
                let result = self.settle(id, RequestState::Denied { reason }).await;
                crate::repo::reply_when_durable(result.map(|p| ((), p)), reply);
            }
        }
    }

    async fn incoming_request(&mut self, peer: Did, message: RequestMessage) -> RequestAnswer {
        let refused = |reason: &str| RequestAnswer::Refused {
            reason: reason.to_owned(),
        };
        match message {
            RequestMessage::Check { id } => match self.requests.requests.get(&id) {
                // Someone else's request number gets the same answer as a wrong one.
                Some(request) if request.from == peer.to_string() => match &request.state {
                    RequestState::Pending => RequestAnswer::Pending,
                    RequestState::Granted { code, .. } => {
                        RequestAnswer::Granted { code: code.clone() }
                    }
                    RequestState::Denied { reason } => RequestAnswer::Denied {
                        reason: reason.clone(),
                    },
                },
                _ => refused("no such request"),
            },
            RequestMessage::Ask {
                doc,
                can,
                terms,
                note,
                expires_in,
            } => {
                let fields = [Some(&doc), Some(&can), terms.as_ref(), note.as_ref()];
                if fields.iter().flatten().any(|f| f.len() > MAX_FIELD) {
                    return refused("a field is too long");
                }
                if can.parse::<Can>().is_err() {
                    return refused("`can` must be read, write or admin");
                }
                let now = self.now();
                if self.requests.pending() >= MAX_PENDING {
                    return refused("this person's request queue is full; try again later");
                }
                if !self.requests.admit(peer, now) {
                    return refused("too many requests from you; try again later");
                }
                let id = self
                    .requests
                    .requests
                    .keys()
                    .last()
                    .map_or(1, |last| last + 1);
                let request = AccessRequest {
                    id,
                    from: peer.to_string(),
                    doc,
                    can,
                    terms,
                    note,
                    expires_in,
                    at: now,
                    state: RequestState::Pending,
                };
                tracing::info!(%peer, id, "access request queued");
                match self.store_request(request).await {
                    Ok(pending) => {
                        // Answer only once it is durable: a queued request is never lost.
                        if pending.durable().await.is_err() {
                            return refused("the request could not be stored");
                        }
                        RequestAnswer::Queued { id }
                    }
                    Err(_) => refused("the request could not be stored"),
                }
            }
        }
    }

    async fn store_request(&mut self, request: AccessRequest) -> Result<Pending, NodeError> {
        let record = serde_json::to_vec(&request).map_err(|e| NodeError::Invalid(e.to_string()))?;
        let pending = self.store.enqueue_request(request.id, record).await?;
        self.requests.requests.insert(request.id, request);
        Ok(pending)
    }

    async fn settle(&mut self, id: u64, state: RequestState) -> Result<Vec<Pending>, NodeError> {
        let mut request = self.requests.requests.get(&id).cloned().ok_or_else(|| {
            NodeError::Invalid(format!("no request {id} (see `membrane requests`)"))
        })?;
        if request.state != RequestState::Pending {
            return Err(NodeError::Invalid(format!(
                "request {id} was already answered"
            )));
        }
        request.state = state;
        Ok(vec![self.store_request(request).await?])
    }

    async fn approve(
        &mut self,
        id: u64,
        expires_in: Option<u64>,
    ) -> Result<(IssuedGrant, Vec<Pending>), NodeError> {
        let request = self.requests.requests.get(&id).cloned().ok_or_else(|| {
            NodeError::Invalid(format!("no request {id} (see `membrane requests`)"))
        })?;
        if request.state != RequestState::Pending {
            return Err(NodeError::Invalid(format!(
                "request {id} was already answered"
            )));
        }
        let to = request
            .from
            .parse()
            .map_err(|e| NodeError::Invalid(format!("request {id}: {e}")))?;
        let can = request.can.parse().map_err(NodeError::Invalid)?;
        let (issued, mut pending) = self
            .grant(GrantRequest {
                to,
                doc: request.doc.clone(),
                can,
                // The requester only proposes; without the person's own choice, a grant
                // from a request lasts at most a year.
                expires_in: expires_in
                    .or(request
                        .expires_in
                        .map(|asked| asked.min(MAX_REQUESTED_EXPIRY)))
                    .or(Some(DEFAULT_EXPIRY)),
                terms: request.terms.clone(),
                note: request.note.clone(),
                delegable: false,
                path: None,
            })
            .await?;
        pending.extend(
            self.settle(
                id,
                RequestState::Granted {
                    grant: issued.cid.clone(),
                    code: issued.code.clone(),
                },
            )
            .await?,
        );
        Ok((issued, pending))
    }

    /// Records a request this device filed, in the index document (`asked:` entries).
    pub(crate) async fn record_asked(
        &mut self,
        addr: &Multiaddr,
        id: u64,
        doc: &str,
        can: &str,
    ) -> Result<Vec<Pending>, NodeError> {
        let mut pending = Vec::new();
        if let Some(p) = self.ensure_index().await? {
            pending.push(p);
        }
        let key = format!("/asked:{}", asked_key(addr, id));
        let record = json!({
            "device": self.device.to_string(),
            "addr": addr.to_string(),
            "id": id,
            "doc": doc,
            "can": can,
            "state": "pending",
        });
        if let Some(p) = self
            .change(self.index, move |tx| {
                json::set(tx, &key, &record).map_err(NodeError::from)
            })
            .await?
        {
            pending.push(p);
        }
        Ok(pending)
    }

    pub(crate) fn asked(&self) -> Vec<AskedRequest> {
        let Some(index) = self.hub.docs().get(&self.index) else {
            return Vec::new();
        };
        let me = self.device.to_string();
        json::entries_with_prefix(index, "asked:")
            .into_iter()
            .filter(|(_, record)| record["device"] == me.as_str())
            .map(|(_, record)| AskedRequest {
                addr: record["addr"].as_str().unwrap_or_default().to_owned(),
                id: record["id"].as_u64().unwrap_or_default(),
                doc: record["doc"].as_str().unwrap_or_default().to_owned(),
                can: record["can"].as_str().unwrap_or_default().to_owned(),
                state: record["state"].as_str().unwrap_or_default().to_owned(),
                reason: record["reason"].as_str().map(str::to_owned),
            })
            .collect()
    }

    pub(crate) async fn settle_asked(
        &mut self,
        addr: &str,
        id: u64,
        state: &str,
        reason: Option<String>,
    ) -> Result<Vec<Pending>, NodeError> {
        let addr: Multiaddr = addr
            .parse()
            .map_err(|e| NodeError::Invalid(format!("bad address: {e}")))?;
        let base = format!("/asked:{}", asked_key(&addr, id));
        let (state, reason) = (json!(state), json!(reason));
        Ok(self
            .change(self.index, move |tx| {
                json::set(tx, &format!("{base}/state"), &state)?;
                json::set(tx, &format!("{base}/reason"), &reason)?;
                Ok(())
            })
            .await?
            .into_iter()
            .collect())
    }
}

fn asked_key(addr: &Multiaddr, id: u64) -> String {
    // JSON pointer segments cannot hold `/`.
    format!("{}#{id}", addr.to_string().replace('/', "|"))
}

/// Serves request streams until the node stops: each carries one message and one answer.
pub(crate) async fn serve(mut control: libp2p_stream::Control, node: NodeHandle) {
    let Ok(mut incoming) = control.accept(StreamProtocol::new(REQUEST_PROTOCOL)) else {
        tracing::error!("cannot accept request streams");
        return;
    };
    while let Some((peer, mut stream)) = incoming.next().await {
        let node = node.clone();
        tokio::spawn(async move {
            let Ok(requester) = Did::from_peer_id(&peer) else {
                return;
            };
            let answer = match read_message::<RequestMessage>(&mut stream).await {
                Ok(Some(message)) => node.incoming_request(requester, message).await.unwrap_or(
                    RequestAnswer::Refused {
                        reason: "the node is stopping".into(),
                    },
                ),
                Ok(None) => RequestAnswer::Refused {
                    reason: "malformed request".into(),
                },
                Err(_) => return,
            };
            let _ = write_message(&mut stream, &answer).await;
        });
    }
}

/// Why filing a request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The address names no peer (`/p2p/…` is needed).
    #[error("the address must end with /p2p/<peer id> of the person's device")]
    NoPeer,
    /// The other node said no.
    #[error("refused: {0}")]
    Refused(String),
    /// It could not be reached, or the exchange broke off.
    #[error("{0}")]
    Exchange(String),
    /// Recording it here failed.
    #[error(transparent)]
    Node(#[from] NodeError),
}

fn peer_of(addr: &Multiaddr) -> Result<PeerId, RequestError> {
    addr.iter()
        .find_map(|p| match p {
            Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .ok_or(RequestError::NoPeer)
}

/// Files a request with the node at `addr`; returns its number there.
pub(crate) async fn file(
    identity: &DeviceIdentity,
    addr: &Multiaddr,
    message: &RequestMessage,
) -> Result<u64, RequestError> {
    let peer = peer_of(addr)?;
    let answer: RequestAnswer = ask(
        &identity.device,
        peer,
        std::slice::from_ref(addr),
        REQUEST_PROTOCOL,
        message,
        ASK_TIMEOUT,
    )
    .await
    .map_err(|e: ExchangeError| RequestError::Exchange(e.to_string()))?;
    match answer {
        RequestAnswer::Queued { id } => Ok(id),
        RequestAnswer::Refused { reason } => Err(RequestError::Refused(reason)),
        other => Err(RequestError::Exchange(format!(
            "unexpected answer {other:?}"
        ))),
    }
}

/// Asks again about every pending request this device filed; accepts granted ones.
pub(crate) async fn check_asked(node: &NodeHandle, identity: &Arc<DeviceIdentity>) {
    let Ok(asked) = node.asked().await else {
        return;
    };
    for request in asked.into_iter().filter(|r| r.state == "pending") {
        let Ok(addr) = request.addr.parse::<Multiaddr>() else {
            continue;
        };
        let Ok(peer) = peer_of(&addr) else { continue };
        let answer = ask::<_, RequestAnswer>(
            &identity.device,
            peer,
            std::slice::from_ref(&addr),
            REQUEST_PROTOCOL,
            &RequestMessage::Check { id: request.id },
            ASK_TIMEOUT,
        )
        .await;
        let settled = match answer {
            Ok(RequestAnswer::Granted { code }) => match node.accept(&code).await {
                Ok(_) => Some(("granted", None)),
                Err(error) => {
                    tracing::warn!(%error, "an approved request's grant does not accept");
                    Some(("failed", Some(error.to_string())))
                }
            },
            Ok(RequestAnswer::Denied { reason }) => Some(("denied", Some(reason))),
            Ok(RequestAnswer::Refused { reason }) => Some(("refused", Some(reason))),
            Ok(_) => None,
            Err(error) => {
                tracing::debug!(%error, addr = %request.addr, "cannot check a request yet");
                None
            }
        };
        if let Some((state, reason)) = settled {
            let _ = node
                .settle_asked(&request.addr, request.id, state, reason)
                .await;
        }
    }
}
