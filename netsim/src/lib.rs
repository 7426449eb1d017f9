//! Deterministic simulation of many Membrane nodes.
//!
//! Every simulated device is the real [`membrane_protocol::sync::SyncHub`]: the same sync
//! engine, authorization, revocation and gate the node runs, fed with virtual time. The
//! network, stores and clocks around them are modelled ([`world`]), and one seed decides
//! everything, so a failing run replays exactly with
//! `membrane-netsim run --scenario NAME --seed S`.
//!
//! The invariants ([`scenario::Outcome::check`]): documents converge on every node entitled
//! to them once the network heals; no document content is ever sent to another person's
//! device without a live grant the sender knows no revocation of, nor to a device the
//! sender knows is revoked; no acknowledged write is lost across crashes.
#![deny(missing_docs, unreachable_pub)]

pub mod real;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod scenarios;
pub mod traces;
pub mod world;

pub use scenario::{Outcome, run};
pub use world::{NetConfig, Sim, Variant};
