//! `membrane requests`, `approve`, `deny`: answer access requests from outside.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// List the access requests others filed with you (strangers never reach your data; they
/// can only ask). Needs `membrane run`.
///
/// Example: membrane requests
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

/// Approve a request: issues the grant it asked for; the requester's node picks it up.
///
/// Example: membrane approve 3 --expires 30d
#[derive(Debug, clap::Args)]
pub(crate) struct ApproveArgs {
    /// The request's number (from `membrane requests`).
    id: u64,
    /// How long the grant lasts [default: what they asked, else 30d].
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    expires: Option<u64>,
}

/// Deny a request; the requester hears the reason.
///
/// Example: membrane deny 4 --reason "no thanks"
#[derive(Debug, clap::Args)]
pub(crate) struct DenyArgs {
    /// The request's number.
    id: u64,
    /// What to tell them.
    #[arg(long, default_value = "denied")]
    reason: String,
}

pub(crate) fn list(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let requests = Client::connect(&dir)?.call("requests", json!({}))?;
    out.result("requests", &requests, |w| {
        let list = requests.as_array().map_or(&[][..], Vec::as_slice);
        if list.is_empty() {
            return writeln!(w, "no requests");
        }
        for request in list {
            writeln!(
                w,
                "{:>4}  {:<8} {} {}  from {}  {}",
                request["id"],
                request["state"].as_str().unwrap_or_default(),
                request["can"].as_str().unwrap_or_default(),
                request["doc"].as_str().unwrap_or_default(),
                request["from"].as_str().unwrap_or_default(),
                request["at"]
                    .as_u64()
                    .map(super::token::format_time)
                    .unwrap_or_default(),
            )?;
            if let Some(terms) = request["terms"].as_str() {
                writeln!(w, "      their terms: {terms}")?;
            }
            if let Some(note) = request["note"].as_str() {
                writeln!(w, "      note: {note}")?;
            }
        }
        Ok(())
    })
}

pub(crate) fn approve(
    args: ApproveArgs,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let issued = Client::connect(&dir)?.call(
        "approve",
        json!({"id": args.id, "expires_in": args.expires}),
    )?;
    out.result("approved", &issued, |w| {
        writeln!(
            w,
            "approved request {}: grant {} on {}",
            args.id,
            issued["cid"].as_str().unwrap_or_default(),
            issued["doc"].as_str().unwrap_or_default()
        )
    })
}

pub(crate) fn deny(
    args: DenyArgs,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let done =
        Client::connect(&dir)?.call("deny", json!({"id": args.id, "reason": args.reason}))?;
    out.result("denied", &done, |w| {
        writeln!(w, "denied request {}", args.id)
    })
}
