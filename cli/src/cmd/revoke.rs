//! `membrane revoke`: withdraw a grant.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// Withdraw a grant (by its CID from `membrane grants`, or the first 8+ characters).
/// Your devices refuse it as soon as the revocation reaches them. Needs `membrane run`.
///
/// Example: membrane revoke bafyrei…
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The grant's CID.
    grant: String,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let done = Client::connect(&dir)?.call("revoke", json!({"grant": args.grant}))?;
    out.result("revoked", &done, |w| {
        for cid in done["revoked"].as_array().into_iter().flatten() {
            writeln!(w, "revoked grant {}", cid.as_str().unwrap_or_default())?;
        }
        Ok(())
    })
}
