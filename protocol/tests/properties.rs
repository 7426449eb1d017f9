//! Property tests for the UCAN token layer.
//!
//! - `delegations_round_trip_byte_for_byte` / `invocations_round_trip_byte_for_byte`:
//!   encode → decode → encode is lossless and byte-identical for random tokens.
//! - `attenuation_never_widens_authority`: a delegation at the end of a chain never lets its
//!   audience do more than the delegation above it allowed.
//! - `single_bit_flips_are_always_rejected`: every single-bit change of a valid token is
//!   refused, by the decoder or by validation, without a panic.

use std::{
    cell::Cell,
    collections::BTreeMap,
    panic::{AssertUnwindSafe, catch_unwind},
};

use membrane_protocol::{
    SecretKey,
    ucan::{
        AnyToken, Cid, Command, DecodeError, Delegation, DelegationBuilder, DelegationPayload,
        Invocation, InvocationBuilder, InvocationPayload, Ipld, MAX_SAFE_INTEGER, Policy,
        TokenKind, UnixTime, VARSIG_ED25519_DAG_CBOR, Validator, decode_any, token_cid,
    },
};
use proptest::{
    collection::{btree_map, vec},
    prelude::*,
    sample::{Index, select},
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Value, json};

/// The fixed "now" of every validation in this file.
const NOW: UnixTime = 1_800_000_000;

/// Valid commands, chosen so that many pairs cover each other and some nearly do
/// (`/membrane/doc` vs `/membrane/document`).
const COMMANDS: &[&str] = &[
    "/",
    "/membrane",
    "/membrane/doc",
    "/membrane/doc/read",
    "/membrane/doc/write",
    "/membrane/document",
    "/a",
    "/a/b",
    "/a/b/c",
    "/ucan/revoke",
];

fn config(cases: u32) -> Config {
    Config {
        cases,
        // A failure prints its shrunk input; no regression files are written into the tree.
        failure_persistence: None,
        ..Config::default()
    }
}

fn command(text: &str) -> Command {
    text.parse()
        .expect("the test alphabet holds only valid commands")
}

// ---------------------------------------------------------------------------------------
// Generators
// ---------------------------------------------------------------------------------------

/// Finite floats of every class (normal, subnormal, ±0), never NaN or infinite.
fn finite_f64() -> impl Strategy<Value = f64> {
    prop::num::f64::POSITIVE
        | prop::num::f64::NEGATIVE
        | prop::num::f64::NORMAL
        | prop::num::f64::SUBNORMAL
        | prop::num::f64::ZERO
}

/// Integers over the whole DAG-CBOR range, -2^64 ..= 2^64-1, edges included.
fn cbor_integer() -> impl Strategy<Value = i128> {
    prop_oneof![
        4 => any::<i64>().prop_map(i128::from),
        2 => any::<u64>().prop_map(i128::from),
        1 => (-(1_i128 << 64))..i128::from(i64::MIN),
        1 => select(vec![
            0,
            -1,
            23,
            24,
            -24,
            -25,
            255,
            256,
            i128::from(u64::MAX),
            -(1_i128 << 64),
            i128::from(MAX_SAFE_INTEGER),
        ]),
    ]
}

/// Arbitrary IPLD data as found in `args` and `meta`: every kind, nested.
fn ipld_value() -> impl Strategy<Value = Ipld> {
    let leaf = prop_oneof![
        Just(Ipld::Null),
        any::<bool>().prop_map(Ipld::Bool),
        cbor_integer().prop_map(Ipld::Integer),
        finite_f64().prop_map(Ipld::Float),
        any::<String>().prop_map(Ipld::String),
        vec(any::<u8>(), 0..48).prop_map(Ipld::Bytes),
        vec(any::<u8>(), 0..8).prop_map(|seed| Ipld::Link(token_cid(&seed))),
    ];
    leaf.prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Ipld::List),
            btree_map(any::<String>(), inner, 0..5).prop_map(Ipld::Map),
        ]
    })
}

fn ipld_map() -> impl Strategy<Value = BTreeMap<String, Ipld>> {
    btree_map(any::<String>(), ipld_value(), 0..6)
}

/// Times within the spec's range, edges included.
fn time() -> impl Strategy<Value = UnixTime> {
    prop_oneof![
        4 => 0..=MAX_SAFE_INTEGER,
        1 => select(vec![0, 1, NOW, MAX_SAFE_INTEGER - 1, MAX_SAFE_INTEGER]),
    ]
}

