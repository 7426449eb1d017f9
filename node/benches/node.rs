//! Node benchmarks, each measured side by side with its baseline in the same run:
//!
//! 1. replay of the `automerge-paper` editing trace through the node API (every change
//!    durable) vs the raw `automerge` crate;
//! 2. first sync of that document between two nodes on loopback: time and wire bytes vs
//!    its saved size;
//! 3. reconnect of two nodes sharing N documents, all in sync, then with 100 changed;
//! 4. durable single-change commits per second vs raw redb on the same disk, and
//!    group-commit throughput.
//!
//! `cargo bench -p membrane-node --bench node` (full) or `-- --quick` (small sizes).

use std::{
    io::Read as _,
    path::Path,
    sync::atomic::Ordering::Relaxed,
    time::{Duration, Instant},
};

use automerge::{Automerge, ObjType, ROOT, ReadDoc as _, transaction::Transactable as _};
use membrane_node::{
    Config, DataDir, DeviceIdentity, Node, NodeHandle,
    repo::{root_text, splice_root_text},
    time,
};
use serde_json::{Value, json};

struct Trace {
    txns: Vec<Vec<(usize, isize, String)>>,
    end: String,
}

fn load_trace(name: &str) -> Trace {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../../shared/data/editing-traces/{name}.json.gz"));
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&path).expect("the trace is in ../shared"))
        .read_to_string(&mut text)
        .expect("gzip JSON");
    let value: Value = serde_json::from_str(&text).expect("JSON");
    let txns = value["txns"]
        .as_array()
        .expect("txns")
        .iter()
        .map(|txn| {
            txn["patches"]
                .as_array()
                .expect("patches")
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().expect("pos") as usize,
                        p[1].as_i64().expect("del") as isize,
                        p[2].as_str().expect("ins").to_owned(),
                    )
                })
                .collect()
        })
        .collect();
    Trace {
        txns,
        end: value["endContent"].as_str().expect("end").to_owned(),
    }
}

fn config(dir: &Path) -> Config {
    let mut config = Config::loopback(dir);
    config.control_socket = false;
    config.redial_interval = Duration::from_millis(200);
    config
}

fn person(base: &Path, devices: &[&str]) -> Vec<std::path::PathBuf> {
    let first = base.join(devices[0]);
    let owner = DeviceIdentity::init(&DataDir::new(&first), time::now()).expect("init");
    let mut dirs = vec![first];
    for name in &devices[1..] {
        let dir = base.join(name);
        let key = DeviceIdentity::init_joining(&DataDir::new(&dir)).expect("join");
        let bundle = owner.link(key.did(), time::now()).expect("link");
        DeviceIdentity::accept_link(&DataDir::new(&dir), &bundle, time::now()).expect("accept");
        dirs.push(dir);
    }
    dirs
}

