//! The seed story, step by step. Every step does the real thing on real nodes and checks
//! the outcome it narrates; what a step returns is what the next ones build on.

use anyhow::{Context as _, bail, ensure};
use membrane_node::{
    DeviceIdentity, Multiaddr, NodeHandle,
    pairing::{self, InviteEvent},
    sharing::{Can, GrantRequest, IssuedGrant},
    store::access_log::AccessEntry,
};
use membrane_protocol::pairing::PairingTicket;
use serde_json::{Value, json};

use super::{
    report::{Done, GRANT, LOG, Narrator, PAIR, REVOKE, Report, STRANGER, SYNC, USE},
    stage::{PATIENCE, Stage, eventually, tcp_address},
};
use crate::{cmd::token::format_time, qr};

/// Data dir names under the stage (and how `--keep` names the nodes).
pub(super) const LAPTOP: &str = "sarah-laptop";
const PHONE: &str = "sarah-phone";
const TOM: &str = "tom";
const SHOP: &str = "shop";
const STRANGER_DIR: &str = "stranger";

/// The name Sarah's phone has in her registry.
const PHONE_NAME: &str = "phone";
const DAY: u64 = 86_400;
const TOM_TERMS: &str = "for planning tennis only";
const SHOP_TERMS: &str = "offers about tennis only, at most one a week";
/// Where the shop puts its offer in Sarah's inbox.
const OFFER_PATH: &str = "/offers/court-sports-week-19";
/// What the lost phone writes after it was revoked.
const LOST_PHONE_PATH: &str = "/sunday";

/// Tells the whole story, stopping at the first step that fails (each builds on the ones
/// before). An error is a failure to write the results, not a failed step.
pub(super) async fn tell(stage: &Stage, report: &mut Report<'_>) -> anyhow::Result<()> {
    let say = Narrator::new(!report.out().is_json());
    let Some(sarah) = report.step(&PAIR, pair(stage, say)).await? else {
        return Ok(());
    };
    let Some(documents) = report.step(&SYNC, sync(&sarah, say)).await? else {
        return Ok(());
    };
    let Some(shares) = report
        .step(&GRANT, grant(stage, &sarah, &documents, say))
        .await?
    else {
        return Ok(());
    };
    let Some(()) = report.step(&USE, use_shares(&sarah, &shares, say)).await? else {
        return Ok(());
    };
    let Some(()) = report
        .step(&STRANGER, stranger(stage, &sarah, &documents, say))
        .await?
    else {
        return Ok(());
    };
    let Some(()) = report
        .step(&REVOKE, revoke_phone(&sarah, &documents, say))
        .await?
    else {
        return Ok(());
    };
    report
        .step(&LOG, access_log(&sarah, &shares, &documents, say))
        .await?;
    Ok(())
}

/// Sarah's two devices.
struct Sarah {
    laptop: NodeHandle,
    phone: NodeHandle,
    /// Where the laptop listens (TCP): the address the phone and the stranger dial.
    laptop_address: Multiaddr,
}

/// One of Sarah's documents, as the laptop created it.
struct Document {
    name: &'static str,
    id: String,
    content: Value,
}

/// Sarah's documents.
struct Documents(Vec<Document>);

impl Documents {
    fn id(&self, name: &str) -> anyhow::Result<&str> {
        self.0
            .iter()
            .find(|doc| doc.name == name)
            .map(|doc| doc.id.as_str())
            .with_context(|| format!("Sarah has no document named {name}"))
    }
}

/// What Sarah shared, and with whom.
struct Shares {
    tom: NodeHandle,
    shop: NodeHandle,
    calendar: String,
    inbox: String,
    for_tom: IssuedGrant,
    for_shop: IssuedGrant,
}

