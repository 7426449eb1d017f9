//! Real `membrane run` daemons as child processes on loopback: two linked devices
//! converging after offline edits, a restarted daemon catching up, acknowledged writes
//! surviving `kill -9`, and the CLI's messages when no daemon (or a second one) runs.
//!
//! Every daemon is killed when its guard drops, so a failing test leaves no process behind.
//! Nothing sleeps and hopes: conditions are polled with a generous deadline.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{
        net::{UnixListener, UnixStream},
        process::ExitStatusExt as _,
    },
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// How long any awaited condition may take before the test fails.
const TIMEOUT: Duration = Duration::from_secs(60);
/// How often a condition is checked.
const POLL: Duration = Duration::from_millis(50);
/// The only network these tests use.
const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

// ---------------------------------------------------------------------------------------
// One-shot CLI commands

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        let line = self.stdout.lines().last().expect("a JSON line on stdout");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The `data` of the last JSON line, after checking the command succeeded.
    fn data(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json()["data"].clone()
    }
}

/// Runs `membrane --data-dir DIR ARGS…` to completion (killed and failed after [`TIMEOUT`]).
fn membrane(data_dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
    command.arg("--data-dir").arg(data_dir).args(args);
    run_to_end(command, &format!("membrane {}", args.join(" ")))
}

fn run_to_end(mut command: Command, what: &str) -> Run {
    let mut child = command
        .env_remove("MEMBRANE_DATA_DIR")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the membrane binary runs");
    let stdout = read_all_in_background(child.stdout.take().unwrap());
    let stderr = read_all_in_background(child.stderr.take().unwrap());
    let status = match wait_exit(&mut child, TIMEOUT) {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("`{what}` did not finish within {TIMEOUT:?}");
        }
    };
    Run {
        code: status
            .code()
            .unwrap_or_else(|| panic!("`{what}` was killed: {status:?}")),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn read_all_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    })
}

/// Waits for a child to exit, up to `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` until it holds; fails the test after [`TIMEOUT`]. Returns the time taken.
fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        thread::sleep(POLL);
    }
    started.elapsed()
}

// ---------------------------------------------------------------------------------------
// Daemons

static LOGS: AtomicUsize = AtomicUsize::new(0);

/// A running `membrane run`; killed (SIGKILL) when dropped unless already stopped.
struct Daemon {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
    /// The TCP listen address, with `/p2p/<peer id>`.
    addr: String,
    /// This device's DID.
    device: String,
}

impl Daemon {
    /// Starts `membrane --json run` on loopback without mDNS, dialing `peers`, and waits
    /// for its `running` line (by then the store has opened, passed its integrity check
    /// and the control socket is bound).
    fn start(dir: &Path, peers: &[&str]) -> Self {
        let log = dir.with_extension(format!("{}.log", LOGS.fetch_add(1, Ordering::Relaxed)));
        let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
        command
            .arg("--data-dir")
            .arg(dir)
            .args(["--json", "run", "--listen", LISTEN, "--no-mdns"]);
        for peer in peers {
            command.args(["--peer", peer]);
        }
        let mut child = command
            .env_remove("MEMBRANE_DATA_DIR")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the membrane binary runs");
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        let mut daemon = Self {
            child,
            dir: dir.to_owned(),
            log,
            lines,
            addr: String::new(),
            device: String::new(),
        };
        let first = match daemon.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(error) => {
                let status = wait_exit(&mut daemon.child, Duration::ZERO);
                panic!(
                    "the daemon on {} did not report `running` ({error}; exit {status:?}); its log:\n{}",
                    dir.display(),
                    daemon.log_text()
                );
            }
        };
        let running: Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        assert_eq!(running["type"], "running", "{first}");
        let listen = running["data"]["listen"].as_array().unwrap();
        assert_eq!(listen.len(), 1, "one listen address asked for: {first}");
        daemon.addr = listen[0].as_str().unwrap().to_owned();
        assert!(
            daemon.addr.starts_with("/ip4/127.0.0.1/tcp/") && daemon.addr.contains("/p2p/12D3KooW"),
            "{first}"
        );
        daemon.device = running["data"]["device"].as_str().unwrap().to_owned();
        daemon
    }

    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the daemon must print `stopped` and exit 0.
    fn stop(mut self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {}", self.pid());
        let status = wait_exit(&mut self.child, TIMEOUT).unwrap_or_else(|| {
            panic!(
                "the daemon on {} ignored SIGTERM for {TIMEOUT:?}",
                self.dir.display()
            )
        });
        assert_eq!(
            status.code(),
            Some(0),
            "{status:?}; log:\n{}",
            self.log_text()
        );
        // The stdout reader ends at EOF, which follows the exit.
        let rest: Vec<String> = self.lines.iter().collect();
        assert!(
            rest.iter()
                .any(|line| serde_json::from_str::<Value>(line)
                    .is_ok_and(|v| v["type"] == "stopped")),
            "no `stopped` line: {rest:?}"
        );
    }

    /// SIGKILL: no chance to clean up.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "--- last lines of the daemon log for {} ---",
                self.dir.display()
            );
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The control socket, spoken directly

/// One connection to `<dir>/control.sock`: one JSON request per line, one reply per line.
struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Control {
    fn connect(dir: &Path) -> std::io::Result<Self> {
        let stream = UnixStream::connect(dir.join("control.sock"))?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        Ok(Self {
            writer: stream.try_clone()?,
            reader: BufReader::new(stream),
            next_id: 1,
        })
    }

    /// Calls a method: `Ok(ok)` for an `ok` reply; an error for an `error` reply or a lost
    /// connection.
    fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        writeln!(
            self.writer,
            "{}",
            json!({"id": id, "method": method, "params": params})
        )?;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let reply: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
        assert_eq!(reply["id"], id, "replies come in order: {line}");
        match reply.get("ok") {
            Some(ok) => Ok(ok.clone()),
            None => Err(std::io::Error::other(format!("daemon: {}", reply["error"]))),
        }
    }
}

/// One call on a fresh connection; `None` on any failure (for polling).
fn try_ask(dir: &Path, method: &str, params: Value) -> Option<Value> {
    Control::connect(dir).ok()?.call(method, params).ok()
}

/// One call on a fresh connection, which must succeed.
fn ask(dir: &Path, method: &str, params: Value) -> Value {
    Control::connect(dir)
        .and_then(|mut control| control.call(method, params.clone()))
        .unwrap_or_else(|e| panic!("{method} {params} on {}: {e}", dir.display()))
}

fn whole(dir: &Path, doc: &str) -> Option<Value> {
    try_ask(dir, "doc.get", json!({"doc": doc, "path": "/"}))
}

/// A document's change hashes, sorted (equal sets of changes mean equal heads).
fn change_hashes(dir: &Path, doc: &str) -> Vec<String> {
    let history = membrane(dir, &["--json", "doc", "history", doc]).data();
    let mut hashes: Vec<String> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|change| change["hash"].as_str().unwrap().to_owned())
        .collect();
    hashes.sort();
    hashes
}

/// Whether `dir`'s daemon reports `doc` in sync with the connected device `peer`.
fn in_sync_with(dir: &Path, doc: &str, peer: &str) -> bool {
    try_ask(dir, "status", json!({})).is_some_and(|status| {
        status["documents"].as_array().unwrap().iter().any(|d| {
            d["id"] == doc
                && d["in_sync_with"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p == peer)
        })
    })
}

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
