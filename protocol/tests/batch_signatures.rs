//! The validator checks a chain's signatures as one batch; these tests pin down that the
//! outcome is still exactly that of checking them one by one, in walk order.
//!
//! - a bad signature at any position is named by CID, in delegation chains and under an
//!   invocation; of two bad ones, the first in walk order is named;
//! - a bad signature before a failing check is reported, one after it is not;
//! - a signature under a weak (small-order) key, which satisfies the batch equation for any
//!   message, is refused at every position.

use std::collections::BTreeMap;

use membrane_protocol::{
    PublicKey, SecretKey,
    ucan::{
        Cid, Command, Delegation, DelegationBuilder, Invocation, InvocationBuilder, Ipld, UnixTime,
        VARSIG_ED25519_DAG_CBOR, ValidationError, Validator, VerifiedSignatures,
    },
};

const NOW: UnixTime = 1_800_000_000;

fn key(n: u8) -> SecretKey {
    SecretKey::from_seed([n; 32])
}

fn command() -> Command {
    "/membrane/doc".parse().unwrap()
}

/// key(1) (the subject) → key(2) → key(3) → key(4), each delegation expiring at `exp[i]`.
fn chain(exp: [Option<UnixTime>; 3]) -> Vec<Delegation> {
    (0..3u8)
        .map(|index| {
            let (from, to) = (key(index + 1), key(index + 2));
            DelegationBuilder::new(from.did(), to.did(), command())
                .subject(key(1).did())
                .nonce(vec![index; 12])
                .expiration(exp[usize::from(index)])
                .sign(&from)
                .unwrap()
        })
        .collect()
}

fn valid_chain() -> Vec<Delegation> {
    chain([Some(NOW + 60); 3])
}

/// The envelope starts `0x82 0x58 0x40`: the 64 signature bytes follow.
const SIGNATURE: std::ops::Range<usize> = 3..67;

/// The same token with a well-formed signature by the right key over other bytes.
fn resigned(bytes: &[u8], signer: &SecretKey) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    bytes[SIGNATURE].copy_from_slice(&signer.sign(b"some other message").to_bytes());
    bytes
}

fn with_bad_signature(delegation: &Delegation, signer: &SecretKey) -> Delegation {
    assert_eq!(&delegation.as_bytes()[SIGNATURE], delegation.signature());
    let bad = Delegation::decode(&resigned(delegation.as_bytes(), signer)).unwrap();
    assert!(bad.verify_signature().is_err());
    bad
}

fn invoke(proofs: &[Delegation]) -> Invocation {
    InvocationBuilder::new(key(4).did(), key(1).did(), command())
        .proofs(proofs.iter().map(Delegation::cid).collect())
        .nonce(vec![9; 12])
        .expiration(Some(NOW + 60))
        .sign(&key(4))
        .unwrap()
}

fn validate(chain: &[Delegation]) -> Result<(), ValidationError> {
    Validator::new(NOW)
        .validate_delegation_chain(chain)
        .map(|_| ())
}

fn validate_invocation(
    invocation: &Invocation,
    proofs: &[Delegation],
) -> Result<(), ValidationError> {
    Validator::new(NOW)
        .validate_invocation(invocation, proofs)
        .map(|_| ())
}

#[test]
fn a_valid_chain_validates() {
    let chain = valid_chain();
    assert_eq!(validate(&chain), Ok(()));
    assert_eq!(validate_invocation(&invoke(&chain), &chain), Ok(()));
}

#[test]
fn a_bad_signature_at_each_position_is_named() {
    for bad in 0..3 {
        let mut chain = valid_chain();
        chain[bad] = with_bad_signature(&chain[bad], &key(bad as u8 + 1));
        let expected = Err(ValidationError::InvalidSignature(chain[bad].cid()));
        assert_eq!(
            validate(&chain),
            expected,
            "delegation chain, position {bad}"
        );
        assert_eq!(
            validate_invocation(&invoke(&chain), &chain),
            expected,
            "under an invocation, position {bad}"
        );
        // Also when the signatures of the other proofs are already known to be good.
        let cache = VerifiedSignatures::default();
        let cached = Validator::new(NOW).with_verified_signatures(&cache);
        cached
            .validate_delegation_chain(&valid_chain())
            .expect("the valid chain validates");
        assert_eq!(
            cached.validate_delegation_chain(&chain).map(|_| ()),
            expected
        );
    }
}

