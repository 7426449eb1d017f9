//! Pairing over the network: `/membrane/pair/1`.
//!
//! The inviter's node keeps one open [`Invitation`] at a time. A joiner dials the address in
//! the ticket (the transport proves both keys), opens a pairing stream and sends
//! [`PairRequest`] with its proof. The inviter checks it with the pure rules of
//! [`membrane_protocol::pairing`], and on success answers with a link bundle: delegation
//! chains from the person's root to the joiner's key. Both sides then show the same
//! six-digit code.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use membrane_protocol::{
    Did,
    pairing::{Invitation, PairingError, PairingTicket, proof, verification_code},
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::sync::mpsc;

use crate::{
    exchange::{ExchangeError, ask, read_message, write_message},
    identity::{DataDir, DeviceIdentity, IdentityError, LinkBundle},
    time,
};

/// The libp2p protocol name.
pub const PAIR_PROTOCOL: &str = "/membrane/pair/1";
/// How long a joiner tries before giving up.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What the joiner sends.
#[derive(Debug, Serialize, Deserialize)]
struct PairRequest {
    proof: ByteBuf,
    name: Option<String>,
}

/// What the inviter answers.
#[derive(Debug, Serialize, Deserialize)]
enum PairResponse {
    Accepted { bundle: String },
    Refused { reason: String },
}

/// What happened to an invitation, reported to whoever waits on it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum InviteEvent {
    /// A device joined.
    Joined {
        /// Its DID.
        device: String,
        /// The name it gave.
        name: Option<String>,
        /// The code both screens show.
        verification_code: String,
    },
    /// A joiner was refused (wrong secret, expired, …); the invitation may still be open.
    Refused {
        /// Who tried.
        device: String,
        /// Why.
        reason: String,
        /// Whether the invitation can still be used.
        still_open: bool,
    },
}

pub(crate) struct OpenInvitation {
    invitation: Invitation,
    events: mpsc::Sender<InviteEvent>,
    /// The name to record when the joiner gives none.
    name: Option<String>,
}

/// The node's pairing state: at most one open invitation.
#[derive(Clone, Default)]
pub(crate) struct Pairing(Arc<Mutex<Option<OpenInvitation>>>);

impl Pairing {
    pub(crate) fn open(
        &self,
        invitation: Invitation,
        name: Option<String>,
    ) -> mpsc::Receiver<InviteEvent> {
        let (events, receiver) = mpsc::channel(16);
        *self.0.lock().expect("not poisoned") = Some(OpenInvitation {
            invitation,
            events,
            name,
        });
        receiver
    }

    /// Serves pairing streams until the node stops.
    pub(crate) async fn serve(
        self,
        mut control: libp2p_stream::Control,
        identity: Arc<DeviceIdentity>,
        on_joined: mpsc::Sender<(Did, Option<String>, LinkBundle)>,
    ) {
        let Ok(mut incoming) = control.accept(StreamProtocol::new(PAIR_PROTOCOL)) else {
            tracing::error!("cannot accept pairing streams");
            return;
        };
        while let Some((peer, stream)) = incoming.next().await {
            let pairing = self.clone();
            let identity = identity.clone();
            let on_joined = on_joined.clone();
            tokio::spawn(async move {
                if let Err(error) = pairing.answer(peer, stream, &identity, &on_joined).await {
                    tracing::debug!(%peer, %error, "pairing stream ended");
                }
            });
        }
    }

