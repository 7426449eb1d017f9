//! S9: the footprint of a real `membrane run` process holding many documents with three of
//! the person's devices connected, after idling; and the size of the stripped binary.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use membrane_node::{
    DataDir, DeviceIdentity, Node,
    pairing::{InviteEvent, join},
};
use serde_json::{Value, json};

use crate::{
    report::emit,
    trace::{fresh_node, quiet_config},
};

/// Kills the child when dropped, so a failed run leaves no process behind.
pub(crate) struct Reaped(pub(crate) std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn stripped_size(binary: &Path) -> anyhow::Result<u64> {
    let copy = tempfile::NamedTempFile::new()?;
    std::fs::copy(binary, copy.path())?;
    let status = Command::new("strip").arg(copy.path()).status();
    anyhow::ensure!(status.is_ok_and(|s| s.success()), "strip failed");
    Ok(std::fs::metadata(copy.path())?.len())
}

/// A home node, in-process (the caller stops it), holding `docs`
/// documents, and `devices` devices paired with it (their data dirs, not started).
pub(crate) async fn home_with_devices(
    base: &Path,
    docs: usize,
    devices: usize,
) -> anyhow::Result<(membrane_node::NodeHandle, Vec<DataDir>)> {
    let home = fresh_node(base, "home").await?;
    for i in 0..docs {
        home.create_doc(None, Some(json!({"title": format!("note {i}"), "n": i})))
            .await?;
    }
    let mut dirs = Vec::new();
    for n in 0..devices {
        let name = format!("device-{n}");
        let (ticket, mut events) = home.invite(600, Some(name.clone())).await?;
        let dir = DataDir::new(base.join(&name));
        DeviceIdentity::init_joining(&dir)?;
        join(&dir, &ticket, None).await?;
        anyhow::ensure!(matches!(
            events.recv().await,
            Some(InviteEvent::Joined { .. })
        ));
        dirs.push(dir);
    }
    Ok((home, dirs))
}

/// Starts `membrane run` over `dir` on loopback; returns the process and its address.
pub(crate) fn spawn_membrane(
    membrane: &Path,
    dir: &Path,
) -> anyhow::Result<(Reaped, membrane_node::Multiaddr)> {
    let mut child = Command::new(membrane)
        .arg("--json")
        .arg("--data-dir")
        .arg(dir)
        .args(["run", "--no-mdns", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot run {}", membrane.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let child = Reaped(child);
    let mut lines = BufReader::new(stdout).lines();
    let listen = loop {
        let line = lines.next().context("membrane run exited")??;
        let Ok(value) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if value["type"] == "running" {
            break value["data"]["listen"][0]
                .as_str()
                .context("no listen address")?
                .to_owned();
        }
    };
    Ok((child, listen.parse()?))
}

pub(crate) async fn idle(membrane: &Path, docs: usize, idle_s: u64) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let (home, devices) = home_with_devices(base.path(), docs, 3).await?;
    home.shutdown().await;
    let (child, peer) = spawn_membrane(membrane, &base.path().join("home"))?;

    let mut peers = Vec::new();
    for dir in &devices {
        peers.push(Node::start(quiet_config(dir.path(), vec![peer.clone()])).await?);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for node in &peers {
        while node.list().await?.len() < docs {
            anyhow::ensure!(Instant::now() < deadline, "the devices did not sync");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(idle_s)).await;
    for node in &peers {
        anyhow::ensure!(
            !node.status().await?.peers.is_empty(),
            "a device lost its connection while idling"
        );
    }
    let rss = rss_kib(child.0.id())?;
    for node in &peers {
        node.shutdown().await;
    }
    drop(child);
    emit(
        "S9",
        "membrane",
        "idle-3-peers",
        0.0,
        json!({
            "rss_kib": rss,
            "docs": docs,
            "idle_s": idle_s,
            "binary_bytes": stripped_size(membrane)?,
        }),
    );
    Ok(())
}