#[test]
fn a_bad_invocation_signature_is_named() {
    let chain = valid_chain();
    let invocation = invoke(&chain);
    let bad = Invocation::decode(&resigned(invocation.as_bytes(), &key(4))).unwrap();
    assert_eq!(
        validate_invocation(&bad, &chain),
        Err(ValidationError::InvalidSignature(bad.cid()))
    );
    // It comes before a bad proof, being first in walk order.
    let mut bad_proofs = chain.clone();
    bad_proofs[0] = with_bad_signature(&chain[0], &key(1));
    let bad = Invocation::decode(&resigned(invoke(&bad_proofs).as_bytes(), &key(4))).unwrap();
    assert_eq!(
        validate_invocation(&bad, &bad_proofs),
        Err(ValidationError::InvalidSignature(bad.cid()))
    );
}

#[test]
fn of_two_bad_signatures_the_first_is_named() {
    let mut chain = valid_chain();
    chain[1] = with_bad_signature(&chain[1], &key(2));
    chain[2] = with_bad_signature(&chain[2], &key(3));
    assert_eq!(
        validate(&chain),
        Err(ValidationError::InvalidSignature(chain[1].cid()))
    );
}

#[test]
fn a_bad_signature_before_a_failing_check_wins_and_one_after_it_does_not() {
    let expired = Some(NOW - 1);
    let live = Some(NOW + 60);

    // Bad signature at the root, expiry at the leaf: the signature comes first.
    let mut chain = chain([live, live, expired]);
    chain[0] = with_bad_signature(&chain[0], &key(1));
    assert_eq!(
        validate(&chain),
        Err(ValidationError::InvalidSignature(chain[0].cid()))
    );

    // Expiry at the root, bad signature at the leaf: the expiry comes first.
    let mut chain = chain_with_root_expired(expired, live);
    chain[2] = with_bad_signature(&chain[2], &key(3));
    assert!(matches!(
        validate(&chain),
        Err(ValidationError::Expired { cid, .. }) if cid == chain[0].cid()
    ));

    // A broken link at position 1 (issued by key(5), not by key(2), the root's audience),
    // bad signature at 2: the link is reported.
    let mut chain = valid_chain();
    chain[1] = DelegationBuilder::new(key(5).did(), key(3).did(), command())
        .subject(key(1).did())
        .nonce(vec![1; 12])
        .sign(&key(5))
        .unwrap();
    chain[2] = with_bad_signature(&chain[2], &key(3));
    assert!(matches!(
        validate(&chain),
        Err(ValidationError::InvalidAudience(_))
    ));

    // Under an invocation: an expired invocation is reported before a bad proof, and an
    // unavailable proof after a bad invocation signature.
    let mut bad_proofs = valid_chain();
    bad_proofs[1] = with_bad_signature(&bad_proofs[1], &key(2));
    let expired_invocation = InvocationBuilder::new(key(4).did(), key(1).did(), command())
        .proofs(bad_proofs.iter().map(Delegation::cid).collect())
        .nonce(vec![9; 12])
        .expiration(expired)
        .sign(&key(4))
        .unwrap();
    assert!(matches!(
        validate_invocation(&expired_invocation, &bad_proofs),
        Err(ValidationError::Expired { cid, .. }) if cid == expired_invocation.cid()
    ));
    let chain = valid_chain();
    let bad = Invocation::decode(&resigned(invoke(&chain).as_bytes(), &key(4))).unwrap();
    assert_eq!(
        validate_invocation(&bad, &chain[..2]),
        Err(ValidationError::InvalidSignature(bad.cid()))
    );
    assert_eq!(
        validate_invocation(&invoke(&chain), &chain[..2]),
        Err(ValidationError::UnavailableProof(chain[2].cid()))
    );
}

fn chain_with_root_expired(root: Option<UnixTime>, rest: Option<UnixTime>) -> Vec<Delegation> {
    chain([root, rest, rest])
}

/// The DID of the identity point: a "key" for which `R` = identity, `s` = 0 satisfies the
/// cofactorless verification equation for every message.
fn weak_did() -> String {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    PublicKey::from_bytes(&identity)
        .unwrap()
        .to_did()
        .to_string()
}

