//! S7: what checking a depth-3 capability chain costs.
//!
//! - `ucan` cold: decode three delegations from their bytes and validate the chain (links,
//!   times, policy, and the three Ed25519 signatures, which the validator verifies as one
//!   batch after decoding the issuers' keys; one by one only when the batch fails). Warm:
//!   the same with a signature cache that has seen these delegations (the node does not use
//!   this cache yet; it validates a peer's chain when a session starts).
//! - `ed25519`: the floor: three signatures verified one by one, and as one batch, with the
//!   keys already decoded (decoding a key costs a square root, about a tenth of a
//!   verification, which the `ucan` cases pay for each issuer).
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

/// Runs `work` `iterations` times and returns microseconds per run.
fn per_run(iterations: u32, mut work: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    work()?;
    let start = Instant::now();
    for _ in 0..iterations {
        work()?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / f64::from(iterations))
}

fn emit_us(system: &str, case: &str, us: f64, iterations: u32) {
    emit(
        "S7",
        system,
        case,
        us / 1e3,
        json!({"us": us, "iterations": iterations}),
    );
}

pub(crate) fn run(iterations: u32) -> anyhow::Result<()> {
    let chain = chain()?;
    let encoded: Vec<Vec<u8>> = chain.iter().map(|d| d.as_bytes().to_vec()).collect();

    let cold = per_run(iterations, || {
        let decoded = encoded
            .iter()
            .map(|b| Delegation::decode(b))
            .collect::<Result<Vec<_>, _>>()?;
        Validator::new(NOW).validate_delegation_chain(&decoded)?;
        Ok(())
    })?;
    emit_us("ucan", "depth-3-cold", cold, iterations);
    // Where the cold time goes: decoding, then validating decoded delegations.
    let decode = per_run(iterations, || {
        for bytes in &encoded {
            Delegation::decode(bytes)?;
        }
        Ok(())
    })?;
    emit_us("ucan", "decode-3", decode, iterations);
    let validate = per_run(iterations, || {
        Validator::new(NOW).validate_delegation_chain(&chain)?;
        Ok(())
    })?;
    emit_us("ucan", "validate-3-decoded", validate, iterations);

    let cache = VerifiedSignatures::default();
    let warm_validator = Validator::new(NOW).with_verified_signatures(&cache);
    warm_validator.validate_delegation_chain(&chain)?;
    let warm = per_run(iterations * 10, || {
        warm_validator.validate_delegation_chain(&chain)?;
        Ok(())
    })?;
    emit_us("ucan", "depth-3-verified-before", warm, iterations * 10);

    // The floor: three signatures over messages of the same sizes.
    let signers: Vec<SigningKey> = (1..=3u8)
        .map(|n| SigningKey::from_bytes(&[n; 32]))
        .collect();
    let messages: Vec<Vec<u8>> = encoded.clone();
    let signatures: Vec<ed25519_dalek::Signature> = signers
        .iter()
        .zip(&messages)
        .map(|(k, m)| k.sign(m))
        .collect();
    let verifying: Vec<_> = signers.iter().map(SigningKey::verifying_key).collect();
    let one_by_one = per_run(iterations, || {
        for ((key, message), signature) in verifying.iter().zip(&messages).zip(&signatures) {
            key.verify(message, signature)?;
        }
        Ok(())
    })?;
    emit_us("ed25519", "3-signatures", one_by_one, iterations);
    let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
    let batch = per_run(iterations, || {
        ed25519_dalek::verify_batch(&refs, &signatures, &verifying)?;
        Ok(())
    })?;
    emit_us("ed25519", "3-signatures-batch", batch, iterations);

    // biscuit-auth: authority block and two attenuation blocks.
    let root = KeyPair::new();
    let token = biscuit!(r#"right("calendar", "read"); right("calendar", "write");"#)
        .build(&root)?
        .append(block!(r#"check if operation("read");"#))?
        .append(block!(r#"check if resource("calendar");"#))?;
    let bytes = token.to_vec()?;
    let public = root.public();
    let biscuit = per_run(iterations, || {
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
    })?;
    emit_us("biscuit", "3-blocks", biscuit, iterations);
    Ok(())
}
