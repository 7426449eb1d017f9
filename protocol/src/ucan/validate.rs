//! Chain validation: may this invocation (or this delegation) be trusted at time `now`?
//!
//! The walk follows the UCAN 1.0 spec and reproduces its fixtures' named errors:
//!
//! 1. bounds (chain depth) before any signature work; token size was bounded at decode;
//! 2. the invocation's signature, then its `exp`;
//! 3. every `prf` CID must resolve;
//! 4. each proof, root first: signature, `exp`, `nbf`, revocation; the root must name a
//!    subject (no powerline at the root); every non-null `sub` equals the invocation's;
//!    each issuer is the previous audience (the first issuer is the subject itself);
//!    each command covers the next one's;
//! 5. the last audience is the invoker;
//! 6. the invoked command is covered and every policy in the chain holds on `args`.
//!
//! Signatures are checked as one batch (see [`crate::key::verify_batch`]), which costs
//! about three quarters of checking them one by one. The outcome, error included, is the
//! one the walk above gives: the checks that need no signature run first; the
//! signatures of every token up to the first failing check (all of them when none fails)
//! are then verified together, and only when that batch fails are they verified one by
//! one, in walk order, to name the first bad one. So a bad signature is still reported
//! before any later error, and a later error still wins when every signature before it is
//! good.

use std::collections::{BTreeMap, HashMap};

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{
    Command, Delegation, Invocation, MAX_CHAIN_DEPTH, Policy, RevocationSet, UnixTime,
    envelope::Envelope,
};
use crate::{
    did::Did,
    key::{self, PublicKey, Signature},
};

/// Why a chain is not valid. [`ValidationError::name`] gives the spec's error name.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ValidationError {
    /// The claim is not supported: no proof where one is needed, a powerline at the root,
    /// a root not issued by its subject, or a command the chain does not cover.
    #[error("InvalidClaim: {0}")]
    InvalidClaim(String),
    /// A proof named in `prf` is not available.
    #[error("UnavailableProof: {0}")]
    UnavailableProof(Cid),
    /// A token's `exp` has passed.
    #[error("Expired: {cid} expired at {expiration}")]
    Expired {
        /// The expired token.
        cid: Cid,
        /// Its `exp`.
        expiration: UnixTime,
    },
    /// A token's `nbf` is still ahead.
    #[error("TooEarly: {cid} is not valid before {not_before}")]
    TooEarly {
        /// The token.
        cid: Cid,
        /// Its `nbf`.
        not_before: UnixTime,
    },
    /// Principals do not line up: an issuer is not the previous audience.
    #[error("InvalidAudience: {0}")]
    InvalidAudience(String),
    /// A delegation is about a different subject than the invocation.
    #[error("InvalidSubject: {0}")]
    InvalidSubject(String),
    /// A signature does not verify.
    #[error("InvalidSignature: {0}")]
    InvalidSignature(Cid),
    /// The arguments violate a policy in the chain.
    #[error("MatchError: the arguments violate the policy of {0}")]
    MatchError(Cid),
    /// A delegation in the chain has been revoked.
    #[error("Revoked: {0}")]
    Revoked(Cid),
    /// The chain is longer than [`MAX_CHAIN_DEPTH`]; refused before signature work.
    #[error("ChainTooDeep: {0} delegations (at most {MAX_CHAIN_DEPTH})")]
    ChainTooDeep(usize),
}

impl ValidationError {
    /// The spec's error name (`InvalidClaim`, `Expired`, …) or ours for the two additions
    /// (`Revoked`, `ChainTooDeep`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::InvalidClaim(_) => "InvalidClaim",
            Self::UnavailableProof(_) => "UnavailableProof",
            Self::Expired { .. } => "Expired",
            Self::TooEarly { .. } => "TooEarly",
            Self::InvalidAudience(_) => "InvalidAudience",
            Self::InvalidSubject(_) => "InvalidSubject",
            Self::InvalidSignature(_) => "InvalidSignature",
            Self::MatchError(_) => "MatchError",
            Self::Revoked(_) => "Revoked",
            Self::ChainTooDeep(_) => "ChainTooDeep",
        }
    }
}

/// Where proofs named by CID are found.
pub trait ProofStore {
    /// The delegation with this CID, if known.
    fn proof(&self, cid: &Cid) -> Option<&Delegation>;
}

impl ProofStore for [Delegation] {
    fn proof(&self, cid: &Cid) -> Option<&Delegation> {
        self.iter().find(|delegation| delegation.cid() == *cid)
    }
}

