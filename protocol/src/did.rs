//! `did:key` for ed25519 keys, parsed strictly.
//!
//! Form: `did:key:z` + base58btc(`0xed 0x01` ‖ 32-byte key), always starting `did:key:z6Mk`.
//! Anything else (another multibase, another multicodec, a 31- or 33-byte key, bad base58)
//! is a typed [`DidError`], never a panic.

use std::{fmt, str::FromStr};

use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::key::{ED25519_PUB_MULTICODEC, KeyError, PublicKey};

const DID_KEY_PREFIX: &str = "did:key:";
/// Longest text we even try to decode; an ed25519 did:key is 56 characters.
const MAX_DID_LEN: usize = 128;

/// Why a string is not an ed25519 `did:key`.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum DidError {
    /// It does not start with `did:key:` (other DID methods are not supported).
    #[error("not a did:key (expected the prefix `did:key:`)")]
    NotDidKey,
    /// Unreasonably long input, refused before decoding.
    #[error("did:key is too long ({0} bytes)")]
    TooLong(usize),
    /// The method-specific id is not multibase base58btc (prefix `z`).
    #[error("did:key must use multibase base58btc (prefix `z`), found {0:?}")]
    WrongMultibase(Option<char>),
    /// The base58 text does not decode.
    #[error("invalid base58btc in did:key")]
    BadBase58,
    /// The multicodec prefix is not `ed25519-pub` (0xed).
    #[error("did:key multicodec is not ed25519-pub (0xed01)")]
    WrongMulticodec,
    /// The key bytes are not a valid ed25519 public key.
    #[error("did:key holds an invalid key: {0}")]
    BadKey(#[from] KeyError),
}

/// A principal: an ed25519 `did:key`. Devices, persons' root identities, friends and
/// vendors are all named this way.
///
/// It holds the 32 key bytes, so it is small, `Copy`, and compares and hashes by key.
/// Parsing text with [`FromStr`] checks everything, including that the key is a point on
/// the curve. DIDs inside tokens skip only that last check (see `parse_in_token`): decoding
/// the point is the costliest part of reading a token, a key that is not a point can never
/// produce a valid signature, and the issuer's key is decoded when its signature is
/// checked.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Did([u8; 32]);

impl Did {
    /// The 32 key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The public key this DID names (fails only for a DID read from a token whose key is
    /// not a curve point).
    pub fn public_key(&self) -> Result<PublicKey, KeyError> {
        PublicKey::from_bytes(&self.0)
    }

    /// The libp2p PeerId of a device whose identity key this is.
    pub fn to_peer_id(&self) -> Result<PeerId, KeyError> {
        self.public_key().map(|key| key.to_peer_id())
    }

    /// The DID of the device behind a PeerId.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        PublicKey::from_peer_id(peer).map(Self::from)
    }

    /// Parses a DID found in a token: every check of [`FromStr`] except decoding the curve
    /// point.
    pub(crate) fn parse_in_token(text: &str) -> Result<Self, DidError> {
        let bytes = decode_key_bytes(text)?;
        Ok(Self(bytes))
    }

    /// A short form for logs: the last 8 characters.
    pub fn fmt_short(&self) -> String {
        let full = self.to_string();
        full[full.len() - 8..].to_owned()
    }
}

impl From<PublicKey> for Did {
    fn from(key: PublicKey) -> Self {
        Self(*key.as_bytes())
    }
}

/// Checks the text form and returns the 32 key bytes (not yet checked to be on the curve).
fn decode_key_bytes(text: &str) -> Result<[u8; 32], DidError> {
    if text.len() > MAX_DID_LEN {
        return Err(DidError::TooLong(text.len()));
    }
    let id = text
        .strip_prefix(DID_KEY_PREFIX)
        .ok_or(DidError::NotDidKey)?;
    match id.chars().next() {
        Some('z') => {}
        other => return Err(DidError::WrongMultibase(other)),
    }
    if let Some(key) = decode_ed25519_base58(&id[1..]) {
        return Ok(key);
    }
    // Anything unusual (another length, leading zeros, another prefix) takes the general
    // decoder, which also names the problem.
    let (_, bytes) = multibase::decode(id).map_err(|_| DidError::BadBase58)?;
    let key = bytes
        .strip_prefix(&ED25519_PUB_MULTICODEC)
        .ok_or(DidError::WrongMulticodec)?;
    key.try_into()
        .map_err(|_| DidError::BadKey(KeyError::WrongLength(key.len())))
}

/// Base58 digits of an ed25519 did:key after the `z`: `0xed 0x01` and 32 key bytes always
/// take 47 digits.
const ED25519_BASE58_DIGITS: usize = 47;

/// The Bitcoin base58 alphabet's value of each byte, or `0xff`.
const BASE58_VALUES: [u8; 256] = {
    let alphabet = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut values = [0xff; 256];
    let mut digit = 0;
    while digit < alphabet.len() {
        values[alphabet[digit] as usize] = digit as u8;
        digit += 1;
    }
    values
};

