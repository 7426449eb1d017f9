//! Real `membrane run` daemons as child processes on loopback: two linked devices
//! converging after offline edits, a restarted daemon catching up, acknowledged writes
//! surviving `kill -9`, and the CLI's messages when no daemon (or a second one) runs.
//!
//! Every daemon is killed when its guard drops, so a failing test leaves no process behind.
//! Nothing sleeps and hopes: conditions are polled with a generous deadline.

mod common;

use std::{
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use common::{
    Control, Daemon, LISTEN, Run, TIMEOUT, ask, change_hashes, in_sync_with, membrane, run_to_end,
    try_ask, wait_for, whole,
};
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------
// Setup

/// A person with a laptop (holding the root key) and a phone linked to it, both
/// initialized under `root`; not running.
fn linked_pair(root: &Path) -> (PathBuf, PathBuf) {
    let (laptop, phone) = (root.join("laptop"), root.join("phone"));
    let person = membrane(&laptop, &["--json", "init"]).data()["root"].clone();
    membrane(&phone, &["--json", "init", "--join"]).data();
    let phone_did = membrane(&phone, &["--json", "id"]).data()["device"]
        .as_str()
        .unwrap()
        .to_owned();
    let link = membrane(&laptop, &["device", "link", &phone_did]);
    assert_eq!(link.code, 0, "{}", link.stderr);
    let code = link.stdout.trim();
    assert_eq!(
        code.lines().count(),
        1,
        "one code on stdout: {}",
        link.stdout
    );
    let accepted = membrane(&phone, &["--json", "device", "accept", code]).data();
    assert_eq!(
        accepted["root"], person,
        "the phone now belongs to the laptop's person"
    );
    (laptop, phone)
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn two_daemons_converge_after_offline_edits() {
    let started = Instant::now();
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir) = linked_pair(temp.path());
    let laptop = Daemon::start(&laptop_dir, &[]);
    let phone = Daemon::start(&phone_dir, &[&laptop.addr]);

    // Created on the laptop through the CLI; it reaches the phone, name included.
    let content = temp.path().join("notes.json");
    let initial = json!({"title": "shopping", "items": ["milk", "eggs"]});
    std::fs::write(&content, initial.to_string()).unwrap();
    let created = membrane(
        &laptop_dir,
        &[
            "--json",
            "doc",
            "new",
            "--name",
            "notes",
            "--content",
            content.to_str().unwrap(),
        ],
    )
    .data();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("automerge:"), "{created}");
    wait_for("the phone to receive the new document", || {
        whole(&phone_dir, &id).as_ref() == Some(&initial)
    });
    wait_for("the phone to know the document's name", || {
        try_ask(
            &phone_dir,
            "doc.get",
            json!({"doc": "notes", "path": "/title"}),
        ) == Some(json!("shopping"))
    });
    assert_eq!(
        membrane(&phone_dir, &["--json", "doc", "get", "notes", "/items/1"]).data(),
        "eggs"
    );

    // The phone goes offline; the laptop edits.
    phone.stop();
    let set = membrane(
        &laptop_dir,
        &[
            "doc",
            "set",
            &id,
            "/laptop",
            "edited on the laptop while the phone was off",
        ],
    );
    assert_eq!(
        (set.code, set.stdout.trim()),
        (0, "saved"),
        "{}",
        set.stderr
    );

    // The phone comes back without --peer (so stays apart) and edits the same document.
    let phone = Daemon::start(&phone_dir, &[]);
    let before = whole(&phone_dir, &id).unwrap();
    assert_eq!(
        before, initial,
        "the phone's edit is concurrent with the laptop's"
    );
    let set = membrane(
        &phone_dir,
        &["doc", "set", &id, "/phone", r#"{"offline": true}"#],
    );
    assert_eq!(
        (set.code, set.stdout.trim()),
        (0, "saved"),
        "{}",
        set.stderr
    );
    phone.stop();

    // Back with --peer: both edits end up on both devices.
    let phone = Daemon::start(&phone_dir, &[&laptop.addr]);
    let has_both = |dir: &Path| {
        whole(dir, &id).is_some_and(|doc| doc.get("laptop").is_some() && doc.get("phone").is_some())
    };
    let took = wait_for("both devices to hold both edits", || {
        has_both(&laptop_dir) && has_both(&phone_dir)
    });
    eprintln!("converged {took:?} after the phone came back");
    let on_laptop = membrane(&laptop_dir, &["--json", "doc", "get", &id]).data();
    let on_phone = membrane(&phone_dir, &["--json", "doc", "get", &id]).data();
    assert_eq!(on_laptop, on_phone);
    assert_eq!(
        on_laptop,
        json!({
            "title": "shopping",
            "items": ["milk", "eggs"],
            "laptop": "edited on the laptop while the phone was off",
            "phone": {"offline": true},
        })
    );
    let hashes = change_hashes(&laptop_dir, &id);
    assert_eq!(
        hashes,
        change_hashes(&phone_dir, &id),
        "the same changes, so the same heads"
    );
    assert!(hashes.len() >= 3, "creation and two edits: {hashes:?}");
    let heads = |dir: &Path| {
        ask(dir, "doc.list", json!({}))
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == id.as_str())
            .map(|d| d["heads"].clone())
    };
    assert_eq!(
        heads(&laptop_dir),
        Some(json!(2)),
        "two concurrent edits: two heads"
    );
    assert_eq!(heads(&phone_dir), heads(&laptop_dir));
    wait_for(
        "each side to report the document in sync with the other",
        || {
            in_sync_with(&laptop_dir, &id, &phone.device)
                && in_sync_with(&phone_dir, &id, &laptop.device)
        },
    );
    let status = membrane(&laptop_dir, &["--json", "status"]).data();
    assert_eq!(status["peers"], json!([phone.device]), "{status}");

    // A thousand documents created over one connection all reach the phone, named.
    let mut control = Control::connect(&laptop_dir).unwrap();
    let bulk_started = Instant::now();
    let content_of = |i: usize| json!({"n": i, "label": format!("document {i}")});
    let mut per_hundred = Vec::new();
    let ids: Vec<String> = (0..1000)
        .map(|i| {
            if i % 100 == 0 {
                per_hundred.push(bulk_started.elapsed());
            }
            let created = control
                .call(
                    "doc.new",
                    json!({"name": format!("bulk-{i}"), "content": content_of(i)}),
                )
                .unwrap();
            created["id"].as_str().unwrap().to_owned()
        })
        .collect();
    let created_in = bulk_started.elapsed();
    per_hundred.push(created_in);
    let per_hundred: Vec<String> = per_hundred
        .windows(2)
        .map(|w| format!("{}ms", (w[1] - w[0]).as_millis()))
        .collect();
    let arrived = wait_for("the 1,000 documents, named, on the phone", || {
        let Some(list) = try_ask(&phone_dir, "doc.list", json!({})) else {
            return false;
        };
        let names: std::collections::HashMap<&str, &Value> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|d| (d["id"].as_str().unwrap(), &d["name"]))
            .collect();
        names.len() == 1001
            && ids.iter().enumerate().all(|(i, id)| {
                names
                    .get(id.as_str())
                    .is_some_and(|n| **n == format!("bulk-{i}"))
            })
    });
    eprintln!(
        "1,000 documents created in {created_in:?} (per hundred: {}); all on the phone {arrived:?} later",
        per_hundred.join(" ")
    );
    let mut phone_control = Control::connect(&phone_dir).unwrap();
    for i in [0, 1, 2, 333, 500, 998, 999] {
        let by_id = phone_control
            .call("doc.get", json!({"doc": ids[i], "path": "/"}))
            .unwrap();
        assert_eq!(by_id, content_of(i), "document {i} by id");
        let by_name = phone_control
            .call(
                "doc.get",
                json!({"doc": format!("bulk-{i}"), "path": "/label"}),
            )
            .unwrap();
        assert_eq!(by_name, format!("document {i}"), "document {i} by name");
    }
    assert_eq!(
        ask(&laptop_dir, "doc.list", json!({}))
            .as_array()
            .unwrap()
            .len(),
        1001
    );

    phone.stop();
    laptop.stop();
    eprintln!(
        "two_daemons_converge_after_offline_edits: {:?}",
        started.elapsed()
    );
}

