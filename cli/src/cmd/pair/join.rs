//! `membrane pair join CODE | --qr FILE.png [--name NAME]`

use std::path::PathBuf;

use anyhow::Context as _;
use membrane_node::pairing;
use membrane_protocol::pairing::PairingTicket;
use serde_json::json;

use crate::{output::Output, qr};

/// Join your devices with a pairing code.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The code printed under the QR code.
    #[arg(required_unless_present = "qr", conflicts_with = "qr")]
    code: Option<String>,
    /// A picture (PNG) of the QR code instead.
    #[arg(long, value_name = "FILE.png")]
    qr: Option<PathBuf>,
    /// This device's name, shown on your other devices.
    #[arg(long)]
    name: Option<String>,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::super::resolve_data_dir(data_dir)?;
    let text = match (&args.code, &args.qr) {
        (Some(code), _) => code.clone(),
        (None, Some(path)) => qr::read_png(path)?,
        (None, None) => anyhow::bail!("give the code or --qr FILE.png"),
    };
    let ticket: PairingTicket = text.parse().context("this is not a pairing code")?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    let joined = runtime.block_on(pairing::join(&dir, &ticket, args.name))?;
    let data = json!({
        "root": joined.identity.root.to_string(),
        "device": joined.identity.device.did().to_string(),
        "verification_code": joined.verification_code,
    });
    out.result("joined", &data, |w| {
        writeln!(w, "Joined {}.", joined.identity.root)?;
        writeln!(
            w,
            "Check that the other device shows the code {}.",
            joined.verification_code
        )?;
        writeln!(
            w,
            "Start this device with: membrane --data-dir {} run",
            dir.path().display()
        )
    })
}
