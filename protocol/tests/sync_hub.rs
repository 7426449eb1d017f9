//! Two or more sync hubs wired together in memory: devices converge, strangers get
//! nothing, reconnects cost a fixed number of round trips.

use std::collections::VecDeque;

use automerge::{
    ActorId, Automerge, AutomergeError, ROOT, ReadDoc as _, transaction::Transactable as _,
};
use membrane_protocol::{
    DocumentId, SecretKey, capability,
    sync::{
        DocSet, Effect, HubConfig, Input, Role, SessionId, SyncHub,
        gate::{Cutoff, RefusedChange, RevokedAuthors, cutoff_of},
        wire::{DocMessage, Frame},
    },
    ucan::{Command, Delegation, DelegationBuilder, RevocationSet},
};

const NOW: u64 = 1_800_000_000;

struct Device {
    hub: SyncHub,
    /// The authority delegation root → device.
    authority: Delegation,
    /// An actor id bound to the device key, as the node makes them.
    actor: ActorId,
}

fn device(root: &SecretKey, seed: u8) -> Device {
    let key = SecretKey::from_seed([seed; 32]);
    let authority: Delegation = DelegationBuilder::new(root.did(), key.did(), Command::top())
        .nonce(vec![seed; 12])
        .sign(root)
        .unwrap();
    let mut actor = key.did().as_bytes().to_vec();
    actor.extend([seed; 4]);
    let config = HubConfig {
        me: key.did(),
        root: root.did(),
        chain: vec![authority.clone()],
        clock_skew: 60,
        max_frame_size: 1 << 20,
    };
    Device {
        hub: SyncHub::new(config, DocSet::new()),
        authority,
        actor: ActorId::from(actor),
    }
}

fn doc_id(n: u32) -> DocumentId {
    let mut bytes = [0u8; 16];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[4..8].copy_from_slice(&n.wrapping_mul(2_654_435_761).to_be_bytes());
    bytes[0] = (n.wrapping_mul(37) % 256) as u8;
    DocumentId::from_bytes(bytes)
}

fn put(device: &mut Device, doc: DocumentId, key: &str, value: &str) -> Vec<Effect> {
    put_at(device, NOW, doc, key, value)
}

fn put_at(device: &mut Device, now: u64, doc: DocumentId, key: &str, value: &str) -> Vec<Effect> {
    if !device.hub.docs().contains(&doc) {
        device.hub.docs_mut().insert(doc, Automerge::new());
    }
    let actor = device.actor.clone();
    let changes = device
        .hub
        .docs_mut()
        .update(&doc, |d| {
            d.set_actor(actor);
            let before = d.get_heads();
            d.transact::<_, _, AutomergeError>(|tx| tx.put(ROOT, key, value).map(|_| ()))
                .unwrap();
            d.save_after(&before)
        })
        .expect("held");
    device.hub.handle(now, Input::LocalChange { doc, changes })
}

fn get(device: &Device, doc: DocumentId, key: &str) -> Option<String> {
    let doc = device.hub.docs().get(&doc)?;
    doc.get(ROOT, key)
        .unwrap()
        .map(|(value, _)| value.into_string().unwrap_or_default())
}

/// A link between two hubs; counts what crosses it.
#[derive(Default)]
struct Wire {
    frames: usize,
    bytes: usize,
    doc_frames_to_b: usize,
    closes: Vec<String>,
    refused: Vec<RefusedChange>,
    /// Alternations of direction with data in flight, i.e. half round trips.
    legs: usize,
}

/// Connects `a` (initiator) and `b` and delivers frames until both are quiet.
fn connect(a: &mut Device, b: &mut Device) -> Wire {
    let mut wire = Wire::default();
    let (sa, sb) = (SessionId(1), SessionId(1));
    let (a_me, b_me) = (a.hub.me(), b.hub.me());
    let mut to_b: VecDeque<Vec<u8>> = VecDeque::new();
    let mut to_a: VecDeque<Vec<u8>> = VecDeque::new();
    route(
        &mut wire,
        a.hub.handle(
            NOW,
            Input::Opened {
                session: sa,
                peer: b_me,
                role: Role::Initiator,
                persisted: vec![],
            },
        ),
        &mut to_b,
        true,
    );
    route(
        &mut wire,
        b.hub.handle(
            NOW,
            Input::Opened {
                session: sb,
                peer: a_me,
                role: Role::Responder,
                persisted: vec![],
            },
        ),
        &mut to_a,
        false,
    );
    settle(a, b, &mut wire, to_b, to_a);
    wire
}

/// Delivers frames between `a` and `b` (session 1 on both sides) until both are quiet.
fn settle(
    a: &mut Device,
    b: &mut Device,
    wire: &mut Wire,
    to_b: VecDeque<Vec<u8>>,
    to_a: VecDeque<Vec<u8>>,
) {
    settle_on(a, b, (SessionId(1), SessionId(1)), wire, to_b, to_a);
}

