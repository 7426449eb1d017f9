//! `membrane status`

use std::{io::Write, path::PathBuf};

use serde_json::{Value, json};

use crate::{control::Client, output::Output};

/// Show this node's identity, devices and peers, each document's sync state per device,
/// and the access requests waiting for an answer.
#[derive(Debug, clap::Args)]
#[command(after_long_help = "\
A document's state on a device compares the heads that device last reported with ours:
  in sync                  the same heads
  lacks N of our changes   N of our changes are missing from its heads (exact for them)
  has changes we lack      its heads hold changes not here yet (how many is not known)
  syncing                  connected, this document not compared yet
  never synced             this node never had a session with the device
  not known while offline  nothing remembered: a node remembers a device's heads from
                           its sessions since it started, and from the sync state it
                           saves when the two reach the same heads through sync messages
For an offline device the state is as of the last contact (the line says so); it may have
caught up through another device since. --json gives the same per document under \"peers\".")]
pub(crate) struct Args {}

/// Width of the label column.
const LABEL: usize = 11;

pub(crate) fn run(_args: Args, data_dir: Option<PathBuf>, out: &mut Output) -> anyhow::Result<()> {
    let dir = super::resolve_data_dir(data_dir)?;
    let mut client = Client::connect(&dir)?;
    let mut status = client.call("status", json!({}))?;
    let pending: Vec<Value> = client
        .call("requests", json!({}))?
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["state"] == "pending")
        .cloned()
        .collect();
    status["pending_requests"] = json!(pending);
    out.result("status", &status, |w| human(w, &status))
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

/// `did:key:…` shortened to its last 8 characters.
fn short(did: &str) -> String {
    match did.len() {
        n if n > 16 => format!("did:key:…{}", &did[n - 8..]),
        _ => did.to_owned(),
    }
}

fn row(w: &mut dyn Write, label: &str, value: &str) -> std::io::Result<()> {
    writeln!(w, "{label:<LABEL$}{value}")
}

fn human(w: &mut dyn Write, status: &Value) -> std::io::Result<()> {
    row(w, "device", text(&status["device"]))?;
    row(w, "root", text(&status["root"]))?;
    let listen: Vec<&str> = status["listen"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    match listen.split_first() {
        None => row(w, "listening", "-")?,
        Some((first, rest)) => {
            row(w, "listening", first)?;
            for addr in rest {
                row(w, "", addr)?;
            }
        }
    }

    // The person's other devices.
    let mut devices: Vec<&Value> = status["own_devices"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["this_device"] != true)
        .collect();
    devices.sort_by_cached_key(|d| device_label(d));
    let active: Vec<&&Value> = devices.iter().filter(|d| d["revoked"] != true).collect();
    let online = active.iter().filter(|d| d["online"] == true).count();
    if devices.is_empty() {
        row(
            w,
            "devices",
            "no other device yet (add one: membrane pair invite)",
        )?;
    } else {
        row(
            w,
            "devices",
            &format!("{online} of {} online", active.len()),
        )?;
        let width = devices
            .iter()
            .map(|d| device_label(d).chars().count())
            .max()
            .unwrap_or(0);
        for device in &devices {
            let state = if device["revoked"] == true {
                "revoked".to_owned()
            } else if device["online"] == true {
                "online".to_owned()
            } else {
                match device["last_seen"].as_u64() {
                    Some(seen) => format!("last seen {}", super::token::format_time(seen)),
                    None => "never seen by this device".to_owned(),
                }
            };
            row(w, "", &format!("{:<width$}  {state}", device_label(device)))?;
        }
    }

    // Everyone connected: own devices and other persons' devices.
    let peers: Vec<String> = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|peer| {
            let did = text(peer);
            match devices.iter().find(|d| d["did"] == did) {
                Some(device) => device_label(device),
                None => format!("{} (another person's device)", short(did)),
            }
        })
        .collect();
    if peers.is_empty() {
        row(w, "peers", "none connected")?;
    } else {
        row(
            w,
            "peers",
            &format!("{} connected: {}", peers.len(), peers.join(", ")),
        )?;
    }

    // Access requests waiting for an answer.
    let pending = status["pending_requests"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    if pending.is_empty() {
        row(w, "requests", "none pending")?;
    } else {
        row(
            w,
            "requests",
            &format!(
                "{} pending (answer with membrane approve ID or membrane deny ID)",
                pending.len()
            ),
        )?;
        for request in pending {
            row(
                w,
                "",
                &format!(
                    "{:>3}  {} {}  from {}  {}",
                    request["id"],
                    text(&request["can"]),
                    text(&request["doc"]),
                    short(text(&request["from"])),
                    request["at"]
                        .as_u64()
                        .map(super::token::format_time)
                        .unwrap_or_default()
                ),
            )?;
        }
    }

    // Documents, with their state on every device.
    let mut documents: Vec<&Value> = status["documents"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    documents.sort_by_key(|d| (d["name"].as_str(), d["id"].as_str()));
    row(w, "documents", &documents.len().to_string())?;
    let name_width = documents
        .iter()
        .map(|d| d["name"].as_str().unwrap_or("-").chars().count())
        .max()
        .unwrap_or(0);
    for doc in documents {
        let mut peers: Vec<(String, String)> = doc["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|peer| {
                let who = peer["name"]
                    .as_str()
                    .map_or_else(|| short(text(&peer["peer"])), str::to_owned);
                (who, sync_state(peer))
            })
            .collect();
        peers.sort();
        let peers: Vec<String> = peers
            .into_iter()
            .map(|(who, state)| format!("{who} {state}"))
            .collect();
        let states = if peers.is_empty() {
            "no other device".to_owned()
        } else {
            peers.join("; ")
        };
        writeln!(
            w,
            "  {:<name_width$}  {}  {states}",
            doc["name"].as_str().unwrap_or("-"),
            text(&doc["id"]),
        )?;
    }

    for entry in status["quarantined"].as_array().into_iter().flatten() {
        writeln!(w, "QUARANTINED {}: {}", entry[0], entry[1])?;
    }
    let refused = status["refused"].as_array().map_or(&[][..], Vec::as_slice);
    if !refused.is_empty() {
        writeln!(w, "refused changes (latest {}):", refused.len())?;
        for r in refused.iter().rev().take(10) {
            writeln!(
                w,
                "  {} seq {} from {}: {}",
                text(&r["doc"]),
                r["seq"],
                text(&r["from"]),
                text(&r["reason"])
            )?;
        }
    }
    Ok(())
}

/// A device's name, or its shortened DID.
fn device_label(device: &Value) -> String {
    device["name"]
        .as_str()
        .map_or_else(|| short(text(&device["did"])), str::to_owned)
}

/// One peer's state for one document, in words.
fn sync_state(peer: &Value) -> String {
    let state = match text(&peer["state"]) {
        "in_sync" => "in sync".to_owned(),
        "they_lack" => match peer["they_lack"].as_u64() {
            Some(1) => "lacks 1 of our changes".to_owned(),
            Some(n) => format!("lacks {n} of our changes"),
            None => "lacks some of our changes".to_owned(),
        },
        "we_lack" => "has changes we lack".to_owned(),
        "syncing" => "syncing".to_owned(),
        "never_synced" => return "never synced".to_owned(),
        "unknown" => return "not known while offline".to_owned(),
        other => other.to_owned(),
    };
    match text(&peer["known_from"]) {
        "last_session" => format!("{state} (at the last session)"),
        "saved_state" => format!("{state} (at the last saved sync)"),
        _ => state,
    }
}
