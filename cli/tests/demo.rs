//! `membrane demo`, run as the real binary: every step of the story succeeds and reports
//! what it observed, the demo cleans up after itself, and `--keep` leaves nodes the other
//! commands can talk to.

mod common;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use common::{TIMEOUT, lines_in_background, membrane, run_to_end, wait_exit};
use serde_json::{Value, json};

/// `membrane --json demo ARGS…` with its temporary directory under `tmp`.
fn demo_command(tmp: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
    command
        .args(["--json", "demo"])
        .args(args)
        .env("TMPDIR", tmp);
    command
}

/// Parses JSON Lines into `(type, data)` pairs.
fn parse(stdout: &str) -> Vec<(String, Value)> {
    stdout
        .lines()
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            let kind = value["type"]
                .as_str()
                .unwrap_or_else(|| panic!("no type: {line}"));
            (kind.to_owned(), value["data"].clone())
        })
        .collect()
}

/// Each step's `data`, by step name, after checking that it succeeded.
fn steps(lines: &[(String, Value)]) -> HashMap<String, Value> {
    let steps: HashMap<String, Value> = lines
        .iter()
        .filter(|(kind, _)| kind == "step")
        .map(|(_, data)| (data["step"].as_str().unwrap().to_owned(), data.clone()))
        .collect();
    for (name, data) in &steps {
        assert_eq!(data["ok"], true, "step {name} failed: {data:#}");
    }
    steps
}

fn leftovers(tmp: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .collect()
}