impl ProofStore for Vec<Delegation> {
    fn proof(&self, cid: &Cid) -> Option<&Delegation> {
        self.as_slice().proof(cid)
    }
}

impl ProofStore for BTreeMap<Cid, Delegation> {
    fn proof(&self, cid: &Cid) -> Option<&Delegation> {
        self.get(cid)
    }
}

impl<S: std::hash::BuildHasher> ProofStore for HashMap<Cid, Delegation, S> {
    fn proof(&self, cid: &Cid) -> Option<&Delegation> {
        self.get(cid)
    }
}

/// What a valid chain proves.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidChain {
    subject: Option<Did>,
    audience: Did,
    command: Command,
    policies: Vec<(Cid, Policy)>,
    proofs: Vec<Cid>,
    issuers: Vec<Did>,
    valid_until: Option<UnixTime>,
}

impl ValidChain {
    /// The subject the chain grants authority over (`None` only for a lone powerline
    /// chain, which cannot occur for a validated chain; kept optional for clarity).
    pub fn subject(&self) -> Option<&Did> {
        self.subject.as_ref()
    }

    /// Who holds the authority at the end of the chain (the invoker, for invocations).
    pub fn audience(&self) -> &Did {
        &self.audience
    }

    /// The narrowest command of the chain.
    pub fn command(&self) -> &Command {
        &self.command
    }

    /// The CIDs of the delegations, root first.
    pub fn proofs(&self) -> &[Cid] {
        &self.proofs
    }

    /// Every issuer in the chain, root first (the revokers this chain accepts).
    pub fn issuers(&self) -> &[Did] {
        &self.issuers
    }

    /// The earliest `exp` in the chain: re-check at or after this time.
    pub fn valid_until(&self) -> Option<UnixTime> {
        self.valid_until
    }

    /// Whether the chain authorizes `command` with `args`: covered by the chain's command
    /// and allowed by every policy in it.
    pub fn allows(&self, command: &Command, args: &Ipld) -> Result<(), ValidationError> {
        if !self.command.covers(command) {
            return Err(ValidationError::InvalidClaim(format!(
                "the chain grants {} which does not cover {command}",
                self.command
            )));
        }
        match self
            .policies
            .iter()
            .find(|(_, policy)| !policy.matches(args))
        {
            Some((cid, _)) => Err(ValidationError::MatchError(*cid)),
            None => Ok(()),
        }
    }
}

/// Delegations whose signatures have verified, by CID, so a chain seen before costs no
/// signature work. A CID is the hash of the signed envelope bytes, so it names exactly the
/// bytes that verified; time, revocation, links and policy are still checked every time.
/// Bounded: when full, it forgets everything and starts again.
#[derive(Debug)]
pub struct VerifiedSignatures {
    seen: std::sync::Mutex<std::collections::HashSet<Cid>>,
    capacity: usize,
}

impl VerifiedSignatures {
    /// A cache holding at most `capacity` CIDs.
    pub fn new(capacity: usize) -> Self {
        Self {
            seen: std::sync::Mutex::new(std::collections::HashSet::new()),
            capacity,
        }
    }

    fn contains(&self, cid: &Cid) -> bool {
        self.seen.lock().is_ok_and(|seen| seen.contains(cid))
    }

    fn insert(&self, cid: Cid) {
        if let Ok(mut seen) = self.seen.lock() {
            if seen.len() >= self.capacity {
                seen.clear();
            }
            seen.insert(cid);
        }
    }
}

impl Default for VerifiedSignatures {
    /// Room for the chains of a few thousand peers.
    fn default() -> Self {
        Self::new(16_384)
    }
}

/// Validates chains at a fixed time, optionally against a revocation set.
#[derive(Debug, Clone, Copy)]
pub struct Validator<'a> {
    now: UnixTime,
    clock_skew: UnixTime,
    /// Whether `exp` is judged without the skew allowance.
    strict_expiry: bool,
    revocations: Option<&'a RevocationSet>,
    verified: Option<&'a VerifiedSignatures>,
}

impl<'a> Validator<'a> {
    /// A validator for time `now` with no clock-skew allowance.
    pub fn new(now: UnixTime) -> Self {
        Self {
            now,
            clock_skew: 0,
            strict_expiry: false,
            revocations: None,
            verified: None,
        }
    }

    /// Skips the signature check of delegations `cache` has seen verify, and records those
    /// that verify now.
    pub fn with_verified_signatures(mut self, cache: &'a VerifiedSignatures) -> Self {
        self.verified = Some(cache);
        self
    }

