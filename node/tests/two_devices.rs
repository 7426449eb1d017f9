//! Two real nodes of one person on loopback: they find each other by address, sync,
//! converge after offline edits, and catch up after a restart. A stranger gets nothing.

mod common;

use common::{config, eventually};

use std::time::Duration;

use membrane_node::{DataDir, DeviceIdentity, Node, NodeHandle, time};
use serde_json::json;

/// Makes `laptop` (with the root) and a linked `phone` in `base`.
fn person(base: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (laptop, phone) = (base.join("laptop"), base.join("phone"));
    let laptop_id = DeviceIdentity::init(&DataDir::new(&laptop), time::now()).unwrap();
    let phone_key = DeviceIdentity::init_joining(&DataDir::new(&phone)).unwrap();
    let bundle = laptop_id.link(phone_key.did(), time::now()).unwrap();
    DeviceIdentity::accept_link(&DataDir::new(&phone), &bundle, time::now()).unwrap();
    (laptop, phone)
}

async fn value(node: &NodeHandle, doc: &str, path: &str) -> Option<serde_json::Value> {
    node.get(doc, path).await.ok().flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_converge_after_offline_edits_and_restarts() {
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir) = person(temp.path());

    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let laptop_addr = laptop.listen_addrs(2).await[0].clone();
    let calendar = laptop
        .create_doc(Some("calendar".into()), Some(json!({"monday": "tennis"})))
        .await
        .unwrap()
        .to_string();

    let mut phone_config = config(&phone_dir);
    phone_config.peers = vec![laptop_addr.clone()];
    let phone = Node::start(phone_config.clone()).await.unwrap();
    eventually("the calendar on the phone", || async {
        value(&phone, &calendar, "/monday").await == Some(json!("tennis"))
    })
    .await;
    // Names travel too (through the person's index document).
    eventually("the name on the phone", || async {
        value(&phone, "calendar", "/monday").await.is_some()
    })
    .await;

    // Offline: both edit the same document.
    phone.shutdown().await;
    laptop
        .set(&calendar, "/tuesday", json!("dentist"))
        .await
        .unwrap();
    let phone = {
        let mut offline = phone_config.clone();
        offline.peers.clear();
        Node::start(offline).await.unwrap()
    };
    phone
        .set(&calendar, "/wednesday", json!("run"))
        .await
        .unwrap();
    phone.dial(laptop_addr.clone()).await.unwrap();
    for node in [&laptop, &phone] {
        eventually("both edits everywhere", || async {
            value(node, &calendar, "/tuesday").await == Some(json!("dentist"))
                && value(node, &calendar, "/wednesday").await == Some(json!("run"))
        })
        .await;
    }
    let heads = |node: NodeHandle| {
        let calendar = calendar.clone();
        async move { node.get(&calendar, "/").await.unwrap() }
    };
    assert_eq!(heads(laptop.clone()).await, heads(phone.clone()).await);
    let status = laptop.status().await.unwrap();
    assert_eq!(status.peers, vec![phone.device().to_string()]);

    // Restart: the laptop comes back with nothing but its data dir, edits made on the
    // phone meanwhile reach it without any manual step (it redials the phone).
    laptop.shutdown().await;
    phone
        .set(&calendar, "/thursday", json!("yoga"))
        .await
        .unwrap();
    let mut laptop_config = config(&laptop_dir);
    laptop_config.peers = phone.listen_addrs(2).await;
    let laptop = Node::start(laptop_config).await.unwrap();
    eventually("the restarted laptop catches up", || async {
        value(&laptop, &calendar, "/thursday").await == Some(json!("yoga"))
    })
    .await;
    laptop.shutdown().await;
    phone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_documents_reach_the_other_device() {
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir) = person(temp.path());
    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let started = std::time::Instant::now();
    let mut created = Vec::new();
    for n in 0..1_000 {
        created.push(
            laptop
                .create_doc(None, Some(json!({"n": n})))
                .await
                .unwrap(),
        );
    }
    eprintln!("created 1,000 documents in {:?}", started.elapsed());
    let started = std::time::Instant::now();
    let mut phone_config = config(&phone_dir);
    phone_config.peers = laptop.listen_addrs(1).await;
    let phone = Node::start(phone_config).await.unwrap();
    eventually("1,000 documents on the phone", || async {
        phone.list().await.unwrap().len() == 1_000
    })
    .await;
    eprintln!("synced 1,000 documents in {:?}", started.elapsed());
    for (n, id) in created.iter().enumerate().step_by(97) {
        assert_eq!(value(&phone, &id.to_string(), "/n").await, Some(json!(n)));
    }
    eventually("every document in sync", || async {
        let status = laptop.status().await.unwrap();
        status
            .documents
            .iter()
            .all(|d| d.in_sync_with == vec![phone.device().to_string()])
    })
    .await;
    laptop.shutdown().await;
    phone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_gets_no_documents_and_a_second_daemon_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, _) = person(temp.path());
    let stranger_dir = temp.path().join("stranger");
    DeviceIdentity::init(&DataDir::new(&stranger_dir), time::now()).unwrap();

    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    laptop
        .create_doc(Some("diary".into()), Some(json!({"secret": "x"})))
        .await
        .unwrap();
    assert!(matches!(
        Node::start(config(&laptop_dir)).await,
        Err(membrane_node::StartError::AlreadyRunning(_))
    ));

    let mut stranger_config = config(&stranger_dir);
    stranger_config.peers = laptop.listen_addrs(1).await;
    let stranger = Node::start(stranger_config).await.unwrap();
    // Give them time to connect, present chains and be refused.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(stranger.list().await.unwrap().is_empty());
    assert!(laptop.status().await.unwrap().peers.is_empty());
    stranger.shutdown().await;
    laptop.shutdown().await;
}
