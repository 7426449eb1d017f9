//! The signed DAG-CBOR envelope shared by every UCAN token type.
//!
//! ```text
//! [ signature: bytes(64),
//!   { "h": varsig header (Ed25519, DAG-CBOR),
//!     "ucan/dlg@1.0.0" | "ucan/inv@1.0.0": payload map } ]
//! ```
//! The signature covers the DAG-CBOR bytes of the second element exactly as they appear in
//! the envelope. We only accept canonical DAG-CBOR (re-encoding must give the same bytes),
//! so there is one byte string per token and its CID is stable.

use std::collections::BTreeMap;

use cid::{Cid, multihash::Multihash};
use ipld_core::ipld::Ipld;
use sha2::{Digest as _, Sha256};

use super::{MAX_TOKEN_SIZE, canonical::read_canonical};
use crate::{
    did::DidError,
    key::{BadSignature, PublicKey, SecretKey, Signature},
};

/// Varsig header for Ed25519 signatures over DAG-CBOR payloads:
/// `0x34` varsig prefix, `0x01` version 1, `0xed01` Ed25519 signature algorithm,
/// `0xed01` Edwards25519 curve, `0x13` SHA2-512 (Ed25519's internal hash), `0x71` DAG-CBOR.
pub const VARSIG_ED25519_DAG_CBOR: [u8; 8] = [0x34, 0x01, 0xed, 0x01, 0xed, 0x01, 0x13, 0x71];

/// Multicodec of DAG-CBOR, used in token CIDs.
const DAG_CBOR_CODEC: u64 = 0x71;
/// Multihash code of sha2-256.
const SHA2_256: u64 = 0x12;
/// Longest signature field accepted. Ed25519 signatures are 64 bytes; other lengths still
/// decode (the spec's fixtures expect such tokens to fail as `InvalidSignature`, not as
/// malformed), but nothing absurd is carried around.
const MAX_SIGNATURE_LEN: usize = 512;

/// The token types this crate reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// `ucan/dlg@1.0.0`
    Delegation,
    /// `ucan/inv@1.0.0`
    Invocation,
}

impl TokenKind {
    /// The payload tag in the envelope.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Delegation => "ucan/dlg@1.0.0",
            Self::Invocation => "ucan/inv@1.0.0",
        }
    }

    fn from_tag(tag: &str) -> Option<Self> {
        [Self::Delegation, Self::Invocation]
            .into_iter()
            .find(|kind| kind.tag() == tag)
    }
}