/// A signature that the identity "key" accepts for every message: `R` = [a]B for a known
/// scalar `a` (the expanded secret of an ordinary key) and `s` = a mod ℓ, so that
/// [s]B = R = R + [k]·identity. `R` is an ordinary point and `s` is canonical, so of
/// `verify_strict`'s checks only the one refusing weak keys stops it.
fn weak_key_forgery() -> [u8; 64] {
    use sha2::{Digest as _, Sha512};
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let seed = [42u8; 32];
    let mut a = [0u8; 32];
    a.copy_from_slice(&Sha512::digest(seed)[..32]);
    a[0] &= 248;
    a[31] &= 127;
    a[31] |= 64;
    // a < 2^255 < 8ℓ: subtract ℓ until below it.
    let at_least_l = |a: &[u8; 32]| {
        a.iter()
            .rev()
            .zip(L.iter().rev())
            .find(|(x, y)| x != y)
            .is_none_or(|(x, y)| x > y)
    };
    while at_least_l(&a) {
        let mut borrow = 0i16;
        for (x, y) in a.iter_mut().zip(L) {
            let difference = i16::from(*x) - i16::from(y) - borrow;
            *x = difference.rem_euclid(256) as u8;
            borrow = i16::from(difference < 0);
        }
    }
    let mut signature = [0u8; 64];
    signature[..32].copy_from_slice(SecretKey::from_seed(seed).public().as_bytes());
    signature[32..].copy_from_slice(&a);
    signature
}

/// `template` re-issued by the weak key, with the forged signature. `subject` too is
/// replaced by the weak key when it names it.
fn forged(template: &Delegation, weak_is_subject: bool) -> Delegation {
    let Ipld::Map(mut payload) = template.payload_ipld() else {
        unreachable!("a payload is a map")
    };
    payload.insert("iss".into(), Ipld::String(weak_did()));
    if weak_is_subject {
        payload.insert("sub".into(), Ipld::String(weak_did()));
    }
    let mut signed = BTreeMap::new();
    signed.insert(
        "h".to_owned(),
        Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec()),
    );
    signed.insert("ucan/dlg@1.0.0".to_owned(), Ipld::Map(payload));
    let envelope = Ipld::List(vec![
        Ipld::Bytes(weak_key_forgery().to_vec()),
        Ipld::Map(signed),
    ]);
    let bytes = serde_ipld_dagcbor::to_vec(&envelope).unwrap();
    let forged = Delegation::decode(&bytes).unwrap();
    assert!(forged.verify_signature().is_err());
    forged
}

#[test]
fn a_weak_key_is_refused_at_every_position() {
    let weak: membrane_protocol::Did = {
        let mut identity = [0u8; 32];
        identity[0] = 1;
        PublicKey::from_bytes(&identity).unwrap().to_did()
    };
    let link = |from: u8, to: membrane_protocol::Did, subject: membrane_protocol::Did| {
        DelegationBuilder::new(key(from).did(), to, command())
            .subject(subject)
            .nonce(vec![from; 12])
            .sign(&key(from))
            .unwrap()
    };
    // Root: the weak key delegates its own resources to key(2), then key(2) → key(3).
    let root = forged(&link(1, key(2).did(), key(1).did()), true);
    let chain = vec![root, link(2, key(3).did(), weak)];
    assert_eq!(
        validate(&chain),
        Err(ValidationError::InvalidSignature(chain[0].cid()))
    );

    // Middle and leaf: key(1) → weak → key(3) → key(4), and key(1) → key(2) → weak → key(4).
    let subject = key(1).did();
    let middle = vec![
        link(1, weak, subject),
        forged(&link(2, key(3).did(), subject), false),
        link(3, key(4).did(), subject),
    ];
    let leaf = vec![
        link(1, key(2).did(), subject),
        link(2, weak, subject),
        forged(&link(3, key(4).did(), subject), false),
    ];
    for (chain, bad) in [(middle, 1), (leaf, 2)] {
        let expected = Err(ValidationError::InvalidSignature(chain[bad].cid()));
        assert_eq!(validate(&chain), expected);
        assert_eq!(validate_invocation(&invoke(&chain), &chain), expected);
        // Not remembered as verified either.
        let cache = VerifiedSignatures::default();
        let cached = Validator::new(NOW).with_verified_signatures(&cache);
        assert_eq!(
            cached.validate_delegation_chain(&chain).map(|_| ()),
            expected
        );
        assert_eq!(
            cached.validate_delegation_chain(&chain).map(|_| ()),
            expected
        );
    }
}

#[test]
fn cids_name_the_tokens_given() {
    // The errors above name tokens by CID; a re-signed token has a CID of its own.
    let chain = valid_chain();
    let bad = with_bad_signature(&chain[0], &key(1));
    let cids: Vec<Cid> = [&chain[0], &bad].iter().map(|d| d.cid()).collect();
    assert_ne!(cids[0], cids[1]);
}
