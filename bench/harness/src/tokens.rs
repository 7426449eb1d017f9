//! S7: what checking a depth-3 capability chain costs.
//!
//! - `ucan` cold: decode three delegations from their bytes and validate the chain (links,
//!   times, policy, and the three Ed25519 signatures, which the validator verifies as one
//!   batch after decoding the issuers' keys; one by one only when the batch fails). Warm:
//!   the same with a signature cache that has seen these delegations (the node does not use
//!   this cache yet; it validates a peer's chain when a session starts).
//! - `ed25519`: the floor: three signatures verified one by one, and as one batch, with the
//!   keys already decoded; and as one batch from the keys' 32 bytes, as RFC 8032 defines
//!   verification (decoding a key costs a square root, about a tenth of a verification,
//!   which the cold `ucan` case pays for each issuer).
//! - `biscuit`: a biscuit-auth 6 token with three blocks (authority and two attenuating
//!   checks), parsed, signature-checked and authorized.

use std::time::Instant;

use biscuit_auth::{Biscuit, KeyPair, macros::*};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _};
use membrane_protocol::{
    SecretKey, capability,
    ucan::{Command, Delegation, DelegationBuilder, Validator, VerifiedSignatures},
};
use serde_json::json;

use crate::report::emit;

const NOW: u64 = 1_900_000_000;

fn chain() -> anyhow::Result<Vec<Delegation>> {
    let keys: Vec<SecretKey> = (1..=4u8).map(|n| SecretKey::from_seed([n; 32])).collect();
    let root = &keys[0];
    let read = |from: &SecretKey, to: &SecretKey, nonce: u8| -> anyhow::Result<Delegation> {
        Ok(DelegationBuilder::new(
            from.did(),
            to.did(),
            capability::command(capability::DOC_READ),
        )
        .subject(root.did())
        .policy(capability::policy_for_document(
            "automerge:3m6xQNxGfVGPGDD6bi7T7ZdSUhx",
        ))
        .expiration(Some(NOW + 86_400))
        .nonce(vec![nonce; 12])
        .sign(from)?)
    };
    let to_device = DelegationBuilder::new(root.did(), keys[1].did(), "/".parse::<Command>()?)
        .subject(root.did())
        .nonce(vec![1; 12])
        .sign(root)?;
    Ok(vec![
        to_device,
        read(&keys[1], &keys[2], 2)?,
        read(&keys[2], &keys[3], 3)?,
    ])
}

/// One measured case: its system and name, how many calls make one timed run, and the
/// work.
struct Case<'a> {
    system: &'static str,
    name: &'static str,
    repeat: u32,
    work: Box<dyn FnMut() -> anyhow::Result<()> + 'a>,
}

impl<'a> Case<'a> {
    fn new(
        system: &'static str,
        name: &'static str,
        work: impl FnMut() -> anyhow::Result<()> + 'a,
    ) -> Self {
        Self {
            system,
            name,
            repeat: 1,
            work: Box::new(work),
        }
    }

    /// Times `repeat` calls per run (for work too short to time one call at a time).
    fn repeated(mut self, repeat: u32) -> Self {
        self.repeat = repeat;
        self
    }
}

/// Rounds the cases take turns in. Runs of a few milliseconds each, interleaved, so that a
/// slow stretch of the machine (frequency changes, a neighbour's burst) falls on every case
/// alike instead of on whichever ran then.
const ROUNDS: u32 = 25;