    /// Tolerates clocks this many seconds apart (the spec recommends at most 60).
    pub fn with_clock_skew(mut self, seconds: UnixTime) -> Self {
        self.clock_skew = seconds;
        self
    }

    /// Judges `exp` by this validator's clock alone, keeping the skew allowance for `nbf`:
    /// for a verifier that enforces a grant's end itself, so a session it closed at expiry
    /// cannot reopen within the allowance.
    pub fn with_strict_expiry(mut self) -> Self {
        self.strict_expiry = true;
        self
    }

    /// Refuses chains that contain a revoked delegation.
    pub fn with_revocations(mut self, revocations: &'a RevocationSet) -> Self {
        self.revocations = Some(revocations);
        self
    }

    fn check_time(
        &self,
        cid: Cid,
        expiration: Option<UnixTime>,
        not_before: Option<UnixTime>,
    ) -> Result<(), ValidationError> {
        if let Some(expiration) = expiration {
            // `exp` is inclusive: still valid at now == exp.
            let grace = if self.strict_expiry {
                0
            } else {
                self.clock_skew
            };
            if self.now > expiration.saturating_add(grace) {
                return Err(ValidationError::Expired { cid, expiration });
            }
        }
        if let Some(not_before) = not_before
            && self.now.saturating_add(self.clock_skew) < not_before
        {
            return Err(ValidationError::TooEarly { cid, not_before });
        }
        Ok(())
    }

    /// Everything [`Validator::walk`] checks about one proof on its own except its signature:
    /// time and revocation.
    fn check_proof_unsigned(&self, proof: &Delegation) -> Result<(), ValidationError> {
        let payload = proof.payload();
        self.check_time(proof.cid(), payload.expiration, payload.not_before)?;
        if self
            .revocations
            .is_some_and(|set| set.contains(&proof.cid()))
        {
            return Err(ValidationError::Revoked(proof.cid()));
        }
        Ok(())
    }