/// Why bytes are not a well-formed token. Returned before any signature is checked.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DecodeError {
    /// Refused before decoding.
    #[error("token is {0} bytes; the limit is {MAX_TOKEN_SIZE}")]
    TooLarge(usize),
    /// Not DAG-CBOR at all.
    #[error("not DAG-CBOR: {0}")]
    NotDagCbor(String),
    /// Valid CBOR but not in canonical DAG-CBOR form.
    #[error("not canonical DAG-CBOR (re-encoding changes the bytes)")]
    NotCanonical,
    /// The envelope does not have the `[signature, {h, payload}]` shape.
    #[error("malformed envelope: {0}")]
    BadEnvelope(&'static str),
    /// A signature scheme or payload encoding other than Ed25519 over DAG-CBOR.
    #[error("unsupported varsig header (only Ed25519 over DAG-CBOR is supported)")]
    UnsupportedVarsig,
    /// The payload tag is not one this crate knows, or not the one expected.
    #[error("unexpected token type {found:?}")]
    WrongType {
        /// The tag found in the envelope.
        found: String,
    },
    /// A required payload field is absent.
    #[error("missing field `{0}`")]
    MissingField(&'static str),
    /// A payload field has the wrong type or an out-of-range value.
    #[error("field `{field}`: {problem}")]
    BadField {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// A payload field this version of the spec does not define.
    #[error("unknown field `{0}`")]
    UnknownField(String),
}

impl DecodeError {
    pub(crate) fn bad_field(field: &'static str, problem: impl ToString) -> Self {
        Self::BadField {
            field,
            problem: problem.to_string(),
        }
    }

    pub(crate) fn bad_did(field: &'static str, error: DidError) -> Self {
        Self::bad_field(field, error)
    }
}

/// Why a token could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum EncodeError {
    /// The signing key is not the issuer's.
    #[error("the signing key {signer} is not the issuer {issuer}")]
    WrongSigner {
        /// DID of the key used.
        signer: String,
        /// DID in `iss`.
        issuer: String,
    },
    /// The payload could not be encoded (for example a float that is NaN).
    #[error("cannot encode payload: {0}")]
    Cbor(String),
    /// The finished token would exceed [`MAX_TOKEN_SIZE`].
    #[error("token would be {0} bytes; the limit is {MAX_TOKEN_SIZE}")]
    TooLarge(usize),
    /// A time field above 2^53 − 1.
    #[error("time field `{0}` is out of range")]
    TimeOutOfRange(&'static str),
}

/// A decoded, not yet verified envelope.
#[derive(Clone)]
pub(crate) struct Envelope {
    pub(crate) kind: TokenKind,
    /// Raw signature bytes; only 64-byte ones can verify.
    pub(crate) signature: Vec<u8>,
    /// Where the signed payload starts in `bytes`.
    signed_offset: usize,
    pub(crate) payload: BTreeMap<String, Ipld>,
    pub(crate) bytes: Vec<u8>,
    pub(crate) cid: Cid,
}

impl Envelope {
    /// The exact bytes the signature covers.
    pub(crate) fn signed_bytes(&self) -> &[u8] {
        &self.bytes[self.signed_offset..]
    }

    pub(crate) fn verify_signature(&self, issuer: &PublicKey) -> Result<(), BadSignature> {
        let signature = Signature::from_slice(&self.signature).map_err(|_| BadSignature)?;
        issuer.verify(self.signed_bytes(), &signature)
    }
}

/// The CID of a token: CIDv1, dag-cbor, sha2-256 of the envelope bytes.
pub fn token_cid(bytes: &[u8]) -> Cid {
    let digest = Sha256::digest(bytes);
    let hash = Multihash::<64>::wrap(SHA2_256, &digest).expect("32 bytes fit a 64-byte multihash");
    Cid::new_v1(DAG_CBOR_CODEC, hash)
}

pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    if bytes.len() > MAX_TOKEN_SIZE {
        return Err(DecodeError::TooLarge(bytes.len()));
    }
    // Nearly every token is read in one pass by the canonical reader; the general decoder
    // handles the rest (floats, say) and names what is wrong with bad input.
    let value = match read_canonical(bytes) {
        Some(value) => value,
        None => {
            let value: Ipld = serde_ipld_dagcbor::from_slice(bytes)
                .map_err(|error| DecodeError::NotDagCbor(error.to_string()))?;
            let canonical = serde_ipld_dagcbor::to_vec(&value)
                .map_err(|error| DecodeError::NotDagCbor(error.to_string()))?;
            if canonical != bytes {
                return Err(DecodeError::NotCanonical);
            }
            value
        }
    };
    let Ipld::List(mut parts) = value else {
        return Err(DecodeError::BadEnvelope("not an array"));
    };
    if parts.len() != 2 {
        return Err(DecodeError::BadEnvelope("not a two-element array"));
    }
    let signed = parts.pop().expect("two elements");
    let Some(Ipld::Bytes(signature)) = parts.pop() else {
        return Err(DecodeError::BadEnvelope(
            "the first element is not the signature bytes",
        ));
    };
    if signature.len() > MAX_SIGNATURE_LEN {
        return Err(DecodeError::BadEnvelope(
            "the signature is implausibly long",
        ));
    }
    let Ipld::Map(mut signed) = signed else {
        return Err(DecodeError::BadEnvelope("the second element is not a map"));
    };
    match signed.remove("h") {
        Some(Ipld::Bytes(header)) if header == VARSIG_ED25519_DAG_CBOR => {}
        Some(Ipld::Bytes(_)) => return Err(DecodeError::UnsupportedVarsig),
        Some(_) => return Err(DecodeError::BadEnvelope("`h` is not bytes")),
        None => return Err(DecodeError::BadEnvelope("no varsig header `h`")),
    }
    if signed.len() != 1 {
        return Err(DecodeError::BadEnvelope(
            "the signed map holds exactly `h` and one payload",
        ));
    }
    let (tag, payload) = signed.into_iter().next().expect("one entry");
    let kind = TokenKind::from_tag(&tag).ok_or(DecodeError::WrongType { found: tag })?;
    let Ipld::Map(payload) = payload else {
        return Err(DecodeError::BadEnvelope("the payload is not a map"));
    };
    Ok(Envelope {
        kind,
        signed_offset: 1 + cbor_byte_string_header_len(signature.len()) + signature.len(),
        signature,
        payload,
        bytes: bytes.to_vec(),
        cid: token_cid(bytes),
    })
}

pub(crate) fn encode_envelope(
    kind: TokenKind,
    payload: BTreeMap<String, Ipld>,
    signer: &SecretKey,
) -> Result<Envelope, EncodeError> {
    let mut signed = BTreeMap::new();
    signed.insert(
        "h".to_owned(),
        Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec()),
    );
    signed.insert(kind.tag().to_owned(), Ipld::Map(payload.clone()));
    let signed = Ipld::Map(signed);
    let signed_bytes = serde_ipld_dagcbor::to_vec(&signed)
        .map_err(|error| EncodeError::Cbor(error.to_string()))?;
    let signature = signer.sign(&signed_bytes);
    let envelope = Ipld::List(vec![Ipld::Bytes(signature.to_bytes().to_vec()), signed]);
    let bytes = serde_ipld_dagcbor::to_vec(&envelope)
        .map_err(|error| EncodeError::Cbor(error.to_string()))?;
    if bytes.len() > MAX_TOKEN_SIZE {
        return Err(EncodeError::TooLarge(bytes.len()));
    }
    let signed_offset = bytes.len() - signed_bytes.len();
    debug_assert_eq!(&bytes[signed_offset..], &signed_bytes[..]);
    Ok(Envelope {
        kind,
        signature: signature.to_bytes().to_vec(),
        signed_offset,
        payload,
        cid: token_cid(&bytes),
        bytes,
    })
}