/// [`settle`] with the session ids `a` and `b` know each other by.
fn settle_on(
    a: &mut Device,
    b: &mut Device,
    (sa, sb): (SessionId, SessionId),
    wire: &mut Wire,
    mut to_b: VecDeque<Vec<u8>>,
    mut to_a: VecDeque<Vec<u8>>,
) {
    while !to_a.is_empty() || !to_b.is_empty() {
        assert!(wire.legs < 1_000, "the hubs never fall quiet");
        if !to_b.is_empty() {
            wire.legs += 1;
        }
        for frame in std::mem::take(&mut to_b) {
            route(
                wire,
                b.hub.handle(NOW, Input::Received { session: sb, frame }),
                &mut to_a,
                false,
            );
        }
        if !to_a.is_empty() {
            wire.legs += 1;
        }
        for frame in std::mem::take(&mut to_a) {
            route(
                wire,
                a.hub.handle(NOW, Input::Received { session: sa, frame }),
                &mut to_b,
                true,
            );
        }
    }
}

/// The kinds of document messages in `effects`' frames: "sync", "snapshot", "changes".
fn doc_message_kinds(effects: &[Effect]) -> Vec<&'static str> {
    let mut kinds = Vec::new();
    for effect in effects {
        if let Effect::Send { frame, .. } = effect
            && let Ok(Frame::Docs { items }) = Frame::decode(frame)
        {
            kinds.extend(items.iter().map(|item| match item {
                DocMessage::Sync { .. } => "sync",
                DocMessage::Snapshot { .. } => "snapshot",
                DocMessage::Changes { .. } => "changes",
            }));
        }
    }
    kinds
}

fn frames_of(effects: &[Effect]) -> VecDeque<Vec<u8>> {
    effects
        .iter()
        .filter_map(|effect| match effect {
            Effect::Send { frame, .. } => Some(frame.clone()),
            _ => None,
        })
        .collect()
}

fn route(wire: &mut Wire, effects: Vec<Effect>, out: &mut VecDeque<Vec<u8>>, towards_b: bool) {
    for effect in effects {
        match effect {
            Effect::Send { frame, .. } => {
                wire.frames += 1;
                wire.bytes += frame.len();
                if towards_b && matches!(Frame::decode(&frame), Ok(Frame::Docs { .. })) {
                    wire.doc_frames_to_b += 1;
                }
                out.push_back(frame);
            }
            Effect::Close { reason, .. } => wire.closes.push(reason.to_string()),
            Effect::Refused { changes, .. } => wire.refused.extend(changes),
            _ => {}
        }
    }
}

#[test]
fn offline_edits_on_two_devices_converge() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut laptop, mut phone) = (device(&root, 1), device(&root, 2));
    let calendar = doc_id(1);
    put(&mut laptop, calendar, "monday", "tennis");
    let first = connect(&mut laptop, &mut phone);
    assert!(first.closes.is_empty(), "{:?}", first.closes);
    assert_eq!(get(&phone, calendar, "monday").as_deref(), Some("tennis"));

    // Both edit while apart, then meet again.
    put(&mut laptop, calendar, "tuesday", "dentist");
    put(&mut phone, calendar, "wednesday", "run");
    put(&mut phone, doc_id(2), "name", "contacts");
    let wire = connect(&mut phone, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    for device in [&laptop, &phone] {
        assert_eq!(get(device, calendar, "tuesday").as_deref(), Some("dentist"));
        assert_eq!(get(device, calendar, "wednesday").as_deref(), Some("run"));
        assert_eq!(get(device, doc_id(2), "name").as_deref(), Some("contacts"));
    }
    assert_eq!(laptop.hub.docs().summary(), phone.hub.docs().summary());
}

#[test]
fn a_stranger_gets_no_document_bytes() {
    let root = SecretKey::from_seed([100; 32]);
    let other_root = SecretKey::from_seed([101; 32]);
    let mut laptop = device(&root, 1);
    let mut stranger = device(&other_root, 9);
    put(&mut laptop, doc_id(1), "secret", "diary");
    // The stranger dials the laptop: the laptop answers nothing.
    let wire = connect(&mut stranger, &mut laptop);
    assert_eq!(wire.closes.len(), 1, "{:?}", wire.closes);
    assert!(wire.closes[0].contains("unauthorized"));
    assert_eq!(wire.frames, 1, "only the stranger's Hello crossed the wire");
    assert!(stranger.hub.docs().is_empty());
    // The laptop dials the stranger: after its own Hello, the laptop sends nothing.
    let wire = connect(&mut laptop, &mut stranger);
    assert_eq!(wire.doc_frames_to_b, 0);
    assert!(stranger.hub.docs().is_empty());
}

