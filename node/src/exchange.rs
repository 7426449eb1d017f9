//! One-message-each-way exchanges on their own libp2p protocols (pairing, access
//! requests): length-prefixed DAG-CBOR messages, and a short-lived swarm for the side that
//! asks, so the exchange never disturbs the node's sync connections.

use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, SwarmBuilder, multiaddr::Protocol, noise, tcp, yamux,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Largest message either side sends or reads.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// Writes one message.
pub(crate) async fn write_message<T: Serialize>(
    stream: &mut libp2p::Stream,
    message: &T,
) -> std::io::Result<()> {
    let body = serde_ipld_dagcbor::to_vec(message).map_err(std::io::Error::other)?;
    stream.write_all(&(body.len() as u32).to_be_bytes()).await?;
    stream.write_all(&body).await?;
    stream.flush().await
}

/// Reads one message; `Ok(None)` when it is too large or does not decode.
pub(crate) async fn read_message<T: for<'de> Deserialize<'de>>(
    stream: &mut libp2p::Stream,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_MESSAGE {
        return Ok(None);
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(serde_ipld_dagcbor::from_slice(&body).ok())
}

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum ExchangeError {
    /// No address answered in time.
    #[error("could not reach the other device")]
    Unreachable,
    /// The other device does not speak the protocol.
    #[error("the other device does not accept {0}")]
    Unsupported(String),
    /// The exchange broke off or the answer did not decode.
    #[error("{0}")]
    Protocol(String),
}

/// Dials `peer` at `addrs` as `key` with a short-lived swarm, opens `protocol`, sends
/// `request` and returns the answer. Gives up after `limit`.
pub(crate) async fn ask<Q: Serialize, A: DeserializeOwned>(
    key: &membrane_protocol::SecretKey,
    peer: PeerId,
    addrs: &[Multiaddr],
    protocol: &'static str,
    request: &Q,
    limit: Duration,
) -> Result<A, ExchangeError> {
    let build = |e: &dyn std::fmt::Display| ExchangeError::Protocol(e.to_string());
    let mut swarm = SwarmBuilder::with_existing_identity(key.to_libp2p_keypair())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| build(&e))?
        .with_quic()
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .map_err(|e| build(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(30)))
        .build();
    let mut control = swarm.behaviour().new_control();
    let mut dialed = false;
    for addr in addrs {
        let addr = if addr.iter().any(|p| matches!(p, Protocol::P2p(_))) {
            addr.clone()
        } else {
            addr.clone().with(Protocol::P2p(peer))
        };
        dialed |= swarm.dial(addr).is_ok();
    }
    if !dialed {
        return Err(ExchangeError::Unreachable);
    }
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let exchange = async {
        // Each attempt is bounded: libp2p-stream can leave a request pending forever when it
        // races the connection's setup.
        let mut stream = loop {
            let attempt = control.open_stream(peer, StreamProtocol::new(protocol));
            match tokio::time::timeout(Duration::from_secs(2), attempt).await {
                Ok(Ok(stream)) => break stream,
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) => {
                    return Err(ExchangeError::Unsupported(protocol.to_owned()));
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(100)).await,
                Err(_) => {}
            }
        };
        write_message(&mut stream, request)
            .await
            .map_err(|e| ExchangeError::Protocol(e.to_string()))?;
        match read_message::<A>(&mut stream).await {
            Ok(Some(answer)) => Ok(answer),
            Ok(None) => Err(ExchangeError::Protocol("malformed answer".into())),
            Err(e) => Err(ExchangeError::Protocol(e.to_string())),
        }
    };
    let outcome = tokio::time::timeout(limit, exchange).await;
    driver.abort();
    outcome.unwrap_or(Err(ExchangeError::Unreachable))
}