/// Runs every case `iterations` times in all, in `ROUNDS` interleaved rounds, and emits
/// each case's median microseconds per call over the rounds.
fn measure(iterations: u32, cases: &mut [Case<'_>]) -> anyhow::Result<()> {
    let per_round = iterations.div_ceil(ROUNDS).max(1);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for case in cases.iter_mut() {
        (case.work)()?;
    }
    for _ in 0..ROUNDS {
        for (case, samples) in cases.iter_mut().zip(&mut samples) {
            let calls = per_round * case.repeat;
            let start = Instant::now();
            for _ in 0..calls {
                (case.work)()?;
            }
            samples.push(start.elapsed().as_secs_f64() * 1e6 / f64::from(calls));
        }
    }
    for (case, mut samples) in cases.iter().zip(samples) {
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        emit(
            "S7",
            case.system,
            case.name,
            median / 1e3,
            json!({
                "us": median,
                "iterations": per_round * case.repeat * ROUNDS,
                "rounds": ROUNDS,
                "round_min_us": samples[0],
                "round_max_us": samples[samples.len() - 1],
            }),
        );
    }
    Ok(())
}

pub(crate) fn run(iterations: u32) -> anyhow::Result<()> {
    let chain = chain()?;
    let encoded: Vec<Vec<u8>> = chain.iter().map(|d| d.as_bytes().to_vec()).collect();
    let cache = VerifiedSignatures::default();
    let warm_validator = Validator::new(NOW).with_verified_signatures(&cache);
    warm_validator.validate_delegation_chain(&chain)?;

    // The floor: three signatures over messages of the same sizes.
    let signers: Vec<SigningKey> = (1..=3u8)
        .map(|n| SigningKey::from_bytes(&[n; 32]))
        .collect();
    let messages: Vec<Vec<u8>> = encoded.clone();
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let signatures: Vec<ed25519_dalek::Signature> = signers
        .iter()
        .zip(&messages)
        .map(|(k, m)| k.sign(m))
        .collect();
    let verifying: Vec<_> = signers.iter().map(SigningKey::verifying_key).collect();
    let key_bytes: Vec<[u8; 32]> = verifying.iter().map(|key| key.to_bytes()).collect();

    // biscuit-auth: authority block and two attenuation blocks.
    let root = KeyPair::new();
    let token = biscuit!(r#"right("calendar", "read"); right("calendar", "write");"#)
        .build(&root)?
        .append(block!(r#"check if operation("read");"#))?
        .append(block!(r#"check if resource("calendar");"#))?;
    let bytes = token.to_vec()?;
    let public = root.public();

    let mut cases = [
        Case::new("ucan", "depth-3-cold", || {
            let decoded = encoded
                .iter()
                .map(|b| Delegation::decode(b))
                .collect::<Result<Vec<_>, _>>()?;
            Validator::new(NOW).validate_delegation_chain(&decoded)?;
            Ok(())
        }),
        // Where the cold time goes: decoding, then validating decoded delegations.
        Case::new("ucan", "decode-3", || {
            for bytes in &encoded {
                Delegation::decode(bytes)?;
            }
            Ok(())
        }),
        Case::new("ucan", "validate-3-decoded", || {
            Validator::new(NOW).validate_delegation_chain(&chain)?;
            Ok(())
        }),
        Case::new("ucan", "depth-3-verified-before", || {
            warm_validator.validate_delegation_chain(&chain)?;
            Ok(())
        })
        .repeated(10),
        Case::new("ed25519", "3-signatures", || {
            for ((key, message), signature) in verifying.iter().zip(&messages).zip(&signatures) {
                key.verify(message, signature)?;
            }
            Ok(())
        }),
        Case::new("ed25519", "3-signatures-batch", || {
            ed25519_dalek::verify_batch(&refs, &signatures, &verifying)?;
            Ok(())
        }),
        // RFC 8032 verification starts from the key's 32 bytes; decoding them (a square
        // root each) is part of every cold check, the ucan one included.
        Case::new("ed25519", "3-signatures-batch-from-bytes", || {
            let keys = key_bytes
                .iter()
                .map(ed25519_dalek::VerifyingKey::from_bytes)
                .collect::<Result<Vec<_>, _>>()?;
            ed25519_dalek::verify_batch(&refs, &signatures, &keys)?;
            Ok(())
        }),
        Case::new("biscuit", "3-blocks", || {
            let token = Biscuit::from(&bytes, public)?;
            authorizer!(
                r#"resource("calendar"); operation("read"); allow if right("calendar", "read");"#
            )
            // The default 1 ms time limit trips on a busy machine; the work is the same.
            .set_limits(biscuit_auth::AuthorizerLimits {
                max_time: std::time::Duration::from_secs(1),
                ..Default::default()
            })
            .build(&token)?
            .authorize()?;
            Ok(())
        }),
    ];
    measure(iterations, &mut cases)
}