/// Step 1: the laptop starts; the phone scans its QR code and joins.
async fn pair(stage: &Stage, say: Narrator) -> anyhow::Result<(Sarah, Done)> {
    let laptop = stage.new_person(LAPTOP, "Sarah's laptop").await?;
    let laptop_address = tcp_address(&laptop).await?;
    say.line(format_args!(
        "Sarah's laptop is up as {}, listening on {}.",
        short(&laptop.device()),
        without_peer_id(&laptop_address)
    ));

    let (ticket, mut events) = laptop
        .invite(600, Some(PHONE_NAME.into()))
        .await
        .context("the laptop could not open an invitation")?;
    let code = ticket.to_string();
    say.line("It shows a QR code for the new device:");
    say.block(&qr::terminal(&code)?);
    // The phone's camera: the code is read back from a picture of it, so what the phone
    // joins with is what the QR code holds.
    let picture = stage.dir().join("invite.png");
    qr::write_png(&code, &picture)?;
    let scanned = qr::read_png(&picture)?;
    ensure!(
        scanned == code,
        "the QR code read back is not the invitation"
    );
    let scanned: PairingTicket = scanned
        .parse()
        .context("the QR code holds no pairing code")?;
    say.line(format_args!(
        "Sarah's phone scans it (here: from a picture of it, {}) and joins.",
        picture.display()
    ));

    let phone_dir = stage.data_dir(PHONE);
    DeviceIdentity::init_joining(&phone_dir).context("cannot create the phone's key")?;
    let joined = pairing::join(&phone_dir, &scanned, Some(PHONE_NAME.into()))
        .await
        .context("the phone could not join")?;
    let event = tokio::time::timeout(PATIENCE, events.recv())
        .await
        .context("the laptop never heard of the phone joining")?;
    let Some(InviteEvent::Joined {
        device,
        verification_code: laptop_code,
        ..
    }) = event
    else {
        bail!("the laptop did not see the phone join: {event:?}");
    };
    let phone_did = joined.identity.device.did().to_string();
    ensure!(
        device == phone_did,
        "the laptop paired {device}, not the phone ({phone_did})"
    );
    let phone_code = joined.verification_code;
    say.line(format_args!(
        "Both screens show a code to compare: laptop {laptop_code}, phone {phone_code}."
    ));
    ensure!(
        laptop_code == phone_code,
        "the screens disagree: laptop {laptop_code}, phone {phone_code}"
    );

    let phone = stage
        .start(PHONE, "Sarah's phone", vec![laptop_address.clone()])
        .await?;
    eventually("the phone to connect to the laptop", async || {
        connected(&laptop, &phone).await
    })
    .await?;
    say.line(format_args!(
        "The phone ({}) starts and connects to the laptop.",
        short(&phone.device())
    ));
    let detail = json!({
        "laptop": laptop.device().to_string(),
        "phone": phone_did,
        "root": laptop.root().to_string(),
        "ticket": code,
        "laptop_code": laptop_code,
        "phone_code": phone_code,
    });
    let outcome = format!("the phone joined; both screens showed {laptop_code}");
    let sarah = Sarah {
        laptop,
        phone,
        laptop_address,
    };
    Ok((sarah, Done::new(outcome, detail)))
}

