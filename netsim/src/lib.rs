//! Deterministic simulation of many Membrane nodes.
//!
//! This crate will drive the same pure state machines the real node uses (sync engine,
//! authorization, revocation, pairing) over a seeded network model with virtual time, so
//! that one seed replays one history exactly. It holds no simulation yet: the state
//! machines it drives are being built in `membrane-protocol` first.
#![deny(missing_docs, unreachable_pub)]
