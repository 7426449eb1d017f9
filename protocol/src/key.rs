//! Ed25519 keys: one device key is both a libp2p identity and a `did:key`.
//!
//! Secret keys never print: their `Debug` shows only the public half.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;

use crate::did::Did;

/// Multicodec `ed25519-pub` (0xed) as an unsigned varint.
pub(crate) const ED25519_PUB_MULTICODEC: [u8; 2] = [0xed, 0x01];
/// Multicodec `ed25519-priv` (0x1300) as an unsigned varint; the UCAN fixtures store
/// principals' private keys with this prefix.
const ED25519_PRIV_MULTICODEC: [u8; 2] = [0x80, 0x26];
/// Multihash code of the identity hash, used by PeerIds of small public keys.
const IDENTITY_MULTIHASH: u64 = 0x00;

/// Why bytes or text did not make a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum KeyError {
    /// An ed25519 public key is exactly 32 bytes.
    #[error("an ed25519 key is 32 bytes, got {0}")]
    WrongLength(usize),
    /// The 32 bytes are not a valid compressed Edwards point.
    #[error("the bytes are not a valid ed25519 public key")]
    NotOnCurve,
    /// The PeerId does not inline an ed25519 public key (for example an RSA or hashed PeerId).
    #[error("the PeerId does not carry an inline ed25519 public key")]
    NotEd25519PeerId,
    /// A secret key file or string could not be decoded.
    #[error("malformed secret key: {0}")]
    MalformedSecret(&'static str),
}

/// A signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
#[error("the ed25519 signature does not verify")]
pub struct BadSignature;

/// An ed25519 public key: who a device or a person is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes; fails on wrong length or a point off the curve.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: &[u8; 32] = bytes
            .try_into()
            .map_err(|_| KeyError::WrongLength(bytes.len()))?;
        VerifyingKey::from_bytes(array)
            .map(Self)
            .map_err(|_| KeyError::NotOnCurve)
    }

    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// This key as a `did:key`.
    pub fn to_did(&self) -> Did {
        Did::from(*self)
    }

    /// The libp2p PeerId of a node using this key as its identity.
    pub fn to_peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }

    /// This key as a libp2p public key.
    pub fn to_libp2p(&self) -> libp2p_identity::PublicKey {
        // The bytes came from a valid VerifyingKey, so libp2p accepts them.
        let key = libp2p_identity::ed25519::PublicKey::try_from_bytes(self.as_bytes())
            .expect("a valid ed25519 key is a valid libp2p ed25519 key");
        libp2p_identity::PublicKey::from(key)
    }

    /// Recovers the public key inlined in an ed25519 PeerId.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        let multihash = peer.as_ref();
        if multihash.code() != IDENTITY_MULTIHASH {
            return Err(KeyError::NotEd25519PeerId);
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| KeyError::NotEd25519PeerId)?
            .try_into_ed25519()
            .map_err(|_| KeyError::NotEd25519PeerId)?;
        Self::from_bytes(&key.to_bytes())
    }

    /// Verifies with the strict rules (no small-order keys, canonical `R` and `s`).
    pub fn verify(&self, message: &[u8], signature: &Signature) -> Result<(), BadSignature> {
        let signature = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| BadSignature)
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_did())
    }
}

/// An ed25519 secret key. `Debug` shows only the public half; the seed leaves this type only
/// through [`SecretKey::expose_seed`] and [`SecretKey::to_key_file_text`].
#[derive(Clone)]
pub struct SecretKey(SigningKey);

impl SecretKey {
    /// Builds a key from a 32-byte seed. Callers bring the randomness (this crate has none).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&seed))
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The `did:key` of the public half.
    pub fn did(&self) -> Did {
        self.public().to_did()
    }

    /// Signs a message.
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }

    /// The 32-byte seed. Named loudly so every use stands out in review.
    pub fn expose_seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The same key as a libp2p identity keypair, so the node's PeerId is this key.
    pub fn to_libp2p_keypair(&self) -> libp2p_identity::Keypair {
        let mut seed = self.0.to_bytes();
        libp2p_identity::Keypair::ed25519_from_bytes(&mut seed)
            .expect("32 bytes are always a valid ed25519 secret")
    }

    /// Text form for key files: multibase base58btc of `varint(0x1300) ‖ seed`, the same
    /// multicodec layout the UCAN fixtures use for private keys.
    pub fn to_key_file_text(&self) -> String {
        let mut bytes = Vec::with_capacity(34);
        bytes.extend_from_slice(&ED25519_PRIV_MULTICODEC);
        bytes.extend_from_slice(&self.0.to_bytes());
        multibase::encode(multibase::Base::Base58Btc, bytes)
    }

    /// Parses a key file's text: multibase (any base) or bare base64 of
    /// `varint(0x1300) ‖ seed`, as written by [`SecretKey::to_key_file_text`] or found in
    /// the UCAN fixtures. Surrounding whitespace is ignored.
    pub fn from_key_file_text(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = multibase::decode(text)
            .ok()
            .map(|(_, bytes)| bytes)
            .filter(|bytes| bytes.starts_with(&ED25519_PRIV_MULTICODEC))
            .or_else(|| crate::ucan::decode_base64_loose(text).ok())
            .ok_or(KeyError::MalformedSecret("neither multibase nor base64"))?;
        let seed =
            bytes
                .strip_prefix(&ED25519_PRIV_MULTICODEC)
                .ok_or(KeyError::MalformedSecret(
                    "missing the ed25519-priv multicodec",
                ))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|_| KeyError::MalformedSecret("the seed is not 32 bytes"))?;
        Ok(Self::from_seed(seed))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(public: {}, secret: <redacted>)", self.did())
    }
}

/// A 64-byte ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature(pub(crate) [u8; 64]);

impl Signature {
    /// Wraps 64 bytes; any other length is refused.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        bytes
            .try_into()
            .map(Self)
            .map_err(|_| KeyError::WrongLength(bytes.len()))
    }

    /// The raw bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_key_debug_hides_the_seed() {
        let key = SecretKey::from_seed([0x42; 32]);
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(!shown.contains("4242"));
        assert!(!shown.contains(&key.to_key_file_text()[1..]));
    }

    #[test]
    fn peer_id_round_trips_through_the_public_key() {
        let key = SecretKey::from_seed([9; 32]);
        let peer = key.public().to_peer_id();
        assert_eq!(peer, key.to_libp2p_keypair().public().to_peer_id());
        assert_eq!(PublicKey::from_peer_id(&peer), Ok(key.public()));
    }

    #[test]
    fn key_file_text_round_trips() {
        let key = SecretKey::from_seed([3; 32]);
        let text = key.to_key_file_text();
        let back = SecretKey::from_key_file_text(&format!("  {text}\n")).unwrap();
        assert_eq!(back.expose_seed(), key.expose_seed());
        assert!(SecretKey::from_key_file_text("zzzz").is_err());
        assert!(SecretKey::from_key_file_text("").is_err());
    }

    #[test]
    fn a_hashed_peer_id_is_not_an_ed25519_key() {
        let digest = cid::multihash::Multihash::<64>::wrap(0x12, &[7; 32]).unwrap();
        let hashed = PeerId::from_multihash(digest).unwrap();
        assert_eq!(
            PublicKey::from_peer_id(&hashed),
            Err(KeyError::NotEd25519PeerId)
        );
    }
}