    async fn answer(
        &self,
        peer: PeerId,
        mut stream: libp2p::Stream,
        identity: &DeviceIdentity,
        on_joined: &mpsc::Sender<(Did, Option<String>, LinkBundle)>,
    ) -> std::io::Result<()> {
        let Ok(joiner) = Did::from_peer_id(&peer) else {
            return Ok(());
        };
        let request: PairRequest = match read_message(&mut stream).await? {
            Some(request) => request,
            None => {
                let refusal = PairResponse::Refused {
                    reason: "malformed pairing request".into(),
                };
                return write_message(&mut stream, &refusal).await;
            }
        };
        // Check and use up the invitation under the lock; reply and report outside it.
        let verdict = {
            let mut open = self.0.lock().expect("not poisoned");
            match open.as_mut() {
                None => Err((PairingError::NoInvitation, None)),
                Some(entry) => match entry
                    .invitation
                    .redeem(time::now(), &joiner, &request.proof)
                {
                    // The spent or burned invitation stays, so later attempts learn why
                    // they fail; the next `invite` replaces it.
                    Ok(()) => Ok((
                        entry.invitation.ticket().clone(),
                        entry.events.clone(),
                        entry.name.clone(),
                    )),
                    Err(error) => {
                        let still_open = matches!(error, PairingError::WrongProof);
                        Err((error, Some((entry.events.clone(), still_open))))
                    }
                },
            }
        };
        match verdict {
            Ok((ticket, events, default_name)) => {
                let name = request.name.or(default_name);
                let bundle = match identity.link(joiner, time::now()) {
                    Ok(bundle) => bundle,
                    Err(error) => {
                        let refusal = PairResponse::Refused {
                            reason: error.to_string(),
                        };
                        return write_message(&mut stream, &refusal).await;
                    }
                };
                write_message(
                    &mut stream,
                    &PairResponse::Accepted {
                        bundle: bundle.to_text(),
                    },
                )
                .await?;
                let code = verification_code(&ticket, &joiner);
                tracing::info!(device = %joiner, "a new device joined");
                let _ = on_joined.send((joiner, name.clone(), bundle)).await;
                let _ = events
                    .send(InviteEvent::Joined {
                        device: joiner.to_string(),
                        name,
                        verification_code: code,
                    })
                    .await;
                Ok(())
            }
            Err((error, report)) => {
                tracing::warn!(device = %joiner, %error, "pairing refused");
                if let Some((events, still_open)) = report {
                    let _ = events
                        .send(InviteEvent::Refused {
                            device: joiner.to_string(),
                            reason: error.to_string(),
                            still_open,
                        })
                        .await;
                }
                let refusal = PairResponse::Refused {
                    reason: error.to_string(),
                };
                write_message(&mut stream, &refusal).await
            }
        }
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JoinError {
    /// The inviter said no.
    #[error("the inviting device refused: {0}")]
    Refused(String),
    /// No address in the ticket answered.
    #[error("could not reach the inviting device at any address in the code")]
    Unreachable,
    /// The exchange broke off.
    #[error("pairing failed: {0}")]
    Protocol(String),
    /// The ticket has lapsed (checked before dialing).
    #[error("the pairing code expired")]
    Expired,
    /// Local identity trouble (not `init --join`ed, already linked, …).
    #[error(transparent)]
    Identity(#[from] IdentityError),
}

/// A finished join.
#[derive(Debug)]
pub struct Joined {
    /// This device, now a member.
    pub identity: DeviceIdentity,
    /// The code to compare with the inviter's screen.
    pub verification_code: String,
}

/// Joins the person behind `ticket`: dials the inviter with this device's key, proves the
/// secret for this connection, and stores the chains it receives.
pub async fn join(
    dir: &DataDir,
    ticket: &PairingTicket,
    name: Option<String>,
) -> Result<Joined, JoinError> {
    if time::now() > ticket.expires {
        return Err(JoinError::Expired);
    }
    let device = DeviceIdentity::device_key(dir)?;
    if DeviceIdentity::load(dir).is_ok() {
        return Err(JoinError::Identity(IdentityError::BadLink(
            "this device is already linked".into(),
        )));
    }
    let joiner = device.did();
    let presented = proof(ticket, &joiner);
    let bundle = request_link(&device, ticket, &presented, name).await?;
    let bundle = LinkBundle::from_text(&bundle)?;
    if bundle.authority.first().map(|d| d.payload().issuer) != Some(ticket.root) {
        return Err(JoinError::Protocol(
            "the chains are not from the person in the code".into(),
        ));
    }
    let identity = DeviceIdentity::accept_link(dir, &bundle, time::now())?;
    Ok(Joined {
        verification_code: verification_code(ticket, &joiner),
        identity,
    })
}

/// Dials the inviter in `ticket` as `device` and presents `presented` as the proof;
/// returns the link bundle text the inviter answers with. [`join`] is the normal way in;
/// this is public so tests can present other proofs (a relay's, a wrong one).
pub async fn request_link(
    device: &membrane_protocol::SecretKey,
    ticket: &PairingTicket,
    presented: &[u8; 32],
    name: Option<String>,
) -> Result<String, JoinError> {
    let inviter_peer = ticket
        .inviter
        .to_peer_id()
        .map_err(|e| JoinError::Protocol(e.to_string()))?;
    let addrs: Vec<Multiaddr> = ticket
        .addrs
        .iter()
        .filter_map(|bytes| Multiaddr::try_from(bytes.clone()).ok())
        .collect();
    let request = PairRequest {
        proof: ByteBuf::from(presented.to_vec()),
        name,
    };
    match ask(
        device,
        inviter_peer,
        &addrs,
        PAIR_PROTOCOL,
        &request,
        JOIN_TIMEOUT,
    )
    .await
    {
        Ok(PairResponse::Accepted { bundle }) => Ok(bundle),
        Ok(PairResponse::Refused { reason }) => Err(JoinError::Refused(reason)),
        Err(ExchangeError::Unreachable) => Err(JoinError::Unreachable),
        Err(ExchangeError::Unsupported(_)) => Err(JoinError::Protocol(
            "the device does not accept pairing".into(),
        )),
        Err(error) => Err(JoinError::Protocol(error.to_string())),
    }
}
