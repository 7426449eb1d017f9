//! Hostile peers on real libp2p connections: strangers, garbage, oversized and
//! out-of-order frames. Each is cut off having received nothing, while the person's own
//! devices keep syncing.

mod common;

use common::{PATIENCE, config, eventually};

use std::time::Duration;

use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{
    Multiaddr, StreamProtocol, Swarm, SwarmBuilder, noise, swarm::SwarmEvent, tcp, yamux,
};
use membrane_node::{DataDir, DeviceIdentity, Node, NodeHandle, time};
use membrane_protocol::{
    SecretKey,
    sync::wire::{DocMessage, Frame, PROTOCOL, PROTOCOL_VERSION},
};
use serde_bytes::ByteBuf;
use serde_json::json;

/// A bare libp2p peer that speaks whatever bytes the test wants on `/membrane/sync/1`.
struct Rogue {
    swarm: Swarm<libp2p_stream::Behaviour>,
}

impl Rogue {
    fn new(key: &SecretKey) -> Self {
        let swarm = SwarmBuilder::with_existing_identity(key.to_libp2p_keypair())
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        Self { swarm }
    }

    /// Connects, opens a sync stream, writes `bytes`, then returns everything the node sent
    /// back until it closed the stream.
    async fn exchange(mut self, target: &Multiaddr, bytes: Vec<u8>) -> Vec<u8> {
        let peer = target
            .iter()
            .find_map(|p| match p {
                libp2p::multiaddr::Protocol::P2p(peer) => Some(peer),
                _ => None,
            })
            .unwrap();
        let mut control = self.swarm.behaviour().new_control();
        self.swarm.dial(target.clone()).unwrap();
        let driver = tokio::spawn(async move {
            loop {
                if let SwarmEvent::ConnectionClosed { .. } = self.swarm.select_next_some().await {}
            }
        });
        let mut stream = tokio::time::timeout(PATIENCE, async {
            loop {
                match control
                    .open_stream(peer, StreamProtocol::new(PROTOCOL))
                    .await
                {
                    Ok(stream) => break stream,
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        })
        .await
        .expect("a stream opens");
        // The node may refuse and hang up before the last byte is flushed: that is an
        // answer too, and whatever it sent before is read below.
        let _ = stream.write_all(&bytes).await;
        let _ = stream.flush().await;
        let mut received = Vec::new();
        let read = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut received)).await;
        driver.abort();
        assert!(read.is_ok(), "the node never closed the stream");
        received
    }
}

fn framed(frame: &Frame) -> Vec<u8> {
    let body = frame.encode();
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend(body);
    out
}

fn hello_with(chain: &[membrane_protocol::ucan::Delegation]) -> Frame {
    Frame::Hello {
        version: PROTOCOL_VERSION,
        chain: chain
            .iter()
            .map(|d| ByteBuf::from(d.as_bytes().to_vec()))
            .collect(),
        grants: vec![],
    }
}

