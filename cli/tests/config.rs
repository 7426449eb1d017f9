//! `<data dir>/config.toml` with real processes: `init` writes a commented default,
//! `config set` changes one key and keeps every comment, `config show` prints the effective
//! settings, and `membrane run` starts with them, its flags taking precedence.

mod common;

use std::{
    path::Path,
    process::{Child, Command, Stdio},
};

use common::{TIMEOUT, lines_in_background, membrane, read_all_in_background, wait_exit};
use serde_json::{Value, json};

/// The comment lines of a file, in order.
fn comments(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.trim_start().starts_with('#'))
        .collect()
}

#[test]
fn init_writes_a_commented_default_that_sets_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    let init = membrane(&dir, &["--json", "init"]).data();
    let file = dir.join("config.toml");
    assert_eq!(init["config"], json!(file));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .all(|l| l == "[limits]"),
        "every setting is commented out:\n{text}"
    );
    for key in [
        "listen",
        "peers",
        "announce",
        "mdns",
        "log_level",
        "max_connections",
        "clock_skew",
        "redial_interval",
        "request_poll",
        "compact_after_chunks",
    ] {
        assert!(
            text.contains(&format!("# {key} = ")),
            "{key} has a commented example"
        );
    }

    let shown = membrane(&dir, &["--json", "config", "show"]).data();
    assert_eq!(shown["file_exists"], true);
    assert_eq!(shown["from_file"], json!([]));
    let settings = &shown["settings"];
    assert_eq!(
        settings["listen"],
        json!(["/ip4/0.0.0.0/tcp/0", "/ip4/0.0.0.0/udp/0/quic-v1"])
    );
    assert_eq!(settings["announce"], Value::Null);
    assert_eq!(settings["mdns"], true);
    assert_eq!(settings["log_level"], "warn");
    assert_eq!(settings["limits"]["max_connections"], 128);
    assert_eq!(settings["limits"]["request_poll"], 30);

    // A joining device gets one too; an existing file is never overwritten.
    let phone = temp.path().join("phone");
    std::fs::create_dir_all(&phone).unwrap();
    std::fs::write(phone.join("config.toml"), "mdns = false\n").unwrap();
    let joined = membrane(&phone, &["--json", "init", "--join"]).data();
    assert_eq!(joined["config"], Value::Null, "kept, not written");
    assert_eq!(
        std::fs::read_to_string(phone.join("config.toml")).unwrap(),
        "mdns = false\n"
    );
}

#[test]
fn set_changes_one_key_keeps_the_comments_and_show_reports_it() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();
    let file = dir.join("config.toml");
    let before = std::fs::read_to_string(&file).unwrap();

    let set = |args: &[&str]| {
        let mut all = vec!["--json", "config", "set"];
        all.extend_from_slice(args);
        membrane(&dir, &all).data()
    };
    assert_eq!(set(&["mdns", "false"])["value"], "false");
    set(&["limits.max_connections", "64"]);
    set(&["limits.max_connections", "32"]);
    set(&[
        "listen",
        "/ip4/127.0.0.1/tcp/4001",
        "/ip4/127.0.0.1/udp/4001/quic-v1",
    ]);
    set(&["announce", "[]"]);
    set(&["limits.request_poll", "2m"]);
    set(&["log_level", "info,libp2p_swarm=debug"]);

    let after = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        comments(&after),
        comments(&before),
        "every comment kept:\n{after}"
    );
    // Each setting sits just below its commented example.
    let lines: Vec<&str> = after.lines().collect();
    let below = |example: &str| {
        let at = lines.iter().position(|l| l.starts_with(example)).unwrap();
        lines[at + 1]
    };
    assert_eq!(below("# mdns = "), "mdns = false");
    assert_eq!(below("# max_connections = "), "max_connections = 32");
    assert_eq!(below("# request_poll = "), "request_poll = \"2m\"");
    assert_eq!(
        after.matches("max_connections = 32").count(),
        1,
        "set twice, written once:\n{after}"
    );

    let shown = membrane(&dir, &["--json", "config", "show"]).data();
    let settings = &shown["settings"];
    assert_eq!(settings["mdns"], false);
    assert_eq!(
        settings["listen"],
        json!(["/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"])
    );
    assert_eq!(settings["announce"], json!([]));
    assert_eq!(settings["log_level"], "info,libp2p_swarm=debug");
    assert_eq!(settings["limits"]["max_connections"], 32);
    assert_eq!(settings["limits"]["request_poll"], 120);
    assert_eq!(
        settings["limits"]["redial_interval"], 3,
        "untouched: default"
    );
    let mut from_file: Vec<String> = serde_json::from_value(shown["from_file"].clone()).unwrap();
    from_file.sort();
    assert_eq!(
        from_file,
        [
            "announce",
            "limits.max_connections",
            "limits.request_poll",
            "listen",
            "log_level",
            "mdns"
        ]
    );

    // Human output: TOML, each line saying where its value comes from.
    let human = membrane(&dir, &["config", "show"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    let line_of = |key: &str| {
        human
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("{key} in:\n{}", human.stdout))
            .to_owned()
    };
    assert!(
        line_of("mdns").ends_with("# config.toml"),
        "{}",
        human.stdout
    );
    assert!(line_of("redial_interval").ends_with("# default"));
    assert!(line_of("request_poll").contains("\"2m\""));

    // Unset goes back to the default, and says when there was nothing to unset.
    let unset = membrane(&dir, &["--json", "config", "unset", "mdns"]).data();
    assert_eq!(unset["removed"], true);
    let again = membrane(&dir, &["config", "unset", "mdns"]);
    assert!(again.stdout.contains("was not set"), "{}", again.stdout);
    assert_eq!(
        membrane(&dir, &["--json", "config", "show"]).data()["settings"]["mdns"],
        true
    );
    assert_eq!(
        comments(&std::fs::read_to_string(&file).unwrap()),
        comments(&before)
    );
}

