//! `membrane token delegate --aud DID --cmd CMD [--sub DID] [--pol JSON] [--exp UNIX | --ttl D]`

use std::path::PathBuf;

use anyhow::Context as _;
use membrane_node::{DeviceIdentity, identity::read_key, random, time};
use membrane_protocol::{
    Did,
    ucan::{Command, Delegation, DelegationBuilder, Policy, Validator, encode_base64},
};
use serde_json::json;

use crate::{duration, output::Output};

/// Issue a delegation and print it as base64.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Who receives the authority.
    #[arg(long, value_name = "DID")]
    aud: Did,
    /// The command delegated, e.g. /membrane/doc/read (`/` is everything).
    #[arg(long, value_name = "CMD")]
    cmd: Command,
    /// Whose resources [default: your root DID; with --key, that key's DID].
    #[arg(long, value_name = "DID")]
    sub: Option<Did>,
    /// A policy in JSON, e.g. '[["==", ".doc", "automerge:…"]]'.
    #[arg(long, value_name = "JSON")]
    pol: Option<String>,
    /// Expire at this Unix time.
    #[arg(long, value_name = "UNIX", conflicts_with_all = ["ttl", "no_expiry"])]
    exp: Option<u64>,
    /// Expire this long from now (s, m, h, d, w) [default: 30d].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_seconds, conflicts_with = "no_expiry")]
    ttl: Option<u64>,
    /// Never expire (`exp` null). Prefer an expiry: it limits the damage of a leak.
    #[arg(long)]
    no_expiry: bool,
    /// Not valid before this Unix time.
    #[arg(long, value_name = "UNIX")]
    nbf: Option<u64>,
    /// Sign with this secret key file instead of this device's key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
}

const DEFAULT_TTL: u64 = 30 * 86_400;

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let now = time::now();
    let (signer, default_subject, proof_for) = match &args.key {
        Some(path) => {
            let key = read_key(path)?;
            let did = key.did();
            (key, did, None)
        }
        None => {
            let dir = super::super::resolve_data_dir(data_dir)?;
            let identity = DeviceIdentity::load(&dir)?;
            let root = identity.root;
            (identity.device.clone(), root, Some(identity))
        }
    };
    let subject = args.sub.unwrap_or(default_subject);
    // A device acting for the person needs its authority delegation as the proof.
    let proofs: Vec<Delegation> = match &proof_for {
        Some(identity) if subject == identity.root => identity.authority.clone(),
        _ if subject == signer.did() => Vec::new(),
        Some(identity) => anyhow::bail!(
            "this device holds no delegation for subject {subject}; it can delegate for your root {} or for itself",
            identity.root
        ),
        None => anyhow::bail!(
            "the key {} holds no delegation for subject {subject}; with --key, the subject must be the key's own DID",
            signer.did()
        ),
    };
    let policy = match &args.pol {
        Some(text) => Policy::from_json(text).context("--pol")?,
        None => Policy::default(),
    };
    let expiration = match (args.exp, args.ttl, args.no_expiry) {
        (_, _, true) => None,
        (Some(exp), _, _) => Some(exp),
        (None, ttl, false) => Some(now + ttl.unwrap_or(DEFAULT_TTL)),
    };
    let delegation = DelegationBuilder::new(signer.did(), args.aud, args.cmd)
        .subject(subject)
        .policy(policy)
        .nonce(random::bytes::<12>()?.to_vec())
        .expiration(expiration)
        .not_before(args.nbf)
        .sign(&signer)?;

    // Never hand out a token that would not validate with its proofs right now (or at
    // its not-before time).
    let mut chain = proofs.clone();
    chain.push(delegation.clone());
    Validator::new(args.nbf.unwrap_or(now).max(now))
        .validate_delegation_chain(&chain)
        .context("the new delegation does not validate with this device's authority")?;

    let token = encode_base64(delegation.as_bytes());
    let data = json!({
        "token": token,
        "cid": delegation.cid().to_string(),
        "issuer": signer.did().to_string(),
        "audience": args.aud.to_string(),
        "subject": subject.to_string(),
        "command": delegation.payload().command.as_str(),
        "expiration": expiration,
        "proofs": proofs.iter().map(|p| encode_base64(p.as_bytes())).collect::<Vec<_>>(),
    });
    out.result("delegation", &data, |w| writeln!(w, "{token}"))?;
    if !proofs.is_empty() && !out.is_json() {
        eprintln!(
            "note: this token is backed by your root's delegation to this device; show it with `membrane token verify` on this device, or pass --json to get the proof too"
        );
    }
    Ok(())
}
