//! `membrane pair invite [--ttl 10m] [--png FILE] [--name NAME]`

use std::path::PathBuf;

use serde_json::json;

use crate::{Rejected, control::Client, duration, output::Output, qr};

/// Show a QR code for a new device and wait for it.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// How long the code is valid (s, m, h).
    #[arg(long, default_value = "10m", value_parser = duration::parse_seconds)]
    ttl: u64,
    /// Also write the QR code to this PNG file.
    #[arg(long, value_name = "FILE")]
    png: Option<PathBuf>,
    /// A name for the new device, if it gives none itself.
    #[arg(long)]
    name: Option<String>,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    let opened = client.start("pair.invite", json!({"ttl": args.ttl, "name": args.name}))?;
    let code = opened["code"].as_str().unwrap_or_default().to_owned();
    if let Some(path) = &args.png {
        qr::write_png(&code, path)?;
    }
    let picture = qr::terminal(&code)?;
    let data = json!({"code": code, "expires": opened["expires"], "png": args.png});
    out.result("invitation", &data, |w| {
        writeln!(w, "{picture}")?;
        writeln!(
            w,
            "Scan this on the new device, or type: membrane pair join {code}"
        )?;
        writeln!(w, "Waiting for the new device…")
    })?;
    loop {
        let event = client.read()?["event"].clone();
        out.result("pairing", &event, |w| match event["outcome"].as_str() {
            Some("joined") => writeln!(
                w,
                "Paired with {}{}. Check that the new device shows the code {}.",
                event["device"].as_str().unwrap_or_default(),
                event["name"]
                    .as_str()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
                event["verification_code"].as_str().unwrap_or_default()
            ),
            Some("refused") => writeln!(
                w,
                "Refused a device: {}",
                event["reason"].as_str().unwrap_or_default()
            ),
            _ => writeln!(w, "The invitation expired; nobody joined."),
        })?;
        match event["outcome"].as_str() {
            Some("joined") => return Ok(()),
            Some("refused") if event["still_open"] == true => {}
            _ => return Err(Rejected.into()),
        }
    }
}
