//! Every error a person can provoke by hand prints one line on stderr, `error: …`, that says
//! what to do, prints nothing on stdout, and exits with the documented code: 2 for a bad
//! command line, 3 for a command that could not be carried out.
//!
//! Real processes on temporary data dirs; daemons are killed when their guard drops.

mod common;

use std::{os::unix::net::UnixListener, path::Path, process::Command};

use common::{Daemon, LISTEN, Run, membrane, run_to_end};

/// The run failed with `code`, one `error: …` line on stderr containing every needle, and
/// nothing on stdout.
fn one_line(run: &Run, code: i32, needles: &[&str]) {
    assert_eq!(
        run.code, code,
        "stdout: {}\nstderr: {}",
        run.stdout, run.stderr
    );
    assert_eq!(run.stdout, "", "nothing on stdout (stderr: {})", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one clear line: {}",
        run.stderr
    );
    assert!(run.stderr.starts_with("error: "), "{}", run.stderr);
    for needle in needles {
        assert!(
            run.stderr.contains(needle),
            "{needle:?} not in: {}",
            run.stderr
        );
    }
}

fn initialized(root: &Path) -> std::path::PathBuf {
    let dir = root.join("node");
    membrane(&dir, &["--json", "init"]).data();
    dir
}

#[test]
fn a_wrong_argument_gets_one_line_naming_the_help_to_read_and_exit_2() {
    let temp = tempfile::tempdir().unwrap();
    let dir = initialized(temp.path());
    let cases: &[(&[&str], &[&str])] = &[
        // A misspelled subcommand: clap's suggestion survives on the one line.
        (
            &["stauts"],
            &["'stauts'", "'status'", "see `membrane --help`"],
        ),
        // An unknown flag.
        (
            &["status", "--verbose"],
            &["'--verbose'", "see `membrane status --help`"],
        ),
        // A value that does not parse.
        (
            &["run", "--listen", "not-an-address"],
            &["'not-an-address'", "--listen", "see `membrane run --help`"],
        ),
        // A missing argument.
        (&["approve"], &["<ID>", "see `membrane approve --help`"]),
        // Deeper subcommands, after a global option with a value.
        (
            &["--data-dir", "/nowhere", "doc", "get"],
            &["<DOC>", "see `membrane doc get --help`"],
        ),
        // A config key that does not exist: the known keys are listed.
        (
            &["config", "set", "colour", "blue"],
            &[
                "'colour'",
                "limits.max_connections",
                "see `membrane config set --help`",
            ],
        ),
        // A config value of the wrong kind, checked after clap.
        (
            &["config", "set", "limits.max_connections", "lots"],
            &["limits.max_connections", "whole number", "\"lots\""],
        ),
        (
            &["config", "set", "listen", "/ip4/1.2.3.4/tcp/notaport"],
            &["`listen`", "not a multiaddr"],
        ),
        (&["completions", "tcsh"], &["'tcsh'", "bash", "zsh", "fish"]),
    ];
    for (args, needles) in cases {
        let run = membrane(&dir, args);
        one_line(&run, 2, needles);
    }
    assert!(
        !std::fs::read_to_string(dir.join("config.toml"))
            .unwrap()
            .lines()
            .any(|line| line.starts_with("max_connections") || line.starts_with("listen")),
        "refused values are not written"
    );
}

#[test]
fn a_command_that_needs_the_daemon_says_how_to_start_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = initialized(temp.path());
    let shown = dir.display().to_string();
    for args in [
        &["status"][..],
        &["--json", "status"],
        &["doc", "list"],
        &["requests"],
        &["devices"],
    ] {
        one_line(
            &membrane(&dir, args),
            3,
            &[
                &format!("no membrane daemon is running on {shown}"),
                &format!("`membrane run --data-dir {shown}`"),
            ],
        );
    }
    // Without even an identity, starting a daemon would not help: it says to init.
    let empty = temp.path().join("empty");
    one_line(
        &membrane(&empty, &["status"]),
        3,
        &["no Membrane identity", "membrane init"],
    );
}

#[test]
fn a_stale_control_socket_is_named_and_the_fix_given() {
    let temp = tempfile::tempdir().unwrap();
    let dir = initialized(temp.path());
    // What a daemon killed by SIGKILL leaves: a socket file nobody listens on.
    let socket = dir.join("control.sock");
    drop(UnixListener::bind(&socket).unwrap());
    assert!(socket.exists());
    one_line(
        &membrane(&dir, &["status"]),
        3,
        &[
            "no membrane daemon is running",
            "stale control socket",
            "control.sock",
            "membrane run --data-dir",
        ],
    );
    // And the daemon that it asks for starts over it.
    let daemon = Daemon::start(&dir, &[]);
    assert_eq!(membrane(&dir, &["--json", "status"]).code, 0);
    daemon.stop();
}

#[test]
fn a_second_daemon_on_the_same_data_dir_says_so_and_exits_3() {
    let temp = tempfile::tempdir().unwrap();
    let dir = initialized(temp.path());
    let first = Daemon::start(&dir, &[]);
    let mut second = Command::new(env!("CARGO_BIN_EXE_membrane"));
    second
        .arg("--data-dir")
        .arg(&dir)
        .args(["run", "--listen", LISTEN, "--no-mdns"]);
    one_line(
        &run_to_end(second, "a second membrane run"),
        3,
        &["already running", "stop it first or use another --data-dir"],
    );
    // The first one still answers.
    assert_eq!(membrane(&dir, &["--json", "status"]).code, 0);
    first.stop();
}

#[test]
fn a_listen_address_in_use_gives_the_reason() {
    let temp = tempfile::tempdir().unwrap();
    let dir = initialized(temp.path());
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let address = format!("/ip4/127.0.0.1/tcp/{port}");
    let mut run = Command::new(env!("CARGO_BIN_EXE_membrane"));
    run.arg("--data-dir")
        .arg(&dir)
        .args(["run", "--no-mdns", "--listen", &address]);
    one_line(
        &run_to_end(run, "membrane run on a taken port"),
        3,
        &[&format!("cannot listen on {address}"), "in use"],
    );
}
