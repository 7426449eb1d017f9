//! `membrane grant`: let someone else read or write one of your documents.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output, qr};

/// Let another person's device read or write one document, for a while, on your terms.
///
/// Prints a code to hand the grantee (`membrane accept CODE` on their side); `--qr` shows
/// it as a QR code, `--png` writes one. Needs `membrane run`.
///
/// Example: membrane grant did:key:z6Mk… --doc calendar --can read --expires 30d
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The grantee's did:key (their `membrane id` prints it).
    to: String,
    /// The document: its id or name.
    #[arg(long)]
    doc: String,
    /// read, write or admin (write and admin include read).
    #[arg(long, default_value = "read")]
    can: String,
    /// How long it lasts, e.g. 30d, 12h [default: no expiry].
    #[arg(long, value_parser = crate::duration::parse_seconds)]
    expires: Option<u64>,
    /// Your terms (text or URL); they travel inside the grant.
    #[arg(long)]
    terms: Option<String>,
    /// A note for your records (also inside the grant).
    #[arg(long)]
    note: Option<String>,
    /// Share only this subtree, e.g. /profile/address (read-only: the grantee gets a view
    /// document holding just that part, kept up to date).
    #[arg(long, value_name = "POINTER")]
    path: Option<String>,
    /// Let the grantee pass it on (e.g. a grant to a person, used by each of their devices).
    #[arg(long)]
    delegable: bool,
    /// Also show the code as a QR code in the terminal.
    #[arg(long)]
    qr: bool,
    /// Also write the code as a QR code to this PNG file.
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let issued = Client::connect(&dir)?.call(
        "grant",
        json!({
            "to": args.to,
            "doc": args.doc,
            "can": args.can,
            "expires_in": args.expires,
            "terms": args.terms,
            "note": args.note,
            "delegable": args.delegable,
            "path": args.path,
        }),
    )?;
    let code = issued["code"].as_str().unwrap_or_default().to_owned();
    if let Some(path) = &args.png {
        qr::write_png(&code, path)?;
    }
    let picture = if args.qr {
        Some(qr::terminal(&code)?)
    } else {
        None
    };
    out.result("grant", &issued, |w| {
        writeln!(w, "granted {} on {} to {}", args.can, args.doc, args.to)?;
        match issued["expires"].as_u64() {
            Some(at) => writeln!(w, "expires {}", super::token::format_time(at))?,
            None => writeln!(w, "no expiry (revoke it with `membrane revoke`)")?,
        }
        writeln!(w, "grant {}", issued["cid"].as_str().unwrap_or_default())?;
        if let Some(picture) = &picture {
            writeln!(w, "{picture}")?;
        }
        writeln!(w, "hand the grantee this code (membrane accept CODE):")?;
        writeln!(w, "{code}")
    })
}