#[test]
fn reconnect_with_many_documents_in_sync_is_cheap() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut laptop, mut phone) = (device(&root, 1), device(&root, 2));
    for n in 0..2_000 {
        put(&mut laptop, doc_id(n), "n", &n.to_string());
    }
    connect(&mut laptop, &mut phone);
    assert_eq!(phone.hub.docs().len(), 2_000);

    let again = connect(&mut laptop, &mut phone);
    eprintln!(
        "in-sync reconnect, 2,000 docs: {} bytes, {} frames, {} legs",
        again.bytes, again.frames, again.legs
    );
    assert!(again.bytes < 4_096, "{} bytes", again.bytes);
    assert!(again.legs <= 4, "{} legs", again.legs);

    for n in (0..2_000).step_by(100) {
        put(&mut phone, doc_id(n), "n", "changed");
    }
    let changed = connect(&mut laptop, &mut phone);
    eprintln!(
        "20 of 2,000 changed: {} bytes, {} frames, {} legs",
        changed.bytes, changed.frames, changed.legs
    );
    assert!(changed.closes.is_empty());
    for n in (0..2_000).step_by(100) {
        assert_eq!(get(&laptop, doc_id(n), "n").as_deref(), Some("changed"));
    }
    assert_eq!(laptop.hub.docs().summary(), phone.hub.docs().summary());
}

#[test]
fn malformed_and_out_of_order_frames_close_the_session() {
    let root = SecretKey::from_seed([100; 32]);
    let mut laptop = device(&root, 1);
    let peer = SecretKey::from_seed([2; 32]).did();
    let session = SessionId(7);
    laptop.hub.handle(
        NOW,
        Input::Opened {
            session,
            peer,
            role: Role::Responder,
            persisted: vec![],
        },
    );
    let effects = laptop.hub.handle(
        NOW,
        Input::Received {
            session,
            frame: b"garbage".to_vec(),
        },
    );
    assert!(
        matches!(&effects[..], [Effect::Close { .. }]),
        "{effects:?}"
    );

    laptop.hub.handle(
        NOW,
        Input::Opened {
            session,
            peer,
            role: Role::Responder,
            persisted: vec![],
        },
    );
    let docs_first = Frame::Docs { items: vec![] }.encode();
    let effects = laptop.hub.handle(
        NOW,
        Input::Received {
            session,
            frame: docs_first,
        },
    );
    assert!(
        matches!(&effects[..], [Effect::Close { reason, .. }] if reason.to_string().contains("before Hello")),
        "{effects:?}"
    );
}

fn revoke(device: &mut Device, revoked: &Device, cutoff: Cutoff) {
    let mut set = RevocationSet::new();
    set.insert(revoked.authority.cid());
    device.hub.set_revocations(set);
    let mut authors = RevokedAuthors::new();
    authors.insert(revoked.hub.me(), cutoff);
    device.hub.set_revoked_authors(authors);
}

#[test]
fn a_revoked_devices_later_changes_are_refused_even_when_relayed() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut laptop, mut phone, mut pi) = (device(&root, 1), device(&root, 2), device(&root, 3));
    let notes = doc_id(1);
    put(&mut phone, notes, "before", "written while trusted");
    connect(&mut phone, &mut laptop);
    connect(&mut phone, &mut pi);
    assert_eq!(
        get(&laptop, notes, "before").as_deref(),
        Some("written while trusted")
    );

    // The phone is lost; the laptop revokes it while the Pi is out of reach. The phone
    // then writes, and the Pi, not yet told, takes the change.
    let cutoff = cutoff_of(&phone.hub.me(), laptop.hub.docs());
    revoke(&mut laptop, &phone, cutoff.clone());
    put(&mut phone, notes, "after", "written by a thief");
    put(
        &mut phone,
        doc_id(2),
        "new",
        "a document started by the thief",
    );
    connect(&mut phone, &mut pi);
    assert_eq!(
        get(&pi, notes, "after").as_deref(),
        Some("written by a thief")
    );

    // The Pi meets the laptop: the laptop keeps the phone's later changes out, whoever
    // relays them, and the session stays up (the Pi is honest).
    put(&mut pi, notes, "pi", "still syncing");
    let wire = connect(&mut pi, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    let refused: Vec<_> = wire
        .refused
        .iter()
        .map(|r| (r.actor.clone(), r.seq))
        .collect();
    assert!(refused.contains(&(phone.actor.clone(), 2)), "{refused:?}");
    assert!(refused.iter().all(|(actor, _)| actor == &phone.actor));
    assert_eq!(get(&laptop, notes, "after"), None);
    assert_eq!(get(&laptop, doc_id(2), "new"), None);
    assert_eq!(
        get(&laptop, notes, "before").as_deref(),
        Some("written while trusted")
    );
    // The laptop's own and the Pi's concurrent edits still flow both ways.
    put(&mut laptop, doc_id(3), "laptop", "fine");
    let wire = connect(&mut laptop, &mut pi);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert_eq!(get(&pi, doc_id(3), "laptop").as_deref(), Some("fine"));

    // Once the Pi knows of the revocation too, the phone cannot even open a session there.
    revoke(&mut pi, &phone, cutoff);
    let wire = connect(&mut phone, &mut pi);
    assert_eq!(wire.closes.len(), 1, "{:?}", wire.closes);
    assert!(wire.closes[0].contains("Revoked"), "{:?}", wire.closes);
}