/// Length of the CBOR header of a byte string of `len` bytes (major type 2, canonical).
fn cbor_byte_string_header_len(len: usize) -> usize {
    match len {
        0..=23 => 1,
        24..=0xff => 2,
        0x100..=0xffff => 3,
        _ => 5,
    }
}

/// Either kind of token, for tools that accept both.
#[derive(Debug, Clone)]
pub enum AnyToken {
    /// A delegation.
    Delegation(super::Delegation),
    /// An invocation.
    Invocation(super::Invocation),
}

/// Decodes a token of either kind (not verified).
pub fn decode_any(bytes: &[u8]) -> Result<AnyToken, DecodeError> {
    let envelope = decode_envelope(bytes)?;
    Ok(match envelope.kind {
        TokenKind::Delegation => AnyToken::Delegation(super::Delegation::from_envelope(envelope)?),
        TokenKind::Invocation => AnyToken::Invocation(super::Invocation::from_envelope(envelope)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reencoded_with(bytes: &[u8], change: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut bytes = bytes.to_vec();
        change(&mut bytes);
        bytes
    }

    #[test]
    fn non_canonical_tokens_are_still_refused_as_before() {
        let key = SecretKey::from_seed([7; 32]);
        let mut payload = BTreeMap::new();
        payload.insert("n".to_owned(), Ipld::Integer(5));
        payload.insert("list".to_owned(), Ipld::List(vec![Ipld::Null]));
        let token = encode_envelope(TokenKind::Delegation, payload, &key).unwrap();
        assert!(decode_envelope(&token.bytes).is_ok());
        let at = |needle: &[u8]| {
            token
                .bytes
                .windows(needle.len())
                .position(|window| window == needle)
                .unwrap()
        };
        // `5` written with a one-byte argument instead of inline.
        let n = at(&[0x61, b'n', 0x05]);
        let long_int = reencoded_with(&token.bytes, |bytes| {
            bytes.splice(n + 2..n + 3, [0x18, 0x05]);
        });
        assert_eq!(read_canonical(&long_int), None);
        assert_eq!(
            decode_envelope(&long_int).err(),
            Some(DecodeError::NotCanonical)
        );
        // An indefinite-length array is not DAG-CBOR at all.
        let list = at(&[0x81, 0xf6]);
        let indefinite = reencoded_with(&token.bytes, |bytes| {
            bytes.splice(list..list + 2, [0x9f, 0xf6, 0xff]);
        });
        assert!(matches!(
            decode_envelope(&indefinite),
            Err(DecodeError::NotDagCbor(_))
        ));
        // Keys out of order: swapping "n" and "list" (length order puts "n" first).
        let list_entry = at(&[0x64, b'l', b'i', b's', b't']);
        let swapped = reencoded_with(&token.bytes, |bytes| {
            let n_entry: Vec<u8> = bytes[n..n + 3].to_vec();
            let list_entry_bytes: Vec<u8> = bytes[list_entry..list_entry + 7].to_vec();
            assert!(n < list_entry);
            bytes.splice(n..n + 3, list_entry_bytes.iter().copied());
            let moved = list_entry + list_entry_bytes.len() - n_entry.len();
            bytes.splice(moved..moved + 7, n_entry);
        });
        assert_eq!(
            decode_envelope(&swapped).err(),
            Some(DecodeError::NotCanonical)
        );
    }
}
