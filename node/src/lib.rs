//! Membrane's node: everything that touches the outside world around the pure
//! [`membrane_protocol`] crate.
//!
//! Today this crate owns the on-disk identity of a device ([`identity`]): the person's
//! root key (on the first device), this device's key, and the delegations by which the
//! device acts for the person. Storage (redb), the network (libp2p) and the sync engine's
//! I/O land here next, each owned by one actor and reached through a handle.
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod config;
pub mod control;
mod exchange;
pub mod identity;
pub mod json;
mod memory;
mod net;
mod node;
pub mod pairing;
pub mod random;
pub mod repo;
pub mod requests;
pub mod sharing;
pub mod store;
pub mod time;
mod views;

pub use config::Config;
pub use identity::{DataDir, DeviceIdentity, IdentityError, LinkBundle};
pub use libp2p::{Multiaddr, multiaddr};
pub use net::{NetError, Traffic};
pub use node::{Node, NodeHandle, QueuedEdit, StartError};
pub use repo::NodeError;
