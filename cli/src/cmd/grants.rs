//! `membrane grants`: what you granted to others.

use std::path::PathBuf;

use serde_json::json;

use crate::{control::Client, output::Output};

/// List the grants you issued: to whom, what, until when, last used when. Needs
/// `membrane run`.
///
/// Example: membrane grants --json
#[derive(Debug, clap::Args)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let grants = Client::connect(&dir)?.call("grants", json!({}))?;
    out.result("grants", &grants, |w| {
        let list = grants.as_array().map_or(&[][..], Vec::as_slice);
        if list.is_empty() {
            return writeln!(w, "you have granted nothing (see `membrane grant --help`)");
        }
        for grant in list {
            let doc = grant["doc_name"]
                .as_str()
                .or(grant["doc"].as_str())
                .unwrap_or_default();
            let until = grant["expires"]
                .as_u64()
                .map_or("no expiry".to_owned(), |t| {
                    format!("until {}", super::token::format_time(t))
                });
            let used = grant["last_used"]
                .as_u64()
                .map_or("never used".to_owned(), |t| {
                    format!("last used {}", super::token::format_time(t))
                });
            let state = if grant["revoked"] == true {
                "REVOKED  "
            } else {
                ""
            };
            writeln!(
                w,
                "{state}{} {doc} to {}  {until}  {used}\n  grant {}",
                grant["can"].as_str().unwrap_or_default(),
                grant["to"].as_str().unwrap_or_default(),
                grant["cid"].as_str().unwrap_or_default(),
            )?;
        }
        Ok(())
    })
}
