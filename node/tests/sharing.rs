//! Sharing with other people over real libp2p connections on loopback: a friend reads one
//! document, a shop writes into an inbox, and each gets exactly that, until revoked or
//! expired. Every use is in the owner's access log.

mod common;

use common::{config, eventually, pair_with, start};

use membrane_node::{
    DataDir, DeviceIdentity, Node, NodeHandle,
    sharing::{Can, GrantRequest},
    time,
};
use serde_json::json;

async fn person(base: &std::path::Path, name: &str) -> NodeHandle {
    let dir = base.join(name);
    DeviceIdentity::init(&DataDir::new(&dir), time::now()).unwrap();
    Node::start(config(&dir)).await.unwrap()
}

async fn has(node: &NodeHandle, doc: &str, path: &str, expected: serde_json::Value) -> bool {
    node.get(doc, path).await.ok().flatten() == Some(expected)
}

fn request(to: &NodeHandle, doc: &str, can: Can) -> GrantRequest {
    GrantRequest {
        to: to.device(),
        doc: doc.into(),
        can,
        expires_in: Some(3_600),
        terms: None,
        note: None,
        delegable: false,
        path: None,
    }
}

async fn refused_with(node: &NodeHandle, peer: &NodeHandle, reason: &str) -> bool {
    let peer = peer.device().to_string();
    node.status()
        .await
        .unwrap()
        .refused_peers
        .iter()
        .any(|r| r.peer == peer && r.reason.contains(reason))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_friend_reads_a_shop_writes_and_each_gets_exactly_that() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let tom = person(temp.path(), "tom").await;
    let shop = person(temp.path(), "shop").await;
    let calendar = sarah
        .create_doc(Some("calendar".into()), Some(json!({"saturday": "tennis"})))
        .await
        .unwrap()
        .to_string();
    let inbox = sarah
        .create_doc(Some("inbox".into()), Some(json!({"offers": {}})))
        .await
        .unwrap()
        .to_string();
    let diary = sarah
        .create_doc(
            Some("diary".into()),
            Some(json!({"secret": "not for anyone"})),
        )
        .await
        .unwrap()
        .to_string();
    sarah.listen_addrs(1).await;

    // Tom may read the calendar; he accepts the code and his node fetches it.
    let for_tom = sarah
        .grant(request(&tom, "calendar", Can::Read))
        .await
        .unwrap();
    let shared = tom.accept(&for_tom.code).await.unwrap();
    assert_eq!(shared.docs, [(calendar.clone(), "read".to_owned())]);
    eventually("Tom has the calendar", || {
        has(&tom, &calendar, "/saturday", json!("tennis"))
    })
    .await;
    assert!(
        has(&tom, "calendar", "/saturday", json!("tennis")).await,
        "Tom knows it by Sarah's name for it"
    );

    // The shop may write into the inbox, on Sarah's terms.
    let mut to_shop = request(&shop, "inbox", Can::Write);
    to_shop.terms = Some("offers about tennis only, at most one a week".into());
    let for_shop = sarah.grant(to_shop).await.unwrap();
    let shared = shop.accept(&for_shop.code).await.unwrap();
    assert_eq!(
        shared.terms.as_deref(),
        Some("offers about tennis only, at most one a week")
    );
    eventually("the shop has the inbox", || {
        has(&shop, &inbox, "/offers", json!({}))
    })
    .await;
    shop.set(&inbox, "/offers/rackets", json!("20% off"))
        .await
        .unwrap();
    eventually("the offer lands in Sarah's inbox", || {
        has(&sarah, &inbox, "/offers/rackets", json!("20% off"))
    })
    .await;

    // Each sees exactly what was granted: no diary anywhere, no inbox at Tom's.
    for (node, granted) in [(&tom, &calendar), (&shop, &inbox)] {
        let ids: Vec<String> = node
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|d| d.id)
            .collect();
        assert!(ids.contains(granted));
        assert!(!ids.contains(&diary), "{ids:?}");
    }
    assert!(!tom.list().await.unwrap().iter().any(|d| d.id == inbox));
    assert_eq!(tom.get(&diary, "/secret").await.ok().flatten(), None);

    // Tom's node will not let him edit what he may only read (a node that sent such
    // changes anyway would see them refused: `protocol/tests/sync_hub.rs`).
    let error = tom
        .set(&calendar, "/saturday", json!("cancelled"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("read-only"), "{error}");
    assert!(has(&tom, &calendar, "/saturday", json!("tennis")).await);

    // Sarah's access log holds Tom's reads and the shop's write, and verifies.
    let log = sarah.access_log().await.unwrap();
    let tom_did = tom.device().to_string();
    let shop_did = shop.device().to_string();
    assert!(log.iter().any(|e| e.event.peer == tom_did
        && e.event.doc == calendar
        && e.event.kind == "read"
        && e.event.grant == for_tom.cid));
    assert!(log.iter().any(|e| e.event.peer == shop_did
        && e.event.doc == inbox
        && e.event.kind == "write"
        && e.event.bytes > 0));
    assert!(log.iter().all(|e| e.event.doc != diary));
    assert_eq!(sarah.verify_access_log().await.unwrap(), log.len() as u64);
    let grants = sarah.grants().await.unwrap();
    assert_eq!(grants.len(), 2);
    assert!(grants.iter().all(|g| g.last_used.is_some() && !g.revoked));
    let who = sarah.who_can("calendar").await.unwrap();
    assert_eq!(who.grants.len(), 1);
    assert_eq!(who.grants[0]["to"], json!(tom_did));

    // Sarah revokes Tom's grant: his session closes, his redials are refused, and her
    // next change does not reach him. The shop keeps its access.
    sarah.revoke_grant(&for_tom.cid).await.unwrap();
    eventually("Tom is refused", || refused_with(&sarah, &tom, "Revoked")).await;
    sarah.set(&calendar, "/sunday", json!("run")).await.unwrap();
    shop.set(&inbox, "/offers/balls", json!("3 for 2"))
        .await
        .unwrap();
    eventually("the shop still writes", || {
        has(&sarah, &inbox, "/offers/balls", json!("3 for 2"))
    })
    .await;
    eventually("Tom is refused again after Sarah's change", || async {
        let after = sarah.status().await.unwrap().refused_peers.len();
        after >= 2 && refused_with(&sarah, &tom, "Revoked").await
    })
    .await;
    assert_eq!(tom.get(&calendar, "/sunday").await.unwrap(), None);
    assert!(sarah.who_can("calendar").await.unwrap().grants.is_empty());
    assert!(
        sarah
            .grants()
            .await
            .unwrap()
            .iter()
            .any(|g| g.cid == for_tom.cid && g.revoked)
    );

    for node in [sarah, tom, shop] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_opens_nothing_and_bad_codes_are_refused() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let tom = person(temp.path(), "tom").await;
    sarah
        .create_doc(Some("calendar".into()), Some(json!({"saturday": "tennis"})))
        .await
        .unwrap();
    sarah.listen_addrs(1).await;

    // Already expired when presented: refused at accept, and Sarah would refuse it too.
    let mut short = request(&tom, "calendar", Can::Read);
    short.expires_in = Some(0);
    let grant = sarah.grant(short).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let error = tom.accept(&grant.code).await.unwrap_err().to_string();
    assert!(
        error.contains("expired") || error.contains("Expired"),
        "{error}"
    );

    // Grants for someone else, on one's own documents, or garbled: clear errors.
    let for_tom = sarah
        .grant(request(&tom, "calendar", Can::Read))
        .await
        .unwrap();
    let other = person(temp.path(), "other").await;
    let error = other.accept(&for_tom.code).await.unwrap_err().to_string();
    assert!(error.contains("not for this device"), "{error}");
    let error = sarah.accept(&for_tom.code).await.unwrap_err().to_string();
    assert!(error.contains("your own documents"), "{error}");
    for garbled in [
        "",
        "mbrgrant1",
        "mbrgrant1AAAA",
        &for_tom.code[..for_tom.code.len() / 2],
    ] {
        let error = tom.accept(garbled).await.unwrap_err().to_string();
        assert!(error.contains("not a grant code"), "{garbled}: {error}");
    }
    assert!(tom.shared().await.unwrap().is_empty());
    assert!(
        sarah
            .grant(request(&sarah, "calendar", Can::Read))
            .await
            .is_err(),
        "no grants to oneself"
    );
    for node in [sarah, tom, other] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_access_log_fails_verification() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let tom = person(temp.path(), "tom").await;
    let calendar = sarah
        .create_doc(Some("calendar".into()), Some(json!({"saturday": "tennis"})))
        .await
        .unwrap()
        .to_string();
    sarah.listen_addrs(1).await;
    let grant = sarah
        .grant(request(&tom, "calendar", Can::Read))
        .await
        .unwrap();
    tom.accept(&grant.code).await.unwrap();
    eventually("Tom has the calendar", || {
        has(&tom, &calendar, "/saturday", json!("tennis"))
    })
    .await;
    eventually("the read is logged", || async {
        !sarah.access_log().await.unwrap().is_empty()
    })
    .await;
    let entries = sarah.verify_access_log().await.unwrap();
    assert!(entries >= 1);
    tom.shutdown().await;
    sarah.shutdown().await;

    // Someone with the disk rewrites the first entry to hide who read what.
    let store = temp.path().join("sarah/store.redb");
    {
        let table: redb::TableDefinition<'_, u64, &[u8]> =
            redb::TableDefinition::new("access-log-v1");
        let db = redb::Database::open(&store).unwrap();
        let txn = db.begin_write().unwrap();
        {
            use redb::ReadableTable as _;
            let mut log = txn.open_table(table).unwrap();
            let first = log.get(1).unwrap().unwrap().value().to_vec();
            let mut entry: serde_json::Value = serde_json::from_slice(&first).unwrap();
            entry["peer"] = json!("did:key:z6MkSomeoneElse");
            log.insert(1, serde_json::to_vec(&entry).unwrap().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let sarah = Node::start(config(&temp.path().join("sarah")))
        .await
        .unwrap();
    let error = sarah.verify_access_log().await.unwrap_err().to_string();
    assert!(error.contains("entry 1"), "{error}");
    sarah.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shop_requests_access_and_gets_exactly_what_sarah_approves() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let shop = person(temp.path(), "shop").await;
    let pushy = person(temp.path(), "pushy").await;
    let inbox = sarah
        .create_doc(Some("inbox".into()), Some(json!({"offers": {}})))
        .await
        .unwrap()
        .to_string();
    let sarah_addr = sarah.listen_addrs(1).await[0].clone();

    // The shop files a request on its terms; it waits in Sarah's queue.
    let terms = "one offer a week, no tracking";
    let id = shop
        .request(
            &sarah_addr,
            "inbox",
            Can::Write,
            Some(terms.into()),
            None,
            None,
        )
        .await
        .unwrap();
    let queued = sarah.requests().await.unwrap();
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].from, shop.device().to_string());
    assert_eq!(queued[0].terms.as_deref(), Some(terms));
    assert!(
        shop.list().await.unwrap().is_empty(),
        "nothing before approval"
    );

    // Sarah approves: the shop's node picks the grant up by itself and syncs the inbox.
    let issued = sarah.approve(id, None).await.unwrap();
    assert_eq!(issued.doc, inbox);
    eventually("the shop has the inbox", || {
        has(&shop, &inbox, "/offers", json!({}))
    })
    .await;
    eventually("the shop's request shows granted", || async {
        shop.asked()
            .await
            .unwrap()
            .iter()
            .any(|r| r.id == id && r.state == "granted")
    })
    .await;
    shop.set(&inbox, "/offers/shoes", json!("new season"))
        .await
        .unwrap();
    eventually("the offer reaches Sarah", || {
        has(&sarah, &inbox, "/offers/shoes", json!("new season"))
    })
    .await;
    assert!(sarah.approve(id, None).await.is_err(), "answered once");

    // A pushy shop: three requests are queued, the fourth is refused; Sarah denies one
    // and the shop hears why. It never gets a byte of her documents.
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(
            pushy
                .request(
                    &sarah_addr,
                    &format!("doc {n}"),
                    Can::Read,
                    None,
                    None,
                    None,
                )
                .await
                .unwrap(),
        );
    }
    let error = pushy
        .request(&sarah_addr, "doc 4", Can::Read, None, None, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("too many requests"), "{error}");
    sarah.deny(ids[0], "I do not know you").await.unwrap();
    eventually("the pushy shop hears the denial", || async {
        pushy.asked().await.unwrap().iter().any(|r| {
            r.id == ids[0]
                && r.state == "denied"
                && r.reason.as_deref() == Some("I do not know you")
        })
    })
    .await;
    assert!(pushy.list().await.unwrap().is_empty());
    assert_eq!(sarah.requests().await.unwrap().len(), 4);

    // The queue survives a restart.
    sarah.shutdown().await;
    let sarah = Node::start(config(&temp.path().join("sarah")))
        .await
        .unwrap();
    assert_eq!(sarah.requests().await.unwrap().len(), 4);
    for node in [sarah, shop, pushy] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_grant_delivers_only_that_subtree_and_keeps_it_current() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let shop = person(temp.path(), "shop").await;
    let contacts = sarah
        .create_doc(
            Some("me".into()),
            Some(json!({
                "profile": {
                    "name": "Sarah Lindqvist",
                    "address": {"street": "Elm Street 1", "city": "Oslo"},
                },
                "medical": "allergic to penicillin",
            })),
        )
        .await
        .unwrap()
        .to_string();
    sarah.listen_addrs(1).await;

    let mut delivery = request(&shop, "me", Can::Read);
    delivery.path = Some("/profile/address".into());
    let grant = sarah.grant(delivery).await.unwrap();
    let view = grant.view.clone().expect("a path grant has a view");
    assert_ne!(view, contacts);
    let accepted = shop.accept(&grant.code).await.unwrap();
    assert_eq!(accepted.docs, [(view.clone(), "read".to_owned())]);
    eventually("the shop has the address", || {
        has(&shop, &view, "/profile/address/city", json!("Oslo"))
    })
    .await;

    // The bytes the shop holds carry the address and nothing else of the document.
    let saved = shop
        .read(view.parse().unwrap(), |d| d.save())
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&saved);
    assert!(text.contains("Elm Street 1"));
    for secret in ["Sarah Lindqvist", "penicillin", "medical"] {
        assert!(!text.contains(secret), "{secret:?} reached the shop");
    }
    assert!(!shop.list().await.unwrap().iter().any(|d| d.id == contacts));
    // Sarah's access log names the view.
    let log = sarah.access_log().await.unwrap();
    assert!(
        log.iter()
            .any(|e| e.event.doc == view && e.event.kind == "read")
    );
    assert!(log.iter().all(|e| e.event.doc != contacts));

    // Sarah moves; the shop's view follows. Her other edits never leave.
    sarah
        .set(&contacts, "/profile/address/city", json!("Bergen"))
        .await
        .unwrap();
    sarah
        .set(&contacts, "/medical", json!("also hay fever"))
        .await
        .unwrap();
    eventually("the new city reaches the shop", || {
        has(&shop, &view, "/profile/address/city", json!("Bergen"))
    })
    .await;
    let saved = shop
        .read(view.parse().unwrap(), |d| d.save())
        .await
        .unwrap()
        .unwrap();
    assert!(!String::from_utf8_lossy(&saved).contains("hay fever"));
    let who = sarah.who_can("me").await.unwrap();
    assert_eq!(who.grants[0]["path"], json!("/profile/address"));
    for node in [sarah, shop] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_during_a_partition_takes_effect_when_it_heals() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    DeviceIdentity::init(&DataDir::new(&laptop_dir), time::now()).unwrap();
    let laptop = start(&laptop_dir, vec![]).await;
    let calendar = laptop
        .create_doc(Some("calendar".into()), Some(json!({"saturday": "tennis"})))
        .await
        .unwrap()
        .to_string();
    let pi_dir = pair_with(&laptop, temp.path(), "pi").await;
    let pi = start(pi_dir.path(), laptop.listen_addrs(1).await).await;
    let tom = person(temp.path(), "tom").await;
    let grant = laptop
        .grant(request(&tom, "calendar", Can::Read))
        .await
        .unwrap();
    eventually("the Pi knows the grant", || async {
        pi.grants()
            .await
            .unwrap()
            .iter()
            .any(|g| g.cid == grant.cid)
    })
    .await;

    // The laptop goes away (a new port, nobody dials it). Tom reads from the Pi.
    laptop.shutdown().await;
    let laptop = start(&laptop_dir, vec![]).await;
    tom.accept(&grant.code).await.unwrap();
    let pi_addr = pi.listen_addrs(1).await[0].clone();
    tom.dial(pi_addr.clone()).await.unwrap();
    eventually("Tom reads through the Pi", || {
        has(&tom, &calendar, "/saturday", json!("tennis"))
    })
    .await;

    // The laptop revokes while apart: the Pi, not yet told, still serves Tom.
    laptop.revoke_grant(&grant.cid).await.unwrap();
    pi.set(&calendar, "/note", json!("still served"))
        .await
        .unwrap();
    eventually("the Pi still serves Tom", || {
        has(&tom, &calendar, "/note", json!("still served"))
    })
    .await;

    // The partition heals: the revocation reaches the Pi with the registry, and the Pi
    // cuts Tom off; nothing written afterwards reaches him.
    laptop.dial(pi_addr).await.unwrap();
    eventually("the Pi refuses Tom", || refused_with(&pi, &tom, "revoked")).await;
    pi.set(&calendar, "/after", json!("not for Tom"))
        .await
        .unwrap();
    eventually("the laptop has the Pi's edit", || {
        has(&laptop, &calendar, "/after", json!("not for Tom"))
    })
    .await;
    eventually("Tom's redial is refused too", || async {
        pi.status()
            .await
            .unwrap()
            .refused_peers
            .iter()
            .filter(|r| r.peer == tom.device().to_string())
            .count()
            >= 2
    })
    .await;
    assert_eq!(tom.get(&calendar, "/after").await.unwrap(), None);
    for node in [laptop, pi, tom] {
        node.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_expires_mid_session_is_cut_off() {
    let temp = tempfile::tempdir().unwrap();
    let sarah = person(temp.path(), "sarah").await;
    let tom = person(temp.path(), "tom").await;
    let calendar = sarah
        .create_doc(Some("calendar".into()), Some(json!({"saturday": "tennis"})))
        .await
        .unwrap()
        .to_string();
    sarah.listen_addrs(1).await;
    let mut brief = request(&tom, "calendar", Can::Read);
    brief.expires_in = Some(2);
    let grant = sarah.grant(brief).await.unwrap();
    tom.accept(&grant.code).await.unwrap();
    eventually("Tom reads while the grant lasts", || {
        has(&tom, &calendar, "/saturday", json!("tennis"))
    })
    .await;
    // The node's periodic check closes the session once the expiry passes, and every
    // redial is refused from then on.
    eventually("Sarah cuts Tom off at expiry", || {
        refused_with(&sarah, &tom, "expired")
    })
    .await;
    sarah.set(&calendar, "/sunday", json!("run")).await.unwrap();
    eventually("Tom's redial is refused as expired", || {
        refused_with(&sarah, &tom, "Expired")
    })
    .await;
    assert_eq!(tom.get(&calendar, "/sunday").await.unwrap(), None);
    for node in [sarah, tom] {
        node.shutdown().await;
    }
}
