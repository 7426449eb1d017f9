//! `membrane devices`: the person's devices.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// List your devices: name, DID, when and by whom added, last seen, online.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Action>,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Cut a device off (a lost phone): every other device refuses it from now on.
    ///
    /// Example: membrane devices revoke phone
    Revoke {
        /// The device's DID or name.
        device: String,
    },
}

pub(crate) fn run(args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    if let Some(Action::Revoke { device }) = args.action {
        let done = client.call("devices.revoke", json!({"device": device}))?;
        return out.result("revoked", &done, |w| {
            writeln!(
                w,
                "revoked {device}; your other devices refuse it as soon as they hear of it"
            )
        });
    }
    let devices = client.call("devices", json!({}))?;
    out.result("devices", &devices, |w| {
        for device in devices.as_array().into_iter().flatten() {
            let name = device["name"].as_str().unwrap_or("-");
            let state = if device["revoked"] == true {
                "revoked".to_owned()
            } else if device["this_device"] == true {
                "this device".to_owned()
            } else if device["online"] == true {
                "online".to_owned()
            } else {
                match device["last_seen"].as_u64() {
                    Some(seen) => format!("last seen {}", super::token::format_time(seen)),
                    None => "not seen by this device".to_owned(),
                }
            };
            let added = device["added"]
                .as_u64()
                .map(super::token::format_time)
                .unwrap_or_default();
            writeln!(
                w,
                "{name:<12} {}  {state}  added {added}",
                device["did"].as_str().unwrap_or_default()
            )?;
        }
        Ok(())
    })
}
