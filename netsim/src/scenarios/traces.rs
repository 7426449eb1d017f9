//! `concurrent-traces`: real concurrent typing through the sync engine.
//!
//! The traces `clownschool` and `friendsforever` (from `../shared/data/editing-traces/`)
//! record several people typing into one document at once: each transaction was made on top
//! of given parent transactions. They are first turned into Automerge changes faithfully
//! (each transaction applied to exactly its parents' merged state, once per process), then
//! replayed with one simulated device per typist: a device types its next transaction as
//! soon as it holds that transaction's parents, which only the sync engine brings it, over
//! a network with latency, loss and a partition. All devices must end with the trace's
//! `endContent`.

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, OnceLock},
};

use automerge::{
    ActorId, Automerge, AutomergeError, ChangeHash, ObjType, ROOT, ReadDoc as _, TextEncoding,
    transaction::{CommitOptions, Transactable as _},
};

use crate::{
    scenario::{Outcome, RunError},
    traces::{ConcurrentTrace, load},
    world::{NetConfig, Sim, Variant},
};

/// The traces, by file stem.
pub const TRACES: &[&str] = &["friendsforever", "clownschool"];

/// A trace as Automerge changes.
#[derive(Debug)]
pub struct Converted {
    /// The document before any typing: a text object at `text`.
    pub base: Vec<u8>,
    /// Per transaction: who typed it, and the change (which depends on its parents).
    pub txns: Vec<(usize, automerge::Change)>,
    /// The number of typists.
    pub agents: usize,
    /// How many transactions the whole trace has.
    pub total: usize,
    /// What every replica must end with.
    pub end_content: String,
}

fn data_dir() -> PathBuf {
    // Tests and the binary run from the crate or the workspace root.
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.join("../../shared/data/editing-traces")
}

/// Loads a trace and converts its first `limit` transactions (once per process).
pub fn converted(name: &str, limit: usize) -> Result<Arc<Converted>, String> {
    type Cache = std::sync::Mutex<HashMap<(String, usize), Arc<Converted>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (name.to_owned(), limit);
    if let Some(found) = cache.lock().map_err(|e| e.to_string())?.get(&key) {
        return Ok(found.clone());
    }
    let trace = load(&data_dir().join(format!("{name}.json.gz")))?;
    let converted = Arc::new(convert(&trace, limit)?);
    cache
        .lock()
        .map_err(|e| e.to_string())?
        .insert(key, converted.clone());
    Ok(converted)
}

fn agent_actor(agent: usize) -> ActorId {
    let mut bytes = b"trace-agent-".to_vec();
    bytes.extend((agent as u32).to_be_bytes());
    ActorId::from(bytes)
}

/// Applies every transaction to exactly the merged state of its parents. States are kept
/// only while a child still needs them, and shared without copying along linear runs.
pub fn convert(trace: &ConcurrentTrace, limit: usize) -> Result<Converted, String> {
    let limit = limit.min(trace.txns.len());
    let recorded = &trace.txns[..limit];
    let mut base = Automerge::new_with_encoding(TextEncoding::UnicodeCodePoint)
        .with_actor(ActorId::from(b"trace-base".to_vec()));
    base.transact_with::<_, _, AutomergeError, _>(
        |_| CommitOptions::default().with_time(0),
        |tx| tx.put_object(ROOT, "text", ObjType::Text).map(|_| ()),
    )
    .map_err(|e| format!("{e:?}"))?;
    let mut children_left: Vec<usize> = vec![0; limit];
    for txn in recorded {
        for &p in &txn.parents {
            children_left[p] += 1;
        }
    }
    let mut states: HashMap<usize, Automerge> = HashMap::new();
    let mut txns = Vec::with_capacity(limit);
    for (i, txn) in recorded.iter().enumerate() {
        let mut take =
            |p: usize, states: &mut HashMap<usize, Automerge>| -> Result<Automerge, String> {
                children_left[p] -= 1;
                if children_left[p] == 0 {
                    states
                        .remove(&p)
                        .ok_or_else(|| format!("txn {p} used twice"))
                } else {
                    states
                        .get(&p)
                        .map(Automerge::fork)
                        .ok_or_else(|| format!("txn {p} missing"))
                }
            };
        let mut doc = match txn.parents.split_first() {
            None => base.fork(),
            Some((&first, rest)) => {
                let mut doc = take(first, &mut states)?;
                for &p in rest {
                    let mut other = take(p, &mut states)?;
                    doc.merge(&mut other).map_err(|e| e.to_string())?;
                }
                doc
            }
        };
        doc.set_actor(agent_actor(txn.agent));
        let text = doc
            .get(ROOT, "text")
            .map_err(|e| e.to_string())?
            .map(|(_, id)| id)
            .ok_or("no text object")?;
        let before = doc.get_heads();
        doc.transact_with::<_, _, AutomergeError, _>(
            |_| CommitOptions::default().with_time(i as i64),
            |tx| {
                for (pos, del, ins) in &txn.patches {
                    tx.splice_text(&text, *pos, *del as isize, ins)?;
                }
                Ok(())
            },
        )
        .map_err(|e| format!("txn {i}: {e:?}"))?;
        let mut added = doc.get_changes(&before);
        let change = added
            .pop()
            .ok_or_else(|| format!("txn {i} made no change"))?;
        txns.push((txn.agent, change));
        if children_left[i] > 0 {
            states.insert(i, doc);
        }
    }
    let converted = Converted {
        base: base.save(),
        txns,
        agents: trace.num_agents,
        total: trace.txns.len(),
        end_content: trace.end_content.clone(),
    };
    // The conversion is faithful only if all of it merges into the recorded end.
    let merged = text_after(&converted, converted.txns.len());
    if limit == trace.txns.len() && merged != trace.end_content {
        return Err(format!(
            "the converted trace merges to {} characters, not the recorded {}",
            merged.chars().count(),
            trace.end_content.chars().count()
        ));
    }
    Ok(converted)
}