    /// Validates an invocation against proofs found in `store`.
    pub fn validate_invocation<S: ProofStore + ?Sized>(
        &self,
        invocation: &Invocation,
        store: &S,
    ) -> Result<ValidChain, ValidationError> {
        let payload = invocation.payload();
        if payload.proofs.len() > MAX_CHAIN_DEPTH {
            return Err(ValidationError::ChainTooDeep(payload.proofs.len()));
        }
        // In walk order: the invocation's signature, its `exp`, the proofs' availability,
        // then each proof. Signatures are verified up to the first failing check.
        let invocation_signed = Signed::invocation(invocation);
        let proofs = self
            .check_time(invocation.cid(), payload.expiration, None)
            .and_then(|()| {
                payload
                    .proofs
                    .iter()
                    .map(|cid| {
                        store
                            .proof(cid)
                            .ok_or(ValidationError::UnavailableProof(*cid))
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
        let proofs = match proofs {
            Ok(proofs) => proofs,
            Err(error) => {
                self.verify_signatures(&[invocation_signed])?;
                return Err(error);
            }
        };
        let walked = self.walk(&payload.subject, &proofs);
        let signed: Vec<Signed<'_>> = std::iter::once(invocation_signed)
            .chain(
                proofs[..walked_prefix(&walked, proofs.len())]
                    .iter()
                    .map(|proof| Signed::proof(proof)),
            )
            .collect();
        self.verify_signatures(&signed)?;
        let walked = walked.map_err(|(_, error)| error)?;
        if walked.audience != payload.issuer {
            return Err(if proofs.is_empty() {
                ValidationError::InvalidClaim(format!(
                    "{} invokes on {} without any proof",
                    payload.issuer, payload.subject
                ))
            } else {
                ValidationError::InvalidAudience(format!(
                    "the last delegation is to {}, but {} invokes",
                    walked.audience, payload.issuer
                ))
            });
        }
        let chain = ValidChain {
            subject: Some(payload.subject),
            audience: payload.issuer,
            command: walked.command.unwrap_or_else(Command::top),
            policies: walked.policies,
            proofs: payload.proofs.clone(),
            issuers: walked.issuers,
            valid_until: min_time(walked.valid_until, payload.expiration),
        };
        chain.allows(&payload.command, &Ipld::Map(payload.args.clone()))?;
        Ok(chain)
    }

    /// Validates a delegation chain given root first (the root must be issued by its
    /// subject), e.g. the chain a peer presents when it connects.
    pub fn validate_delegation_chain(
        &self,
        chain: &[Delegation],
    ) -> Result<ValidChain, ValidationError> {
        if chain.len() > MAX_CHAIN_DEPTH {
            return Err(ValidationError::ChainTooDeep(chain.len()));
        }
        let Some(root) = chain.first() else {
            return Err(ValidationError::InvalidClaim(
                "an empty chain proves nothing".into(),
            ));
        };
        let Some(subject) = root.payload().subject else {
            // Signature and time still come first, as for every proof.
            self.verify_signatures(&[Signed::proof(root)])?;
            self.check_proof_unsigned(root)?;
            return Err(ValidationError::InvalidClaim(
                "a powerline cannot be the root of a chain".into(),
            ));
        };
        let proofs: Vec<&Delegation> = chain.iter().collect();
        let walked = self.walk(&subject, &proofs);
        let signed: Vec<Signed<'_>> = proofs[..walked_prefix(&walked, proofs.len())]
            .iter()
            .map(|proof| Signed::proof(proof))
            .collect();
        self.verify_signatures(&signed)?;
        let walked = walked.map_err(|(_, error)| error)?;
        Ok(ValidChain {
            subject: Some(subject),
            audience: walked.audience,
            command: walked.command.unwrap_or_else(Command::top),
            policies: walked.policies,
            proofs: chain.iter().map(Delegation::cid).collect(),
            issuers: walked.issuers,
            valid_until: walked.valid_until,
        })
    }

    /// Verifies the signatures of `signed`, given in walk order, and records the proofs
    /// among them in the signature cache. The error names the first one that does not
    /// verify.
    fn verify_signatures(&self, signed: &[Signed<'_>]) -> Result<(), ValidationError> {
        let pending: Vec<&Signed<'_>> = signed
            .iter()
            .filter(|token| {
                !(token.is_proof
                    && self
                        .verified
                        .is_some_and(|cache| cache.contains(&token.cid)))
            })
            .collect();
        // A key that is not a curve point or a signature that is not 64 bytes can never
        // verify; such a token is left to the one-by-one pass, which reports it.
        let parts: Vec<Option<(PublicKey, Signature)>> = pending
            .iter()
            .map(|token| {
                let key = token.issuer.public_key().ok()?;
                let signature = Signature::from_slice(&token.envelope.signature).ok()?;
                Some((key, signature))
            })
            .collect();
        let batched = pending.len() > 1 && {
            let batch: Option<Vec<key::SignedMessage<'_>>> = pending
                .iter()
                .zip(&parts)
                .map(|(token, parts)| {
                    parts
                        .as_ref()
                        .map(|(key, signature)| (key, token.envelope.signed_bytes(), signature))
                })
                .collect();
            batch.is_some_and(|batch| key::verify_batch(&batch).is_ok())
        };
        for (token, parts) in pending.iter().zip(&parts) {
            if !batched {
                let verified = parts.as_ref().is_some_and(|(key, signature)| {
                    key.verify(token.envelope.signed_bytes(), signature).is_ok()
                });
                if !verified {
                    return Err(ValidationError::InvalidSignature(token.cid));
                }
            }
            if token.is_proof
                && let Some(cache) = self.verified
            {
                cache.insert(token.cid);
            }
        }
        Ok(())
    }

    /// Walks proofs root first for `subject`, checking everything but signatures; returns
    /// the final audience and what the chain accumulated, or the index of the proof that
    /// failed a check, with the error.
    fn walk(
        &self,
        subject: &Did,
        proofs: &[&Delegation],
    ) -> Result<Walked, (usize, ValidationError)> {
        let mut walked = Walked {
            audience: *subject,
            command: None,
            policies: Vec::with_capacity(proofs.len()),
            issuers: Vec::with_capacity(proofs.len()),
            valid_until: None,
        };
        for (index, proof) in proofs.iter().enumerate() {
            self.walk_one(subject, index, proof, &mut walked)
                .map_err(|error| (index, error))?;
        }
        Ok(walked)
    }

    /// One step of [`Validator::walk`].
    fn walk_one(
        &self,
        subject: &Did,
        index: usize,
        proof: &Delegation,
        walked: &mut Walked,
    ) -> Result<(), ValidationError> {
        self.check_proof_unsigned(proof)?;
        let payload = proof.payload();
        match &payload.subject {
            None if index == 0 => {
                return Err(ValidationError::InvalidClaim(format!(
                    "the root delegation {} is a powerline",
                    proof.cid()
                )));
            }
            Some(sub) if sub != subject => {
                return Err(ValidationError::InvalidSubject(format!(
                    "{} is about {sub}, not {subject}",
                    proof.cid()
                )));
            }
            _ => {}
        }
        if payload.issuer != walked.audience {
            return Err(ValidationError::InvalidAudience(format!(
                "{} is issued by {}, expected {}",
                proof.cid(),
                payload.issuer,
                walked.audience
            )));
        }
        if let Some(parent) = &walked.command
            && !parent.covers(&payload.command)
        {
            return Err(ValidationError::InvalidClaim(format!(
                "{} widens the command from {parent} to {}",
                proof.cid(),
                payload.command
            )));
        }
        walked.audience = payload.audience;
        walked.command = Some(payload.command.clone());
        walked.issuers.push(payload.issuer);
        walked.valid_until = min_time(walked.valid_until, payload.expiration);
        if !payload.policy.is_empty() {
            walked.policies.push((proof.cid(), payload.policy.clone()));
        }
        Ok(())
    }
}

/// How many proofs, from the root, have their signatures checked before the walk's
/// outcome is known: all of them, or those up to and including the one that failed.
fn walked_prefix(walked: &Result<Walked, (usize, ValidationError)>, len: usize) -> usize {
    match walked {
        Ok(_) => len,
        Err((index, _)) => index + 1,
    }
}

/// A token whose signature is to be checked.
struct Signed<'t> {
    cid: Cid,
    issuer: Did,
    envelope: &'t Envelope,
    /// Proofs are remembered in the [`VerifiedSignatures`] cache; invocations are not.
    is_proof: bool,
}

impl<'t> Signed<'t> {
    fn proof(proof: &'t Delegation) -> Self {
        Self {
            cid: proof.cid(),
            issuer: proof.payload().issuer,
            envelope: proof.envelope(),
            is_proof: true,
        }
    }

    fn invocation(invocation: &'t Invocation) -> Self {
        Self {
            cid: invocation.cid(),
            issuer: invocation.payload().issuer,
            envelope: invocation.envelope(),
            is_proof: false,
        }
    }
}

struct Walked {
    audience: Did,
    command: Option<Command>,
    policies: Vec<(Cid, Policy)>,
    issuers: Vec<Did>,
    valid_until: Option<UnixTime>,
}

fn min_time(a: Option<UnixTime>, b: Option<UnixTime>) -> Option<UnixTime> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Orders `pool` into a chain ending at `leaf`, root first, by following each issuer to a
/// delegation addressed to it. Returns `None` when no root (issuer = subject) is reached.
pub fn find_chain(leaf: &Delegation, pool: &[Delegation]) -> Option<Vec<Delegation>> {
    let mut chain = vec![leaf.clone()];
    let mut current = leaf.clone();
    loop {
        let payload = current.payload();
        if payload.subject.as_ref() == Some(&payload.issuer) {
            chain.reverse();
            return Some(chain);
        }
        if chain.len() > MAX_CHAIN_DEPTH {
            return None;
        }
        let subject = payload.subject;
        let parent = pool.iter().find(|candidate| {
            let p = candidate.payload();
            p.audience == payload.issuer
                && (subject.is_none() || p.subject.is_none() || p.subject == subject)
                && !chain.contains(candidate)
        })?;
        chain.push(parent.clone());
        current = parent.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{key::SecretKey, ucan::DelegationBuilder};

    #[test]
    fn skew_is_granted_to_nbf_always_and_to_exp_unless_strict() {
        let root = SecretKey::from_seed([1; 32]);
        let friend = SecretKey::from_seed([2; 32]);
        let chain = [
            DelegationBuilder::new(root.did(), friend.did(), Command::top())
                .expiration(Some(1_000))
                .not_before(Some(900))
                .sign(&root)
                .unwrap(),
        ];
        let at = |now| Validator::new(now).with_clock_skew(60);
        assert!(
            at(1_000).validate_delegation_chain(&chain).is_ok(),
            "exp inclusive"
        );
        assert!(
            at(1_030).validate_delegation_chain(&chain).is_ok(),
            "within the skew"
        );
        assert!(matches!(
            at(1_030)
                .with_strict_expiry()
                .validate_delegation_chain(&chain),
            Err(ValidationError::Expired { .. })
        ));
        assert!(
            at(850)
                .with_strict_expiry()
                .validate_delegation_chain(&chain)
                .is_ok(),
            "nbf keeps its allowance"
        );
        assert!(matches!(
            at(1_061).validate_delegation_chain(&chain),
            Err(ValidationError::Expired { .. })
        ));
    }
}
