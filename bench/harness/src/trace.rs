//! S1: a sequential editing trace replayed one commit per transaction, through the node's
//! API (each change durable in redb before it counts) and through the raw `automerge` crate.

use std::{collections::VecDeque, io::Read as _, path::Path, time::Instant};

use anyhow::Context as _;
use automerge::{
    Automerge, ObjType, ROOT, ReadDoc as _,
    transaction::{Transactable as _, Transaction},
};
use membrane_node::{Config, DataDir, DeviceIdentity, Node, NodeHandle};
use membrane_protocol::DocumentId;
use serde::Deserialize;
use serde_json::json;

use crate::report::{emit, ms_since};

/// A sequential trace (see `../shared/data/editing-traces/README.md`).
#[derive(Debug, Deserialize)]
pub(crate) struct Trace {
    #[serde(rename = "endContent")]
    pub(crate) end_content: String,
    pub(crate) txns: Vec<Txn>,
    /// Whether `txns` is the whole trace (then the result must be `end_content`).
    #[serde(skip)]
    pub(crate) complete: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Txn {
    pub(crate) patches: Vec<(usize, usize, String)>,
}

/// Reads a gzipped sequential trace, keeping the first `limit` transactions if given.
pub(crate) fn load(path: &Path, limit: Option<usize>) -> anyhow::Result<Trace> {
    let file = std::fs::File::open(path).with_context(|| format!("{}", path.display()))?;
    let mut text = String::new();
    flate2::read::GzDecoder::new(file).read_to_string(&mut text)?;
    let mut trace: Trace = serde_json::from_str(&text)?;
    trace.complete = limit.is_none_or(|n| n >= trace.txns.len());
    if let Some(limit) = limit {
        trace.txns.truncate(limit);
    }
    Ok(trace)
}

fn apply(tx: &mut Transaction<'_>, txn: &Txn) -> Result<(), automerge::AutomergeError> {
    let text = match tx.get(ROOT, "text")? {
        Some((_, id)) => id,
        None => tx.put_object(ROOT, "text", ObjType::Text)?,
    };
    for (pos, del, ins) in &txn.patches {
        tx.splice_text(&text, *pos, *del as isize, ins)?;
    }
    Ok(())
}

/// The text of a replayed document.
pub(crate) fn text_of(doc: &Automerge) -> String {
    match doc.get(ROOT, "text") {
        Ok(Some((_, id))) => doc.text(&id).unwrap_or_default(),
        _ => String::new(),
    }
}

fn check(trace: &Trace, text: &str) -> anyhow::Result<()> {
    if trace.complete && text != trace.end_content {
        anyhow::bail!(
            "the replayed text ({} chars) differs from endContent ({} chars)",
            text.chars().count(),
            trace.end_content.chars().count()
        );
    }
    Ok(())
}

/// The raw crate: one transaction and commit per trace transaction, in memory.
pub(crate) fn replay_raw(trace: &Trace) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut doc = Automerge::new();
    for txn in &trace.txns {
        let mut tx = doc.transaction();
        apply(&mut tx, txn)?;
        tx.commit();
    }
    let ms = ms_since(start);
    let text = text_of(&doc);
    check(trace, &text)?;
    emit(
        "S1",
        "automerge-rs",
        "trace-replay",
        ms,
        json!({"txns": trace.txns.len(), "chars": text.chars().count()}),
    );
    Ok(())
}

/// A fresh node (a person of its own) in `base/name`, loopback only.
pub(crate) async fn fresh_node(base: &Path, name: &str) -> anyhow::Result<NodeHandle> {
    let dir = base.join(name);
    DeviceIdentity::init(&DataDir::new(&dir), membrane_node::time::now())?;
    Ok(Node::start(quiet_config(&dir, Vec::new())).await?)
}

/// Loopback TCP, no control socket, no mDNS.
pub(crate) fn quiet_config(dir: &Path, peers: Vec<membrane_node::Multiaddr>) -> Config {
    let mut config = Config::loopback(dir);
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("valid multiaddr")];
    config.control_socket = false;
    config.redial_interval = std::time::Duration::from_millis(200);
    config.peers = peers;
    config
}

/// Replays `trace` into a new document on `node`, one queued edit per transaction, and
/// waits until every change is durable. Returns the document and the milliseconds taken.
pub(crate) async fn replay_into(
    node: &NodeHandle,
    trace: &Trace,
) -> anyhow::Result<(DocumentId, f64)> {
    let doc = node.create_doc(Some("paper".into()), None).await?;
    let start = Instant::now();
    // Bounded, as an application would: at most this many edits awaiting durability.
    let mut in_flight = VecDeque::new();
    for txn in &trace.txns {
        let txn = txn.clone();
        let queued = node
            .edit_queued(
                doc,
                Box::new(move |tx| apply(tx, &txn).map_err(|e| e.to_string())),
            )
            .await?;
        in_flight.push_back(queued);
        if in_flight.len() >= 4_096
            && let Some(oldest) = in_flight.pop_front()
        {
            oldest.durable().await?;
        }
    }
    for queued in in_flight {
        queued.durable().await?;
    }
    Ok((doc, ms_since(start)))
}

/// Through the node: every change goes through the repo actor and is durable in redb.
pub(crate) async fn replay_through_node(trace: &Trace) -> anyhow::Result<()> {
    let base = tempfile::tempdir()?;
    let node = fresh_node(base.path(), "node").await?;
    let (doc, ms) = replay_into(&node, trace).await?;
    let text = node
        .read(doc, text_of)
        .await?
        .context("the document is gone")?;
    check(trace, &text)?;
    node.shutdown().await;
    emit(
        "S1",
        "membrane",
        "trace-replay",
        ms,
        json!({"txns": trace.txns.len(), "chars": text.chars().count()}),
    );
    Ok(())
}
