//! Sharing between two people's daemons, driven through the real `membrane` binary: grant,
//! accept, read, the access log and its verification, revoke.

mod common;

use common::{Daemon, ask, membrane, try_ask, wait_for};
use serde_json::json;

#[test]
fn a_friend_accepts_a_grant_reads_the_calendar_and_loses_it_on_revoke() {
    let temp = tempfile::tempdir().unwrap();
    let (sarah_dir, tom_dir) = (temp.path().join("sarah"), temp.path().join("tom"));
    membrane(&sarah_dir, &["--json", "init"]).data();
    membrane(&tom_dir, &["--json", "init"]).data();
    let sarah = Daemon::start(&sarah_dir, &[]);
    let tom = Daemon::start(&tom_dir, &[]);

    let calendar_file = temp.path().join("calendar.json");
    std::fs::write(&calendar_file, r#"{"saturday": "tennis at 10"}"#).unwrap();
    let calendar = membrane(
        &sarah_dir,
        &[
            "--json",
            "doc",
            "new",
            "--name",
            "calendar",
            "--content",
            calendar_file.to_str().unwrap(),
        ],
    )
    .data()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Sarah grants Tom's device read on the calendar, for 30 days, with a note.
    let granted = membrane(
        &sarah_dir,
        &[
            "--json",
            "grant",
            &tom.device,
            "--doc",
            "calendar",
            "--can",
            "read",
            "--expires",
            "30d",
            "--note",
            "tennis planning",
        ],
    )
    .data();
    let code = granted["code"].as_str().unwrap().to_owned();
    let grant_cid = granted["cid"].as_str().unwrap().to_owned();
    assert!(code.starts_with("mbrgrant1"), "{code}");
    assert!(granted["expires"].as_u64().unwrap() > 0);

    // Human output carries the code on its own line, too.
    let human = membrane(&sarah_dir, &["grants"]);
    assert_eq!(human.code, 0, "{}", human.stderr);
    assert!(human.stdout.contains(&tom.device) && human.stdout.contains("read calendar"));

    let accepted = membrane(&tom_dir, &["--json", "accept", &code]).data();
    assert_eq!(accepted["docs"], json!([[calendar, "read"]]));
    wait_for("Tom's node has the calendar", || {
        try_ask(
            &tom_dir,
            "doc.get",
            json!({"doc": calendar, "path": "/saturday"}),
        ) == Some(json!("tennis at 10"))
    });
    let shared = membrane(&tom_dir, &["--json", "shared"]).data();
    assert_eq!(shared.as_array().unwrap().len(), 1);

    // Tom may not write it: one clear line, exit 3.
    membrane(
        &tom_dir,
        &["doc", "set", &calendar, "/saturday", "\"cancelled\""],
    )
    .fails_clearly(&["read-only"]);

    // Sarah's access log shows Tom's read through this grant, and verifies.
    let log = membrane(&sarah_dir, &["--json", "log", "--by", &tom.device]).data();
    let entries = log.as_array().unwrap();
    assert!(!entries.is_empty());
    assert!(entries.iter().all(|e| e["grant"] == json!(grant_cid)
        && e["doc"] == json!(calendar)
        && e["kind"] == "read"));
    let verified = membrane(&sarah_dir, &["--json", "log", "verify"]).data();
    assert_eq!(verified["intact"], true);
    let who = membrane(&sarah_dir, &["--json", "who-can", "calendar"]).data();
    assert_eq!(who["grants"][0]["to"], json!(tom.device));

    // Revoked: Tom is refused and misses Sarah's next change.
    membrane(&sarah_dir, &["--json", "revoke", &grant_cid[..12]]).data();
    wait_for("Sarah refuses Tom", || {
        ask(&sarah_dir, "status", json!({}))["refused_peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["peer"] == json!(tom.device))
    });
    ask(
        &sarah_dir,
        "doc.set",
        json!({"doc": calendar, "path": "/sunday", "value": "run"}),
    );
    let grants = membrane(&sarah_dir, &["--json", "grants"]).data();
    assert_eq!(grants[0]["revoked"], true);
    assert!(
        membrane(&sarah_dir, &["--json", "who-can", "calendar"]).data()["grants"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        try_ask(
            &tom_dir,
            "doc.get",
            json!({"doc": calendar, "path": "/sunday"})
        ),
        None
    );

    // Bad input: one clear line each.
    membrane(&tom_dir, &["accept", "mbrgrant1garbage"]).fails_clearly(&["not a grant code"]);
    membrane(
        &sarah_dir,
        &["grant", "did:key:zNotAKey", "--doc", "calendar"],
    )
    .fails_clearly(&["did:key"]);
    membrane(&sarah_dir, &["grant", &tom.device, "--doc", "nonexistent"])
        .fails_clearly(&["no document"]);
    membrane(&sarah_dir, &["revoke", "bafynotagrant"]).fails_clearly(&["no grant"]);
    sarah.stop();
    tom.stop();
}

#[test]
fn a_shop_asks_for_the_inbox_and_its_node_picks_up_the_approval() {
    let temp = tempfile::tempdir().unwrap();
    let (sarah_dir, shop_dir) = (temp.path().join("sarah"), temp.path().join("shop"));
    membrane(&sarah_dir, &["--json", "init"]).data();
    membrane(&shop_dir, &["--json", "init"]).data();
    let sarah = Daemon::start(&sarah_dir, &[]);
    let shop = Daemon::start(&shop_dir, &[]);
    let inbox = membrane(&sarah_dir, &["--json", "doc", "new", "--name", "inbox"]).data()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let filed = membrane(
        &shop_dir,
        &[
            "--json",
            "request",
            &sarah.addr,
            "--doc",
            "inbox",
            "--can",
            "write",
            "--terms",
            "one offer a week",
        ],
    )
    .data();
    let id = filed["id"].as_u64().unwrap();
    let queue = membrane(&sarah_dir, &["--json", "requests"]).data();
    assert_eq!(queue[0]["from"], json!(shop.device));
    assert_eq!(queue[0]["state"], "pending");
    assert_eq!(queue[0]["terms"], "one offer a week");
    let human = membrane(&sarah_dir, &["requests"]);
    assert!(
        human.stdout.contains("their terms: one offer a week"),
        "{}",
        human.stdout
    );

    membrane(&sarah_dir, &["--json", "approve", &id.to_string()]).data();
    wait_for(
        "the shop's node accepts the grant and syncs the inbox",
        || try_ask(&shop_dir, "doc.get", json!({"doc": inbox, "path": "/"})).is_some(),
    );
    let asked = membrane(&shop_dir, &["--json", "request", "--list"]).data();
    assert_eq!(asked[0]["state"], "granted");
    membrane(&sarah_dir, &["approve", &id.to_string()]).fails_clearly(&["already answered"]);
    membrane(&sarah_dir, &["deny", "999"]).fails_clearly(&["no request 999"]);
    membrane(
        &shop_dir,
        &["request", "/ip4/127.0.0.1/tcp/1", "--doc", "inbox"],
    )
    .fails_clearly(&["/p2p/"]);
    sarah.stop();
    shop.stop();
}
