//! Revocation: who may revoke a delegation, and what a revoked delegation stops.

use std::collections::BTreeMap;

use membrane_protocol::{
    SecretKey,
    ucan::{
        Command, Delegation, DelegationBuilder, Invocation, InvocationBuilder, Ipld, Revocation,
        RevocationError, RevocationSet, ValidationError, Validator, VerifiedSignatures,
    },
};

const NOW: u64 = 1_800_000_000;

fn delegate(
    from: &SecretKey,
    to: &SecretKey,
    subject: &SecretKey,
    cmd: &str,
    nonce: u8,
) -> Delegation {
    DelegationBuilder::new(from.did(), to.did(), cmd.parse::<Command>().unwrap())
        .subject(subject.did())
        .nonce(vec![nonce; 12])
        .sign(from)
        .unwrap()
}

fn read_invocation(by: &SecretKey, subject: &SecretKey, proofs: &[Delegation]) -> Invocation {
    let mut args = BTreeMap::new();
    args.insert("doc".to_owned(), Ipld::String("automerge:x".into()));
    InvocationBuilder::new(
        by.did(),
        subject.did(),
        "/membrane/doc/read".parse().unwrap(),
    )
    .args(args)
    .proofs(proofs.iter().map(Delegation::cid).collect())
    .nonce(vec![9; 12])
    .sign(by)
    .unwrap()
}

struct Story {
    sarah: SecretKey,
    laptop: SecretKey,
    pi: SecretKey,
    friend: SecretKey,
    stranger: SecretKey,
    to_laptop: Delegation,
    to_pi: Delegation,
    to_friend: Delegation,
}

fn story() -> Story {
    let sarah = SecretKey::from_seed([1; 32]);
    let laptop = SecretKey::from_seed([2; 32]);
    let pi = SecretKey::from_seed([3; 32]);
    let friend = SecretKey::from_seed([4; 32]);
    let stranger = SecretKey::from_seed([5; 32]);
    let to_laptop = delegate(&sarah, &laptop, &sarah, "/", 1);
    let to_pi = delegate(&sarah, &pi, &sarah, "/", 2);
    let to_friend = delegate(&laptop, &friend, &sarah, "/membrane/doc/read", 3);
    Story {
        sarah,
        laptop,
        pi,
        friend,
        stranger,
        to_laptop,
        to_pi,
        to_friend,
    }
}

#[test]
fn an_issuer_in_the_chain_revokes_and_the_grant_stops_working() {
    let s = story();
    let chain = vec![s.to_laptop.clone(), s.to_friend.clone()];
    let invocation = read_invocation(&s.friend, &s.sarah, &chain);
    assert!(
        Validator::new(NOW)
            .validate_invocation(&invocation, &chain)
            .is_ok()
    );

    // The laptop issued the friend's grant: it may revoke it on its own authority.
    let revocation =
        Revocation::sign(&s.laptop, s.laptop.did(), s.to_friend.cid(), vec![], NOW).unwrap();
    revocation
        .verify(&Validator::new(NOW), &chain, &chain)
        .unwrap();

    let mut revoked = RevocationSet::new();
    assert!(revoked.insert(revocation.revoked()));
    let error = Validator::new(NOW)
        .with_revocations(&revoked)
        .validate_invocation(&invocation, &chain)
        .unwrap_err();
    assert_eq!(error, ValidationError::Revoked(s.to_friend.cid()));
    assert_eq!(error.name(), "Revoked");
}

#[test]
fn another_device_revokes_with_delegated_authority_from_the_root() {
    let s = story();
    let friend_chain = vec![s.to_laptop.clone(), s.to_friend.clone()];
    // The Pi issued nothing in the friend's chain, but it holds `/` for Sarah, which covers
    // `/ucan/revoke`, and Sarah (the root) issued the chain's first link.
    let revocation = Revocation::sign(
        &s.pi,
        s.sarah.did(),
        s.to_friend.cid(),
        vec![s.to_pi.cid()],
        NOW,
    )
    .unwrap();
    let proofs = vec![s.to_pi.clone()];
    revocation
        .verify(&Validator::new(NOW), &proofs, &friend_chain)
        .unwrap();

    // Decoded from its bytes, it says the same.
    let decoded = Revocation::from_invocation(
        Invocation::decode(revocation.invocation().as_bytes()).unwrap(),
    )
    .unwrap();
    assert_eq!(decoded.revoked(), s.to_friend.cid());
}

