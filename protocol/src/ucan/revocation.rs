//! Revocation: an issuer in a delegation's chain withdraws it, for good.
//!
//! The UCAN revocation spec has no final 1.0 text; we follow its draft in 1.0 terms. A
//! revocation is an invocation of `/ucan/revoke` with `args = {"revoke": <CID>}`. It is
//! valid when the invocation itself validates (so authority to revoke can be delegated, as
//! the command `/` covers `/ucan/revoke`) and its subject issued a delegation in the
//! revoked delegation's chain. Revocations are immutable: a [`RevocationSet`] only grows,
//! so replicas merge by union and converge in any order.

use std::collections::{BTreeMap, BTreeSet};

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{
    Command, Delegation, EncodeError, Invocation, InvocationBuilder, ProofStore, ValidationError,
    Validator,
};
use crate::{did::Did, key::SecretKey};

/// The command a revocation invokes.
pub const REVOKE_COMMAND: &str = "/ucan/revoke";
/// The argument naming the revoked delegation.
const REVOKE_ARG: &str = "revoke";

/// Why a revocation is not acceptable.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum RevocationError {
    /// Not a `/ucan/revoke` invocation with a `revoke` CID argument.
    #[error("not a revocation: {0}")]
    NotARevocation(&'static str),
    /// The revocation's own chain does not validate.
    #[error("the revocation is not authorized: {0}")]
    Unauthorized(#[from] ValidationError),
    /// The revoker is not an issuer in the revoked delegation's chain.
    #[error("{revoker} issued nothing in the chain of {revoked}")]
    NotInChain {
        /// On whose authority the revocation acts (a DID).
        revoker: String,
        /// The delegation it tries to revoke.
        revoked: Cid,
    },
    /// The chain given for the revoked delegation does not end with it.
    #[error("the chain given does not end with the revoked delegation")]
    WrongChain,
    /// The chain given for the revoked delegation is not a real chain: a signature fails,
    /// or a delegation's audience is not the next one's issuer.
    #[error("the chain given for the revoked delegation is broken: {0}")]
    BrokenChain(String),
}

/// A parsed revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    invocation: Invocation,
    revoked: Cid,
}

impl Revocation {
    /// Reads a revocation out of an invocation.
    pub fn from_invocation(invocation: Invocation) -> Result<Self, RevocationError> {
        let payload = invocation.payload();
        if payload.command.as_str() != REVOKE_COMMAND {
            return Err(RevocationError::NotARevocation(
                "the command is not /ucan/revoke",
            ));
        }
        let Some(Ipld::Link(revoked)) = payload.args.get(REVOKE_ARG) else {
            return Err(RevocationError::NotARevocation("no `revoke` CID argument"));
        };
        let revoked = *revoked;
        Ok(Self {
            invocation,
            revoked,
        })
    }

    /// Signs a revocation of `revoked` by `key`, acting for `subject` (the key's own DID
    /// when it issued a delegation in the chain itself; otherwise a principal that did,
    /// with `proofs` showing `key` may invoke `/ucan/revoke` for it).
    pub fn sign(
        key: &SecretKey,
        subject: Did,
        revoked: Cid,
        proofs: Vec<Cid>,
        issued_at: super::UnixTime,
    ) -> Result<Self, EncodeError> {
        let mut args = BTreeMap::new();
        args.insert(REVOKE_ARG.to_owned(), Ipld::Link(revoked));
        let command: Command = REVOKE_COMMAND.parse().expect("a valid command");
        // Revocation is idempotent, so the spec's draft leaves the nonce empty.
        let invocation = InvocationBuilder::new(key.did(), subject, command)
            .args(args)
            .proofs(proofs)
            .issued_at(issued_at)
            .sign(key)?;
        Ok(Self {
            invocation,
            revoked,
        })
    }

    /// The revoked delegation.
    pub fn revoked(&self) -> Cid {
        self.revoked
    }

    /// The underlying invocation.
    pub fn invocation(&self) -> &Invocation {
        &self.invocation
    }

    /// Checks that this revocation may revoke the last delegation of `revoked_chain`
    /// (root first): its own chain validates and its subject issued a delegation there.
    pub fn verify<S: ProofStore + ?Sized>(
        &self,
        validator: &Validator<'_>,
        proofs: &S,
        revoked_chain: &[Delegation],
    ) -> Result<(), RevocationError> {
        if revoked_chain.last().map(Delegation::cid) != Some(self.revoked) {
            return Err(RevocationError::WrongChain);
        }
        // The chain must be real, or anyone could list themselves in a made-up chain
        // that ends with someone else's delegation. Its times do not matter: an expired
        // delegation may still be revoked.
        for (i, delegation) in revoked_chain.iter().enumerate() {
            delegation
                .verify_signature()
                .map_err(|e| RevocationError::BrokenChain(format!("delegation {i}: {e}")))?;
            if let Some(next) = revoked_chain.get(i + 1)
                && delegation.payload().audience != next.payload().issuer
            {
                return Err(RevocationError::BrokenChain(format!(
                    "delegation {i} is not to the issuer of delegation {}",
                    i + 1
                )));
            }
        }
        validator.validate_invocation(&self.invocation, proofs)?;
        let revoker = self.invocation.payload().subject;
        if revoked_chain
            .iter()
            .any(|delegation| delegation.payload().issuer == revoker)
        {
            Ok(())
        } else {
            Err(RevocationError::NotInChain {
                revoker: revoker.to_string(),
                revoked: self.revoked,
            })
        }
    }
}

/// The CIDs of revoked delegations: a grow-only set, merged by union.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationSet(BTreeSet<Cid>);

impl RevocationSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a revoked CID; returns whether it was new.
    pub fn insert(&mut self, cid: Cid) -> bool {
        self.0.insert(cid)
    }

    /// Whether `cid` is revoked.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.0.contains(cid)
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: &RevocationSet) {
        self.0.extend(other.0.iter().copied());
    }

    /// How many revocations.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The revoked CIDs in order.
    pub fn iter(&self) -> impl Iterator<Item = &Cid> {
        self.0.iter()
    }
}
