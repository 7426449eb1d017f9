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

/// One signature of a batch: who signed, what, and the signature.
pub(crate) type SignedMessage<'a> = (&'a PublicKey, &'a [u8], &'a Signature);

/// Verifies several signatures with one batch equation; `Ok` means each one verifies.
///
/// Batching only pays off when everything is valid, so the verdict is all or nothing: on
/// `Err`, verify the signatures one by one with [`PublicKey::verify`] to learn which is bad.
/// `Err` is also returned, without any curve arithmetic, when a key or signature is one that
/// [`PublicKey::verify`] (`verify_strict`) refuses on sight: a weak (small-order) key, a
/// non-canonical `s`, or an `R` that is not canonically encoded or is of small order.
///
/// # Randomness
///
/// A batch equation needs a random weight per signature, or a forger could pick
/// signatures whose errors cancel out. ed25519-dalek 3.0's `verify_batch` takes no RNG: it
/// derives the 128-bit weights from a STROBE-based Merlin transcript of every input
/// (`H(R‖A‖M)` and `s` of each signature), finalized with an all-zero "RNG". So the
/// weights are deterministic (this crate stays pure; nothing is read from the OS) and still
/// unpredictable to whoever made the signatures: changing any input changes every weight,
/// so a batch holding a bad signature passes only if a 128-bit hash output lands on one
/// value, about 2^-128 per attempt, which no amount of offline grinding can reach. We
/// rely on that derivation rather than passing in randomness: it is what dalek tests and
/// documents, and it keeps validation a pure function of the chain.
///
/// # What differs from `verify_strict`
///
/// The batch equation is cofactorless like `verify_strict`, and the checks above give the
/// same verdict on small-order keys, small-order `R` and non-canonical encodings. What no
/// batch can check cheaply is a *mixed-order* `R` or key (a prime-order point plus a
/// torsion point): `verify_strict` refuses such a signature unless the torsion cancels
/// exactly, while the weighted sum cancels it with probability at least 1/8 (and, the
/// weights being derived from the whole batch, such a signature may pass in one chain and
/// fail in another). Making such a signature needs the signer's secret key (the challenge
/// hash binds the bytes of `R` and of the key, so nobody else can move a valid signature
/// into this class, and a token's CID cannot be changed this way by a third party), and a
/// signer can always sign a fresh, valid token instead, so this grants no authority that
/// the signer could not grant anyway. Honest signers never produce such points.
pub(crate) fn verify_batch(signed: &[SignedMessage<'_>]) -> Result<(), BadSignature> {
    let mut messages = Vec::with_capacity(signed.len());
    let mut signatures = Vec::with_capacity(signed.len());
    let mut keys = Vec::with_capacity(signed.len());
    for &(key, message, signature) in signed {
        let (r, s) = signature.0.split_at(32);
        if key.0.is_weak() || !scalar_is_canonical(s) || !r_is_acceptable(r) {
            return Err(BadSignature);
        }
        messages.push(message);
        signatures.push(ed25519_dalek::Signature::from_bytes(&signature.0));
        keys.push(key.0);
    }
    ed25519_dalek::verify_batch(&messages, &signatures, &keys).map_err(|_| BadSignature)
}

/// ℓ, the order of the Ed25519 base point, little-endian.
const GROUP_ORDER: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// Whether the 32 little-endian bytes `s` are below ℓ (the only form `verify_strict` takes).
fn scalar_is_canonical(s: &[u8]) -> bool {
    // Compare from the most significant byte down.
    for (byte, bound) in s.iter().rev().zip(GROUP_ORDER.iter().rev()) {
        if byte != bound {
            return byte < bound;
        }
    }
    false
}

/// The `y` coordinates (little-endian, sign bit clear) of the eight points of small order:
/// 1 (the identity), −1 (order 2), 0 (order 4) and ±y₈ (order 8). Every point with one of
/// these `y` has small order, whatever the sign bit of `x`.
const SMALL_ORDER_Y: [[u8; 32]; 5] = [
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [0; 32],
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
];

/// Whether a signature's `R` can be batched: its `y` is below p = 2^255 − 19 (`verify_strict`
/// compares `R` byte for byte with a canonical encoding, so any other form fails) and it
/// is not a point of small order (which `verify_strict` refuses).
fn r_is_acceptable(r: &[u8]) -> bool {
    let mut y = [0u8; 32];
    y.copy_from_slice(r);
    y[31] &= 0x7f;
    // y ≥ p only when every byte but the lowest is at its maximum and the lowest is ≥ 0xed.
    let at_least_p = y[31] == 0x7f && y[1..31].iter().all(|&byte| byte == 0xff) && y[0] >= 0xed;
    !at_least_p && !SMALL_ORDER_Y.contains(&y)
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

    /// Three keys, each signing its own message.
    fn signed_set() -> Vec<(PublicKey, Vec<u8>, Signature)> {
        (1..=3u8)
            .map(|n| {
                let key = SecretKey::from_seed([n; 32]);
                let message = vec![n; 100 * usize::from(n)];
                let signature = key.sign(&message);
                (key.public(), message, signature)
            })
            .collect()
    }

    fn batch_of(set: &[(PublicKey, Vec<u8>, Signature)]) -> Result<(), BadSignature> {
        let batch: Vec<SignedMessage<'_>> = set
            .iter()
            .map(|(key, message, signature)| (key, message.as_slice(), signature))
            .collect();
        verify_batch(&batch)
    }

    #[test]
    fn a_batch_verifies_exactly_when_every_signature_does() {
        let set = signed_set();
        assert_eq!(batch_of(&set), Ok(()));
        for bad in 0..set.len() {
            let mut set = signed_set();
            // A well-formed signature by the right key, over other bytes.
            set[bad].2 = SecretKey::from_seed([bad as u8 + 1; 32]).sign(b"something else");
            for (index, (key, message, signature)) in set.iter().enumerate() {
                assert_eq!(key.verify(message, signature).is_ok(), index != bad);
            }
            assert_eq!(batch_of(&set), Err(BadSignature), "bad signature at {bad}");
        }
    }

    #[test]
    fn a_weak_key_is_refused_before_batching() {
        // The identity point as key, `R` = identity and `s` = 0 satisfy the cofactorless
        // equation [s]B = R + [k]A for every message.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let weak = PublicKey::from_bytes(&identity).expect("the identity is a curve point");
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&identity);
        let forged = Signature(forged);
        let message = b"anything at all";
        assert_eq!(weak.verify(message, &forged), Err(BadSignature));
        // Without the check, dalek's batch equation accepts the forgery.
        assert!(
            ed25519_dalek::verify_batch(
                &[message.as_slice()],
                &[ed25519_dalek::Signature::from_bytes(&forged.0)],
                &[weak.0],
            )
            .is_ok()
        );
        let mut set = signed_set();
        set[1] = (weak, message.to_vec(), forged);
        assert_eq!(batch_of(&set), Err(BadSignature));
    }

    #[test]
    fn a_non_canonical_s_is_refused() {
        let mut set = signed_set();
        // s + ℓ is the same scalar mod ℓ, written differently (s < ℓ < 2^253, so no
        // carry leaves the 32 bytes).
        let mut carry = 0u16;
        for (byte, add) in set[2].2.0[32..].iter_mut().zip(GROUP_ORDER) {
            let sum = u16::from(*byte) + u16::from(add) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
        assert_eq!(carry, 0);
        let (key, message, signature) = &set[2];
        assert_eq!(key.verify(message, signature), Err(BadSignature));
        assert!(!scalar_is_canonical(&signature.0[32..]));
        assert_eq!(batch_of(&set), Err(BadSignature));
    }

    #[test]
    fn the_group_order_constant_is_l() {
        // ℓ = 2^252 + 27742317777372353535851937790883648493.
        let low = 27_742_317_777_372_353_535_851_937_790_883_648_493u128.to_le_bytes();
        assert_eq!(GROUP_ORDER[..16], low);
        assert!(GROUP_ORDER[16..31].iter().all(|&byte| byte == 0));
        assert_eq!(GROUP_ORDER[31], 0x10);
        let mut below = GROUP_ORDER;
        below[0] -= 1;
        assert!(scalar_is_canonical(&below));
        assert!(!scalar_is_canonical(&GROUP_ORDER));
        assert!(scalar_is_canonical(&[0; 32]));
        assert!(!scalar_is_canonical(&[0xff; 32]));
    }

    #[test]
    fn the_small_order_list_names_all_eight_small_order_points() {
        let mut canonical = std::collections::HashSet::new();
        for y in SMALL_ORDER_Y {
            assert!(!r_is_acceptable(&y));
            for sign in [0u8, 0x80] {
                let mut encoding = y;
                encoding[31] |= sign;
                assert!(!r_is_acceptable(&encoding));
                // Both signs of x exist except where x = 0 (y = ±1).
                if let Ok(point) = VerifyingKey::from_bytes(&encoding) {
                    assert!(point.is_weak(), "{encoding:02x?}");
                    if sign == 0 || !(y == SMALL_ORDER_Y[0] || y == SMALL_ORDER_Y[1]) {
                        canonical.insert(encoding);
                    }
                }
            }
        }
        // The curve has exactly eight points of small order, so these are all of them.
        assert_eq!(canonical.len(), 8);
    }

    #[test]
    fn r_must_be_canonically_encoded() {
        let mut p = [0xff; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        for low in [0xed, 0xee, 0xff] {
            let mut y = p;
            y[0] = low;
            assert!(!r_is_acceptable(&y), "y = p + {}", low - 0xed);
        }
        let mut below_p = p;
        below_p[0] = 0xea;
        assert!(r_is_acceptable(&below_p));
        for (_, _, signature) in signed_set() {
            assert!(r_is_acceptable(&signature.0[..32]));
        }
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