#[test]
fn outsiders_cannot_revoke() {
    let s = story();
    let chain = vec![s.to_laptop.clone(), s.to_friend.clone()];
    // A stranger acting on its own authority issued nothing in the chain.
    let own = Revocation::sign(
        &s.stranger,
        s.stranger.did(),
        s.to_friend.cid(),
        vec![],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        own.verify(&Validator::new(NOW), &chain, &chain),
        Err(RevocationError::NotInChain { .. })
    ));
    // A stranger claiming to act for Sarah without proof.
    let claimed =
        Revocation::sign(&s.stranger, s.sarah.did(), s.to_friend.cid(), vec![], NOW).unwrap();
    assert!(matches!(
        claimed.verify(&Validator::new(NOW), &chain, &chain),
        Err(RevocationError::Unauthorized(
            ValidationError::InvalidClaim(_)
        ))
    ));
    // The friend, holding only read, cannot revoke its own grant's parent via Sarah.
    let friend = Revocation::sign(
        &s.friend,
        s.sarah.did(),
        s.to_laptop.cid(),
        vec![s.to_laptop.cid(), s.to_friend.cid()],
        NOW,
    )
    .unwrap();
    assert!(matches!(
        friend.verify(&Validator::new(NOW), &chain, &chain[..1]),
        Err(RevocationError::Unauthorized(
            ValidationError::InvalidClaim(_)
        ))
    ));
    // A revocation presented with a chain that does not end at the revoked delegation.
    let laptop =
        Revocation::sign(&s.laptop, s.laptop.did(), s.to_friend.cid(), vec![], NOW).unwrap();
    assert_eq!(
        laptop.verify(&Validator::new(NOW), &chain, &chain[..1]),
        Err(RevocationError::WrongChain)
    );
    // The friend makes up a chain: a delegation of its own, then Sarah's real delegation
    // to her Pi (which the friend has seen). It issued something "in the chain", but the
    // chain is not one: the friend's delegation is not to Sarah.
    let made_up = delegate(&s.friend, &s.stranger, &s.sarah, "/", 7);
    let forged_chain = vec![made_up, s.to_pi.clone()];
    let forged = Revocation::sign(&s.friend, s.friend.did(), s.to_pi.cid(), vec![], NOW).unwrap();
    assert!(matches!(
        forged.verify(&Validator::new(NOW), &chain, &forged_chain),
        Err(RevocationError::BrokenChain(_))
    ));
    // Nor may a chain carry a delegation whose signature does not hold.
    let mut tampered = s.to_pi.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last - 3] ^= 1;
    if let Ok(bad) = Delegation::decode(&tampered) {
        let sarah_acts = Revocation::sign(&s.sarah, s.sarah.did(), bad.cid(), vec![], NOW).unwrap();
        assert!(
            sarah_acts
                .verify(&Validator::new(NOW), &chain, &[bad])
                .is_err()
        );
    }
    // An ordinary invocation is not a revocation.
    let not_one = read_invocation(&s.friend, &s.sarah, &chain);
    assert!(matches!(
        Revocation::from_invocation(not_one),
        Err(RevocationError::NotARevocation(_))
    ));
}

#[test]
fn revocation_sets_merge_by_union_in_any_order() {
    let s = story();
    let cids = [s.to_laptop.cid(), s.to_pi.cid(), s.to_friend.cid()];
    let (mut a, mut b) = (RevocationSet::new(), RevocationSet::new());
    a.insert(cids[0]);
    a.insert(cids[1]);
    b.insert(cids[2]);
    b.insert(cids[1]);
    let mut ab = a.clone();
    ab.merge(&b);
    let mut ba = b.clone();
    ba.merge(&a);
    assert_eq!(ab, ba);
    assert_eq!(ab.len(), 3);
    assert!(cids.iter().all(|cid| ab.contains(cid)));
}

#[test]
fn a_chain_whose_signatures_verified_before_is_still_refused_once_revoked_or_expired() {
    let s = story();
    let chain = vec![s.to_laptop.clone(), s.to_friend.clone()];
    let cache = VerifiedSignatures::default();
    let cached = Validator::new(NOW).with_verified_signatures(&cache);
    cached.validate_delegation_chain(&chain).unwrap();
    cached.validate_delegation_chain(&chain).unwrap();

    // The signatures are remembered; revocation and time are judged every time.
    let revocation =
        Revocation::sign(&s.laptop, s.sarah.did(), s.to_friend.cid(), vec![], NOW).unwrap();
    let mut revoked = RevocationSet::new();
    revoked.insert(revocation.revoked());
    assert!(matches!(
        cached
            .with_revocations(&revoked)
            .validate_delegation_chain(&chain),
        Err(ValidationError::Revoked(_))
    ));
    let expiring = DelegationBuilder::new(
        s.laptop.did(),
        s.friend.did(),
        "/membrane/doc/read".parse::<Command>().unwrap(),
    )
    .subject(s.sarah.did())
    .nonce(vec![7; 12])
    .expiration(Some(NOW + 10))
    .sign(&s.laptop)
    .unwrap();
    let chain = vec![s.to_laptop.clone(), expiring];
    cached.validate_delegation_chain(&chain).unwrap();
    assert!(matches!(
        Validator::new(NOW + 11)
            .with_verified_signatures(&cache)
            .validate_delegation_chain(&chain),
        Err(ValidationError::Expired { .. })
    ));

    // A delegation whose signature fails is never remembered as good.
    let mut forged = s.to_friend.as_bytes().to_vec();
    let signature = s.to_friend.signature().to_vec();
    let at = forged
        .windows(signature.len())
        .position(|w| w == signature.as_slice())
        .expect("the envelope holds its signature");
    forged[at] ^= 1;
    let forged = Delegation::decode(&forged).expect("only the signature changed");
    for _ in 0..2 {
        assert!(matches!(
            cached.validate_delegation_chain(&[s.to_laptop.clone(), forged.clone()]),
            Err(ValidationError::InvalidSignature(_))
        ));
    }
}
