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

use super::MAX_TOKEN_SIZE;
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
    let value: Ipld = serde_ipld_dagcbor::from_slice(bytes)
        .map_err(|error| DecodeError::NotDagCbor(error.to_string()))?;
    // Canonical means re-encoding gives back the same bytes. Comparing on the fly avoids
    // building the encoding; when that comparison cannot vouch for the bytes, the encoder
    // itself decides (and names the problem exactly as before).
    if !is_canonical_encoding(&value, bytes) {
        let canonical = serde_ipld_dagcbor::to_vec(&value)
            .map_err(|error| DecodeError::NotDagCbor(error.to_string()))?;
        if canonical != bytes {
            return Err(DecodeError::NotCanonical);
        }
    }
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

/// Whether `bytes` is exactly what `serde_ipld_dagcbor::to_vec(value)` gives, checked by
/// walking `value` and the bytes side by side, without building the encoding.
///
/// It mirrors that encoder: shortest-form heads, definite lengths, map entries ordered by
/// key length and then bytewise (the order of the keys' encodings), CIDs as tag 42 over a
/// byte string with a leading zero. Floats are not compared (it answers `false`), so `true`
/// is always right and `false` only means "ask the encoder".
fn is_canonical_encoding(value: &Ipld, bytes: &[u8]) -> bool {
    let mut rest = bytes;
    encodes_as(value, &mut rest) && rest.is_empty()
}

/// Whether `rest` starts with the encoding of `value`; if so, moves past it.
fn encodes_as(value: &Ipld, rest: &mut &[u8]) -> bool {
    match value {
        Ipld::Null => expect(rest, &[0xf6]),
        Ipld::Bool(false) => expect(rest, &[0xf4]),
        Ipld::Bool(true) => expect(rest, &[0xf5]),
        Ipld::Integer(n) => match u64::try_from(*n) {
            Ok(n) => expect_head(rest, 0, n),
            Err(_) => u64::try_from(-1 - *n).is_ok_and(|n| expect_head(rest, 1, n)),
        },
        Ipld::Float(_) => false,
        Ipld::String(text) => expect_text(rest, text),
        Ipld::Bytes(bytes) => expect_head(rest, 2, bytes.len() as u64) && expect(rest, bytes),
        Ipld::List(items) => {
            expect_head(rest, 4, items.len() as u64)
                && items.iter().all(|item| encodes_as(item, rest))
        }
        Ipld::Map(map) => {
            if !expect_head(rest, 5, map.len() as u64) {
                return false;
            }
            // The map iterates bytewise; a stable sort by length gives (length, bytes).
            let mut entries: Vec<(&String, &Ipld)> = map.iter().collect();
            entries.sort_by_key(|(key, _)| key.len());
            entries
                .into_iter()
                .all(|(key, value)| expect_text(rest, key) && encodes_as(value, rest))
        }
        Ipld::Link(cid) => {
            let cid = cid.to_bytes();
            expect(rest, &[0xd8, 42])
                && expect_head(rest, 2, cid.len() as u64 + 1)
                && expect(rest, &[0])
                && expect(rest, &cid)
        }
    }
}

fn expect_text(rest: &mut &[u8], text: &str) -> bool {
    expect_head(rest, 3, text.len() as u64) && expect(rest, text.as_bytes())
}

/// The shortest head of major type `major` with argument `n`.
fn expect_head(rest: &mut &[u8], major: u8, n: u64) -> bool {
    let major = major << 5;
    let mut head = [0u8; 9];
    let len = match n {
        0..=23 => {
            head[0] = major | n as u8;
            1
        }
        24..=0xff => {
            head[0] = major | 24;
            head[1] = n as u8;
            2
        }
        0x100..=0xffff => {
            head[0] = major | 25;
            head[1..3].copy_from_slice(&(n as u16).to_be_bytes());
            3
        }
        0x1_0000..=0xffff_ffff => {
            head[0] = major | 26;
            head[1..5].copy_from_slice(&(n as u32).to_be_bytes());
            5
        }
        _ => {
            head[0] = major | 27;
            head[1..9].copy_from_slice(&n.to_be_bytes());
            9
        }
    };
    expect(rest, &head[..len])
}

fn expect(rest: &mut &[u8], expected: &[u8]) -> bool {
    match rest.strip_prefix(expected) {
        Some(after) => {
            *rest = after;
            true
        }
        None => false,
    }
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
    use proptest::{collection, prelude::*};

    use super::*;

    fn ipld() -> impl Strategy<Value = Ipld> {
        let cids = [b"a".as_slice(), b"b", b""].map(token_cid);
        let leaf = prop_oneof![
            Just(Ipld::Null),
            any::<bool>().prop_map(Ipld::Bool),
            any::<i64>().prop_map(|n| Ipld::Integer(n.into())),
            any::<u64>().prop_map(|n| Ipld::Integer(n.into())),
            // Both ends of CBOR's integer range, and one step past each.
            prop::sample::select(vec![
                -(1i128 << 64),
                -(1i128 << 64) - 1,
                (1i128 << 64) - 1,
                1i128 << 64,
                23,
                24,
                255,
                256,
                65_535,
                65_536,
                -24,
                -25,
            ])
            .prop_map(Ipld::Integer),
            any::<f64>().prop_map(Ipld::Float),
            ".{0,40}".prop_map(Ipld::String),
            collection::vec(any::<u8>(), 0..300).prop_map(Ipld::Bytes),
            prop::sample::select(cids.to_vec()).prop_map(Ipld::Link),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                collection::vec(inner.clone(), 0..8).prop_map(Ipld::List),
                collection::btree_map("[a-z]{0,3}|[a-z]{20,30}", inner, 0..8).prop_map(Ipld::Map),
            ]
        })
    }

    fn contains_float(value: &Ipld) -> bool {
        match value {
            Ipld::Float(_) => true,
            Ipld::List(items) => items.iter().any(contains_float),
            Ipld::Map(map) => map.values().any(contains_float),
            _ => false,
        }
    }

    proptest! {
        /// The on-the-fly comparison agrees with the encoder: it vouches for the encoder's
        /// own output (floats aside), and for nothing else.
        #[test]
        fn canonical_check_agrees_with_the_encoder(value in ipld(), flip in any::<prop::sample::Index>()) {
            match serde_ipld_dagcbor::to_vec(&value) {
                Ok(bytes) => {
                    prop_assert_eq!(is_canonical_encoding(&value, &bytes), !contains_float(&value));
                    let mut changed = bytes.clone();
                    let at = flip.index(changed.len());
                    changed[at] ^= 1;
                    prop_assert!(!is_canonical_encoding(&value, &changed));
                    prop_assert!(!is_canonical_encoding(&value, &bytes[..bytes.len() - 1]));
                    let mut longer = bytes.clone();
                    longer.push(0);
                    prop_assert!(!is_canonical_encoding(&value, &longer));
                }
                // Out-of-range integers or non-finite floats: never vouched for.
                Err(_) => prop_assert!(!is_canonical_encoding(&value, &[])),
            }
        }
    }

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
        assert!(!is_canonical_encoding(
            &serde_ipld_dagcbor::from_slice::<Ipld>(&long_int).unwrap(),
            &long_int
        ));
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