/// The key in the base58 text of an ed25519 did:key, decoded in 64-bit limbs; `None` for
/// any text that is not exactly that (then the general decoder decides). Reading a token
/// parses three DIDs, and the general decoder's digit-by-digit big number was the largest
/// single cost of decoding one.
fn decode_ed25519_base58(digits: &str) -> Option<[u8; 32]> {
    let digits = digits.as_bytes();
    // A leading '1' stands for a zero byte, which the multicodec prefix never starts with.
    if digits.len() != ED25519_BASE58_DIGITS || digits[0] == b'1' {
        return None;
    }
    // 47 base58 digits stay below 58^47 < 2^276: five limbs, least significant first.
    let mut limbs = [0u64; 5];
    for group in digits.chunks(8) {
        let mut value = 0u64;
        let mut scale = 1u64;
        for &digit in group {
            let digit = BASE58_VALUES[usize::from(digit)];
            if digit == 0xff {
                return None;
            }
            value = value * 58 + u64::from(digit);
            scale *= 58;
        }
        let mut carry = u128::from(value);
        for limb in &mut limbs {
            let product = u128::from(*limb) * u128::from(scale) + carry;
            *limb = product as u64;
            carry = product >> 64;
        }
        debug_assert_eq!(carry, 0, "47 digits fit five limbs");
    }
    let mut bytes = [0u8; 40];
    for (chunk, limb) in bytes.chunks_exact_mut(8).zip(limbs.iter().rev()) {
        chunk.copy_from_slice(&limb.to_be_bytes());
    }
    // The number must be exactly the 34 bytes `0xed 0x01 ‖ key`.
    let (zeros, rest) = bytes.split_at(6);
    let key = rest.strip_prefix(&ED25519_PUB_MULTICODEC)?;
    if zeros.iter().any(|&byte| byte != 0) {
        return None;
    }
    key.try_into().ok()
}

impl fmt::Display for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_PUB_MULTICODEC);
        bytes.extend_from_slice(&self.0);
        write!(
            f,
            "{DID_KEY_PREFIX}{}",
            multibase::encode(multibase::Base::Base58Btc, bytes)
        )
    }
}

impl fmt::Debug for Did {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Did({self})")
    }
}

impl FromStr for Did {
    type Err = DidError;

    fn from_str(text: &str) -> Result<Self, DidError> {
        let bytes = decode_key_bytes(text)?;
        PublicKey::from_bytes(&bytes)?;
        Ok(Self(bytes))
    }
}

impl Serialize for Did {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Did {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(prefix: &[u8], key_len: usize) -> String {
        let mut bytes = prefix.to_vec();
        bytes.extend(std::iter::repeat_n(1u8, key_len));
        format!(
            "did:key:{}",
            multibase::encode(multibase::Base::Base58Btc, bytes)
        )
    }

    #[test]
    fn rejects_malformed_dids_with_typed_errors() {
        let good = crate::SecretKey::from_seed([5; 32]).did().to_string();
        assert!(good.starts_with("did:key:z6Mk"));
        assert_eq!(good.parse::<Did>().unwrap().to_string(), good);

        let base32 = good.replacen("did:key:z", "did:key:b", 1);
        assert_eq!(
            base32.parse::<Did>(),
            Err(DidError::WrongMultibase(Some('b')))
        );
        assert_eq!(
            "did:web:example.com".parse::<Did>(),
            Err(DidError::NotDidKey)
        );
        assert_eq!(
            "did:key:".parse::<Did>(),
            Err(DidError::WrongMultibase(None))
        );
        assert_eq!("did:key:z0OIl".parse::<Did>(), Err(DidError::BadBase58));
        assert_eq!(
            encode(&[0xe7, 0x01], 33).parse::<Did>(),
            Err(DidError::WrongMulticodec)
        );
        assert_eq!(
            encode(&ED25519_PUB_MULTICODEC, 31).parse::<Did>(),
            Err(DidError::BadKey(KeyError::WrongLength(31)))
        );
        assert_eq!(
            encode(&ED25519_PUB_MULTICODEC, 33).parse::<Did>(),
            Err(DidError::BadKey(KeyError::WrongLength(33)))
        );
        let long = format!("did:key:z{}", "6".repeat(300));
        assert_eq!(long.parse::<Did>(), Err(DidError::TooLong(long.len())));
    }

    #[test]
    fn the_fast_base58_path_agrees_with_the_general_decoder() {
        let general = |digits: &str| -> Option<[u8; 32]> {
            let bytes = multibase::Base::Base58Btc.decode(digits).ok()?;
            bytes.strip_prefix(&ED25519_PUB_MULTICODEC)?.try_into().ok()
        };
        let mut seed = [0u8; 32];
        for round in 0..2000u32 {
            seed[..4].copy_from_slice(&round.to_le_bytes());
            let did = crate::SecretKey::from_seed(seed).did().to_string();
            let digits = &did["did:key:z".len()..];
            assert_eq!(decode_ed25519_base58(digits), general(digits), "{did}");
            assert!(decode_ed25519_base58(digits).is_some());
            // Every one-digit change either decodes identically on both paths or is left
            // to the general decoder.
            let position = round as usize % digits.len();
            for replacement in ["1", "z", "0", "2", "L"] {
                let mut changed = digits.to_owned();
                changed.replace_range(position..=position, replacement);
                if let Some(key) = decode_ed25519_base58(&changed) {
                    assert_eq!(Some(key), general(&changed), "{changed}");
                }
            }
        }
        // The largest and smallest 47-digit numbers fall outside `0xed 0x01 ‖ key`.
        for digit in ["z", "2", "1"] {
            assert_eq!(decode_ed25519_base58(&digit.repeat(47)), None);
        }
        // 2^272 + 0xed01·2^256: `0xed 0x01` and 32 zero bytes, but behind a leading 1.
        let too_large = "C9QuSoSyY8AVbtw22ij4UEGVahHskuNbpoVJhZEJ8ZWCYXH";
        assert_eq!(decode_ed25519_base58(too_large), None);
        assert_eq!(general(too_large), None);
    }

    #[test]
    fn did_and_peer_id_convert_both_ways() {
        let did = crate::SecretKey::from_seed([6; 32]).did();
        let peer = did.to_peer_id().unwrap();
        assert_eq!(Did::from_peer_id(&peer).unwrap(), did);
    }
}
