//! `membrane status` with real daemons: a laptop with a phone and a tablet paired to it
//! (the tablet never runs), and a shop that asked for access. The laptop's status reports
//! each device and each document's state on it, from live sessions and, once the phone is
//! off, from the last session; and the request waiting for an answer.
//!
//! Every daemon is killed when its guard drops; conditions are polled, never slept on.

mod common;

use std::path::Path;

use common::{Control, Daemon, ask, membrane, wait_for};
use serde_json::{Value, json};

/// Pairs a new device (`init --join`, then `pair join CODE --name NAME`) with the running
/// node of `inviter`.
fn pair(inviter: &Path, joiner: &Path, name: &str) {
    membrane(joiner, &["--json", "init", "--join"]).data();
    let mut invite = Control::connect(inviter).unwrap();
    let opened = invite
        .call("pair.invite", json!({"ttl": 600, "name": null}))
        .unwrap();
    let code = opened["code"].as_str().unwrap();
    membrane(joiner, &["--json", "pair", "join", code, "--name", name]).data();
}

/// The laptop's `--json status` entry for `peer` on document `doc`.
fn doc_peer(status: &Value, doc: &str, peer: &str) -> Value {
    let doc = status["documents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == doc)
        .unwrap_or_else(|| panic!("{doc} in {status}"));
    doc["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["peer"] == peer)
        .unwrap_or_else(|| panic!("{peer} on {doc}"))
        .clone()
}

fn status(dir: &Path) -> Value {
    membrane(dir, &["--json", "status"]).data()
}

#[test]
fn status_reports_devices_documents_per_device_and_pending_requests() {
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir, tablet_dir, shop_dir) = (
        temp.path().join("laptop"),
        temp.path().join("phone"),
        temp.path().join("tablet"),
        temp.path().join("shop"),
    );
    membrane(&laptop_dir, &["--json", "init"]).data();
    let laptop = Daemon::start(&laptop_dir, &[]);
    pair(&laptop_dir, &phone_dir, "phone");
    pair(&laptop_dir, &tablet_dir, "tablet");
    let tablet = membrane(&tablet_dir, &["--json", "id"]).data()["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let phone = Daemon::start(&phone_dir, &[&laptop.addr]);

    let calendar = ask(
        &laptop_dir,
        "doc.new",
        json!({"name": "calendar", "content": {"monday": "work"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the phone to be in sync with the calendar", || {
        doc_peer(&status(&laptop_dir), &calendar, &phone.device)["state"] == "in_sync"
    });
    let now = status(&laptop_dir);
    assert_eq!(
        doc_peer(&now, &calendar, &phone.device),
        json!({
            "peer": phone.device, "name": "phone", "own_device": true, "online": true,
            "state": "in_sync", "they_lack": 0, "known_from": "live",
        })
    );
    assert_eq!(
        doc_peer(&now, &calendar, &tablet),
        json!({
            "peer": tablet, "name": "tablet", "own_device": true, "online": false,
            "state": "never_synced", "they_lack": null, "known_from": "nothing",
        })
    );
    assert_eq!(now["pending_requests"], json!([]));

    // A shop asks for the calendar: one request waits for an answer.
    membrane(&shop_dir, &["--json", "init"]).data();
    let shop = Daemon::start(&shop_dir, &[]);
    membrane(
        &shop_dir,
        &[
            "--json",
            "request",
            &laptop.addr,
            "--doc",
            "calendar",
            "--can",
            "read",
        ],
    )
    .data();

    // The phone goes off; the laptop makes three changes it does not have.
    let phone_device = phone.device.clone();
    phone.stop();
    wait_for("the laptop to notice the phone is gone", || {
        doc_peer(&status(&laptop_dir), &calendar, &phone_device)["online"] == false
    });
    for day in ["tuesday", "wednesday", "thursday"] {
        ask(
            &laptop_dir,
            "doc.set",
            json!({"doc": calendar, "path": format!("/{day}"), "value": "tennis"}),
        );
    }
    let later = status(&laptop_dir);
    assert_eq!(
        doc_peer(&later, &calendar, &phone_device),
        json!({
            "peer": phone_device, "name": "phone", "own_device": true, "online": false,
            "state": "they_lack", "they_lack": 3, "known_from": "last_session",
        })
    );
    let pending = later["pending_requests"].as_array().unwrap();
    assert_eq!(pending.len(), 1, "{later}");
    assert_eq!(pending[0]["from"], json!(shop.device));
    assert_eq!(pending[0]["doc"], "calendar");

    // The same, in words, aligned.
    let human = membrane(&laptop_dir, &["status"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    let text = &human.stdout;
    for expected in [
        "devices    0 of 2 online",
        "requests   1 pending",
        "documents  1",
        "calendar  ",
        "phone lacks 3 of our changes (at the last session)",
        "tablet never synced",
    ] {
        assert!(text.contains(expected), "{expected:?} in:\n{text}");
    }
    let device_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("never seen by this device") || l.contains("last seen"))
        .collect();
    assert_eq!(device_lines.len(), 2, "{text}");
    assert!(
        device_lines.iter().all(|l| l.starts_with("           ")),
        "device lines sit under the label column:\n{text}"
    );
    shop.stop();
    laptop.stop();
}