/// Sarah's laptop grants `grantee` (a device of another person) `command` on `doc`.
fn grant(
    owner_root: &SecretKey,
    grantee: &Device,
    command: &str,
    doc: DocumentId,
) -> Vec<Delegation> {
    let delegation = DelegationBuilder::new(
        owner_root.did(),
        grantee.hub.me(),
        capability::command(command),
    )
    .policy(capability::policy_for_document(&doc.to_string()))
    .expiration(Some(NOW + 3_600))
    .sign(owner_root)
    .unwrap();
    vec![delegation]
}

/// Holds `chains`, recording (as the node does on `accept`) that their documents are
/// their issuers' person's.
fn hold(device: &mut Device, chains: Vec<Vec<Delegation>>) {
    let mut provenance = std::collections::BTreeMap::new();
    for chain in &chains {
        let valid = membrane_protocol::ucan::Validator::new(NOW)
            .validate_delegation_chain(chain)
            .unwrap();
        for (doc, _) in membrane_protocol::sync::share::granted_documents(chain, &valid) {
            provenance.insert(doc, *valid.subject().unwrap());
        }
    }
    let refused = device.hub.set_held_grants(NOW, chains);
    assert!(refused.is_empty(), "{refused:?}");
    device.hub.set_provenance(provenance);
}

