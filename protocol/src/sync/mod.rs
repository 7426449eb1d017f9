//! Syncing a person's documents between their devices.
//!
//! [`SyncHub`] is a pure state machine: the node (or the simulator) feeds it [`Input`]s
//! with the current time and carries out the [`Effect`]s it returns. It holds the
//! documents ([`DocSet`]) and one session per peer stream.
//!
//! A session runs in three steps:
//!
//! 1. **Hello.** The initiator proves who it is with a UCAN chain from the person's root
//!    to its device key; the responder answers only an authorized `Hello`. Nothing else is
//!    sent to or accepted from a peer before that.
//! 2. **Reconcile.** Each side sends a `Summary` (document count and the XOR of
//!    per-document digests over id and heads). Equal summaries end the step in one round
//!    trip, whatever the number of documents. Otherwise the peer with the smaller DID sends
//!    256 bucket fingerprints, and the two exchange the entries of the differing buckets
//!    only. No round trip is paid per document.
//! 3. **Live.** Documents that differ sync with Automerge's sync protocol, many per frame;
//!    a document the peer lacks is sent whole (its saved form is far smaller than its
//!    history). Later changes, local or from another peer, flow to every live session.

mod docs;
pub mod gate;
mod hub;
pub mod share;
pub mod wire;

pub use docs::{DocDigest, DocSet, digest};
pub use hub::{
    AccessKind, CloseReason, Effect, HubConfig, Input, PeerDocStatus, Role, SessionId, SyncHub,
};