async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(600);
    while !check().await {
        assert!(Instant::now() < deadline, "benchmark timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn raw_replay(trace: &Trace) -> (Duration, Automerge) {
    let started = Instant::now();
    let mut doc = Automerge::new();
    let text = doc
        .transact::<_, _, automerge::AutomergeError>(|tx| {
            tx.put_object(ROOT, "text", ObjType::Text)
        })
        .expect("text")
        .result;
    for txn in &trace.txns {
        let mut tx = doc.transaction();
        for (pos, del, ins) in txn {
            tx.splice_text(&text, *pos, *del, ins).expect("splice");
        }
        tx.commit();
    }
    let elapsed = started.elapsed();
    assert_eq!(doc.text(&text).expect("text"), trace.end);
    (elapsed, doc)
}

/// The trace applied to a plain string (positions are Unicode code points).
fn apply_to_string(txns: &[Vec<(usize, isize, String)>]) -> String {
    let mut chars: Vec<char> = Vec::new();
    for txn in txns {
        for (pos, del, ins) in txn {
            chars.splice(*pos..*pos + *del as usize, ins.chars());
        }
    }
    chars.into_iter().collect()
}

async fn node_replay(
    node: &NodeHandle,
    trace: &Trace,
) -> (Duration, membrane_protocol::DocumentId) {
    let doc = node
        .create_doc(Some("paper".into()), None)
        .await
        .expect("create");
    let started = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for txn in &trace.txns {
        let txn = txn.clone();
        let queued = node
            .edit_queued(
                doc,
                Box::new(move |tx| {
                    for (pos, del, ins) in &txn {
                        splice_root_text(tx, "text", *pos, *del, ins)?;
                    }
                    Ok(())
                }),
            )
            .await
            .expect("queued");
        window.push_back(queued);
        if window.len() >= 4096 {
            window
                .pop_front()
                .expect("non-empty")
                .durable()
                .await
                .expect("durable");
        }
    }
    for queued in window {
        queued.durable().await.expect("durable");
    }
    let elapsed = started.elapsed();
    let text = node
        .read(doc, |d| root_text(d, "text"))
        .await
        .expect("read")
        .flatten();
    assert_eq!(text.as_deref(), Some(trace.end.as_str()));
    (elapsed, doc)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn raw_redb_commits(dir: &Path, n: usize, two_phase: bool) -> Duration {
    use redb::{Database, Durability, TableDefinition};
    const T: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("t");
    let db = Database::create(dir.join(format!("raw-{two_phase}.redb"))).expect("db");
    let value = vec![7u8; 64];
    let started = Instant::now();
    for i in 0..n as u64 {
        let mut txn = db.begin_write().expect("txn");
        txn.set_two_phase_commit(two_phase);
        txn.set_durability(Durability::Immediate)
            .expect("durability");
        txn.open_table(T)
            .expect("table")
            .insert(i, value.as_slice())
            .expect("insert");
        txn.commit().expect("commit");
    }
    started.elapsed()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let mut results = serde_json::Map::new();
    let temp = tempfile::tempdir().expect("temp dir");

    // 1. Trace replay.
    let mut trace = load_trace("automerge-paper");
    assert_eq!(
        apply_to_string(&trace.txns),
        trace.end,
        "the trace replays to its endContent"
    );
    if quick {
        trace.txns.truncate(5_000);
        trace.end = apply_to_string(&trace.txns);
    }
    let (raw, raw_doc) = raw_replay(&trace);
    let dirs = person(temp.path(), &["laptop", "phone"]);
    let laptop = Node::start(config(&dirs[0])).await.expect("start");
    let (through_node, paper) = node_replay(&laptop, &trace).await;
    let (raw_again, _) = raw_replay(&trace);
    let raw = raw.min(raw_again);
    println!(
        "S1 trace replay ({} txns): raw automerge {:?}, node API (durable) {:?}, ratio {:.2}",
        trace.txns.len(),
        raw,
        through_node,
        ratio(through_node, raw)
    );
    results.insert("trace_replay".into(), json!({
        "txns": trace.txns.len(), "raw_ms": raw.as_millis(), "node_ms": through_node.as_millis(),
        "ratio": ratio(through_node, raw), "goal": 1.10,
    }));

    // 2. First sync of the paper to a new device.
    let saved = raw_doc.save().len();
    let mut phone_config = config(&dirs[1]);
    phone_config.peers = laptop.listen_addrs(2).await[..1].to_vec();
    let target = laptop
        .read(paper, |d| d.get_heads())
        .await
        .expect("read")
        .expect("doc");
    let started = Instant::now();
    let phone = Node::start(phone_config.clone()).await.expect("start");
    wait_until(|| async {
        phone
            .read(paper, |d| d.get_heads())
            .await
            .ok()
            .flatten()
            .as_ref()
            == Some(&target)
    })
    .await;
    let first_sync = started.elapsed();
    let (_, sent, _, received) = laptop.traffic().snapshot();
    let wire = sent + received;
    println!(
        "S3 first sync: {:?}, {wire} bytes on the wire for a {saved}-byte saved document ({:.2}x)",
        first_sync,
        wire as f64 / saved as f64
    );
    results.insert(
        "first_sync".into(),
        json!({
            "ms": first_sync.as_millis(), "wire_bytes": wire, "saved_bytes": saved,
            "ratio": wire as f64 / saved as f64, "goal": 1.15,
        }),
    );
    phone.shutdown().await;

    // 3. Reconnect with many documents.
    let count = if quick { 1_000 } else { 10_000 };
    let mut ids = Vec::with_capacity(count);
    let created_at = Instant::now();
    let mut creations = tokio::task::JoinSet::new();
    for n in 0..count {
        let node = laptop.clone();
        creations.spawn(async move {
            node.create_doc(None, Some(json!({"n": n})))
                .await
                .expect("create")
        });
        if creations.len() >= 256 {
            ids.push(creations.join_next().await.expect("task").expect("joined"));
        }
    }
    while let Some(id) = creations.join_next().await {
        ids.push(id.expect("joined"));
    }
    let creation = created_at.elapsed();
    let phone = Node::start(phone_config.clone()).await.expect("start");
    let last = *ids.last().expect("ids");
    wait_until(|| async {
        phone
            .get(&last.to_string(), "/n")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    wait_until(|| async { phone.list().await.map(|l| l.len()).unwrap_or(0) > count }).await;
    phone.shutdown().await;

    let before = laptop.traffic().snapshot();
    let reconciled_before = laptop.traffic().reconciled.load(Relaxed);
    let started = Instant::now();
    let phone = Node::start(phone_config.clone()).await.expect("start");
    wait_until(|| async {
        phone.traffic().reconciled.load(Relaxed) >= 1
            && laptop.traffic().reconciled.load(Relaxed) > reconciled_before
    })
    .await;
    let in_sync = started.elapsed();
    let after = laptop.traffic().snapshot();
    let frames = (after.0 - before.0) + (after.2 - before.2);
    let bytes = (after.1 - before.1) + (after.3 - before.3);
    println!(
        "S4 reconnect, {count} documents in sync: {in_sync:?} from process start to reconciled, {frames} frames, {bytes} bytes"
    );
    phone.shutdown().await;

    for id in ids.iter().step_by(count / 100) {
        laptop
            .set(&id.to_string(), "/n", json!("changed"))
            .await
            .expect("set");
    }
    let before = laptop.traffic().snapshot();
    let started = Instant::now();
    let phone = Node::start(phone_config.clone()).await.expect("start");
    let changed: Vec<String> = ids
        .iter()
        .step_by(count / 100)
        .map(ToString::to_string)
        .collect();
    wait_until(|| async {
        for id in &changed {
            if phone.get(id, "/n").await.ok().flatten() != Some(json!("changed")) {
                return false;
            }
        }
        true
    })
    .await;
    let changed_time = started.elapsed();
    let after = laptop.traffic().snapshot();
    let changed_bytes = (after.1 - before.1) + (after.3 - before.3);
    let changed_frames = (after.0 - before.0) + (after.2 - before.2);
    println!(
        "S4 reconnect, 100 of {count} changed: {changed_time:?} to all applied, {changed_frames} frames, {changed_bytes} bytes"
    );
    results.insert("reconnect".into(), json!({
        "documents": count, "creation_ms": creation.as_millis(),
        "in_sync": {"ms": in_sync.as_millis(), "frames": frames, "bytes": bytes},
        "changed_100": {"ms": changed_time.as_millis(), "frames": changed_frames, "bytes": changed_bytes},
    }));
    phone.shutdown().await;

    // 4. Durable commits, on a fresh node so its store is as small as the raw redb file
    //    it is compared with.
    laptop.shutdown().await;
    let fresh = person(&temp.path().join("fresh"), &["only"]);
    let laptop = Node::start(config(&fresh[0])).await.expect("start");
    let n = if quick { 200 } else { 2_000 };
    let doc = laptop
        .create_doc(Some("counter".into()), None)
        .await
        .expect("create")
        .to_string();
    let started = Instant::now();
    for i in 0..n {
        laptop.set(&doc, "/k", json!(i)).await.expect("set");
    }
    let node_single = started.elapsed();
    let raw_1pc = raw_redb_commits(temp.path(), n, false);
    let raw_2pc = raw_redb_commits(temp.path(), n, true);
    let per_sec = |d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "S8 durable single-change commits/s: node {:.0}, raw redb 2PC {:.0} ({:.0}%), raw redb 1PC+C {:.0} ({:.0}%)",
        per_sec(node_single),
        per_sec(raw_2pc),
        100.0 * per_sec(node_single) / per_sec(raw_2pc),
        per_sec(raw_1pc),
        100.0 * per_sec(node_single) / per_sec(raw_1pc),
    );
    let burst = if quick { 2_000 } else { 50_000 };
    let doc_id = doc.parse().expect("id");
    let started = Instant::now();
    let mut window = std::collections::VecDeque::new();
    for i in 0..burst {
        let queued = laptop
            .edit_queued(
                doc_id,
                Box::new(move |tx| tx.put(ROOT, "k", i as i64).map_err(|e| e.to_string())),
            )
            .await
            .expect("queued");
        window.push_back(queued);
        if window.len() >= 2048 {
            window
                .pop_front()
                .expect("some")
                .durable()
                .await
                .expect("durable");
        }
    }
    for queued in window {
        queued.durable().await.expect("durable");
    }
    let group = started.elapsed();
    println!(
        "S8 group commit: {burst} durable changes in {group:?} = {:.0} changes/s",
        burst as f64 / group.as_secs_f64()
    );
    results.insert("durable_commits".into(), json!({
        "n": n, "node_per_s": per_sec(node_single), "raw_redb_2pc_per_s": per_sec(raw_2pc),
        "raw_redb_1pc_per_s": per_sec(raw_1pc), "group_commit_changes_per_s": burst as f64 / group.as_secs_f64(),
    }));
    laptop.shutdown().await;
    println!("{}", Value::Object(results));
}
