//! S5: live typing through an always-on home node. Sarah's `writers` devices each type
//! `rate` characters a second into one shared text for `seconds`, each offset from the
//! others by its share of the interval (people do not type in step); each connects only to
//! the home node, a real `membrane run` process that relays every keystroke. Measured: the
//! remote-apply latency of every keystroke at every other writer (from the moment its
//! change was made to the moment another writer's node applied it), the loopback TCP round
//! trip for reference, and the home node's CPU time.
//!
//! Each keystroke's change also records the writer's keystroke count under `/seq/<writer>`,
//! so a receiver knows which keystrokes a change it applied carried.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use automerge::{ObjType, ROOT, ReadDoc as _, transaction::Transactable as _};
use membrane_protocol::DocumentId;
use serde_json::json;

use crate::{
    footprint::{Reaped, home_with_devices, spawn_membrane},
    report::{emit, quantile},
    trace::quiet_config,
};

/// When each keystroke was made: `(writer, count) -> instant`.
type Sent = Arc<Mutex<HashMap<(usize, i64), Instant>>>;

fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(ticks * 10.0) // USER_HZ is 100 on Linux
}

async fn loopback_rtt_ms() -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        if let Ok((mut socket, _)) = listener.accept().await {
            let _ = socket.set_nodelay(true);
            let mut byte = [0u8; 64];
            while let Ok(n) = socket.read(&mut byte).await {
                if n == 0 || socket.write_all(&byte[..n]).await.is_err() {
                    break;
                }
            }
        }
    });
    let mut socket = tokio::net::TcpStream::connect(addr).await?;
    socket.set_nodelay(true)?;
    let mut rtts = Vec::new();
    let mut buffer = [0u8; 64];
    for _ in 0..500 {
        let start = Instant::now();
        socket.write_all(&buffer).await?;
        socket.read_exact(&mut buffer).await?;
        rtts.push(start.elapsed().as_secs_f64() * 1e3);
    }
    rtts.sort_by(f64::total_cmp);
    Ok(quantile(&rtts, 0.5))
}