/// One policy statement as JSON, from the whole grammar: `==`, `!=`, `<`, `<=`, `>`, `>=`,
/// `like`, `not`, `and`, `or`, `all`, `any`, nested up to three levels.
fn statement(
    selectors: &'static [&'static str],
    value: BoxedStrategy<Value>,
    number: BoxedStrategy<Value>,
    pattern: BoxedStrategy<String>,
) -> BoxedStrategy<Value> {
    let selector = move || select(selectors);
    let leaf = prop_oneof![
        (selector(), value.clone()).prop_map(|(s, v)| json!(["==", s, v])),
        (selector(), value).prop_map(|(s, v)| json!(["!=", s, v])),
        (select(vec!["<", "<=", ">", ">="]), selector(), number)
            .prop_map(|(op, s, n)| json!([op, s, n])),
        (selector(), pattern).prop_map(|(s, p)| json!(["like", s, p])),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        prop_oneof![
            inner.clone().prop_map(|s| json!(["not", s])),
            vec(inner.clone(), 0..4).prop_map(|items| json!(["and", items])),
            vec(inner.clone(), 0..4).prop_map(|items| json!(["or", items])),
            (selector(), inner.clone()).prop_map(|(s, st)| json!(["all", s, st])),
            (selector(), inner).prop_map(|(s, st)| json!(["any", s, st])),
        ]
    })
    .boxed()
}

/// Policies for the round-trip tests: wide selectors, any JSON value.
fn roundtrip_policy_json() -> impl Strategy<Value = String> {
    const SELECTORS: &[&str] = &[
        ".",
        ".doc",
        ".path",
        ".n",
        ".a[0]",
        ".a[-1]",
        ".a[1:]",
        ".a[:-1]",
        ".m[]",
        ".m[]?",
        ".x?",
        ".a[9]?",
        ".m.k",
        ".[\"k y\"]",
    ];
    let number = prop_oneof![
        any::<i64>().prop_map(Value::from),
        finite_f64().prop_map(|f| json!(f)),
    ]
    .boxed();
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        finite_f64().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::from),
        vec(any::<u8>(), 0..16).prop_map(|bytes| {
            json!({"/": {"bytes": membrane_protocol::ucan::encode_base64(&bytes)}})
        }),
    ];
    let value = leaf
        .prop_recursive(2, 12, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Value::from),
                // Keys are never `/`, which would be read as a DAG-JSON link or bytes.
                btree_map("[a-z]{1,6}", inner, 0..4)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
        .boxed();
    let pattern = vec(
        select(vec!["a", "b", "/", "*", "\\*", "\\\\", "\\a", "é", " "]),
        0..6,
    )
    .prop_map(|parts| parts.concat())
    .boxed();
    vec(statement(SELECTORS, value, number, pattern), 0..4)
        .prop_map(|statements| Value::Array(statements).to_string())
}

#[derive(Debug, Clone)]
enum SubjectSpec {
    Issuer,
    Other([u8; 32]),
    Powerline,
}

#[derive(Debug, Clone)]
struct DelegationSpec {
    issuer: [u8; 32],
    audience: [u8; 32],
    subject: SubjectSpec,
    command: &'static str,
    policy_json: String,
    nonce: Vec<u8>,
    expiration: Option<UnixTime>,
    not_before: Option<UnixTime>,
    meta: Option<BTreeMap<String, Ipld>>,
}

