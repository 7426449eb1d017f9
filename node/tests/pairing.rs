//! Pairing new devices over real libp2p connections on loopback: the happy path through
//! three devices, and every way a pairing must fail.

mod common;

use common::{config, eventually, joining_device, pair_with, start};

use std::time::Duration;

use membrane_node::{
    DataDir, DeviceIdentity, Node, NodeHandle,
    pairing::{InviteEvent, JoinError, join, request_link},
    time,
};
use membrane_protocol::{
    SecretKey,
    pairing::{PairingTicket, proof},
};
use serde_json::json;

async fn has(node: &NodeHandle, doc: &str, path: &str, expected: serde_json::Value) -> bool {
    node.get(doc, path).await.ok().flatten() == Some(expected)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_devices_pair_in_a_chain_and_converge() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = Node::start(config(&laptop_dir)).await.unwrap();
    let calendar = laptop
        .create_doc(Some("calendar".into()), Some(json!({"monday": "tennis"})))
        .await
        .unwrap()
        .to_string();

    // The laptop shows a code; the phone reads it as text.
    let (ticket, mut events) = laptop.invite(600, None).await.unwrap();
    let code = ticket.to_string();
    let phone_dir = joining_device(temp.path(), "phone");
    let joined = join(&phone_dir, &code.parse().unwrap(), Some("phone".into()))
        .await
        .unwrap();
    let Some(InviteEvent::Joined {
        device,
        name,
        verification_code,
    }) = events.recv().await
    else {
        panic!("the laptop saw no join");
    };
    assert_eq!(device, joined.identity.device.did().to_string());
    assert_eq!(name.as_deref(), Some("phone"));
    assert_eq!(
        verification_code, joined.verification_code,
        "both screens show the same code"
    );
    assert_eq!(joined.identity.root, laptop.root());

    let mut phone_config = config(phone_dir.path());
    phone_config.peers = laptop.listen_addrs(1).await;
    let phone = Node::start(phone_config).await.unwrap();
    eventually("the phone has the calendar", || {
        has(&phone, "calendar", "/monday", json!("tennis"))
    })
    .await;

    // The phone, holding no root key, invites a tablet in turn.
    let (ticket, mut events) = phone.invite(600, Some("tablet".into())).await.unwrap();
    let tablet_dir = joining_device(temp.path(), "tablet");
    let tablet_joined = join(&tablet_dir, &ticket, None).await.unwrap();
    assert!(matches!(
        events.recv().await,
        Some(InviteEvent::Joined { .. })
    ));
    assert_eq!(
        tablet_joined.identity.authority.len(),
        2,
        "root → phone → tablet"
    );
    let mut tablet_config = config(tablet_dir.path());
    tablet_config.peers = phone.listen_addrs(1).await;
    let tablet = Node::start(tablet_config).await.unwrap();
    eventually("the tablet has the calendar", || {
        has(&tablet, &calendar, "/monday", json!("tennis"))
    })
    .await;

    // An edit anywhere reaches everyone, the laptop through the phone.
    tablet
        .set(&calendar, "/friday", json!("swim"))
        .await
        .unwrap();
    for node in [&laptop, &phone] {
        eventually("the tablet's edit everywhere", || {
            has(node, &calendar, "/friday", json!("swim"))
        })
        .await;
    }
    // The registry lives in the replicated index document: the phone recorded the tablet
    // and the laptop recorded the phone, and each device sees both.
    let index = |node: &NodeHandle| {
        let node = node.clone();
        async move {
            node.read(membrane_node::repo::index_id(&node.root()), |d| {
                membrane_node::json::to_json(d)
            })
            .await
            .ok()
            .flatten()
        }
    };
    let phone_key = format!("device:{}", joined.identity.device.did());
    let tablet_key = format!("device:{}", tablet_joined.identity.device.did());
    for node in [&laptop, &phone, &tablet] {
        eventually("the registry everywhere", || {
            let (phone_key, tablet_key) = (phone_key.clone(), tablet_key.clone());
            let index = index(node);
            async move {
                index
                    .await
                    .is_some_and(|i| i.get(&phone_key).is_some() && i.get(&tablet_key).is_some())
            }
        })
        .await;
    }

    // The tablet is lost. The phone revokes it; the laptop hears of it through the
    // registry and both refuse the tablet, while the laptop and the phone keep syncing.
    let tablet_did = tablet_joined.identity.device.did().to_string();
    let revoked = phone.revoke_device("tablet").await.unwrap();
    assert_eq!(revoked.len(), 2, "its authority and its powerline");
    for node in [&laptop, &phone] {
        eventually("the tablet is cut off", || async {
            !node.status().await.unwrap().peers.contains(&tablet_did)
        })
        .await;
    }
    tablet
        .set(&calendar, "/saturday", json!("stolen"))
        .await
        .unwrap();
    laptop
        .set(&calendar, "/sunday", json!("rest"))
        .await
        .unwrap();
    eventually("the phone still syncs", || {
        has(&phone, &calendar, "/sunday", json!("rest"))
    })
    .await;
    // Redial attempts keep failing: give the tablet several redial rounds.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [&laptop, &phone] {
        assert!(!node.status().await.unwrap().peers.contains(&tablet_did));
        assert_eq!(
            node.get(&calendar, "/saturday").await.unwrap(),
            None,
            "nothing from the tablet"
        );
    }
    assert!(
        !has(&tablet, &calendar, "/sunday", json!("rest")).await,
        "nothing to the tablet"
    );
    // The root cannot be revoked, and a device cannot revoke itself.
    assert!(
        phone
            .revoke_device(&phone.device().to_string())
            .await
            .is_err()
    );
    assert!(
        phone
            .revoke_device(&laptop.root().to_string())
            .await
            .is_err()
    );
    for node in [tablet, phone, laptop] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pairings_fail_clearly_and_change_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = Node::start(config(&laptop_dir)).await.unwrap();

    // A wrong secret: refused on both sides, the invitation stays open.
    let (ticket, mut events) = laptop.invite(600, None).await.unwrap();
    let guesser = joining_device(temp.path(), "guesser");
    let mut wrong = ticket.clone();
    wrong.secret[0] ^= 1;
    let error = join(&guesser, &wrong, None).await.unwrap_err();
    assert!(
        matches!(&error, JoinError::Refused(reason) if reason.contains("wrong secret")),
        "{error}"
    );
    assert!(matches!(
        events.recv().await,
        Some(InviteEvent::Refused {
            still_open: true,
            ..
        })
    ));
    assert!(
        DeviceIdentity::load(&guesser).is_err(),
        "nothing was stored"
    );

    // A relay in the middle forwards a real joiner's proof over its own connection: the
    // proof names the joiner's key, not the relay's, and fails the binding check.
    let joiner = SecretKey::from_seed([42; 32]);
    let relay = SecretKey::from_seed([43; 32]);
    let honest_proof = proof(&ticket, &joiner.did());
    let error = request_link(&relay, &ticket, &honest_proof, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, JoinError::Refused(reason) if reason.contains("bound to this connection")),
        "{error}"
    );

    // Five failures burn the invitation: even the right secret is refused after that.
    for attempt in 0..3 {
        let mut wrong = ticket.clone();
        wrong.secret[1] = attempt;
        wrong.secret[2] ^= 0xff;
        assert!(join(&guesser, &wrong, None).await.is_err());
    }
    let late = joining_device(temp.path(), "late");
    let error = join(&late, &ticket, None).await.unwrap_err();
    assert!(
        matches!(&error, JoinError::Refused(reason) if reason.contains("burned")),
        "{error}"
    );
    assert!(DeviceIdentity::load(&late).is_err());

    // A used invitation cannot be used again.
    let (ticket, _events) = laptop.invite(600, None).await.unwrap();
    let first = joining_device(temp.path(), "first");
    join(&first, &ticket, None).await.unwrap();
    let second = joining_device(temp.path(), "second");
    let error = join(&second, &ticket, None).await.unwrap_err();
    assert!(
        matches!(&error, JoinError::Refused(reason) if reason.contains("already used")),
        "{error}"
    );

    // An expired invitation: refused by the joiner before dialing, and by the inviter
    // even when a ticket claims a later expiry.
    let (ticket, _events) = laptop.invite(0, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let expired_dir = joining_device(temp.path(), "expired");
    assert!(matches!(
        join(&expired_dir, &ticket, None).await,
        Err(JoinError::Expired)
    ));
    let mut stretched = ticket.clone();
    stretched.expires += 3_600;
    let error = join(&expired_dir, &stretched, None).await.unwrap_err();
    assert!(
        matches!(&error, JoinError::Refused(reason) if reason.contains("expired")),
        "{error}"
    );

    // Malformed and truncated codes never reach the network.
    let text = ticket.to_string();
    assert!(text[..text.len() - 7].parse::<PairingTicket>().is_err());
    assert!("hello".parse::<PairingTicket>().is_err());
    laptop.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_phones_change_taken_before_the_news_is_vouched_for_by_the_device_that_took_it() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = start(&laptop_dir, vec![]).await;
    let notes = laptop
        .create_doc(Some("notes".into()), Some(json!({"title": "groceries"})))
        .await
        .unwrap()
        .to_string();
    let phone_dir = pair_with(&laptop, temp.path(), "phone").await;
    let pi_dir = pair_with(&laptop, temp.path(), "pi").await;
    let laptop_addrs = laptop.listen_addrs(1).await;
    let phone = start(phone_dir.path(), laptop_addrs.clone()).await;
    let pi = start(pi_dir.path(), laptop_addrs).await;
    eventually("the phone has the notes", || {
        has(&phone, &notes, "/title", json!("groceries"))
    })
    .await;
    phone
        .set(&notes, "/before", json!("written while trusted"))
        .await
        .unwrap();
    for node in [&laptop, &pi] {
        eventually("the phone's edit everywhere", || {
            has(node, &notes, "/before", json!("written while trusted"))
        })
        .await;
    }

    // Apart: the phone and the Pi see each other, the laptop sees no one.
    for node in [&laptop, &phone, &pi] {
        node.shutdown().await;
    }
    let laptop = start(&laptop_dir, vec![]).await;
    let phone = start(phone_dir.path(), vec![]).await;
    let pi = start(pi_dir.path(), phone.listen_addrs(1).await).await;
    let phone_did = phone.device().to_string();
    eventually("the Pi reaches the phone", || async {
        pi.status().await.unwrap().peers.contains(&phone_did)
    })
    .await;

    // The phone is stolen; the laptop revokes it. The thief writes, and the Pi, not yet
    // told, takes the change.
    laptop.revoke_device("phone").await.unwrap();
    phone
        .set(&notes, "/after", json!("written by the thief"))
        .await
        .unwrap();
    eventually("the thief's edit reaches the Pi", || {
        has(&pi, &notes, "/after", json!("written by the thief"))
    })
    .await;
    let pi_doc = pi
        .create_doc(Some("pi-log".into()), Some(json!({"uptime": 3})))
        .await
        .unwrap()
        .to_string();

    // The laptop meets the Pi: the Pi learns of the revocation and drops the phone. The
    // Pi took the thief's edit while it still trusted the phone, so it vouches for it (a
    // cutoff amendment in the registry) and every device converges on keeping it; only
    // the Pi relayed anything of the phone's, and the laptop never heard from the phone.
    laptop
        .dial(pi.listen_addrs(1).await[0].clone())
        .await
        .unwrap();
    eventually("the Pi drops the phone", || async {
        !pi.status().await.unwrap().peers.contains(&phone_did)
    })
    .await;
    eventually("the laptop has the Pi's document", || {
        has(&laptop, &pi_doc, "/uptime", json!(3))
    })
    .await;
    eventually("the laptop keeps the edit the Pi vouched for", || {
        has(&laptop, &notes, "/after", json!("written by the thief"))
    })
    .await;
    let pi_did = pi.device().to_string();
    let refused = laptop.status().await.unwrap().refused;
    assert!(refused.iter().all(|r| r.from == pi_did), "{refused:?}");
    assert_eq!(
        laptop.get(&notes, "/before").await.unwrap(),
        Some(json!("written while trusted"))
    );
    // The phone stays cut off: the Pi refuses its sessions from now on.
    phone
        .set(&notes, "/later", json!("written after the Pi knew"))
        .await
        .unwrap();
    pi.dial(phone.listen_addrs(1).await[0].clone()).await.ok();
    eventually("the Pi refuses the phone", || async {
        pi.status()
            .await
            .unwrap()
            .refused_peers
            .iter()
            .any(|r| r.peer == phone_did)
    })
    .await;
    assert_eq!(pi.get(&notes, "/later").await.unwrap(), None);
    for node in [laptop, phone, pi] {
        node.shutdown().await;
    }
}
