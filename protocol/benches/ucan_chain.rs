//! What checking a UCAN delegation chain costs, next to the Ed25519 work it cannot avoid.
//!
//! - `chain_verify/cold/{1,3,8}`: decode every token from its bytes, then validate the chain.
//! - `chain_verify/decoded/{1,3,8}`: validate already-decoded tokens.
//! - `raw_ed25519/{1,3,8}`: verify the same number of Ed25519 signatures over the very same
//!   signed bytes with [`PublicKey::verify`], keys already decoded: the floor any chain
//!   check has to pay.
//! - `raw_ed25519_key_from_bytes/{1,3,8}`: the same, decoding each 32-byte key first.
#![allow(missing_docs)]

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use membrane_protocol::{
    PublicKey, SecretKey, Signature,
    ucan::{Command, Delegation, DelegationBuilder, Policy, Validator},
};

const NOW: u64 = 1_800_000_000;
const DEPTHS: [usize; 3] = [1, 3, 8];

/// root → k1 → … → k`depth`, subject root; a small policy at the root only.
fn chain(depth: usize) -> Vec<Delegation> {
    let keys: Vec<SecretKey> = (0..=depth)
        .map(|index| SecretKey::from_seed([index as u8 + 1; 32]))
        .collect();
    let root = keys[0].did();
    let command: Command = "/membrane/doc".parse().expect("a valid command");
    keys.windows(2)
        .enumerate()
        .map(|(index, pair)| {
            let policy = if index == 0 {
                Policy::from_json(r#"[["==", ".doc", "x"]]"#).expect("a valid policy")
            } else {
                Policy::default()
            };
            DelegationBuilder::new(pair[0].did(), pair[1].did(), command.clone())
                .subject(root)
                .policy(policy)
                .nonce(vec![index as u8; 12])
                .expiration(Some(NOW + 3_600))
                .sign(&pair[0])
                .expect("signs")
        })
        .collect()
}

/// The exact bytes each delegation's signature covers, with its key and signature: the
/// envelope is `[bytes(64) signature, signed map]`, so the signed map starts after the
/// one-byte array header, the two-byte byte-string header and the 64 signature bytes.
fn raw_signatures(chain: &[Delegation]) -> Vec<(PublicKey, Vec<u8>, Signature)> {
    chain
        .iter()
        .map(|delegation| {
            let key = delegation
                .payload()
                .issuer
                .public_key()
                .expect("a valid key");
            let message = delegation.as_bytes()[1 + 2 + 64..].to_vec();
            let signature = Signature::from_slice(delegation.signature()).expect("64 bytes");
            key.verify(&message, &signature)
                .expect("the slice is exactly what the token signs");
            (key, message, signature)
        })
        .collect()
}

fn bench_chains(c: &mut Criterion) {
    let chains: Vec<(usize, Vec<Delegation>)> =
        DEPTHS.iter().map(|&depth| (depth, chain(depth))).collect();
    for (depth, chain) in &chains {
        let valid = Validator::new(NOW)
            .validate_delegation_chain(chain)
            .expect("the benchmark chain is valid");
        assert_eq!(valid.proofs().len(), *depth);
    }

    let mut group = c.benchmark_group("chain_verify");
    for (depth, chain) in &chains {
        let encoded: Vec<Vec<u8>> = chain.iter().map(|d| d.as_bytes().to_vec()).collect();
        group.bench_with_input(BenchmarkId::new("cold", depth), &encoded, |b, encoded| {
            b.iter(|| {
                let decoded: Vec<Delegation> = encoded
                    .iter()
                    .map(|bytes| Delegation::decode(black_box(bytes)).expect("decodes"))
                    .collect();
                Validator::new(NOW)
                    .validate_delegation_chain(black_box(&decoded))
                    .expect("valid")
            })
        });
        group.bench_with_input(BenchmarkId::new("decoded", depth), chain, |b, chain| {
            b.iter(|| {
                Validator::new(NOW)
                    .validate_delegation_chain(black_box(chain))
                    .expect("valid")
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("raw_ed25519");
    for (depth, chain) in &chains {
        let signatures = raw_signatures(chain);
        let sizes: Vec<usize> = signatures.iter().map(|(_, m, _)| m.len()).collect();
        eprintln!("raw_ed25519/{depth}: message sizes {sizes:?}");
        group.bench_with_input(
            BenchmarkId::from_parameter(depth),
            &signatures,
            |b, sigs| {
                b.iter(|| {
                    for (key, message, signature) in sigs {
                        key.verify(black_box(message), black_box(signature))
                            .expect("verifies");
                    }
                })
            },
        );
    }
    group.finish();

    // The same, but each key comes as its 32 bytes and is decoded first: what verifying a
    // signature costs when the key is not already in memory as a curve point.
    let mut group = c.benchmark_group("raw_ed25519_key_from_bytes");
    for (depth, chain) in &chains {
        let signatures: Vec<([u8; 32], Vec<u8>, Signature)> = raw_signatures(chain)
            .into_iter()
            .map(|(key, message, signature)| (*key.as_bytes(), message, signature))
            .collect();
        group.bench_with_input(
            BenchmarkId::from_parameter(depth),
            &signatures,
            |b, sigs| {
                b.iter(|| {
                    for (key, message, signature) in sigs {
                        PublicKey::from_bytes(black_box(key))
                            .expect("a valid key")
                            .verify(black_box(message), black_box(signature))
                            .expect("verifies");
                    }
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, bench_chains);
criterion_main!(benches);