/// Small, realistic content for Sarah's documents.
fn sarahs_documents() -> [(&'static str, Value); 3] {
    [
        (
            "contacts",
            json!({
                "tom": {"name": "Tom Berg", "phone": "+47 912 34 567"},
                "mum": {"name": "Ingrid Lindqvist", "phone": "+47 934 56 789"},
            }),
        ),
        (
            "calendar",
            json!({
                "tuesday": "dentist at 8:30",
                "saturday": "tennis with Tom at 10",
            }),
        ),
        (
            "fitness",
            json!({
                "monday": {"run": "5 km in 27:40", "steps": 9214},
                "resting_heart_rate": 58,
            }),
        ),
    ]
}

/// Step 2: the laptop creates Sarah's documents and the phone receives them.
async fn sync(sarah: &Sarah, say: Narrator) -> anyhow::Result<(Documents, Done)> {
    let mut documents = Vec::new();
    for (name, content) in sarahs_documents() {
        let id = sarah
            .laptop
            .create_doc(Some(name.into()), Some(content))
            .await
            .with_context(|| format!("the laptop could not create {name}"))?
            .to_string();
        // What the laptop holds, read back: the phone must end up with exactly this.
        let content = sarah
            .laptop
            .get(&id, "/")
            .await?
            .with_context(|| format!("the laptop lost {name}"))?;
        say.line(format_args!("The laptop saves {name}: {content}"));
        documents.push(Document { name, id, content });
    }
    eventually(
        "the phone to hold all three documents as the laptop does",
        async || {
            for doc in &documents {
                if sarah.phone.get(&doc.id, "/").await.ok().flatten().as_ref() != Some(&doc.content)
                {
                    return false;
                }
            }
            true
        },
    )
    .await?;
    // The names travel too (in Sarah's replicated index document).
    let mut on_phone = Vec::new();
    for doc in &documents {
        let by_name = sarah.phone.get(doc.name, "/").await?;
        ensure!(
            by_name.as_ref() == Some(&doc.content),
            "the phone does not know {} by its name",
            doc.name
        );
        on_phone.push(json!({"name": doc.name, "content": by_name}));
    }
    let names: Vec<&str> = documents.iter().map(|doc| doc.name).collect();
    say.line(format_args!(
        "The phone now holds {}, identical to the laptop's.",
        names.join(", ")
    ));
    let detail = json!({
        "documents": documents.iter().map(|doc| json!({
            "name": doc.name,
            "id": doc.id,
            "content": doc.content,
        })).collect::<Vec<_>>(),
        "on_phone": on_phone,
    });
    let outcome = format!("the phone holds {}, same as the laptop", names.join(", "));
    Ok((Documents(documents), Done::new(outcome, detail)))
}

/// Step 3: Sarah grants; Tom's node and the shop's node accept the codes.
async fn grant(
    stage: &Stage,
    sarah: &Sarah,
    documents: &Documents,
    say: Narrator,
) -> anyhow::Result<(Shares, Done)> {
    let tom = stage.new_person(TOM, "Tom's laptop").await?;
    let shop = stage.new_person(SHOP, "the sports shop's server").await?;
    say.line(format_args!(
        "Tom's node ({}) and the sports shop's node ({}) start: two other people, with keys of their own.",
        short(&tom.device()),
        short(&shop.device())
    ));
    let calendar = documents.id("calendar")?.to_owned();
    let inbox = sarah
        .laptop
        .create_doc(Some("inbox".into()), Some(json!({"offers": {}})))
        .await
        .context("the laptop could not create the inbox")?
        .to_string();
    say.line("Sarah's laptop makes an inbox for offers.");

    let for_tom = sarah
        .laptop
        .grant(GrantRequest {
            to: tom.device(),
            doc: "calendar".into(),
            can: Can::Read,
            expires_in: Some(30 * DAY),
            terms: Some(TOM_TERMS.into()),
            note: Some("Tom".into()),
            delegable: false,
            path: None,
        })
        .await
        .context("the laptop could not grant Tom read on the calendar")?;
    say.line(format_args!(
        "Grant {} to Tom: read the calendar for 30 days, \"{TOM_TERMS}\"; he gets a {}-character code.",
        abbreviated(&for_tom.cid),
        for_tom.code.len()
    ));
    // Membrane has no append-only level: `write` it is, and Sarah's nodes accept the
    // shop's changes only under actor ids bound to the shop's own key.
    let for_shop = sarah
        .laptop
        .grant(GrantRequest {
            to: shop.device(),
            doc: "inbox".into(),
            can: Can::Write,
            expires_in: Some(90 * DAY),
            terms: Some(SHOP_TERMS.into()),
            note: Some("the sports shop".into()),
            delegable: false,
            path: None,
        })
        .await
        .context("the laptop could not grant the shop write on the inbox")?;
    say.line(format_args!(
        "Grant {} to the shop: write to the inbox for 90 days, \"{SHOP_TERMS}\"; it gets a {}-character code.",
        abbreviated(&for_shop.cid),
        for_shop.code.len()
    ));

    let tom_took = tom
        .accept(&for_tom.code)
        .await
        .context("Tom's node refused the code")?;
    ensure!(
        tom_took.docs == [(calendar.clone(), "read".to_owned())],
        "Tom's grant covers {:?}, not read on the calendar",
        tom_took.docs
    );
    let shop_took = shop
        .accept(&for_shop.code)
        .await
        .context("the shop's node refused the code")?;
    ensure!(
        shop_took.docs == [(inbox.clone(), "write".to_owned())],
        "the shop's grant covers {:?}, not write on the inbox",
        shop_took.docs
    );
    ensure!(
        shop_took.terms.as_deref() == Some(SHOP_TERMS),
        "the shop sees other terms: {:?}",
        shop_took.terms
    );
    say.line(
        "Tom's node and the shop's node accept their codes; the shop's shows it Sarah's terms.",
    );
    // Accepting records where Sarah's devices are, but the node first dials them on its
    // next redial round (every 3 s): reach out at once instead.
    for (node, took) in [(&tom, &tom_took), (&shop, &shop_took)] {
        for addr in took.addrs.iter().filter_map(|addr| addr.parse().ok()) {
            node.dial(addr).await?;
        }
    }
    let detail = json!({
        "tom": {
            "device": tom.device().to_string(),
            "grant": for_tom.cid,
            "doc": calendar,
            "can": "read",
            "terms": tom_took.terms,
            "expires": for_tom.expires,
        },
        "shop": {
            "device": shop.device().to_string(),
            "grant": for_shop.cid,
            "doc": inbox,
            "can": "write",
            "terms": shop_took.terms,
            "expires": for_shop.expires,
        },
    });
    let shares = Shares {
        tom,
        shop,
        calendar,
        inbox,
        for_tom,
        for_shop,
    };
    let outcome = "Tom took read on the calendar, the shop write on the inbox, on Sarah's terms";
    Ok((shares, Done::new(outcome, detail)))
}

/// The offer the shop sends.
fn offer() -> Value {
    json!({
        "from": "Court Sports",
        "text": "Tennis rackets 20% off until Sunday",
    })
}

/// Step 4: Tom's node fetches the calendar; the shop writes an offer into the inbox.
async fn use_shares(sarah: &Sarah, shares: &Shares, say: Narrator) -> anyhow::Result<((), Done)> {
    let calendar = sarah
        .laptop
        .get(&shares.calendar, "/")
        .await?
        .context("the laptop lost the calendar")?;
    eventually("Tom's node to receive Sarah's calendar", async || {
        shares
            .tom
            .get(&shares.calendar, "/")
            .await
            .ok()
            .flatten()
            .as_ref()
            == Some(&calendar)
    })
    .await?;
    // Tom's node knows the calendar by the name Sarah gave it.
    let saturday = shares
        .tom
        .get("calendar", "/saturday")
        .await?
        .context("Tom's node does not know the calendar by its name")?;
    say.line(format_args!(
        "Tom's node fetched the calendar: saturday is {saturday}."
    ));
    let tom_edit = match shares
        .tom
        .set(&shares.calendar, "/saturday", json!("cancelled"))
        .await
    {
        Ok(_) => bail!("Tom's node let him change a calendar he may only read"),
        Err(refusal) => refusal.to_string(),
    };
    say.line(format_args!(
        "Tom tries to change it; his node says: {tom_edit}"
    ));

    eventually("the shop's node to receive the inbox", async || {
        shares
            .shop
            .get(&shares.inbox, "/offers")
            .await
            .ok()
            .flatten()
            == Some(json!({}))
    })
    .await?;
    shares
        .shop
        .set(&shares.inbox, OFFER_PATH, offer())
        .await
        .context("the shop could not write its offer")?;
    say.line(format_args!(
        "The shop writes an offer into the inbox: {}",
        offer()
    ));
    for (device, node) in [("laptop", &sarah.laptop), ("phone", &sarah.phone)] {
        eventually(
            &format!("the offer to reach Sarah's {device}"),
            async || node.get(&shares.inbox, OFFER_PATH).await.ok().flatten() == Some(offer()),
        )
        .await?;
    }
    say.line("The offer is in Sarah's inbox, on her laptop and (through it) on her phone.");
    let detail = json!({
        "tom_read": calendar,
        "tom_edit_refused": tom_edit,
        "offer": {"path": OFFER_PATH, "value": offer()},
        "inbox_at_laptop": sarah.laptop.get(&shares.inbox, "/").await?,
        "inbox_at_phone": sarah.phone.get(&shares.inbox, "/").await?,
    });
    let outcome = "Tom read the calendar; the shop's offer reached Sarah's laptop and phone";
    Ok(((), Done::new(outcome, detail)))
}

/// Step 5: a stranger's node dials Sarah's laptop and gets nothing.
async fn stranger(
    stage: &Stage,
    sarah: &Sarah,
    documents: &Documents,
    say: Narrator,
) -> anyhow::Result<((), Done)> {
    let stranger = stage.new_person(STRANGER_DIR, "a stranger").await?;
    let did = stranger.device().to_string();
    say.line(format_args!(
        "A stranger's node ({}) dials Sarah's laptop and asks to sync.",
        short(&did)
    ));
    stranger.dial(sarah.laptop_address.clone()).await?;
    eventually("Sarah's laptop to refuse the stranger", async || {
        !refusals(&sarah.laptop, &did).await.is_empty()
    })
    .await?;
    let refused = refusals(&sarah.laptop, &did).await;
    let reason = refused.last().context("the refusal vanished")?.clone();
    say.line(format_args!("Sarah's laptop refuses it: {reason}."));
    let held = stranger.list().await?;
    ensure!(
        held.is_empty(),
        "the stranger holds {} document(s): {:?}",
        held.len(),
        held.iter().map(|doc| &doc.id).collect::<Vec<_>>()
    );
    for doc in &documents.0 {
        ensure!(
            stranger.get(&doc.id, "/").await.ok().flatten().is_none(),
            "the stranger holds Sarah's {}",
            doc.name
        );
    }
    say.line("The stranger holds no document of Sarah's, and gives up.");
    // Its node would keep redialing, and crowd Sarah's list of refusals.
    stage.stop(STRANGER_DIR).await;
    let detail = json!({
        "device": did,
        "refusals": refused,
        "documents_held": held.len(),
    });
    Ok((
        (),
        Done::new(format!("refused ({reason}); it holds nothing"), detail),
    ))
}

/// Step 6: the laptop revokes the lost phone; the phone's later write never reaches it.
async fn revoke_phone(
    sarah: &Sarah,
    documents: &Documents,
    say: Narrator,
) -> anyhow::Result<((), Done)> {
    let phone_did = sarah.phone.device().to_string();
    let calendar = documents.id("calendar")?;
    let revoked = sarah
        .laptop
        .revoke_device(PHONE_NAME)
        .await
        .context("the laptop could not revoke the phone")?;
    say.line(format_args!(
        "Sarah's laptop signs a revocation of the phone's {} delegations and records it in her registry.",
        revoked.len()
    ));
    let entry = sarah
        .laptop
        .devices()
        .await?
        .into_iter()
        .find(|device| device.did == phone_did)
        .context("the phone is missing from Sarah's registry")?;
    ensure!(
        entry.revoked,
        "the registry does not show the phone revoked"
    );
    eventually("the laptop to drop the phone", async || {
        !connected(&sarah.laptop, &sarah.phone).await
    })
    .await?;
    say.line("The laptop drops its connection with the phone.");

    // Whoever has the phone writes on it, and the phone tries to sync at once.
    let refused_before = refusals(&sarah.laptop, &phone_did).await.len();
    let written = json!("brunch at Tom's (written on the lost phone)");
    sarah
        .phone
        .set(calendar, LOST_PHONE_PATH, written.clone())
        .await
        .context("the phone could not write on itself")?;
    sarah.phone.dial(sarah.laptop_address.clone()).await?;
    say.line(format_args!(
        "Whoever has the phone writes to the calendar on it ({LOST_PHONE_PATH} = {written}) and it redials the laptop."
    ));
    eventually(
        "the laptop to refuse the phone's next attempt",
        async || refusals(&sarah.laptop, &phone_did).await.len() > refused_before,
    )
    .await?;
    let reason = refusals(&sarah.laptop, &phone_did)
        .await
        .pop()
        .context("the refusal vanished")?;
    let at_phone = sarah.phone.get(calendar, LOST_PHONE_PATH).await?;
    ensure!(
        at_phone.as_ref() == Some(&written),
        "the phone does not hold its own write"
    );
    let at_laptop = sarah.laptop.get(calendar, LOST_PHONE_PATH).await?;
    ensure!(
        at_laptop.is_none(),
        "the lost phone's write reached the laptop: {at_laptop:?}"
    );
    say.line(format_args!(
        "The laptop refuses it ({reason}); the write stays on the phone."
    ));
    let detail = json!({
        "phone": phone_did,
        "revoked_delegations": revoked,
        "registry_says_revoked": entry.revoked,
        "refusal": reason,
        "phone_wrote": {"doc": calendar, "path": LOST_PHONE_PATH, "value": written},
        "calendar_at_phone": sarah.phone.get(calendar, "/").await?,
        "calendar_at_laptop": sarah.laptop.get(calendar, "/").await?,
    });
    let outcome = "the phone is revoked; the laptop refused it and never got its write";
    Ok(((), Done::new(outcome, detail)))
}

/// Step 7: Sarah's laptop shows its access log and verifies its hash chain.
async fn access_log(
    sarah: &Sarah,
    shares: &Shares,
    documents: &Documents,
    say: Narrator,
) -> anyhow::Result<((), Done)> {
    let tom = shares.tom.device().to_string();
    let shop = shares.shop.device().to_string();
    let logged = |log: &[AccessEntry], peer: &str, doc: &str, kind: &str, grant: &str| {
        log.iter().any(|entry| {
            entry.event.peer == peer
                && entry.event.doc == doc
                && entry.event.kind == kind
                && entry.event.grant == grant
        })
    };
    eventually("Tom's read and the shop's write in the log", async || {
        sarah.laptop.access_log().await.is_ok_and(|log| {
            logged(&log, &tom, &shares.calendar, "read", &shares.for_tom.cid)
                && logged(&log, &shop, &shares.inbox, "write", &shares.for_shop.cid)
        })
    })
    .await?;
    let log = sarah.laptop.access_log().await?;
    let verified = sarah
        .laptop
        .verify_access_log()
        .await
        .context("the access log does not verify")?;
    ensure!(
        verified >= log.len() as u64,
        "the log verifies {verified} entries but lists {}",
        log.len()
    );
    let strangers: Vec<&str> = log
        .iter()
        .map(|entry| entry.event.peer.as_str())
        .filter(|peer| *peer != tom && *peer != shop)
        .collect();
    ensure!(
        strangers.is_empty(),
        "the log has entries by peers Sarah never granted anything: {strangers:?}"
    );

    let who = |peer: &str| if peer == tom { "Tom" } else { "the shop" };
    let doc_name = |id: &str| -> String {
        match documents.0.iter().find(|doc| doc.id == id) {
            Some(doc) => doc.name.to_owned(),
            None if id == shares.inbox => "inbox".to_owned(),
            None => abbreviated(id),
        }
    };
    for entry in &log {
        say.line(format_args!(
            "{:>3}  {}  {:<5}  {:>4} bytes  {:<8}  by {:<8}  grant {}",
            entry.seq,
            format_time(entry.event.at),
            entry.event.kind,
            entry.event.bytes,
            doc_name(&entry.event.doc),
            who(&entry.event.peer),
            abbreviated(&entry.event.grant),
        ));
    }
    let noun = if verified == 1 { "entry" } else { "entries" };
    say.line(format_args!(
        "The log's hash chain is intact: {verified} {noun}."
    ));
    let detail = json!({
        "entries": log,
        "verified": verified,
    });
    let outcome = format!(
        "{} {noun}, by Tom and the shop only; hash chain intact",
        log.len()
    );
    Ok(((), Done::new(outcome, detail)))
}

/// Whether `node` has a live session with `peer`.
async fn connected(node: &NodeHandle, peer: &NodeHandle) -> bool {
    let peer = peer.device().to_string();
    node.status()
        .await
        .is_ok_and(|status| status.peers.contains(&peer))
}

/// Why `node` refused `peer`'s sessions, oldest first (as far as its status remembers).
async fn refusals(node: &NodeHandle, peer: &str) -> Vec<String> {
    node.status()
        .await
        .map(|status| {
            status
                .refused_peers
                .into_iter()
                .filter(|refused| refused.peer == peer)
                .map(|refused| refused.reason)
                .collect()
        })
        .unwrap_or_default()
}

/// A DID short enough to read in a sentence.
fn short(did: &impl std::fmt::Display) -> String {
    abbreviated(&did.to_string())
}

/// The start of a long code or identifier, marked as cut.
fn abbreviated(text: &str) -> String {
    const SHOWN: usize = 20;
    match text.char_indices().nth(SHOWN) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// An address without its `/p2p/<peer id>` tail, for narration.
fn without_peer_id(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .filter(|p| !matches!(p, membrane_node::multiaddr::Protocol::P2p(_)))
        .collect()
}
