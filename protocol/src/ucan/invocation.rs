//! Invocations (`ucan/inv@1.0.0`): `iss` asks to run `cmd` with `args` on `sub`.

use std::{collections::BTreeMap, fmt};

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{
    Command, DecodeError, EncodeError, MAX_SAFE_INTEGER, TokenKind, UnixTime,
    envelope::{Envelope, decode_envelope, encode_envelope},
    payload::{Fields, MapBuilder, did_value, time_ipld},
};
use crate::{
    did::Did,
    key::{BadSignature, SecretKey},
};

/// The claims of an invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct InvocationPayload {
    /// `iss`: who invokes (and signs).
    pub issuer: Did,
    /// `sub`: whose resource is acted on.
    pub subject: Did,
    /// `aud`: the executor, when it is not the subject.
    pub audience: Option<Did>,
    /// `cmd`: what to run.
    pub command: Command,
    /// `args`: the arguments; every policy in the chain must hold on them.
    pub args: BTreeMap<String, Ipld>,
    /// `prf`: delegation CIDs, from the subject's own delegation to the one naming `iss`.
    pub proofs: Vec<Cid>,
    /// `meta`: free-form metadata.
    pub meta: Option<BTreeMap<String, Ipld>>,
    /// `nonce`: makes replays detectable.
    pub nonce: Vec<u8>,
    /// `exp`: not valid from this time on; `None` never expires.
    pub expiration: Option<UnixTime>,
    /// `iat`: when it was issued (informational).
    pub issued_at: Option<UnixTime>,
    /// `cause`: the receipt that caused this invocation, if any.
    pub cause: Option<Cid>,
}

impl InvocationPayload {
    fn from_fields(mut fields: Fields<'_>) -> Result<Self, DecodeError> {
        let payload = Self {
            issuer: fields.did("iss")?,
            subject: fields.did("sub")?,
            audience: fields.optional_did("aud")?,
            command: fields.command()?,
            args: fields.map("args")?,
            proofs: fields.links("prf")?,
            meta: fields.optional_map("meta")?,
            nonce: fields.bytes("nonce")?,
            expiration: fields.nullable_time("exp")?,
            issued_at: fields.optional_time("iat")?,
            cause: fields.optional_link("cause")?,
        };
        fields.finish()?;
        Ok(payload)
    }

    fn to_map(&self) -> BTreeMap<String, Ipld> {
        MapBuilder::default()
            .put("iss", did_value(&self.issuer))
            .put("sub", did_value(&self.subject))
            .put_some("aud", self.audience.as_ref().map(did_value))
            .put("cmd", Ipld::String(self.command.to_string()))
            .put("args", Ipld::Map(self.args.clone()))
            .put(
                "prf",
                Ipld::List(self.proofs.iter().copied().map(Ipld::Link).collect()),
            )
            .put_some("meta", self.meta.clone().map(Ipld::Map))
            .put("nonce", Ipld::Bytes(self.nonce.clone()))
            .put("exp", self.expiration.map_or(Ipld::Null, time_ipld))
            .put_some("iat", self.issued_at.map(time_ipld))
            .put_some("cause", self.cause.map(Ipld::Link))
            .build()
    }
}

/// A decoded invocation with its exact bytes and CID (signature not yet verified).
#[derive(Clone)]
pub struct Invocation {
    envelope: Envelope,
    payload: InvocationPayload,
}

impl Invocation {
    /// Decodes an invocation envelope (bounded, strict, canonical).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_envelope(decode_envelope(bytes)?)
    }

    pub(crate) fn from_envelope(envelope: Envelope) -> Result<Self, DecodeError> {
        if envelope.kind != TokenKind::Invocation {
            return Err(DecodeError::WrongType {
                found: envelope.kind.tag().to_owned(),
            });
        }
        let payload = InvocationPayload::from_fields(Fields::new(&envelope.payload))?;
        Ok(Self { envelope, payload })
    }

    /// The signed envelope.
    pub(crate) fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The claims.
    pub fn payload(&self) -> &InvocationPayload {
        &self.payload
    }

    /// The envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.envelope.bytes
    }

    /// The content address (also the task identity used for replay detection).
    pub fn cid(&self) -> Cid {
        self.envelope.cid
    }

    /// The envelope's raw payload map, for display.
    pub fn payload_ipld(&self) -> Ipld {
        Ipld::Map(self.envelope.payload.clone())
    }

    /// The signature bytes.
    pub fn signature(&self) -> &[u8] {
        &self.envelope.signature
    }

    /// Checks the Ed25519 signature against the issuer's key.
    pub fn verify_signature(&self) -> Result<(), BadSignature> {
        let key = self.payload.issuer.public_key().map_err(|_| BadSignature)?;
        self.envelope.verify_signature(&key)
    }
}

impl fmt::Debug for Invocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invocation")
            .field("cid", &self.cid().to_string())
            .field("payload", &self.payload)
            .finish()
    }
}

/// Builds and signs invocations.
#[derive(Debug, Clone)]
pub struct InvocationBuilder {
    payload: InvocationPayload,
}

impl InvocationBuilder {
    /// `issuer` invokes `command` on `subject`, with no arguments, proofs or expiry yet.
    pub fn new(issuer: Did, subject: Did, command: Command) -> Self {
        Self {
            payload: InvocationPayload {
                issuer,
                subject,
                audience: None,
                command,
                args: BTreeMap::new(),
                proofs: Vec::new(),
                meta: None,
                nonce: Vec::new(),
                expiration: None,
                issued_at: None,
                cause: None,
            },
        }
    }

    /// The arguments.
    pub fn args(mut self, args: BTreeMap<String, Ipld>) -> Self {
        self.payload.args = args;
        self
    }

    /// The proof chain, subject's delegation first.
    pub fn proofs(mut self, proofs: Vec<Cid>) -> Self {
        self.payload.proofs = proofs;
        self
    }

    /// The executor, when it is not the subject.
    pub fn audience(mut self, audience: Did) -> Self {
        self.payload.audience = Some(audience);
        self
    }

    /// Caller-supplied random bytes.
    pub fn nonce(mut self, nonce: Vec<u8>) -> Self {
        self.payload.nonce = nonce;
        self
    }

    /// Expires at `time`.
    pub fn expiration(mut self, time: Option<UnixTime>) -> Self {
        self.payload.expiration = time;
        self
    }

    /// Issued at `time`.
    pub fn issued_at(mut self, time: UnixTime) -> Self {
        self.payload.issued_at = Some(time);
        self
    }

    /// Attaches metadata.
    pub fn meta(mut self, meta: BTreeMap<String, Ipld>) -> Self {
        self.payload.meta = Some(meta);
        self
    }

    /// Signs with the issuer's key.
    pub fn sign(self, key: &SecretKey) -> Result<Invocation, EncodeError> {
        let payload = self.payload;
        if key.did() != payload.issuer {
            return Err(EncodeError::WrongSigner {
                signer: key.did().to_string(),
                issuer: payload.issuer.to_string(),
            });
        }
        for (field, time) in [("exp", payload.expiration), ("iat", payload.issued_at)] {
            if time.is_some_and(|t| t > MAX_SAFE_INTEGER) {
                return Err(EncodeError::TimeOutOfRange(field));
            }
        }
        let envelope = encode_envelope(TokenKind::Invocation, payload.to_map(), key)?;
        Ok(Invocation { envelope, payload })
    }
}