pub(crate) async fn run(
    membrane: &Path,
    writers: usize,
    seconds: u64,
    rate: u64,
) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let (home, devices) = home_with_devices(base.path(), 0, writers).await?;
    let doc = home.create_doc(Some("notes".into()), None).await?;
    home.edit(
        doc,
        Box::new(|tx| {
            tx.put_object(ROOT, "text", ObjType::Text)
                .map_err(|e| e.to_string())?;
            tx.put_object(ROOT, "seq", ObjType::Map)
                .map_err(|e| e.to_string())?;
            Ok(())
        }),
    )
    .await?;
    home.shutdown().await;
    let (child, listen) = spawn_membrane(membrane, &base.path().join("home"))?;
    let child: Reaped = child;

    let mut nodes = Vec::new();
    for dir in &devices {
        nodes.push(
            membrane_node::Node::start(quiet_config(dir.path(), vec![listen.clone()])).await?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    for node in &nodes {
        while node.read(doc, |_| ()).await?.is_none() {
            anyhow::ensure!(Instant::now() < deadline, "a writer never got the document");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let rtt = loopback_rtt_ms().await?;

    let sent: Sent = Arc::default();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let cpu_before = cpu_ms(child.0.id())?;
    let start = Instant::now();
    let typing_ends = start + Duration::from_secs(seconds);
    // One keystroke per whole millisecond at most: the typists' interval is in ms.
    anyhow::ensure!(
        (1..=1_000).contains(&rate),
        "--rate must be 1 to 1000 a second"
    );
    let keystrokes = i64::try_from(seconds * rate)?;
    let mut tasks = tokio::task::JoinSet::new();
    for (me, node) in nodes.iter().enumerate() {
        // The receiver: on every change, note which keystrokes of others arrived.
        let (node_rx, sent_rx, latencies) = (node.clone(), sent.clone(), latencies.clone());
        let mut events = node.watch();
        let doc_text = doc.to_string();
        tasks.spawn(async move {
            let mut seen = vec![0i64; writers];
            let stop = typing_ends + Duration::from_secs(5);
            loop {
                let event = match tokio::time::timeout_at(stop.into(), events.recv()).await {
                    Ok(Ok(event)) => event,
                    // Events dropped while this task lagged lose nothing: the counts are
                    // read from the document at the next one.
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
                    Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) | Err(_) => break,
                };
                if event.doc != doc_text || event.by == "local" {
                    continue;
                }
                let arrived = Instant::now();
                let counts = latest_counts(&node_rx, doc, writers).await?;
                let sent = sent_rx.lock().expect("not poisoned");
                let mut out = latencies.lock().expect("not poisoned");
                for (writer, &count) in counts.iter().enumerate() {
                    if writer == me {
                        continue;
                    }
                    for n in seen[writer] + 1..=count {
                        if let Some(at) = sent.get(&(writer, n)) {
                            out.push(arrived.duration_since(*at).as_secs_f64() * 1e3);
                        }
                    }
                    seen[writer] = seen[writer].max(count);
                }
            }
            anyhow::Ok(())
        });
        // The typist. People do not type in step: each writer's keystrokes are offset by
        // its share of the interval (as the automerge-repo side staggers its writers), so
        // the home node meets a steady stream rather than every writer's keystroke at the
        // same instant.
        let (node_tx, sent_tx) = (node.clone(), sent.clone());
        tasks.spawn(async move {
            let period = Duration::from_millis(1_000 / rate.max(1));
            let offset = period * u32::try_from(me)? / u32::try_from(writers)?;
            let mut tick = tokio::time::interval_at((start + offset).into(), period);
            for n in 1..=keystrokes {
                tick.tick().await;
                let made = Instant::now();
                sent_tx.lock().expect("not poisoned").insert((me, n), made);
                node_tx
                    .edit(
                        doc,
                        Box::new(move |tx| {
                            let text = tx.get(ROOT, "text").ok().flatten().map(|(_, id)| id);
                            let seq = tx.get(ROOT, "seq").ok().flatten().map(|(_, id)| id);
                            let (Some(text), Some(seq)) = (text, seq) else {
                                return Err("no text".into());
                            };
                            let end = tx.length(&text);
                            tx.splice_text(&text, end, 0, "x")
                                .map_err(|e| e.to_string())?;
                            tx.put(&seq, me.to_string(), n).map_err(|e| e.to_string())?;
                            Ok(())
                        }),
                    )
                    .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let cpu = cpu_ms(child.0.id())? - cpu_before;
    let wall = start.elapsed().as_secs_f64() * 1e3;
    // Frames and bytes the writers sent and received, setup included.
    let (mut frames_sent, mut bytes_sent, mut frames_received, mut bytes_received) = (0, 0, 0, 0);
    for node in &nodes {
        let (fs, bs, fr, br) = node.traffic().snapshot();
        (frames_sent, bytes_sent) = (frames_sent + fs, bytes_sent + bs);
        (frames_received, bytes_received) = (frames_received + fr, bytes_received + br);
    }
    for node in &nodes {
        node.shutdown().await;
    }
    drop(child);
    let mut latencies = Arc::try_unwrap(latencies)
        .map_err(|_| anyhow::anyhow!("latencies still shared"))?
        .into_inner()
        .expect("not poisoned");
    latencies.sort_by(f64::total_cmp);
    let expected = writers.saturating_sub(1) as u64 * writers as u64 * seconds * rate;
    emit(
        "S5",
        "membrane",
        &format!("writers-{writers}"),
        wall,
        json!({
            "writers": writers,
            "p50_ms": quantile(&latencies, 0.5),
            "p99_ms": quantile(&latencies, 0.99),
            "samples": latencies.len(),
            "expected_samples": expected,
            "loopback_rtt_ms": rtt,
            "relay_cpu_ms": cpu,
            "writers_frames_sent": frames_sent,
            "writers_bytes_sent": bytes_sent,
            "writers_frames_received": frames_received,
            "writers_bytes_received": bytes_received,
        }),
    );
    Ok(())
}

async fn latest_counts(
    node: &membrane_node::NodeHandle,
    doc: DocumentId,
    writers: usize,
) -> anyhow::Result<Vec<i64>> {
    let counts = node
        .read(doc, move |d| {
            let mut counts = vec![0i64; writers];
            if let Ok(Some((_, seq))) = d.get(ROOT, "seq") {
                for (writer, count) in counts.iter_mut().enumerate() {
                    if let Ok(Some((value, _))) = d.get(&seq, writer.to_string()) {
                        *count = value.as_i64().unwrap_or(0);
                    }
                }
            }
            counts
        })
        .await?
        .unwrap_or_default();
    Ok(counts)
}