#[test]
fn a_hand_edited_file_with_a_mistake_is_refused_by_name() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();
    let file = dir.join("config.toml");
    for (text, needle) in [
        ("colour = \"blue\"\n", "unknown key `colour`"),
        (
            "[limits]\nmax_connections = \"many\"\n",
            "limits.max_connections",
        ),
        ("mdns = \n", "line 1"),
    ] {
        std::fs::write(&file, text).unwrap();
        for args in [&["config", "show"][..], &["run", "--no-mdns"]] {
            let run = membrane(&dir, args);
            assert_eq!(run.code, 3, "{args:?} on {text:?}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
            assert!(run.stderr.contains("config.toml"), "{}", run.stderr);
            assert!(run.stderr.contains(needle), "{needle:?}: {}", run.stderr);
        }
        // `config set` does not paper over it either.
        let set = membrane(&dir, &["config", "set", "mdns", "true"]);
        assert_eq!(set.code, 3, "{}", set.stderr);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            text,
            "left as it was"
        );
    }
}

/// `membrane --json run ARGS…` with `env`; returns the child and its `running` data.
fn start_run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (Child, Value) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
    command
        .arg("--data-dir")
        .arg(dir)
        .args(["--json", "run"])
        .args(args)
        .env_remove("MEMBRANE_DATA_DIR")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let lines = lines_in_background(child.stdout.take().unwrap());
    let first = lines.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
        let _ = child.kill();
        panic!("no running line");
    });
    let running: Value = serde_json::from_str(&first).unwrap();
    assert_eq!(running["type"], "running", "{first}");
    (child, running["data"].clone())
}

/// SIGTERM, then everything the daemon logged.
fn stop(mut child: Child) -> String {
    let stderr = read_all_in_background(child.stderr.take().unwrap());
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = wait_exit(&mut child, TIMEOUT).expect("stops on SIGTERM");
    assert_eq!(status.code(), Some(0));
    stderr.join().unwrap()
}

#[test]
fn run_starts_with_the_file_and_its_flags_win() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("node");
    membrane(&dir, &["--json", "init"]).data();
    for (key, value) in [
        ("listen", "/ip4/127.0.0.1/udp/0/quic-v1"),
        ("mdns", "false"),
        ("log_level", "info"),
    ] {
        membrane(&dir, &["--json", "config", "set", key, value]).data();
    }

    // No flags: the file's listen address and log level.
    let (child, running) = start_run(&dir, &[], &[]);
    let listen = running["listen"].as_array().unwrap();
    assert_eq!(listen.len(), 1, "{running}");
    assert!(
        listen[0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/udp/"),
        "{running}"
    );
    let log = stop(child);
    assert!(
        log.contains("INFO"),
        "log_level = info from the file:\n{log}"
    );
    assert!(log.contains("node started"), "{log}");

    // A flag replaces the file's value; RUST_LOG replaces log_level.
    let (child, running) = start_run(
        &dir,
        &["--listen", "/ip4/127.0.0.1/tcp/0"],
        &[("RUST_LOG", "error")],
    );
    let listen = running["listen"].as_array().unwrap();
    assert_eq!(listen.len(), 1, "{running}");
    assert!(
        listen[0]
            .as_str()
            .unwrap()
            .starts_with("/ip4/127.0.0.1/tcp/"),
        "{running}"
    );
    let log = stop(child);
    assert!(!log.contains("INFO"), "RUST_LOG=error wins:\n{log}");
}
