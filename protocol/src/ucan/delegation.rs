//! Delegations (`ucan/dlg@1.0.0`): `iss` lets `aud` act on `sub` for commands under `cmd`.

use std::{collections::BTreeMap, fmt};

use cid::Cid;
use ipld_core::ipld::Ipld;

use super::{
    Command, DecodeError, EncodeError, MAX_SAFE_INTEGER, Policy, TokenKind, UnixTime,
    envelope::{Envelope, decode_envelope, encode_envelope},
    payload::{Fields, MapBuilder, did_value, time_ipld},
};
use crate::{
    did::Did,
    key::{BadSignature, SecretKey},
};

/// The claims of a delegation.
#[derive(Debug, Clone, PartialEq)]
pub struct DelegationPayload {
    /// `iss`: who delegates (and signs).
    pub issuer: Did,
    /// `aud`: who receives the authority.
    pub audience: Did,
    /// `sub`: whose resources this is about; `None` is a powerline (any subject the issuer
    /// holds authority over, present and future).
    pub subject: Option<Did>,
    /// `cmd`: the commands covered.
    pub command: Command,
    /// `pol`: constraints every invocation's arguments must satisfy.
    pub policy: Policy,
    /// `nonce`: makes every delegation unique, so CIDs never collide by accident.
    pub nonce: Vec<u8>,
    /// `meta`: free-form metadata, never used for authorization.
    pub meta: Option<BTreeMap<String, Ipld>>,
    /// `nbf`: not valid before this time.
    pub not_before: Option<UnixTime>,
    /// `exp`: not valid from this time on; `None` never expires.
    pub expiration: Option<UnixTime>,
}

impl DelegationPayload {
    fn from_fields(mut fields: Fields<'_>) -> Result<Self, DecodeError> {
        let payload = Self {
            issuer: fields.did("iss")?,
            audience: fields.did("aud")?,
            subject: fields.nullable_did("sub")?,
            command: fields.command()?,
            policy: Policy::from_statements(fields.list("pol")?)
                .map_err(|error| DecodeError::bad_field("pol", error))?,
            nonce: fields.bytes("nonce")?,
            meta: fields.optional_map("meta")?,
            not_before: fields.optional_time("nbf")?,
            expiration: fields.nullable_time("exp")?,
        };
        fields.finish()?;
        Ok(payload)
    }

    fn to_map(&self) -> BTreeMap<String, Ipld> {
        MapBuilder::default()
            .put("iss", did_value(&self.issuer))
            .put("aud", did_value(&self.audience))
            .put("sub", self.subject.as_ref().map_or(Ipld::Null, did_value))
            .put("cmd", Ipld::String(self.command.to_string()))
            .put("pol", self.policy.to_ipld())
            .put("nonce", Ipld::Bytes(self.nonce.clone()))
            .put_some("meta", self.meta.clone().map(Ipld::Map))
            .put_some("nbf", self.not_before.map(time_ipld))
            .put("exp", self.expiration.map_or(Ipld::Null, time_ipld))
            .build()
    }
}

/// A decoded delegation with its exact bytes and CID. Decoding does not verify the
/// signature; [`super::Validator`] does, or call [`Delegation::verify_signature`].
#[derive(Clone)]
pub struct Delegation {
    envelope: Envelope,
    payload: DelegationPayload,
}

impl Delegation {
    /// Decodes a delegation envelope (bounded, strict, canonical).
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::from_envelope(decode_envelope(bytes)?)
    }

    pub(crate) fn from_envelope(envelope: Envelope) -> Result<Self, DecodeError> {
        if envelope.kind != TokenKind::Delegation {
            return Err(DecodeError::WrongType {
                found: envelope.kind.tag().to_owned(),
            });
        }
        let payload = DelegationPayload::from_fields(Fields::new(&envelope.payload))?;
        Ok(Self { envelope, payload })
    }

    /// The signed envelope.
    pub(crate) fn envelope(&self) -> &Envelope {
        &self.envelope
    }

    /// The claims.
    pub fn payload(&self) -> &DelegationPayload {
        &self.payload
    }

    /// The envelope bytes, exactly as signed and hashed.
    pub fn as_bytes(&self) -> &[u8] {
        &self.envelope.bytes
    }

    /// The content address of this delegation.
    pub fn cid(&self) -> Cid {
        self.envelope.cid
    }

    /// Whether `sub` is null.
    pub fn is_powerline(&self) -> bool {
        self.payload.subject.is_none()
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

impl fmt::Debug for Delegation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delegation")
            .field("cid", &self.cid().to_string())
            .field("payload", &self.payload)
            .finish()
    }
}

impl PartialEq for Delegation {
    fn eq(&self, other: &Self) -> bool {
        self.envelope.bytes == other.envelope.bytes
    }
}

/// Builds and signs delegations. The subject defaults to the issuer.
#[derive(Debug, Clone)]
pub struct DelegationBuilder {
    payload: DelegationPayload,
}

impl DelegationBuilder {
    /// A delegation from `issuer` to `audience` for `command`, subject = issuer, no policy,
    /// no expiry. Set a nonce before signing.
    pub fn new(issuer: Did, audience: Did, command: Command) -> Self {
        Self {
            payload: DelegationPayload {
                subject: Some(issuer),
                issuer,
                audience,
                command,
                policy: Policy::default(),
                nonce: Vec::new(),
                meta: None,
                not_before: None,
                expiration: None,
            },
        }
    }

    /// Delegates authority over `subject`'s resources.
    pub fn subject(mut self, subject: Did) -> Self {
        self.payload.subject = Some(subject);
        self
    }

    /// Makes this a powerline (`sub` null): everything the issuer may do, now and later.
    pub fn powerline(mut self) -> Self {
        self.payload.subject = None;
        self
    }

    /// Constrains invocation arguments.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.payload.policy = policy;
        self
    }

    /// The nonce: caller-supplied random bytes (12 or more recommended).
    pub fn nonce(mut self, nonce: Vec<u8>) -> Self {
        self.payload.nonce = nonce;
        self
    }

    /// Expires at `time` (`None`: never).
    pub fn expiration(mut self, time: Option<UnixTime>) -> Self {
        self.payload.expiration = time;
        self
    }

    /// Not valid before `time`.
    pub fn not_before(mut self, time: Option<UnixTime>) -> Self {
        self.payload.not_before = time;
        self
    }

    /// Attaches metadata.
    pub fn meta(mut self, meta: BTreeMap<String, Ipld>) -> Self {
        self.payload.meta = Some(meta);
        self
    }

    /// Signs with the issuer's key.
    pub fn sign(self, key: &SecretKey) -> Result<Delegation, EncodeError> {
        let payload = self.payload;
        if key.did() != payload.issuer {
            return Err(EncodeError::WrongSigner {
                signer: key.did().to_string(),
                issuer: payload.issuer.to_string(),
            });
        }
        for (field, time) in [("exp", payload.expiration), ("nbf", payload.not_before)] {
            if time.is_some_and(|t| t > MAX_SAFE_INTEGER) {
                return Err(EncodeError::TimeOutOfRange(field));
            }
        }
        let envelope = encode_envelope(TokenKind::Delegation, payload.to_map(), key)?;
        Ok(Delegation { envelope, payload })
    }
}
