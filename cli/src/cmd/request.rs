//! `membrane request`: ask another person for access.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// Ask another person's device for access to one of their documents, on your terms. It
/// waits in their queue until they approve or deny it; your node asks after it and accepts
/// the grant by itself. `membrane request --list` shows where your requests stand. Needs
/// `membrane run`.
///
/// Example: membrane request /ip4/192.168.1.20/tcp/4001/p2p/12D3KooW… --doc inbox --can write --terms "one offer a week"
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Their device's address, ending in /p2p/<peer id>.
    #[arg(required_unless_present = "list")]
    addr: Option<String>,
    /// The document, as they call it (name or id).
    #[arg(long, required_unless_present = "list")]
    doc: Option<String>,
    /// read, write or admin.
    #[arg(long, default_value = "read")]
    can: String,
    /// Your terms (text or URL).
    #[arg(long)]
    terms: Option<String>,
    /// A note for them.
    #[arg(long)]
    note: Option<String>,
    /// How long you ask it to last, e.g. 30d.
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    expires: Option<u64>,
    /// List the requests you filed instead.
    #[arg(long, conflicts_with_all = ["addr", "doc"])]
    list: bool,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    if args.list {
        let asked = client.call("asked", json!({}))?;
        return out.result("asked", &asked, |w| {
            for request in asked.as_array().into_iter().flatten() {
                writeln!(
                    w,
                    "{:>4}  {:<8} {} {}  at {}{}",
                    request["id"],
                    request["state"].as_str().unwrap_or_default(),
                    request["can"].as_str().unwrap_or_default(),
                    request["doc"].as_str().unwrap_or_default(),
                    request["addr"].as_str().unwrap_or_default(),
                    request["reason"]
                        .as_str()
                        .map(|r| format!(" ({r})"))
                        .unwrap_or_default(),
                )?;
            }
            Ok(())
        });
    }
    let filed = client.call(
        "request",
        json!({
            "addr": args.addr,
            "doc": args.doc,
            "can": args.can,
            "terms": args.terms,
            "note": args.note,
            "expires_in": args.expires,
        }),
    )?;
    out.result("requested", &filed, |w| {
        writeln!(
            w,
            "request {} is waiting for their answer; your node picks up the grant once approved",
            filed["id"]
        )
    })
}
