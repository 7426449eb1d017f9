//! Membrane's pure core: who is who, and who may do what.
//!
//! This crate holds no I/O at all. It defines:
//!
//! - [`key`]: ed25519 keys. A device key is at once the device's libp2p identity
//!   ([`PeerId`](libp2p_identity::PeerId)) and its [`Did`] (`did:key:z6Mk…`).
//! - [`did`]: strict `did:key` parsing and formatting.
//! - [`ucan`]: UCAN 1.0 delegations, invocations and revocations in the DAG-CBOR envelope
//!   with the Ed25519 varsig header, the command hierarchy, the policy language and chain
//!   validation returning the spec's named errors.
//! - [`capability`]: Membrane's own command and policy vocabulary on top of UCAN.
//!
//! Time is always an argument ([`ucan::UnixTime`]) and randomness comes in as bytes, so the
//! same code runs inside the real node and inside the deterministic simulator.
//!
//! ```
//! use membrane_protocol::{key::SecretKey, ucan::{Command, DelegationBuilder, Validator}};
//!
//! let root = SecretKey::from_seed([1; 32]);
//! let phone = SecretKey::from_seed([2; 32]);
//! // The person's root key hands the phone authority over everything the root owns.
//! let token = DelegationBuilder::new(root.did(), phone.did(), Command::top())
//!     .subject(root.did())
//!     .nonce([7; 12].to_vec())
//!     .sign(&root)
//!     .unwrap();
//! let now = 1_800_000_000;
//! let chain = Validator::new(now).validate_delegation_chain(&[token.clone()]).unwrap();
//! assert_eq!(chain.subject(), Some(&root.did()));
//! ```
#![deny(missing_docs, unreachable_pub)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod capability;
pub mod did;
pub mod document_id;
pub mod key;
pub mod pairing;
pub mod sync;
pub mod ucan;

pub use did::Did;
pub use document_id::DocumentId;
pub use key::{PublicKey, SecretKey, Signature};
