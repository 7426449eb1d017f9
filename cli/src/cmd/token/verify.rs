//! `membrane token verify TOKEN [--proof P]… [--at UNIX]`

use std::path::PathBuf;

use anyhow::Context as _;
use membrane_node::{DataDir, DeviceIdentity, time};
use membrane_protocol::ucan::{
    AnyToken, Delegation, ValidChain, ValidationError, Validator, decode_any, find_chain,
};
use serde_json::json;

use crate::{Rejected, input, output::Output};

/// Validate a token and its proof chain.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The token: a file (raw bytes or base64) or base64 text.
    token: String,
    /// A proof delegation (file or base64); repeat for a chain, in any order.
    #[arg(long = "proof", value_name = "P")]
    proofs: Vec<String>,
    /// Validate at this Unix time instead of now.
    #[arg(long, value_name = "UNIX")]
    at: Option<u64>,
    /// Tolerate clocks this many seconds apart.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    clock_skew: u64,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let mut proofs = Vec::with_capacity(args.proofs.len());
    for proof in &args.proofs {
        let bytes = input::token_bytes(proof)?;
        proofs.push(Delegation::decode(&bytes).with_context(|| format!("proof {proof:?}"))?);
    }
    // The delegations this device holds are proofs "resolvable externally".
    if let Some(identity) = local_identity(data_dir) {
        proofs.extend(identity.delegations());
    }
    let now = args.at.unwrap_or_else(time::now);
    let validator = Validator::new(now).with_clock_skew(args.clock_skew);

    let bytes = input::token_bytes(&args.token)?;
    let outcome = match decode_any(&bytes) {
        Err(error) => Err(("MalformedToken", error.to_string())),
        Ok(AnyToken::Invocation(invocation)) => validator
            .validate_invocation(&invocation, &proofs)
            .map_err(named),
        Ok(AnyToken::Delegation(delegation)) => {
            validate_delegation(&validator, &delegation, &proofs)
        }
    };
    match outcome {
        Ok(chain) => {
            let data = json!({
                "valid": true,
                "at": now,
                "subject": chain.subject().map(ToString::to_string),
                "audience": chain.audience().to_string(),
                "command": chain.command().as_str(),
                "chain": chain.proofs().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "valid_until": chain.valid_until(),
            });
            out.result("verification", &data, |w| {
                writeln!(w, "valid")?;
                if let Some(subject) = chain.subject() {
                    writeln!(w, "subject:  {subject}")?;
                }
                writeln!(w, "holder:   {}", chain.audience())?;
                writeln!(w, "command:  {}", chain.command())?;
                writeln!(w, "chain:    {} delegation(s)", chain.proofs().len())
            })
        }
        Err((name, reason)) => {
            let data = json!({ "valid": false, "at": now, "error": name, "reason": reason });
            out.result("verification", &data, |w| {
                writeln!(w, "{name}")?;
                writeln!(w, "reason: {reason}")
            })?;
            Err(Rejected.into())
        }
    }
}

fn named(error: ValidationError) -> (&'static str, String) {
    (error.name(), error.to_string())
}

fn local_identity(data_dir: Option<PathBuf>) -> Option<DeviceIdentity> {
    let dir: DataDir = super::super::resolve_data_dir(data_dir).ok()?;
    if !dir.is_initialized() {
        return None;
    }
    match DeviceIdentity::load(&dir) {
        Ok(identity) => Some(identity),
        Err(error) => {
            tracing::warn!(%error, "ignoring this device's delegations as proofs");
            None
        }
    }
}

/// A delegation is valid when a chain from its subject's own delegation down to it
/// validates. Proofs are ordered automatically.
fn validate_delegation(
    validator: &Validator<'_>,
    delegation: &Delegation,
    proofs: &[Delegation],
) -> Result<ValidChain, (&'static str, String)> {
    let Some(chain) = find_chain(delegation, proofs) else {
        // Still report a bad signature or time first: those need no proof.
        if delegation.verify_signature().is_err() {
            return Err(named(ValidationError::InvalidSignature(delegation.cid())));
        }
        return Err((
            "UnavailableProof",
            format!(
                "no chain of proofs leads from {} (the subject) to {}; pass them with --proof",
                delegation
                    .payload()
                    .subject
                    .map_or_else(|| "a subject".to_owned(), |did| did.to_string()),
                delegation.payload().issuer
            ),
        ));
    };
    validator.validate_delegation_chain(&chain).map_err(named)
}