#[test]
fn a_friend_reads_exactly_the_granted_document_and_cannot_write_it() {
    let sarah = SecretKey::from_seed([100; 32]);
    let tom = SecretKey::from_seed([101; 32]);
    let mut laptop = device(&sarah, 1);
    let mut friend = device(&tom, 5);
    let (calendar, diary) = (doc_id(1), doc_id(2));
    put(&mut laptop, calendar, "saturday", "tennis at 10");
    put(&mut laptop, diary, "secret", "not for Tom");
    let chain = grant(&sarah, &friend, capability::DOC_READ, calendar);
    hold(&mut friend, vec![chain]);

    let wire = connect(&mut friend, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert_eq!(
        get(&friend, calendar, "saturday").as_deref(),
        Some("tennis at 10")
    );
    assert!(
        !friend.hub.docs().contains(&diary),
        "only the granted document"
    );
    assert_eq!(friend.hub.docs().len(), 1);

    // Tom edits his copy; Sarah's laptop keeps the change out, with a reason.
    put(&mut friend, calendar, "saturday", "cancelled");
    let wire = connect(&mut friend, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert!(!wire.refused.is_empty());
    assert!(
        wire.refused
            .iter()
            .all(|r| r.reason.to_string().contains("may only read"))
    );
    assert_eq!(
        get(&laptop, calendar, "saturday").as_deref(),
        Some("tennis at 10")
    );
}

#[test]
fn a_writer_brings_only_changes_authored_under_its_own_key() {
    let sarah = SecretKey::from_seed([100; 32]);
    let shop = SecretKey::from_seed([102; 32]);
    let mut laptop = device(&sarah, 1);
    let mut vendor = device(&shop, 6);
    let inbox = doc_id(3);
    put(&mut laptop, inbox, "welcome", "offers go here");
    let chain = grant(&sarah, &vendor, capability::DOC_WRITE, inbox);
    hold(&mut vendor, vec![chain]);
    connect(&mut vendor, &mut laptop);
    put(&mut vendor, inbox, "offer-1", "20% off rackets");
    let wire = connect(&mut vendor, &mut laptop);
    assert!(wire.refused.is_empty(), "{:?}", wire.refused);
    assert_eq!(
        get(&laptop, inbox, "offer-1").as_deref(),
        Some("20% off rackets")
    );

    // The shop forges a change under the laptop's actor id: refused.
    vendor.actor = laptop.actor.clone();
    vendor.actor = {
        let mut forged = laptop.actor.to_bytes().to_vec();
        forged[33] ^= 0xff; // same key prefix, another run
        ActorId::from(forged)
    };
    put(&mut vendor, inbox, "offer-2", "forged as Sarah");
    let wire = connect(&mut vendor, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert!(
        wire.refused
            .iter()
            .any(|r| r.reason.to_string().contains("not bound")),
        "{:?}",
        wire.refused
    );
    assert_eq!(get(&laptop, inbox, "offer-2"), None);
}

#[test]
fn bad_grants_open_nothing() {
    let sarah = SecretKey::from_seed([100; 32]);
    let tom = SecretKey::from_seed([101; 32]);
    let mallory = SecretKey::from_seed([103; 32]);
    let mut laptop = device(&sarah, 1);
    let calendar = doc_id(1);
    put(&mut laptop, calendar, "saturday", "tennis");

    // A grant for Tom presented by Mallory's device: the audience is not the peer.
    let mut tom_device = device(&tom, 5);
    let mut thief = device(&mallory, 7);
    let for_tom = grant(&sarah, &tom_device, capability::DOC_READ, calendar);
    thief.hub.set_held_grants(NOW, vec![for_tom.clone()]); // refused locally too
    let wire = connect(&mut thief, &mut laptop);
    assert_eq!(wire.closes.len(), 1, "{:?}", wire.closes);
    assert!(thief.hub.docs().is_empty());

    // A grant signed by someone other than Sarah's root, claiming her as subject.
    let forged = DelegationBuilder::new(
        mallory.did(),
        tom_device.hub.me(),
        capability::command(capability::DOC_READ),
    )
    .subject(sarah.did())
    .policy(capability::policy_for_document(&calendar.to_string()))
    .sign(&mallory)
    .unwrap();
    let refused = tom_device.hub.set_held_grants(NOW, vec![vec![forged]]);
    assert_eq!(refused.len(), 1);

    // An expired grant: refused at Hello; an open session closes when it expires.
    hold(&mut tom_device, vec![for_tom]);
    let wire = connect(&mut tom_device, &mut laptop);
    assert!(wire.closes.is_empty());
    assert_eq!(
        get(&tom_device, calendar, "saturday").as_deref(),
        Some("tennis")
    );
    // The first thing handled after the expiry closes the session, before any change is
    // sent: the calendar changes at that very moment and nothing goes to Tom.
    let effects = put_at(&mut laptop, NOW + 3_601, calendar, "sunday", "run");
    assert!(
        matches!(effects.first(), Some(Effect::Close { reason, .. }) if reason.to_string().contains("expired")),
        "{effects:?}"
    );
    assert!(
        effects.iter().all(|e| !matches!(e, Effect::Send { .. })),
        "{effects:?}"
    );
    assert!(laptop.hub.expire(NOW + 3_601).is_empty(), "already closed");
}

#[test]
fn a_grant_is_passed_on_only_when_its_issuer_allowed_it() {
    let sarah = SecretKey::from_seed([100; 32]);
    let tom = SecretKey::from_seed([101; 32]);
    let mallory = SecretKey::from_seed([103; 32]);
    let mut laptop = device(&sarah, 1);
    let calendar = doc_id(1);
    put(&mut laptop, calendar, "saturday", "tennis");
    let tom_device = device(&tom, 5);
    let mut mallory_device = device(&mallory, 7);
    let (tom_did, mallory_did) = (tom_device.hub.me(), mallory_device.hub.me());
    let pass_on = |grant: Vec<Delegation>| {
        let last = grant.last().unwrap().payload().clone();
        let onward = DelegationBuilder::new(tom_did, mallory_did, last.command.clone())
            .subject(sarah.did())
            .policy(last.policy.clone())
            .sign(&SecretKey::from_seed([5; 32]))
            .unwrap();
        let mut chain = grant;
        chain.push(onward);
        chain
    };

    // Tom passes a plain grant to Mallory: valid UCAN, refused by Sarah's node.
    let plain = grant(&sarah, &tom_device, capability::DOC_READ, calendar);
    hold(&mut mallory_device, vec![pass_on(plain)]);
    let wire = connect(&mut mallory_device, &mut laptop);
    assert_eq!(wire.closes.len(), 1, "{:?}", wire.closes);
    assert!(
        wire.closes[0].contains("may not pass it on"),
        "{:?}",
        wire.closes
    );
    assert!(get(&mallory_device, calendar, "saturday").is_none());

    // Had Sarah made it delegable, Mallory would read through Tom.
    let delegable = vec![
        DelegationBuilder::new(
            sarah.did(),
            tom_device.hub.me(),
            capability::command(capability::DOC_READ),
        )
        .policy(capability::policy_for_document(&calendar.to_string()))
        .meta(std::collections::BTreeMap::from([(
            membrane_protocol::sync::share::DELEGABLE.to_owned(),
            membrane_protocol::ucan::Ipld::Bool(true),
        )]))
        .sign(&sarah)
        .unwrap(),
    ];
    hold(&mut mallory_device, vec![pass_on(delegable)]);
    let wire = connect(&mut mallory_device, &mut laptop);
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert_eq!(
        get(&mallory_device, calendar, "saturday").as_deref(),
        Some("tennis")
    );
}

#[test]
fn a_chain_that_widens_its_parent_opens_nothing() {
    let sarah = SecretKey::from_seed([100; 32]);
    let tom = SecretKey::from_seed([101; 32]);
    let mallory = SecretKey::from_seed([103; 32]);
    let mut laptop = device(&sarah, 1);
    let (calendar, diary) = (doc_id(1), doc_id(2));
    put(&mut laptop, calendar, "saturday", "tennis");
    put(&mut laptop, diary, "secret", "diary");
    let tom_device = device(&tom, 5);
    let mut mallory_device = device(&mallory, 7);
    let delegable = std::collections::BTreeMap::from([(
        membrane_protocol::sync::share::DELEGABLE.to_owned(),
        membrane_protocol::ucan::Ipld::Bool(true),
    )]);
    let parent = DelegationBuilder::new(
        sarah.did(),
        tom_device.hub.me(),
        capability::command(capability::DOC_READ),
    )
    .policy(capability::policy_for_document(&calendar.to_string()))
    .meta(delegable)
    .sign(&sarah)
    .unwrap();
    let child = |command: &str, policy| {
        DelegationBuilder::new(
            tom_device.hub.me(),
            mallory_device.hub.me(),
            capability::command(command),
        )
        .subject(sarah.did())
        .policy(policy)
        .sign(&SecretKey::from_seed([5; 32]))
        .unwrap()
    };
    // A broader command than the parent's: the chain does not validate.
    let broader = child(
        capability::DOC_WRITE,
        capability::policy_for_document(&calendar.to_string()),
    );
    // A looser policy (another document) than the parent's: every policy in a chain must
    // hold, so it covers nothing.
    let looser = child(
        capability::DOC_READ,
        capability::policy_for_document(&diary.to_string()),
    );
    for widened in [broader, looser] {
        let chain = vec![parent.clone(), widened];
        let refused = mallory_device.hub.set_held_grants(NOW, vec![chain.clone()]);
        assert_eq!(refused.len(), 1, "Mallory's own node sees it is unusable");
        // Presented raw in a Hello anyway, as a hostile peer would: nothing opens.
        let hostile = device(&mallory, 7);
        let frame = Frame::Hello {
            version: membrane_protocol::sync::wire::PROTOCOL_VERSION,
            chain: vec![serde_bytes::ByteBuf::from(
                hostile.authority.as_bytes().to_vec(),
            )],
            grants: vec![
                chain
                    .iter()
                    .map(|d| serde_bytes::ByteBuf::from(d.as_bytes().to_vec()))
                    .collect(),
            ],
        };
        let session = SessionId(9);
        laptop.hub.handle(
            NOW,
            Input::Opened {
                session,
                peer: hostile.hub.me(),
                role: Role::Responder,
                persisted: vec![],
            },
        );
        let effects = laptop.hub.handle(
            NOW,
            Input::Received {
                session,
                frame: frame.encode(),
            },
        );
        assert!(
            effects.iter().all(|e| !matches!(e, Effect::Send { .. })),
            "{effects:?}"
        );
        assert!(
            effects.iter().any(|e| matches!(e, Effect::Close { .. })),
            "{effects:?}"
        );
    }
}

#[test]
fn a_grant_naming_one_of_our_own_documents_does_not_make_it_flow_out() {
    let tom = SecretKey::from_seed([101; 32]);
    let mallory = SecretKey::from_seed([103; 32]);
    let mut tom_device = device(&tom, 5);
    let mut mallory_device = device(&mallory, 7);
    let diary = doc_id(9);
    put(&mut tom_device, diary, "secret", "tom's own");
    // Mallory makes a document with the same id, so her node has something to sync.
    put(&mut mallory_device, diary, "bait", "mine");
    // Mallory "grants" Tom write on Tom's own diary (its id is all she needs), hoping
    // Tom's node then syncs it with her as if it were hers.
    let bait = grant(&mallory, &tom_device, capability::DOC_WRITE, diary);
    // Tom's node holds the grant, but knows the diary is his own (no provenance for it).
    assert!(tom_device.hub.set_held_grants(NOW, vec![bait]).is_empty());
    let wire = connect(&mut tom_device, &mut mallory_device);
    assert!(
        get(&mallory_device, diary, "secret").is_none(),
        "{:?}",
        wire.closes
    );
    assert!(get(&tom_device, diary, "bait").is_none());
}

#[test]
fn live_changes_are_pushed_as_they_are_and_need_no_reply() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut laptop, mut phone) = (device(&root, 1), device(&root, 2));
    let notes = doc_id(1);
    put(&mut laptop, notes, "a", "1");
    connect(&mut laptop, &mut phone);

    for round in 0..5 {
        let value = round.to_string();
        let effects = put(&mut laptop, notes, "a", &value);
        assert_eq!(doc_message_kinds(&effects), ["changes"]);
        let frames = frames_of(&effects);
        let mut replies = Vec::new();
        for frame in frames {
            replies.extend(phone.hub.handle(
                NOW,
                Input::Received {
                    session: SessionId(1),
                    frame,
                },
            ));
        }
        assert!(frames_of(&replies).is_empty(), "a push is not answered");
        assert_eq!(get(&phone, notes, "a").as_deref(), Some(value.as_str()));
        // Both sides count the other as level.
        assert!(laptop.hub.doc_status(&notes).iter().all(|s| s.in_sync));
        assert!(phone.hub.doc_status(&notes).iter().all(|s| s.in_sync));
        // And the phone's own change goes back the same way.
        let back = put(&mut phone, notes, "b", &value);
        assert_eq!(doc_message_kinds(&back), ["changes"]);
        let mut wire = Wire::default();
        settle(
            &mut laptop,
            &mut phone,
            &mut wire,
            VecDeque::new(),
            frames_of(&back),
        );
        assert_eq!(get(&laptop, notes, "b").as_deref(), Some(value.as_str()));
    }
    assert_eq!(laptop.hub.docs().summary(), phone.hub.docs().summary());
}

#[test]
fn a_push_whose_dependencies_are_missing_falls_back_to_the_sync_protocol() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut laptop, mut phone) = (device(&root, 1), device(&root, 2));
    let notes = doc_id(1);
    put(&mut laptop, notes, "a", "0");
    connect(&mut laptop, &mut phone);

    // The first change's frame never arrives (as if the phone had lost it); the second
    // depends on it.
    let lost = put(&mut laptop, notes, "a", "1");
    assert_eq!(doc_message_kinds(&lost), ["changes"]);
    let second = put(&mut laptop, notes, "b", "2");
    let answer = phone.hub.handle_all(
        NOW,
        frames_of(&second).into_iter().map(|frame| Input::Received {
            session: SessionId(1),
            frame,
        }),
    );
    assert_eq!(doc_message_kinds(&answer), ["sync"], "the phone asks");
    assert_eq!(
        get(&phone, notes, "b"),
        None,
        "nothing applies out of order"
    );

    let mut wire = Wire::default();
    settle(
        &mut laptop,
        &mut phone,
        &mut wire,
        VecDeque::new(),
        frames_of(&answer),
    );
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    assert_eq!(get(&phone, notes, "a").as_deref(), Some("1"));
    assert_eq!(get(&phone, notes, "b").as_deref(), Some("2"));
    assert_eq!(laptop.hub.docs().summary(), phone.hub.docs().summary());

    // Level again: the next change is pushed.
    let next = put(&mut laptop, notes, "c", "3");
    assert_eq!(doc_message_kinds(&next), ["changes"]);
}

