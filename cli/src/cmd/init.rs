//! `membrane init`: create the person's root key and this device's key.

use std::path::PathBuf;

use membrane_node::{DeviceIdentity, time};
use serde_json::json;

use crate::output::Output;

/// Create your root identity and this device's key, and a commented default config.toml.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Make only a device key: this device will join a person's existing devices
    /// (`membrane device link` on one of them, `membrane device accept` here).
    #[arg(long)]
    join: bool,
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    if args.join {
        let device = DeviceIdentity::init_joining(&dir)?;
        let config = write_config(&dir)?;
        let data =
            json!({"data_dir": dir.path(), "device": device.did().to_string(), "config": config});
        return out.result("init", &data, |w| {
            writeln!(w, "Created a device key in {}", dir.path().display())?;
            writeln!(w, "device: {}", device.did())?;
            if let Some(config) = &config {
                writeln!(w, "Settings: {} (membrane config show)", config.display())?;
            }
            writeln!(
                w,
                "Next: join with an invitation from one of your devices \
                 (membrane pair join --qr FILE.png), or run there: membrane device link {}",
                device.did()
            )
        });
    }
    let identity = DeviceIdentity::init(&dir, time::now())?;
    let config = write_config(&dir)?;
    let data = json!({
        "data_dir": dir.path(),
        "root": identity.root.to_string(),
        "device": identity.device.did().to_string(),
        "peer_id": identity.device.public().to_peer_id().to_string(),
        "config": config,
    });
    out.result("init", &data, |w| {
        writeln!(w, "Initialized Membrane in {}", dir.path().display())?;
        writeln!(w, "root:   {}", identity.root)?;
        writeln!(w, "device: {}", identity.device.did())?;
        writeln!(
            w,
            "Secret keys are in {}/identity (mode 0600).",
            dir.path().display()
        )?;
        if let Some(config) = &config {
            writeln!(w, "Settings: {} (membrane config show)", config.display())?;
        }
        Ok(())
    })
}

/// Writes the commented default config.toml, unless one exists; returns its path if it
/// wrote it.
fn write_config(dir: &membrane_node::DataDir) -> anyhow::Result<Option<PathBuf>> {
    Ok(crate::settings::write_template(dir)?.then(|| crate::settings::path(dir)))
}