fn delegation_spec() -> impl Strategy<Value = DelegationSpec> {
    let subject = prop_oneof![
        Just(SubjectSpec::Issuer),
        any::<[u8; 32]>().prop_map(SubjectSpec::Other),
        Just(SubjectSpec::Powerline),
    ];
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        subject,
        select(COMMANDS),
        roundtrip_policy_json(),
        vec(any::<u8>(), 0..32),
        prop::option::of(time()),
        prop::option::of(time()),
        prop::option::of(ipld_map()),
    )
        .prop_map(
            |(
                issuer,
                audience,
                subject,
                command,
                policy_json,
                nonce,
                expiration,
                not_before,
                meta,
            )| {
                DelegationSpec {
                    issuer,
                    audience,
                    subject,
                    command,
                    policy_json,
                    nonce,
                    expiration,
                    not_before,
                    meta,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct InvocationSpec {
    issuer: [u8; 32],
    subject: [u8; 32],
    audience: Option<[u8; 32]>,
    command: &'static str,
    args: BTreeMap<String, Ipld>,
    /// Indices into the delegations generated alongside, in any order, repeats allowed.
    proofs: Vec<Index>,
    meta: Option<BTreeMap<String, Ipld>>,
    nonce: Vec<u8>,
    expiration: Option<UnixTime>,
    issued_at: Option<UnixTime>,
    /// Another generated delegation's CID as the `cause` link.
    cause: Option<Index>,
}

fn invocation_spec() -> impl Strategy<Value = InvocationSpec> {
    (
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        prop::option::of(any::<[u8; 32]>()),
        select(COMMANDS),
        ipld_map(),
        vec(any::<Index>(), 0..5),
        prop::option::of(ipld_map()),
        vec(any::<u8>(), 0..32),
        prop::option::of(time()),
        prop::option::of(time()),
        prop::option::of(any::<Index>()),
    )
        .prop_map(
            |(
                issuer,
                subject,
                audience,
                command,
                args,
                proofs,
                meta,
                nonce,
                expiration,
                issued_at,
                cause,
            )| InvocationSpec {
                issuer,
                subject,
                audience,
                command,
                args,
                proofs,
                meta,
                nonce,
                expiration,
                issued_at,
                cause,
            },
        )
}

// ---------------------------------------------------------------------------------------
// a. Round trips
// ---------------------------------------------------------------------------------------

/// Rebuilds and signs a delegation from a payload, through the public builder only.
fn build_delegation(
    payload: &DelegationPayload,
    key: &SecretKey,
) -> Result<Delegation, TestCaseError> {
    let mut builder =
        DelegationBuilder::new(payload.issuer, payload.audience, payload.command.clone())
            .policy(payload.policy.clone())
            .nonce(payload.nonce.clone())
            .expiration(payload.expiration)
            .not_before(payload.not_before);
    builder = match payload.subject {
        Some(subject) => builder.subject(subject),
        None => builder.powerline(),
    };
    if let Some(meta) = &payload.meta {
        builder = builder.meta(meta.clone());
    }
    Ok(builder.sign(key)?)
}

/// Rebuilds and signs an invocation from a payload, through the public builder only.
fn build_invocation(
    payload: &InvocationPayload,
    key: &SecretKey,
) -> Result<Invocation, TestCaseError> {
    prop_assert!(
        payload.cause.is_none(),
        "the builder has no setter for `cause`; such payloads are signed with `sign_raw`"
    );
    let mut builder =
        InvocationBuilder::new(payload.issuer, payload.subject, payload.command.clone())
            .args(payload.args.clone())
            .proofs(payload.proofs.clone())
            .nonce(payload.nonce.clone())
            .expiration(payload.expiration);
    if let Some(audience) = payload.audience {
        builder = builder.audience(audience);
    }
    if let Some(meta) = &payload.meta {
        builder = builder.meta(meta.clone());
    }
    if let Some(issued_at) = payload.issued_at {
        builder = builder.issued_at(issued_at);
    }
    Ok(builder.sign(key)?)
}

/// Signs a payload map into an envelope without the crate's encoder:
/// `[signature, {"h": varsig, tag: payload}]`, signature over the DAG-CBOR of the map.
fn sign_raw(kind: TokenKind, payload: BTreeMap<String, Ipld>, key: &SecretKey) -> Vec<u8> {
    let mut signed = BTreeMap::new();
    signed.insert(
        "h".to_owned(),
        Ipld::Bytes(VARSIG_ED25519_DAG_CBOR.to_vec()),
    );
    signed.insert(kind.tag().to_owned(), Ipld::Map(payload));
    let signed = Ipld::Map(signed);
    let signed_bytes = serde_ipld_dagcbor::to_vec(&signed).expect("IPLD encodes");
    let signature = key.sign(&signed_bytes).to_bytes().to_vec();
    serde_ipld_dagcbor::to_vec(&Ipld::List(vec![Ipld::Bytes(signature), signed]))
        .expect("IPLD encodes")
}

/// Signs the delegation a spec describes and checks every round-trip property on it.
fn delegation_round_trip(spec: &DelegationSpec) -> Result<Delegation, TestCaseError> {
    let key = SecretKey::from_seed(spec.issuer);
    let policy = Policy::from_json(&spec.policy_json).map_err(|error| {
        TestCaseError::fail(format!(
            "a generated policy was refused: {error}: {}",
            spec.policy_json
        ))
    })?;
    // The policy's own IPLD form reads back as the same policy.
    prop_assert_eq!(&Policy::from_ipld(&policy.to_ipld())?, &policy);
    let expected = DelegationPayload {
        issuer: key.did(),
        audience: SecretKey::from_seed(spec.audience).did(),
        subject: match &spec.subject {
            SubjectSpec::Issuer => Some(key.did()),
            SubjectSpec::Other(seed) => Some(SecretKey::from_seed(*seed).did()),
            SubjectSpec::Powerline => None,
        },
        command: command(spec.command),
        policy,
        nonce: spec.nonce.clone(),
        meta: spec.meta.clone(),
        not_before: spec.not_before,
        expiration: spec.expiration,
    };
    let token = build_delegation(&expected, &key)?;
    prop_assert_eq!(token.payload(), &expected);
    prop_assert_eq!(token.is_powerline(), expected.subject.is_none());
    let bytes = token.as_bytes().to_vec();
    prop_assert_eq!(token_cid(&bytes), token.cid());
    prop_assert!(token.verify_signature().is_ok());

    let decoded = Delegation::decode(&bytes)?;
    prop_assert_eq!(decoded.payload(), &expected);
    prop_assert_eq!(decoded.as_bytes(), &bytes[..]);
    prop_assert_eq!(decoded.cid(), token.cid());
    prop_assert_eq!(decoded.signature(), token.signature());
    prop_assert_eq!(decoded.payload_ipld(), token.payload_ipld());
    prop_assert!(decoded.verify_signature().is_ok());

    // Re-encoding the decoded claims gives the very same bytes (Ed25519 is deterministic).
    let rebuilt = build_delegation(decoded.payload(), &key)?;
    prop_assert_eq!(rebuilt.as_bytes(), &bytes[..]);
    // So does an envelope built independently of the crate's encoder.
    let Ipld::Map(raw_payload) = decoded.payload_ipld() else {
        return Err(TestCaseError::fail("the payload is not a map"));
    };
    prop_assert_eq!(&sign_raw(TokenKind::Delegation, raw_payload, &key), &bytes);

    match decode_any(&bytes)? {
        AnyToken::Delegation(any) => {
            prop_assert_eq!(any.as_bytes(), &bytes[..]);
            prop_assert_eq!(any.payload(), &expected);
        }
        AnyToken::Invocation(_) => prop_assert!(false, "a delegation decoded as an invocation"),
    }
    prop_assert!(
        matches!(
            Invocation::decode(&bytes),
            Err(DecodeError::WrongType { .. })
        ),
        "Invocation::decode must refuse a delegation as the wrong type"
    );
    Ok(token)
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn delegations_round_trip_byte_for_byte(spec in delegation_spec()) {
        delegation_round_trip(&spec)?;
    }

    #[test]
    fn invocations_round_trip_byte_for_byte(
        delegations in vec(delegation_spec(), 1..4),
        spec in invocation_spec(),
    ) {
        let proofs_available = delegations
            .iter()
            .map(delegation_round_trip)
            .collect::<Result<Vec<_>, _>>()?;
        let key = SecretKey::from_seed(spec.issuer);
        let proofs: Vec<Cid> = spec
            .proofs
            .iter()
            .map(|index| index.get(&proofs_available).cid())
            .collect();
        let expected = InvocationPayload {
            issuer: key.did(),
            subject: SecretKey::from_seed(spec.subject).did(),
            audience: spec.audience.map(|seed| SecretKey::from_seed(seed).did()),
            command: command(spec.command),
            args: spec.args.clone(),
            proofs,
            meta: spec.meta.clone(),
            nonce: spec.nonce.clone(),
            expiration: spec.expiration,
            issued_at: spec.issued_at,
            cause: None,
        };
        let token = build_invocation(&expected, &key)?;
        prop_assert_eq!(token.payload(), &expected);
        let bytes = token.as_bytes().to_vec();
        prop_assert_eq!(token_cid(&bytes), token.cid());
        prop_assert!(token.verify_signature().is_ok());

        let decoded = Invocation::decode(&bytes)?;
        prop_assert_eq!(decoded.payload(), &expected);
        prop_assert_eq!(decoded.as_bytes(), &bytes[..]);
        prop_assert_eq!(decoded.cid(), token.cid());
        prop_assert_eq!(decoded.signature(), token.signature());
        prop_assert_eq!(decoded.payload_ipld(), token.payload_ipld());
        prop_assert!(decoded.verify_signature().is_ok());

        let rebuilt = build_invocation(decoded.payload(), &key)?;
        prop_assert_eq!(rebuilt.as_bytes(), &bytes[..]);

        match decode_any(&bytes)? {
            AnyToken::Invocation(any) => {
                prop_assert_eq!(any.as_bytes(), &bytes[..]);
                prop_assert_eq!(any.payload(), &expected);
            }
            AnyToken::Delegation(_) => prop_assert!(false, "an invocation decoded as a delegation"),
        }
        prop_assert!(
            matches!(Delegation::decode(&bytes), Err(DecodeError::WrongType { .. })),
            "Delegation::decode must refuse an invocation as the wrong type"
        );

        // An envelope built independently of the crate's encoder gives the same bytes.
        let Ipld::Map(raw_payload) = token.payload_ipld() else {
            return Err(TestCaseError::fail("the payload is not a map"));
        };
        prop_assert_eq!(&sign_raw(TokenKind::Invocation, raw_payload.clone(), &key), &bytes);

        // `cause` has no builder setter: sign a payload carrying one by hand, then check it
        // decodes to the expected claims and re-encodes to the same bytes.
        if let Some(cause) = spec.cause {
            let cause = cause.get(&proofs_available).cid();
            let mut with_cause = raw_payload;
            with_cause.insert("cause".to_owned(), Ipld::Link(cause));
            let raw = sign_raw(TokenKind::Invocation, with_cause, &key);
            let decoded = Invocation::decode(&raw)?;
            let mut expected = expected.clone();
            expected.cause = Some(cause);
            prop_assert_eq!(decoded.payload(), &expected);
            prop_assert!(decoded.verify_signature().is_ok());
            let Ipld::Map(again) = decoded.payload_ipld() else {
                return Err(TestCaseError::fail("the payload is not a map"));
            };
            prop_assert_eq!(&sign_raw(TokenKind::Invocation, again, &key), &raw);
        }
    }
}

// ---------------------------------------------------------------------------------------
// b. Attenuation
// ---------------------------------------------------------------------------------------

const ATTENUATION_SELECTORS: &[&str] = &[
    ".doc",
    ".doc",
    ".path",
    ".path",
    ".n",
    ".n",
    ".",
    ".path[0]",
    ".path[]",
    ".missing",
    ".doc?",
    ".n.deeper",
];

/// Policies over the keys `doc`, `path` and `n`, with constants drawn from the same small
/// pools as the arguments so that they match often, but not always.
fn attenuation_policy() -> impl Strategy<Value = String> {
    let value = prop_oneof![
        select(vec!["x", "y", "z", "/p/a", "/q"]).prop_map(Value::from),
        (-3_i64..=6).prop_map(Value::from),
        Just(Value::Null),
    ]
    .boxed();
    let number = prop_oneof![
        (-3_i64..=6).prop_map(Value::from),
        select(vec![0.5, 2.5, -1.5]).prop_map(|f| json!(f)),
    ]
    .boxed();
    let pattern = select(vec!["*", "/p/*", "/p/*/c", "x", "*a*", "/q", "\\*"])
        .prop_map(str::to_owned)
        .boxed();
    // Empty policies are common, so that chains validate often enough to be informative.
    prop_oneof![
        1 => Just("[]".to_owned()),
        1 => vec(statement(ATTENUATION_SELECTORS, value, number, pattern), 1..3)
            .prop_map(|statements| Value::Array(statements).to_string()),
    ]
}

fn attenuation_args() -> impl Strategy<Value = BTreeMap<String, Ipld>> {
    let text =
        |pool: &'static [&'static str]| select(pool).prop_map(|s| Ipld::String(s.to_owned()));
    let doc = prop_oneof![
        3 => text(&["x", "y", "z"]),
        1 => (-3_i128..=6).prop_map(Ipld::Integer),
    ];
    let path = prop_oneof![
        3 => text(&["/p/a", "/p/b/c", "/q", "x"]),
        1 => vec(text(&["/p/a", "/p/b/c", "/q"]), 0..3).prop_map(Ipld::List),
    ];
    let n = prop_oneof![
        3 => (-3_i128..=6).prop_map(Ipld::Integer),
        1 => select(vec![0.5, 2.0, -1.5]).prop_map(Ipld::Float),
        1 => Just(Ipld::String("3".to_owned())),
    ];
    (
        prop::option::weighted(0.8, doc),
        prop::option::weighted(0.8, path),
        prop::option::weighted(0.8, n),
    )
        .prop_map(|(doc, path, n)| {
            [("doc", doc), ("path", path), ("n", n)]
                .into_iter()
                .filter_map(|(key, value)| value.map(|value| (key.to_owned(), value)))
                .collect()
        })
}

/// A command for the attenuation chain: any from the alphabet, or the one above it extended
/// by zero or one segment, so that nested commands come up often.
#[derive(Debug, Clone, Copy)]
enum CommandChoice {
    Any(&'static str),
    Below(Option<&'static str>),
}

fn command_choice() -> impl Strategy<Value = CommandChoice> {
    prop_oneof![
        select(COMMANDS).prop_map(CommandChoice::Any),
        prop::option::of(select(vec!["doc", "read", "x"])).prop_map(CommandChoice::Below),
    ]
}

fn resolve_command(choice: CommandChoice, above: &Command) -> Command {
    match choice {
        CommandChoice::Any(text) => command(text),
        CommandChoice::Below(None) => above.clone(),
        CommandChoice::Below(Some(segment)) if above.as_str() == "/" => {
            command(&format!("/{segment}"))
        }
        CommandChoice::Below(Some(segment)) => command(&format!("{above}/{segment}")),
    }
}

/// The subject alice names in her delegation to bob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChildSubject {
    Root,
    Powerline,
    /// A principal that is not the chain's subject: the chain must fail.
    Stranger,
}

#[test]
fn attenuation_never_widens_authority() {
    let root = SecretKey::from_seed([1; 32]);
    let alice = SecretKey::from_seed([2; 32]);
    let bob = SecretKey::from_seed([3; 32]);
    let stranger = SecretKey::from_seed([4; 32]);
    let validator = Validator::new(NOW);

    let strategy = (
        select(COMMANDS),
        attenuation_policy(),
        command_choice(),
        attenuation_policy(),
        prop_oneof![
            6 => Just(ChildSubject::Root),
            3 => Just(ChildSubject::Powerline),
            1 => Just(ChildSubject::Stranger),
        ],
        command_choice(),
        attenuation_args(),
    );
    let validated = Cell::new(0_u32);
    let cases = 256;
    let mut runner = TestRunner::new(config(cases));
    let outcome = runner.run(
        &strategy,
        |(parent_cmd, parent_pol, child_cmd, child_pol, child_subject, invoked_cmd, args)| {
            let parent_cmd = command(parent_cmd);
            let child_cmd = resolve_command(child_cmd, &parent_cmd);
            let invoked_cmd = resolve_command(invoked_cmd, &child_cmd);
            let parent_policy = Policy::from_json(&parent_pol)?;
            let child_policy = Policy::from_json(&child_pol)?;
            let args_ipld = Ipld::Map(args.clone());

            let root_to_alice = DelegationBuilder::new(root.did(), alice.did(), parent_cmd.clone())
                .subject(root.did())
                .policy(parent_policy.clone())
                .nonce(vec![1; 12])
                .sign(&root)?;
            let child = DelegationBuilder::new(alice.did(), bob.did(), child_cmd.clone())
                .policy(child_policy.clone())
                .nonce(vec![2; 12]);
            let child = match child_subject {
                ChildSubject::Root => child.subject(root.did()),
                ChildSubject::Powerline => child.powerline(),
                ChildSubject::Stranger => child.subject(stranger.did()),
            };
            let alice_to_bob = child.sign(&alice)?;
            let chain = vec![root_to_alice.clone(), alice_to_bob.clone()];
            let by_bob = InvocationBuilder::new(bob.did(), root.did(), invoked_cmd.clone())
                .args(args.clone())
                .proofs(vec![root_to_alice.cid(), alice_to_bob.cid()])
                .nonce(vec![3; 12])
                .sign(&bob)?;
            let bob_result = validator.validate_invocation(&by_bob, &chain);

            if bob_result.is_ok() {
                validated.set(validated.get() + 1);
                // Alice, holding only the parent, may do at least what bob was allowed.
                let by_alice = InvocationBuilder::new(alice.did(), root.did(), invoked_cmd.clone())
                    .args(args.clone())
                    .proofs(vec![root_to_alice.cid()])
                    .nonce(vec![4; 12])
                    .sign(&alice)?;
                let alice_result =
                    validator.validate_invocation(&by_alice, &[root_to_alice.clone()][..]);
                prop_assert!(
                    alice_result.is_ok(),
                    "bob is allowed {} but alice, his delegator, is not: {:?}",
                    invoked_cmd,
                    alice_result
                );
                prop_assert!(
                    child_cmd.covers(&invoked_cmd),
                    "the child's command does not cover the invocation"
                );
                prop_assert!(
                    parent_cmd.covers(&invoked_cmd),
                    "the parent's command does not cover the invocation"
                );
                prop_assert!(
                    parent_cmd.covers(&child_cmd),
                    "the parent's command does not cover the child's"
                );
                prop_assert!(
                    parent_policy.matches(&args_ipld),
                    "the args violate the parent's policy"
                );
                prop_assert!(
                    child_policy.matches(&args_ipld),
                    "the args violate the child's policy"
                );
                prop_assert_ne!(child_subject, ChildSubject::Stranger);
            }

            // Narrowing: a child that is not under its parent's command never validates.
            if !parent_cmd.covers(&child_cmd) {
                prop_assert!(
                    bob_result.is_err(),
                    "{} widened to {} validated",
                    parent_cmd,
                    child_cmd
                );
                prop_assert!(validator.validate_delegation_chain(&chain).is_err());
                if child_subject != ChildSubject::Stranger {
                    let error = bob_result.clone().expect_err("checked above");
                    prop_assert_eq!(error.name(), "InvalidClaim");
                }
            }

            // The whole truth: with signatures, times and principals in order, the chain
            // validates exactly when the commands nest and every policy holds.
            let expected = child_subject != ChildSubject::Stranger
                && parent_cmd.covers(&child_cmd)
                && child_cmd.covers(&invoked_cmd)
                && parent_policy.matches(&args_ipld)
                && child_policy.matches(&args_ipld);
            prop_assert_eq!(
                bob_result.is_ok(),
                expected,
                "validation gave {:?}",
                bob_result
            );

            // The delegation chain alone agrees with the invocation check.
            match validator.validate_delegation_chain(&chain) {
                Ok(valid) => {
                    prop_assert_eq!(valid.allows(&invoked_cmd, &args_ipld).is_ok(), expected);
                    prop_assert_eq!(valid.command(), &child_cmd);
                    prop_assert_eq!(valid.audience(), &bob.did());
                }
                Err(_) => prop_assert!(!expected),
            }
            Ok(())
        },
    );
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    // Guard against a vacuous run: a fair share of the random chains must validate.
    assert!(
        validated.get() >= cases / 32,
        "only {} of {cases} chains validated: the generators no longer exercise the property",
        validated.get()
    );
    eprintln!(
        "attenuation: {} of {cases} chains validated",
        validated.get()
    );
}

// ---------------------------------------------------------------------------------------
// c. Single-bit flips
// ---------------------------------------------------------------------------------------

fn meta(entries: &[(&str, Ipld)]) -> BTreeMap<String, Ipld> {
    entries
        .iter()
        .map(|(key, value)| ((*key).to_owned(), value.clone()))
        .collect()
}

#[test]
fn single_bit_flips_are_always_rejected() {
    let root = SecretKey::from_seed([11; 32]);
    let alice = SecretKey::from_seed([12; 32]);
    let bob = SecretKey::from_seed([13; 32]);
    let carol = SecretKey::from_seed([14; 32]);
    let executor = SecretKey::from_seed([15; 32]);
    let validator = Validator::new(NOW);

    // root → alice (policy, times, meta) → bob (powerline, policy) → carol (subject root).
    let d1 = DelegationBuilder::new(root.did(), alice.did(), command("/membrane"))
        .subject(root.did())
        .policy(
            Policy::from_json(
                r#"[["like", ".path", "/p/*"], ["or", [["==", ".doc", "x"], [">=", ".n", 2]]],
                    ["all", ".tags", ["!=", ".", "secret"]]]"#,
            )
            .expect("a valid policy"),
        )
        .nonce(vec![0xa1; 16])
        .expiration(Some(NOW + 3_600))
        .not_before(Some(NOW - 60))
        .meta(meta(&[
            ("note", Ipld::String("for the bit-flip test".into())),
            ("n", Ipld::Integer(-7)),
        ]))
        .sign(&root)
        .expect("signs");
    let d2 = DelegationBuilder::new(alice.did(), bob.did(), command("/membrane/doc"))
        .powerline()
        .policy(Policy::from_json(r#"[["not", ["==", ".doc", "y"]]]"#).expect("a valid policy"))
        .nonce(vec![0xa2; 12])
        .expiration(Some(NOW + 7_200))
        .sign(&alice)
        .expect("signs");
    let d3 = DelegationBuilder::new(bob.did(), carol.did(), command("/membrane/doc/read"))
        .subject(root.did())
        .nonce(vec![0xa3; 12])
        .sign(&bob)
        .expect("signs");
    let chain = vec![d1.clone(), d2.clone(), d3.clone()];

    let args = meta(&[
        ("doc", Ipld::String("x".into())),
        ("path", Ipld::String("/p/notes".into())),
        ("n", Ipld::Float(2.5)),
        (
            "tags",
            Ipld::List(vec![Ipld::String("a".into()), Ipld::String("b".into())]),
        ),
        ("blob", Ipld::Bytes(vec![0, 1, 2, 0xff])),
    ]);
    let by_carol = InvocationBuilder::new(carol.did(), root.did(), command("/membrane/doc/read"))
        .args(args.clone())
        .proofs(chain.iter().map(Delegation::cid).collect())
        .audience(executor.did())
        .nonce(vec![0xb1; 12])
        .expiration(Some(NOW + 60))
        .issued_at(NOW - 1)
        .meta(meta(&[("trace", Ipld::Integer(42))]))
        .sign(&carol)
        .expect("signs");
    let by_alice = InvocationBuilder::new(alice.did(), root.did(), command("/membrane/doc/write"))
        .args(args)
        .proofs(vec![d1.cid()])
        .nonce(vec![0xb2; 12])
        .sign(&alice)
        .expect("signs");

    // The originals are valid, so every rejection below is due to the flipped bit.
    validator
        .validate_delegation_chain(&chain)
        .expect("the original chain is valid");
    for delegation in &chain {
        delegation.verify_signature().expect("signed");
    }
    validator
        .validate_invocation(&by_carol, &chain)
        .expect("carol's original invocation is valid");
    validator
        .validate_invocation(&by_alice, &chain)
        .expect("alice's original invocation is valid");

    // A flipped token is accepted only if it decodes and then passes validation.
    let accepts = |bytes: &[u8], position: Option<usize>| -> Result<bool, String> {
        match decode_any(bytes) {
            Err(_) => Ok(false),
            Ok(AnyToken::Delegation(flipped)) => {
                let Some(position) = position else {
                    return Err("an invocation decoded as a delegation".into());
                };
                let mut tampered = chain.clone();
                tampered[position] = flipped.clone();
                Ok(flipped.verify_signature().is_ok()
                    && validator.validate_delegation_chain(&tampered).is_ok())
            }
            Ok(AnyToken::Invocation(flipped)) => {
                if position.is_some() {
                    return Err("a delegation decoded as an invocation".into());
                }
                Ok(validator.validate_invocation(&flipped, &chain).is_ok())
            }
        }
    };

    let tokens: Vec<(&str, &[u8], Option<usize>)> = vec![
        ("root→alice", d1.as_bytes(), Some(0)),
        ("alice→bob", d2.as_bytes(), Some(1)),
        ("bob→carol", d3.as_bytes(), Some(2)),
        ("carol's invocation", by_carol.as_bytes(), None),
        ("alice's invocation", by_alice.as_bytes(), None),
    ];
    let mut flips = 0_usize;
    let mut decode_rejections = 0_usize;
    let mut failures = Vec::new();
    for (name, original, position) in &tokens {
        for bit in 0..original.len() * 8 {
            let mut bytes = original.to_vec();
            bytes[bit / 8] ^= 1 << (bit % 8);
            flips += 1;
            if decode_any(&bytes).is_err() {
                decode_rejections += 1;
            }
            match catch_unwind(AssertUnwindSafe(|| accepts(&bytes, *position))) {
                Ok(Ok(false)) => {}
                Ok(Ok(true)) => failures.push(format!("{name}: flipping bit {bit} was accepted")),
                Ok(Err(problem)) => failures.push(format!("{name}: bit {bit}: {problem}")),
                Err(_) => failures.push(format!("{name}: flipping bit {bit} panicked")),
            }
        }
    }
    let expected_flips: usize = tokens.iter().map(|(_, bytes, _)| bytes.len() * 8).sum();
    assert_eq!(flips, expected_flips);
    assert!(flips >= 10_000, "only {flips} flips; add tokens");
    assert!(
        failures.is_empty(),
        "{} of {flips} flipped tokens were not cleanly rejected:\n{}",
        failures.len(),
        failures.join("\n")
    );
    eprintln!(
        "bit flips: {flips} rejected ({decode_rejections} by the decoder, {} by validation)",
        flips - decode_rejections
    );
}
