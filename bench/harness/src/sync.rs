//! S3 (first sync of a large document), S4 (reconnect with many small documents) and S10
//! (cold start over them), between two devices of one person on loopback.
//!
//! Wire bytes are the sync frames' bytes in both directions as the syncing device counts
//! them (`Traffic`), the same layer the automerge-repo peer counts (WebSocket message
//! payloads). `messages_up` counts the frames the syncing device sent.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use membrane_node::{
    DataDir, DeviceIdentity, Node, NodeHandle,
    pairing::{InviteEvent, join},
};
use membrane_protocol::DocumentId;
use serde_json::json;

use crate::{
    report::{emit, ms_since},
    trace::{Trace, fresh_node, quiet_config, replay_into},
};

const PATIENCE: Duration = Duration::from_secs(600);

/// Pairs a new device `name` with `first`; returns its data dir (not started).
async fn pair(first: &NodeHandle, base: &Path, name: &str) -> anyhow::Result<DataDir> {
    let (ticket, mut events) = first.invite(600, Some(name.into())).await?;
    let dir = DataDir::new(base.join(name));
    DeviceIdentity::init_joining(&dir)?;
    join(&dir, &ticket, None).await?;
    match events.recv().await {
        Some(InviteEvent::Joined { .. }) => Ok(dir),
        other => anyhow::bail!("pairing ended with {other:?}"),
    }
}

async fn heads(node: &NodeHandle, doc: DocumentId) -> anyhow::Result<Option<Vec<String>>> {
    Ok(node
        .read(doc, |d| {
            let mut heads: Vec<String> = d.get_heads().iter().map(ToString::to_string).collect();
            heads.sort();
            heads
        })
        .await?)
}

