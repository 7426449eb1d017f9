//! Helpers shared by the CLI's process tests.
//!
//! They run the real `membrane` binary as child processes: one-shot commands run to
//! completion with a deadline, daemons (`membrane run`) are killed when their guard drops
//! so a failing test leaves no process behind, and conditions are polled with a generous
//! deadline rather than slept on.
//!
//! Daemons log at `info`; set `MEMBRANE_TEST_LOG` to another `RUST_LOG` filter (e.g.
//! `debug,libp2p_swarm=info`) to investigate a failure: a failing test then prints each
//! daemon's whole log instead of its last 40 lines.
#![allow(dead_code, unreachable_pub)]

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::{net::UnixStream, process::ExitStatusExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{
        atomic::{AtomicUsize, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

/// How long any awaited condition may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);
/// How often a condition is checked.
pub const POLL: Duration = Duration::from_millis(50);
/// The only network these tests use.
pub const LISTEN: &str = "/ip4/127.0.0.1/tcp/0";

// ---------------------------------------------------------------------------------------
// One-shot CLI commands

/// What a finished command left behind.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// The last line on stdout, parsed as JSON.
    pub fn json(&self) -> Value {
        let line = self.stdout.lines().last().expect("a JSON line on stdout");
        serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// The `data` of the last JSON line, after checking the command succeeded.
    pub fn data(&self) -> Value {
        assert_eq!(
            self.code, 0,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        self.json()["data"].clone()
    }

    /// Checks the command failed (exit 3) with one line on stderr containing every one of
    /// `needles`, and nothing on stdout.
    pub fn fails_clearly(&self, needles: &[&str]) {
        assert_eq!(
            self.code, 3,
            "stdout: {}\nstderr: {}",
            self.stdout, self.stderr
        );
        assert_eq!(
            self.stdout, "",
            "nothing on stdout (stderr: {})",
            self.stderr
        );
        assert_eq!(
            self.stderr.lines().count(),
            1,
            "one clear line: {}",
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{needle:?} not in: {}",
                self.stderr
            );
        }
    }
}

/// Runs `membrane --data-dir DIR ARGS…` to completion (killed and failed after [`TIMEOUT`]).
pub fn membrane(data_dir: &Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
    command.arg("--data-dir").arg(data_dir).args(args);
    run_to_end(command, &format!("membrane {}", args.join(" ")))
}

/// Runs `command` without stdin, `MEMBRANE_DATA_DIR` or `RUST_LOG`, collecting its output;
/// kills it and fails the test if it has not exited after [`TIMEOUT`]. `what` names it in
/// failures.
pub fn run_to_end(mut command: Command, what: &str) -> Run {
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

/// Reads all of `pipe` on another thread (so a full pipe never blocks the child).
pub fn read_all_in_background(
    mut pipe: impl std::io::Read + Send + 'static,
) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).unwrap();
        text
    })
}

/// Sends each line of `pipe` to the returned receiver until EOF.
pub fn lines_in_background(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if send.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Waits for a child to exit, up to `limit`.
pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
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
pub fn wait_for(what: &str, mut check: impl FnMut() -> bool) -> Duration {
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
pub struct Daemon {
    child: Child,
    dir: PathBuf,
    log: PathBuf,
    lines: mpsc::Receiver<String>,
    /// The TCP listen address, with `/p2p/<peer id>`.
    pub addr: String,
    /// This device's DID.
    pub device: String,
}

impl Daemon {
    /// Starts `membrane --json run` on loopback without mDNS, dialing `peers`, and waits
    /// for its `running` line (by then the store has opened, passed its integrity check
    /// and the control socket is bound).
    pub fn start(dir: &Path, peers: &[&str]) -> Self {
        let log = dir.with_extension(format!("{}.log", LOGS.fetch_add(1, Ordering::Relaxed)));
        let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
        command.arg("--data-dir").arg(dir).args([
            "--json",
            "run",
            "--listen",
            LISTEN,
            "--no-mdns",
            "--request-poll",
            "1s",
        ]);
        for peer in peers {
            command.args(["--peer", peer]);
        }
        let mut child = command
            .env_remove("MEMBRANE_DATA_DIR")
            .env(
                "RUST_LOG",
                std::env::var("MEMBRANE_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("the membrane binary runs");
        let lines = lines_in_background(child.stdout.take().unwrap());
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

    /// The daemon's process id.
    pub fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Everything the daemon has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM: the daemon must print `stopped` and exit 0.
    pub fn stop(mut self) {
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
    pub fn kill9(mut self) {
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
            let keep = if std::env::var_os("MEMBRANE_TEST_LOG").is_some() {
                usize::MAX
            } else {
                40
            };
            let tail: Vec<&str> = log.lines().rev().take(keep).collect();
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
pub struct Control {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    next_id: u64,
}

impl Control {
    /// Connects to the daemon of `dir`; replies may take up to [`TIMEOUT`].
    pub fn connect(dir: &Path) -> std::io::Result<Self> {
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
    pub fn call(&mut self, method: &str, params: Value) -> std::io::Result<Value> {
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
pub fn try_ask(dir: &Path, method: &str, params: Value) -> Option<Value> {
    Control::connect(dir).ok()?.call(method, params).ok()
}

/// One call on a fresh connection, which must succeed.
pub fn ask(dir: &Path, method: &str, params: Value) -> Value {
    Control::connect(dir)
        .and_then(|mut control| control.call(method, params.clone()))
        .unwrap_or_else(|e| panic!("{method} {params} on {}: {e}", dir.display()))
}

/// A whole document as the daemon of `dir` has it; `None` on any failure (for polling).
pub fn whole(dir: &Path, doc: &str) -> Option<Value> {
    try_ask(dir, "doc.get", json!({"doc": doc, "path": "/"}))
}

/// A document's change hashes, sorted (equal sets of changes mean equal heads).
pub fn change_hashes(dir: &Path, doc: &str) -> Vec<String> {
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
pub fn in_sync_with(dir: &Path, doc: &str, peer: &str) -> bool {
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