#[test]
fn pushes_from_several_peers_handled_as_one_batch_all_apply_and_relay() {
    let root = SecretKey::from_seed([100; 32]);
    let (mut home, mut laptop, mut phone) = (device(&root, 1), device(&root, 2), device(&root, 3));
    let notes = doc_id(1);
    put(&mut home, notes, "start", "0");
    connect(&mut laptop, &mut home);
    // Home's session with the phone is session 2 on the home's side.
    let (home_me, phone_me) = (home.hub.me(), phone.hub.me());
    let to_phone: VecDeque<Vec<u8>> = frames_of(&home.hub.handle(
        NOW,
        Input::Opened {
            session: SessionId(2),
            peer: phone_me,
            role: Role::Initiator,
            persisted: vec![],
        },
    ));
    let to_home: VecDeque<Vec<u8>> = frames_of(&phone.hub.handle(
        NOW,
        Input::Opened {
            session: SessionId(1),
            peer: home_me,
            role: Role::Responder,
            persisted: vec![],
        },
    ));
    let mut wire = Wire::default();
    settle_on(
        &mut home,
        &mut phone,
        (SessionId(2), SessionId(1)),
        &mut wire,
        to_phone,
        to_home,
    );
    assert_eq!(get(&phone, notes, "start").as_deref(), Some("0"));

    // The laptop and the phone type at once; the home takes both pushes in one batch.
    let from_laptop = frames_of(&put(&mut laptop, notes, "laptop", "1"));
    let from_phone = frames_of(&put(&mut phone, notes, "phone", "2"));
    let inputs = from_laptop
        .into_iter()
        .map(|frame| Input::Received {
            session: SessionId(1),
            frame,
        })
        .chain(from_phone.into_iter().map(|frame| Input::Received {
            session: SessionId(2),
            frame,
        }))
        .collect::<Vec<_>>();
    let effects = home.hub.handle_all(NOW, inputs);
    assert_eq!(get(&home, notes, "laptop").as_deref(), Some("1"));
    assert_eq!(get(&home, notes, "phone").as_deref(), Some("2"));
    let stored: usize = effects
        .iter()
        .filter(|e| matches!(e, Effect::StoreChanges { .. }))
        .count();
    assert_eq!(stored, 2, "one chunk to store per peer");
    // Each side gets the other's change, pushed.
    for effect in &effects {
        if let Effect::Send { session, frame } = effect {
            let kinds = doc_message_kinds(std::slice::from_ref(effect));
            assert_eq!(kinds, ["changes"]);
            let target = if *session == SessionId(1) {
                &mut laptop
            } else {
                &mut phone
            };
            target.hub.handle(
                NOW,
                Input::Received {
                    session: SessionId(1),
                    frame: frame.clone(),
                },
            );
        }
    }
    for device in [&home, &laptop, &phone] {
        assert_eq!(get(device, notes, "laptop").as_deref(), Some("1"));
        assert_eq!(get(device, notes, "phone").as_deref(), Some("2"));
    }
    assert_eq!(home.hub.docs().summary(), laptop.hub.docs().summary());
    assert_eq!(home.hub.docs().summary(), phone.hub.docs().summary());
}