async fn until<F, Fut>(what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + PATIENCE;
    while !check().await? {
        anyhow::ensure!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

/// `(bytes both ways, frames sent, frames received)` of a node so far.
fn traffic(node: &NodeHandle) -> (u64, u64, u64) {
    let (frames_sent, bytes_sent, frames_received, bytes_received) = node.traffic().snapshot();
    (bytes_sent + bytes_received, frames_sent, frames_received)
}

/// Waits until a node's traffic has not changed for `quiet`; returns it then.
async fn settled(node: &NodeHandle, quiet: Duration) -> (u64, u64, u64) {
    let mut last = traffic(node);
    let mut since = Instant::now();
    while since.elapsed() < quiet {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let now = traffic(node);
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    last
}

/// S3: device A holds the trace's document (one change per transaction); device B, newly
/// paired, starts and fetches it. Timed from B's start to B holding A's heads.
pub(crate) async fn first_sync(trace: &Trace) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let a = fresh_node(base.path(), "a").await?;
    let (doc, _) = replay_into(&a, trace).await?;
    let saved_bytes = a.read(doc, |d| d.save().len()).await?.context("no doc")?;
    let target = heads(&a, doc).await?;
    let b_dir = pair(&a, base.path(), "b").await?;
    let peers = a.listen_addrs(1).await;

    let start = Instant::now();
    let b = Node::start(quiet_config(b_dir.path(), peers)).await?;
    until("B to hold the document", || async {
        Ok(heads(&b, doc).await? == target)
    })
    .await?;
    let ms = ms_since(start);
    let (wire_bytes, up, down) = traffic(&b);
    b.shutdown().await;
    a.shutdown().await;
    emit(
        "S3",
        "membrane",
        "first-sync",
        ms,
        json!({
            "wire_bytes": wire_bytes,
            "messages_up": up,
            "messages_down": down,
            "round_trips": up,
            "saved_bytes": saved_bytes,
            "txns": trace.txns.len(),
        }),
    );
    Ok(())
}

/// S4 and S10: A holds `docs` small documents, B syncs them once and stops. Then B starts
/// again with all in sync; then again after A changed `changed` of them; then B starts with
/// no peer at all (cold start: store opened, every document known by its heads, listening).
pub(crate) async fn reconnect(docs: usize, changed: usize) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let a = fresh_node(base.path(), "a").await?;
    let mut ids = Vec::with_capacity(docs);
    let mut creating = tokio::task::JoinSet::new();
    for chunk in (0..docs)
        .collect::<Vec<_>>()
        .chunks(docs.div_ceil(8).max(1))
    {
        let (a, chunk) = (a.clone(), chunk.to_vec());
        creating.spawn(async move {
            let mut made = Vec::new();
            for i in chunk {
                let content = json!({"title": format!("note {i}"), "n": 0});
                made.push(a.create_doc(None, Some(content)).await?);
            }
            anyhow::Ok(made)
        });
    }
    while let Some(made) = creating.join_next().await {
        ids.extend(made??);
    }
    let b_dir = pair(&a, base.path(), "b").await?;
    let peers = a.listen_addrs(1).await;

    // The first sync (reported, not a goal).
    let start = Instant::now();
    let b = Node::start(quiet_config(b_dir.path(), peers.clone())).await?;
    until("B to hold every document", || async {
        Ok(b.list().await?.len() >= docs)
    })
    .await?;
    let ms = ms_since(start);
    let (bytes, up, down) = settled(&b, Duration::from_millis(500)).await;
    b.shutdown().await;
    emit(
        "S4",
        "membrane",
        "initial-sync",
        ms,
        json!({"docs": docs, "wire_bytes": bytes, "messages_up": up, "messages_down": down}),
    );

    // All in sync: done when the session has reconciled (both sides know nothing differs).
    let start = Instant::now();
    let b = Node::start(quiet_config(b_dir.path(), peers.clone())).await?;
    until("B and A to reconcile", || async {
        Ok(b.traffic()
            .reconciled
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0)
    })
    .await?;
    let ms = ms_since(start);
    let (bytes, up, down) = settled(&b, Duration::from_millis(500)).await;
    b.shutdown().await;
    emit(
        "S4",
        "membrane",
        "all-in-sync",
        ms,
        json!({"docs": docs, "wire_bytes": bytes, "messages_up": up, "messages_down": down}),
    );

    // `changed` documents changed on A while B was away.
    let step = (docs / changed.max(1)).max(1);
    let touched: Vec<DocumentId> = ids.iter().step_by(step).take(changed).copied().collect();
    for doc in &touched {
        a.set(&doc.to_string(), "/n", json!(1)).await?;
    }
    let start = Instant::now();
    let b = Node::start(quiet_config(b_dir.path(), peers)).await?;
    let waiting = std::sync::Mutex::new(touched.clone());
    until("B to see every change", || async {
        let pending: Vec<DocumentId> = waiting.lock().expect("not poisoned").clone();
        let mut still = Vec::new();
        for doc in pending {
            if b.get(&doc.to_string(), "/n").await.ok().flatten() != Some(json!(1)) {
                still.push(doc);
            }
        }
        let done = still.is_empty();
        *waiting.lock().expect("not poisoned") = still;
        Ok(done)
    })
    .await?;
    let ms = ms_since(start);
    let (bytes, up, down) = settled(&b, Duration::from_millis(500)).await;
    b.shutdown().await;
    emit(
        "S4",
        "membrane",
        "changed",
        ms,
        json!({"docs": docs, "changed": touched.len(), "wire_bytes": bytes, "messages_up": up, "messages_down": down}),
    );
    a.shutdown().await;

    // S10: cold start, alone.
    let start = Instant::now();
    let b = Node::start(quiet_config(b_dir.path(), Vec::new())).await?;
    b.listen_addrs(1).await;
    let ms = ms_since(start);
    let held = b.list().await?.len();
    anyhow::ensure!(held >= docs, "B loaded {held} of {docs} documents");
    b.shutdown().await;
    emit("S10", "membrane", "cold-start", ms, json!({"docs": docs}));
    Ok(())
}