/// Runs it: seeds alternate between the two traces, replayed whole.
pub fn run(seed: u64, variant: Variant) -> Result<Outcome, RunError> {
    run_prefix(seed, variant, usize::MAX)
}

/// Runs it with only the first `limit` transactions of the trace; the devices must then
/// end with the text those transactions make.
pub fn run_prefix(seed: u64, variant: Variant, limit: usize) -> Result<Outcome, RunError> {
    let name = TRACES[(seed % TRACES.len() as u64) as usize];
    let trace = converted(name, limit).map_err(RunError::Data)?;
    let whole = trace.txns.len() == trace.total;
    Ok(replay(&trace, name, seed, variant, whole))
}

/// The text the first `limit` transactions make, merged.
pub fn text_after(trace: &Converted, limit: usize) -> String {
    let mut doc = Automerge::load(&trace.base).expect("the base loads");
    doc.apply_changes(trace.txns.iter().take(limit).map(|(_, c)| c.clone()))
        .expect("the changes apply");
    let (_, text) = doc.get(ROOT, "text").ok().flatten().expect("a text object");
    doc.text(&text).unwrap_or_default()
}

/// Replays the first `limit` transactions of a converted trace.
pub fn replay(trace: &Converted, name: &str, seed: u64, variant: Variant, whole: bool) -> Outcome {
    let limit = trace.txns.len();
    let net = NetConfig {
        latency_ms: (5, 40),
        loss: 0.0005,
        redial_ms: 300,
        ..NetConfig::default()
    };
    let mut sim = Sim::new(seed, net, variant);
    let person = sim.add_person("typists");
    let devices: Vec<usize> = (0..trace.agents)
        .map(|a| sim.add_device(person, &format!("typist{a}")))
        .collect();
    let doc = sim.create_doc_from(devices[0], &trace.base);
    // Each typist's transactions in trace order; a device types one every 2 to 8 ms of
    // virtual time once it holds the transaction's parents.
    let mut queues: Vec<Vec<automerge::Change>> = vec![Vec::new(); trace.agents];
    for (agent, change) in trace.txns.iter().take(limit) {
        queues[*agent].push(change.clone());
    }
    let last_typing = type_along(&mut sim, &devices, doc, queues);
    let cut = sim.rng().between(200, 2_000);
    let (left, right) = devices.split_at(devices.len() / 2);
    let groups = vec![left.to_vec(), right.to_vec()];
    sim.at(cut, move |sim| sim.partition(&groups));
    sim.at(cut + 1_500, |sim| sim.heal());
    let expected = if whole {
        trace.end_content.clone()
    } else {
        text_after(trace, limit)
    };
    let healed_at = last_typing.max(cut + 1_500);
    let devices_for_check = devices.clone();
    crate::scenarios::finish_with(
        sim,
        &format!("concurrent-traces ({name})"),
        seed,
        healed_at,
        600_000,
        move |sim| {
            let mut wrong = Vec::new();
            for &d in &devices_for_check {
                let text = sim
                    .content(d, &doc)
                    .and_then(|doc| {
                        let (_, text) = doc.get(ROOT, "text").ok().flatten()?;
                        doc.text(&text).ok()
                    })
                    .unwrap_or_default();
                if text != expected {
                    wrong.push(format!(
                        "{} ends with {} characters, not the trace's {}",
                        sim.nodes[d].name,
                        text.chars().count(),
                        expected.chars().count()
                    ));
                }
            }
            wrong
        },
    )
}

/// Schedules the typing; returns when the last transaction can have been typed at the
/// earliest (the replay keeps going until every queue is empty).
fn type_along(
    sim: &mut Sim,
    devices: &[usize],
    doc: membrane_protocol::DocumentId,
    queues: Vec<Vec<automerge::Change>>,
) -> u64 {
    let longest = queues.iter().map(Vec::len).max().unwrap_or(0) as u64;
    for (agent, queue) in queues.into_iter().enumerate() {
        let device = devices[agent];
        let state = std::rc::Rc::new(std::cell::RefCell::new((queue, 0usize)));
        fn step(
            sim: &mut Sim,
            device: usize,
            doc: membrane_protocol::DocumentId,
            state: std::rc::Rc<std::cell::RefCell<(Vec<automerge::Change>, usize)>>,
        ) {
            // Type a burst: the transactions ready one after the other, up to 32.
            let mut burst: Vec<automerge::Change> = Vec::new();
            let mut have: std::collections::BTreeSet<ChangeHash> =
                std::collections::BTreeSet::new();
            while burst.len() < 32 {
                let next = {
                    let s = state.borrow();
                    s.0.get(s.1).cloned()
                };
                let Some(change) = next else { break };
                let ready = sim.nodes[device].up
                    && sim.content(device, &doc).is_some_and(|d| {
                        change.deps().iter().all(|h: &ChangeHash| {
                            have.contains(h) || d.get_change_by_hash(h).is_some()
                        })
                    });
                if !ready {
                    break;
                }
                have.insert(change.hash());
                burst.push(change);
                state.borrow_mut().1 += 1;
            }
            let done = {
                let s = state.borrow();
                s.1 >= s.0.len()
            };
            sim.apply_local(device, doc, burst);
            if done {
                return;
            }
            let delay = sim.rng().between(2, 8);
            let at = sim.now + delay;
            sim.at(at, move |sim| step(sim, device, doc, state));
        }
        let start = sim.rng().between(0, 10);
        sim.at(start, move |sim| step(sim, device, doc, state));
    }
    longest * 5
}