#[test]
fn the_demo_tells_the_whole_story_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let run = run_to_end(demo_command(tmp.path(), &[]), "membrane --json demo");
    eprintln!("the demo took {:?}", started.elapsed());
    assert_eq!(
        run.code, 0,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    let lines = parse(&run.stdout);

    // It says where it works, then one line per step, then the summary.
    let (kind, intro) = &lines[0];
    assert_eq!(kind, "demo");
    let dir = PathBuf::from(intro["dir"].as_str().unwrap());
    assert!(dir.starts_with(tmp.path()), "{dir:?}");
    let steps = steps(&lines);
    let order: Vec<&str> = lines
        .iter()
        .filter(|(kind, _)| kind == "step")
        .map(|(_, data)| data["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["pair", "sync", "grant", "use", "stranger", "revoke", "log"]
    );

    // 1. Pairing: both screens show the same six digits.
    let pair = &steps["pair"]["detail"];
    let code = pair["laptop_code"].as_str().unwrap();
    assert_eq!(code.len(), 6, "{pair}");
    assert!(code.chars().all(|c| c.is_ascii_digit()), "{pair}");
    assert_eq!(pair["phone_code"], pair["laptop_code"]);
    assert_ne!(pair["phone"], pair["laptop"]);

    // 2. The phone holds the three documents, as the laptop made them.
    let sync = &steps["sync"]["detail"];
    let made = sync["documents"].as_array().unwrap();
    let names: Vec<&str> = made.iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["contacts", "calendar", "fitness"]);
    let on_phone = sync["on_phone"].as_array().unwrap();
    assert_eq!(on_phone.len(), 3);
    for (made, held) in made.iter().zip(on_phone) {
        assert_eq!(held["name"], made["name"]);
        assert_eq!(held["content"], made["content"]);
        assert!(held["content"].as_object().is_some_and(|c| !c.is_empty()));
    }
    let calendar = made[1]["content"].clone();
    let calendar_id = made[1]["id"].as_str().unwrap();

    // 3. Tom may read the calendar; the shop may write to the inbox, on Sarah's terms.
    let grant = &steps["grant"]["detail"];
    assert_eq!(grant["tom"]["can"], "read");
    assert_eq!(grant["tom"]["doc"], calendar_id);
    assert_eq!(grant["shop"]["can"], "write");
    assert_eq!(
        grant["shop"]["terms"],
        "offers about tennis only, at most one a week"
    );

    // 4. Tom read the calendar; the offer arrived at Sarah's laptop and phone.
    let used = &steps["use"]["detail"];
    assert_eq!(used["tom_read"], calendar);
    assert!(
        used["tom_edit_refused"]
            .as_str()
            .unwrap()
            .contains("read-only")
    );
    let offer_path = used["offer"]["path"].as_str().unwrap();
    let offer = &used["offer"]["value"];
    for copy in ["inbox_at_laptop", "inbox_at_phone"] {
        assert_eq!(used[copy].pointer(offer_path), Some(offer), "{used}");
    }

    // 5. The stranger was refused and holds nothing.
    let stranger = &steps["stranger"]["detail"];
    assert!(
        !stranger["refusals"].as_array().unwrap().is_empty(),
        "{stranger}"
    );
    assert_eq!(stranger["documents_held"], 0);

    // 6. The phone is revoked; its later write is on the phone only.
    let revoke = &steps["revoke"]["detail"];
    assert_eq!(revoke["registry_says_revoked"], true);
    assert_eq!(revoke["revoked_delegations"].as_array().unwrap().len(), 2);
    let path = revoke["phone_wrote"]["path"].as_str().unwrap();
    let written = &revoke["phone_wrote"]["value"];
    assert_eq!(revoke["calendar_at_phone"].pointer(path), Some(written));
    assert_eq!(revoke["calendar_at_laptop"].pointer(path), None, "{revoke}");
    assert_eq!(revoke["calendar_at_laptop"], calendar);
    assert!(
        revoke["refusal"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("revoked"),
        "{revoke}"
    );

    // 7. The access log holds Tom's read and the shop's write, and verifies.
    let log = &steps["log"]["detail"];
    let entries = log["entries"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(log["verified"].as_u64().unwrap() >= entries.len() as u64);
    let logged = |peer: &Value, kind: &str, doc: &Value| {
        entries
            .iter()
            .any(|e| &e["peer"] == peer && e["kind"] == kind && &e["doc"] == doc)
    };
    assert!(logged(
        &grant["tom"]["device"],
        "read",
        &grant["tom"]["doc"]
    ));
    assert!(logged(
        &grant["shop"]["device"],
        "write",
        &grant["shop"]["doc"]
    ));

    // The summary: every step ok, the directory removed, and gone indeed.
    let (kind, summary) = lines.last().unwrap();
    assert_eq!(kind, "summary");
    assert_eq!(summary["ok"], true);
    assert!(
        summary["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["result"] == "ok"),
        "{summary}"
    );
    assert_eq!(summary["cleanup"], json!({"removed": dir}));
    assert!(!dir.exists(), "{dir:?} is still there");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

#[test]
fn with_keep_the_nodes_stay_up_for_the_other_commands_until_sigterm() {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = demo_command(tmp.path(), &["--keep"])
        .env_remove("MEMBRANE_DATA_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the membrane binary runs");
    // Kill it whatever happens, so a failing test leaves no process behind.
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let lines = lines_in_background(child.stdout.take().unwrap());
    let mut child = KillOnDrop(child);

    let mut seen = Vec::new();
    let ready = loop {
        let line = lines
            .recv_timeout(TIMEOUT)
            .unwrap_or_else(|e| panic!("no `ready` line ({e}); so far: {seen:#?}"));
        let value: Value = serde_json::from_str(&line).unwrap();
        if value["type"] == "ready" {
            break value["data"].clone();
        }
        seen.push(value);
    };
    let summary = seen.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["data"]["ok"], true, "{seen:#?}");
    let dir = PathBuf::from(seen[0]["data"]["dir"].as_str().unwrap());

    // The laptop answers `status` through its control socket, and lists the phone revoked.
    let nodes = ready["nodes"].as_array().unwrap();
    let laptop = nodes.iter().find(|n| n["name"] == "sarah-laptop").unwrap();
    let laptop_dir = PathBuf::from(laptop["data_dir"].as_str().unwrap());
    assert!(laptop_dir.starts_with(&dir));
    let status = membrane(&laptop_dir, &["--json", "status"]).data();
    assert_eq!(status["device"], laptop["device"]);
    let docs: Vec<&str> = status["documents"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["name"].as_str())
        .collect();
    for name in ["contacts", "calendar", "fitness", "inbox"] {
        assert!(docs.contains(&name), "{docs:?}");
    }
    let devices = membrane(&laptop_dir, &["--json", "devices"]).data();
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "phone" && d["revoked"] == true),
        "{devices}"
    );

    // SIGTERM stops the nodes cleanly and leaves their data.
    let sent = Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut child.0, TIMEOUT).expect("the demo stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
    let rest: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(&line).unwrap())
        .collect();
    assert!(rest.iter().any(|v| v["type"] == "stopped"), "{rest:?}");
    assert!(laptop_dir.join("store.redb").exists());
}