async fn has(node: &NodeHandle, doc: &str, path: &str, expected: serde_json::Value) -> bool {
    node.get(doc, path).await.ok().flatten() == Some(expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_peers_are_cut_off_with_nothing_while_devices_keep_syncing() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    let laptop_id = DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let phone_dir = temp.path().join("phone");
    let phone_key = DeviceIdentity::init_joining(&DataDir::new(&phone_dir)).unwrap();
    DeviceIdentity::accept_link(
        &DataDir::new(&phone_dir),
        &laptop_id.link(phone_key.did(), time::now()).unwrap(),
        time::now(),
    )
    .unwrap();
    // A third device of Sarah's whose key the rogue uses: authorized, but misbehaving.
    let tablet_key = SecretKey::from_seed([77; 32]);
    let tablet_chain = laptop_id
        .link(tablet_key.did(), time::now())
        .unwrap()
        .authority;

    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let target = laptop.listen_addrs(2).await[0].clone();
    let diary = laptop
        .create_doc(Some("diary".into()), Some(json!({"entry": "secret"})))
        .await
        .unwrap()
        .to_string();
    let mut phone_config = config(&phone_dir);
    phone_config.peers = vec![target.clone()];
    let phone = Node::start(phone_config).await.unwrap();
    eventually("the phone syncs", || {
        has(&phone, &diary, "/entry", json!("secret"))
    })
    .await;

    // 1. A stranger with a perfectly formed Hello from another person's root.
    let stranger_root = SecretKey::from_seed([1; 32]);
    let stranger = SecretKey::from_seed([2; 32]);
    let stranger_chain = vec![
        membrane_protocol::ucan::DelegationBuilder::new(
            stranger_root.did(),
            stranger.did(),
            membrane_protocol::ucan::Command::top(),
        )
        .nonce(vec![1; 12])
        .sign(&stranger_root)
        .unwrap(),
    ];
    let received = Rogue::new(&stranger)
        .exchange(&target, framed(&hello_with(&stranger_chain)))
        .await;
    assert!(
        received.is_empty(),
        "a stranger received {} bytes",
        received.len()
    );

    // 2. Someone presenting Sarah's tablet chain without holding the tablet's key: the
    //    connection's key does not match the chain's audience.
    let impostor = SecretKey::from_seed([3; 32]);
    let received = Rogue::new(&impostor)
        .exchange(&target, framed(&hello_with(&tablet_chain)))
        .await;
    assert!(
        received.is_empty(),
        "an impostor received {} bytes",
        received.len()
    );

    // 3. Garbage instead of a frame.
    let mut garbage = 9u32.to_be_bytes().to_vec();
    garbage.extend(b"\xffgarbage!");
    let received = Rogue::new(&SecretKey::from_seed([4; 32]))
        .exchange(&target, garbage)
        .await;
    assert!(received.is_empty());

    // 4. An oversized frame announcement: cut off before any allocation.
    let received = Rogue::new(&SecretKey::from_seed([5; 32]))
        .exchange(&target, u32::MAX.to_be_bytes().to_vec())
        .await;
    assert!(received.is_empty());

    // 5. Documents before Hello (out of order).
    let docs = Frame::Docs { items: vec![] };
    let received = Rogue::new(&SecretKey::from_seed([6; 32]))
        .exchange(&target, framed(&docs))
        .await;
    assert!(received.is_empty());

    // 6. Sarah's real tablet key, a valid Hello, then a malformed Automerge message: it is
    //    answered (it is hers) but cut off at the bad message.
    let mut bytes = framed(&hello_with(&tablet_chain));
    bytes.extend(framed(&Frame::Docs {
        items: vec![DocMessage::Sync {
            doc: diary.parse().unwrap(),
            message: ByteBuf::from(b"not an automerge message".to_vec()),
        }],
    }));
    let received = Rogue::new(&tablet_key).exchange(&target, bytes).await;
    assert!(
        !received.is_empty(),
        "an authorized device gets the Hello and Summary"
    );

    // Through all of it the phone keeps syncing.
    laptop
        .set(&diary, "/after", json!("attacks"))
        .await
        .unwrap();
    eventually("the phone still syncs", || {
        has(&phone, &diary, "/after", json!("attacks"))
    })
    .await;
    let status = laptop.status().await.unwrap();
    assert_eq!(status.peers, vec![phone.device().to_string()]);
    phone.shutdown().await;
    laptop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_says_hello_is_cut_off() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let target = laptop.listen_addrs(2).await[0].clone();
    let started = std::time::Instant::now();
    // Opens a sync stream and stays silent: the node closes it (Hello timeout) without
    // sending a byte.
    let received = Rogue::new(&SecretKey::from_seed([8; 32]))
        .exchange(&target, Vec::new())
        .await;
    assert!(received.is_empty());
    eprintln!("a silent peer was cut off after {:?}", started.elapsed());
    laptop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_strangers_get_nothing_and_the_node_keeps_serving() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let target = laptop.listen_addrs(2).await[0].clone();
    let diary = laptop
        .create_doc(Some("diary".into()), Some(json!({"entry": "secret"})))
        .await
        .unwrap()
        .to_string();

    // Each stranger proves a perfectly valid identity of its own person, asks for
    // everything, and presents a forged grant on the laptop's documents.
    let owner_root = laptop.root();
    let strangers: Vec<u8> = (0..200).map(|n| n as u8).collect();
    for batch in strangers.chunks(20) {
        let attempts = batch.iter().map(|&n| {
            let target = target.clone();
            async move {
                let root = SecretKey::from_seed([n; 32]);
                let mut seed = [n; 32];
                seed[0] = 0xAA;
                let key = SecretKey::from_seed(seed);
                let chain = vec![
                    membrane_protocol::ucan::DelegationBuilder::new(
                        root.did(),
                        key.did(),
                        membrane_protocol::ucan::Command::top(),
                    )
                    .nonce(vec![n; 12])
                    .sign(&root)
                    .unwrap(),
                ];
                let forged = membrane_protocol::ucan::DelegationBuilder::new(
                    root.did(),
                    key.did(),
                    membrane_protocol::capability::command(membrane_protocol::capability::DOC_READ),
                )
                .subject(owner_root)
                .sign(&root)
                .unwrap();
                let mut hello = hello_with(&chain);
                if let Frame::Hello { grants, .. } = &mut hello {
                    grants.push(vec![ByteBuf::from(forged.as_bytes().to_vec())]);
                }
                Rogue::new(&key).exchange(&target, framed(&hello)).await
            }
        });
        for received in futures::future::join_all(attempts).await {
            assert!(
                received.is_empty(),
                "a stranger received {} bytes",
                received.len()
            );
        }
    }

    // The node still serves its own: a new device links and syncs.
    let phone_dir = temp.path().join("phone");
    let phone_key = DeviceIdentity::init_joining(&DataDir::new(&phone_dir)).unwrap();
    let laptop_id = DeviceIdentity::load(&DataDir::new(&laptop_dir)).unwrap();
    DeviceIdentity::accept_link(
        &DataDir::new(&phone_dir),
        &laptop_id.link(phone_key.did(), time::now()).unwrap(),
        time::now(),
    )
    .unwrap();
    let mut phone_config = config(&phone_dir);
    phone_config.peers = vec![target];
    let phone = Node::start(phone_config).await.unwrap();
    eventually("the phone syncs after the siege", || {
        has(&phone, &diary, "/entry", json!("secret"))
    })
    .await;
    let status = laptop.status().await.unwrap();
    assert_eq!(status.peers, vec![phone.device().to_string()]);
    assert!(
        !status.refused_peers.is_empty(),
        "the refusals are on record"
    );
    phone.shutdown().await;
    laptop.shutdown().await;
}