#[test]
fn a_restarted_daemon_catches_up() {
    let started = Instant::now();
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir) = linked_pair(temp.path());
    let laptop = Daemon::start(&laptop_dir, &[]);
    let phone = Daemon::start(&phone_dir, &[&laptop.addr]);

    let id = ask(
        &laptop_dir,
        "doc.new",
        json!({"name": "calendar", "content": {"monday": "work"}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_for("the phone to receive the calendar", || {
        whole(&phone_dir, &id) == Some(json!({"monday": "work"}))
    });

    // The laptop stops; the phone edits and creates a document meanwhile.
    laptop.stop();
    ask(
        &phone_dir,
        "doc.set",
        json!({"doc": id, "path": "/tuesday", "value": "tennis at 6"}),
    );
    let made_on_phone = ask(
        &phone_dir,
        "doc.new",
        json!({"name": "groceries", "content": {"list": ["bread"]}}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Restarted with --peer (its old port is gone, so the phone's redials miss), the
    // laptop catches up by itself.
    let laptop = Daemon::start(&laptop_dir, &[&phone.addr]);
    let took = wait_for("the restarted laptop to catch up", || {
        whole(&laptop_dir, &id) == Some(json!({"monday": "work", "tuesday": "tennis at 6"}))
            && try_ask(
                &laptop_dir,
                "doc.get",
                json!({"doc": "groceries", "path": "/list/0"}),
            ) == Some(json!("bread"))
    });
    eprintln!("the restarted laptop caught up in {took:?}");
    assert_eq!(
        change_hashes(&laptop_dir, &id),
        change_hashes(&phone_dir, &id)
    );
    assert_eq!(
        whole(&laptop_dir, &made_on_phone),
        whole(&phone_dir, &made_on_phone)
    );
    wait_for(
        "the laptop to report both documents in sync with the phone",
        || {
            in_sync_with(&laptop_dir, &id, &phone.device)
                && in_sync_with(&laptop_dir, &made_on_phone, &phone.device)
        },
    );

    laptop.stop();
    phone.stop();
    eprintln!("a_restarted_daemon_catches_up: {:?}", started.elapsed());
}

/// Sequential `doc.set`s of `/k{i}` from `first` on, over one connection, until the
/// connection breaks, counting acknowledgements in `progress`. Returns the acknowledged
/// writes and the next unused index.
fn write_burst(
    dir: PathBuf,
    doc: String,
    first: u64,
    connected: mpsc::Sender<()>,
    progress: Arc<AtomicUsize>,
) -> (Vec<(String, Value)>, u64) {
    let mut acknowledged = Vec::new();
    let Ok(mut control) = Control::connect(&dir) else {
        let _ = connected.send(());
        return (acknowledged, first);
    };
    let _ = connected.send(());
    let mut next = first;
    loop {
        let key = format!("k{next}");
        let value = json!({"i": next, "text": format!("value {next}")});
        next += 1;
        let reply = control.call(
            "doc.set",
            json!({"doc": doc, "path": format!("/{key}"), "value": value}),
        );
        match reply {
            Ok(ok) => {
                assert!(ok["heads"].is_array(), "{ok}");
                acknowledged.push((key, value));
                progress.fetch_add(1, Ordering::SeqCst);
            }
            Err(_) => return (acknowledged, next),
        }
    }
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    const ITERATIONS: u64 = 24;
    // The store loads a document by applying each chunk since its last compaction in turn,
    // so restarts slow down as the document grows; capping each burst keeps the test's
    // length independent of how fast this machine commits.
    const MOST_ACKS_PER_BURST: usize = 50;
    let started = Instant::now();
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();

    let mut doc = String::new();
    let mut acknowledged: Vec<(String, Value)> = Vec::new();
    let mut next = 0;
    let mut startup = Duration::ZERO;
    let mut capped = 0;
    let check = |doc: &str, acknowledged: &[(String, Value)]| {
        let content = ask(&dir, "doc.get", json!({"doc": doc, "path": "/"}));
        for (key, value) in acknowledged {
            assert_eq!(
                content.get(key),
                Some(value),
                "acknowledged write /{key} lost after kill -9"
            );
        }
        let status = ask(&dir, "status", json!({}));
        assert_eq!(status["quarantined"], json!([]), "{status}");
    };
    for iteration in 0..ITERATIONS {
        // Starting at all means the store opened and passed its integrity check.
        let starting = Instant::now();
        let daemon = Daemon::start(&dir, &[]);
        startup += starting.elapsed();
        if iteration == 0 {
            doc = ask(&dir, "doc.new", json!({"name": "crash"}))["id"]
                .as_str()
                .unwrap()
                .to_owned();
        } else {
            check(&doc, &acknowledged);
        }
        let (connected, ready) = mpsc::channel();
        let progress = Arc::new(AtomicUsize::new(0));
        let burst = {
            let (dir, doc, progress) = (dir.clone(), doc.clone(), Arc::clone(&progress));
            thread::spawn(move || write_burst(dir, doc, next, connected, progress))
        };
        ready.recv_timeout(TIMEOUT).unwrap();
        // The kill lands at a different point of the burst each time: after 20 ms … 400 ms,
        // or as soon as the burst has MOST_ACKS_PER_BURST acknowledgements, while the
        // next write is in flight.
        let delay = Duration::from_millis(20 + 380 * iteration / (ITERATIONS - 1));
        let burst_started = Instant::now();
        while burst_started.elapsed() < delay
            && progress.load(Ordering::SeqCst) < MOST_ACKS_PER_BURST
        {
            thread::sleep(Duration::from_millis(1));
        }
        if progress.load(Ordering::SeqCst) >= MOST_ACKS_PER_BURST {
            capped += 1;
        }
        daemon.kill9();
        let (acked, after) = burst.join().unwrap();
        next = after;
        acknowledged.extend(acked);
    }
    let daemon = Daemon::start(&dir, &[]);
    check(&doc, &acknowledged);
    assert_eq!(
        membrane(&dir, &["--json", "doc", "get", "crash", "/k0/i"]).data(),
        json!(0),
        "the CLI reads the same store"
    );
    daemon.stop();
    assert!(
        acknowledged.len() as u64 > ITERATIONS,
        "the bursts wrote something: {} acknowledged",
        acknowledged.len()
    );
    eprintln!(
        "acknowledged_writes_survive_kill_9: {ITERATIONS} kill -9 points, {} acknowledged writes checked \
         ({} attempted; {capped} kills at the acknowledgement cap, the rest on time), {:?} \
         (restarts: {:?} on average)",
        acknowledged.len(),
        next,
        started.elapsed(),
        startup / u32::try_from(ITERATIONS).unwrap()
    );
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();
    let first = Daemon::start(&dir, &[]);
    let doc = ask(&dir, "doc.new", json!({"name": "kept"}))["id"].clone();

    let mut second = Command::new(env!("CARGO_BIN_EXE_membrane"));
    second
        .arg("--data-dir")
        .arg(&dir)
        .args(["run", "--listen", LISTEN, "--no-mdns"]);
    let refused = run_to_end(second, "a second membrane run");
    assert_eq!(refused.code, 3, "{}{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("already running"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        refused.stderr.lines().count(),
        1,
        "one clear line: {}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "", "no `running` line");

    // The first daemon is untouched: its socket still answers.
    let list = ask(&dir, "doc.list", json!({}));
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], doc);
    first.stop();
    assert!(
        !dir.join("control.sock").exists(),
        "a clean stop removes the control socket"
    );
}

#[test]
fn cli_without_daemon_says_how_to_start_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();
    let one_clear_line = |run: &Run, stale: bool| {
        assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
        assert_eq!(run.stdout, "");
        assert_eq!(
            run.stderr.lines().count(),
            1,
            "one clear line: {}",
            run.stderr
        );
        assert!(run.stderr.contains("membrane run"), "{}", run.stderr);
        assert_eq!(run.stderr.contains("stale"), stale, "{}", run.stderr);
    };

    // Never started.
    one_clear_line(&membrane(&dir, &["doc", "list"]), false);
    one_clear_line(&membrane(&dir, &["--json", "status"]), false);

    // A socket file nobody listens on.
    let socket = dir.join("control.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    one_clear_line(&membrane(&dir, &["doc", "list"]), true);
    std::fs::remove_file(&socket).unwrap();

    // The real way to get one: a daemon killed with SIGKILL. A new daemon starts over it.
    Daemon::start(&dir, &[]).kill9();
    assert!(
        socket.exists(),
        "nothing removed the socket of the killed daemon"
    );
    one_clear_line(&membrane(&dir, &["doc", "list"]), true);
    let daemon = Daemon::start(&dir, &[]);
    let listed = membrane(&dir, &["--json", "doc", "list"]);
    assert_eq!(listed.data(), json!([]));
    daemon.stop();
    one_clear_line(&membrane(&dir, &["doc", "list"]), false);
}