/// Routes `effects` from `b`, setting aside the documents it asks to load.
fn route_from_b(
    wire: &mut Wire,
    effects: Vec<Effect>,
    to_a: &mut VecDeque<Vec<u8>>,
    loads: &mut Vec<DocumentId>,
) {
    loads.extend(effects.iter().filter_map(|effect| match effect {
        Effect::Load { doc } => Some(*doc),
        _ => None,
    }));
    route(wire, effects, to_a, false);
}

#[test]
fn a_hub_with_documents_on_disk_loads_only_what_differs_and_converges() {
    let root = SecretKey::from_seed([7; 32]);
    let mut a = device(&root, 1);
    let mut b = device(&root, 2);
    for n in 0..40 {
        put(&mut a, doc_id(n), "k", "v");
    }
    connect(&mut a, &mut b);

    // B restarts knowing its documents by their heads only; its store holds their bytes.
    let mut store: std::collections::BTreeMap<DocumentId, Vec<u8>> = (0..40)
        .map(|n| (doc_id(n), b.hub.docs().get(&doc_id(n)).unwrap().save()))
        .collect();
    let heads: Vec<_> = (0..40)
        .map(|n| b.hub.docs().heads(&doc_id(n)).unwrap().to_vec())
        .collect();
    b = device(&root, 2);
    for (n, heads) in heads.into_iter().enumerate() {
        b.hub.docs_mut().insert_unloaded(doc_id(n as u32), heads);
    }
    let load = |store: &std::collections::BTreeMap<DocumentId, Vec<u8>>, doc: &DocumentId| {
        Some(Box::new(Automerge::load(&store[doc]).unwrap()))
    };

    // Offline: A changes two documents, B one (loading it first and storing the change
    // before it is unloaded, as the node does).
    put(&mut a, doc_id(3), "a", "1");
    put(&mut a, doc_id(8), "a", "2");
    let effects = b.hub.handle(
        NOW,
        Input::Loaded {
            doc: doc_id(5),
            content: load(&store, &doc_id(5)),
        },
    );
    assert!(effects.is_empty());
    put(&mut b, doc_id(5), "b", "3");
    store.insert(doc_id(5), b.hub.docs().get(&doc_id(5)).unwrap().save());
    b.hub.docs_mut().unload_beyond(0, |_| false);
    let read = |doc: &DocumentId| load(&store, doc);
    assert_eq!(b.hub.docs().loaded_len(), 0);

    // They meet. B's loads are answered one leg late, so frames about a document arrive
    // while it is still on disk and must wait for it.
    let (mut wire, mut to_b, mut to_a) = (Wire::default(), VecDeque::new(), VecDeque::new());
    let mut loads = Vec::new();
    let mut asked = Vec::new();
    let a_me = a.hub.me();
    let b_me = b.hub.me();
    let opened = |peer, role| Input::Opened {
        session: SessionId(1),
        peer,
        role,
        persisted: vec![],
    };
    route(
        &mut wire,
        a.hub.handle(NOW, opened(b_me, Role::Initiator)),
        &mut to_b,
        true,
    );
    let effects = b.hub.handle(NOW, opened(a_me, Role::Responder));
    route_from_b(&mut wire, effects, &mut to_a, &mut loads);
    while !to_a.is_empty() || !to_b.is_empty() || !loads.is_empty() {
        assert!(wire.legs < 1_000, "the hubs never fall quiet");
        wire.legs += 1;
        let due: Vec<Input> = loads
            .drain(..)
            .inspect(|doc| asked.push(*doc))
            .map(|doc| Input::Loaded {
                doc,
                content: read(&doc),
            })
            .collect();
        for frame in std::mem::take(&mut to_b) {
            let effects = b.hub.handle(
                NOW,
                Input::Received {
                    session: SessionId(1),
                    frame,
                },
            );
            route_from_b(&mut wire, effects, &mut to_a, &mut loads);
        }
        let effects = b.hub.handle_all(NOW, due);
        route_from_b(&mut wire, effects, &mut to_a, &mut loads);
        for frame in std::mem::take(&mut to_a) {
            let effects = a.hub.handle(
                NOW,
                Input::Received {
                    session: SessionId(1),
                    frame,
                },
            );
            route(&mut wire, effects, &mut to_b, true);
        }
    }
    assert!(wire.closes.is_empty(), "{:?}", wire.closes);
    asked.sort();
    let mut differing = vec![doc_id(3), doc_id(5), doc_id(8)];
    differing.sort();
    assert_eq!(asked, differing, "only the documents that differ are read");
    for n in 0..40 {
        assert_eq!(
            a.hub.docs().heads(&doc_id(n)),
            b.hub.docs().heads(&doc_id(n))
        );
    }
    assert_eq!(get(&b, doc_id(3), "a").as_deref(), Some("1"));
    assert_eq!(get(&b, doc_id(8), "a").as_deref(), Some("2"));
    assert_eq!(get(&a, doc_id(5), "b").as_deref(), Some("3"));
    assert!(b.hub.loading().next().is_none());
}
