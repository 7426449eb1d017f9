//! The public conformance vectors in `../shared/data/conformance/`, read from disk.

use membrane_protocol::{
    Did, SecretKey,
    ucan::{
        Delegation, DelegationBuilder, Invocation, Policy, Validator, decode_base64_loose,
        json::json_to_ipld,
    },
};
use membrane_tests::shared_json;
use serde_json::Value;

fn hex32(text: &str) -> [u8; 32] {
    let bytes: Vec<u8> = (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// `{"/": {"bytes": "..."}}` → bytes.
fn dag_json_bytes(value: &Value) -> Vec<u8> {
    decode_base64_loose(value["/"]["bytes"].as_str().unwrap()).unwrap()
}

#[test]
fn did_key_vectors_map_seeds_to_dids() {
    let vectors = shared_json("conformance/did-key/ed25519-x25519.json");
    let vectors = vectors.as_object().unwrap();
    assert_eq!(vectors.len(), 5);
    for (did, vector) in vectors {
        let key = SecretKey::from_seed(hex32(vector["seed"].as_str().unwrap()));
        assert_eq!(&key.did().to_string(), did);
        let parsed: Did = did.parse().unwrap();
        assert_eq!(parsed, key.did());
        assert_eq!(parsed.to_string(), *did);
        // Four vectors give the key in base58, one as a JWK (base64url `x`).
        let pair = &vector["verificationKeyPair"];
        let raw = match pair["publicKeyBase58"].as_str() {
            Some(base58) => multibase::decode(format!("z{base58}")).unwrap().1,
            None => decode_base64_loose(pair["publicKeyJwk"]["x"].as_str().unwrap()).unwrap(),
        };
        assert_eq!(&raw[..], key.public().as_bytes());
        assert_eq!(
            Did::from_peer_id(&parsed.to_peer_id().unwrap()).unwrap(),
            parsed
        );
    }
}

#[test]
fn delegation_fixture_decodes_verifies_and_re_encodes_identically() {
    let fixture = shared_json("conformance/ucan-1.0.0/delegation.json");
    let principal = |name: &str| {
        SecretKey::from_key_file_text(fixture["principals"][name].as_str().unwrap()).unwrap()
    };
    let cases = fixture["valid"].as_array().unwrap();
    assert_eq!(cases.len(), 1);
    for case in cases {
        let bytes = decode_base64_loose(case["token"].as_str().unwrap()).unwrap();
        let token = Delegation::decode(&bytes).unwrap();
        assert_eq!(token.cid().to_string(), case["cid"].as_str().unwrap());
        token.verify_signature().unwrap();

        let envelope = &case["envelope"];
        let expected = &envelope["payload"];
        let payload = token.payload();
        assert_eq!(
            payload.issuer.to_string(),
            expected["iss"].as_str().unwrap()
        );
        assert_eq!(
            payload.audience.to_string(),
            expected["aud"].as_str().unwrap()
        );
        assert_eq!(
            payload.subject.map(|did| did.to_string()).as_deref(),
            expected["sub"].as_str()
        );
        assert_eq!(payload.command.as_str(), expected["cmd"].as_str().unwrap());
        assert_eq!(
            payload.policy,
            Policy::from_ipld(&json_to_ipld(&expected["pol"]).unwrap()).unwrap()
        );
        assert_eq!(payload.expiration, expected["exp"].as_u64());
        assert_eq!(
            payload.nonce,
            decode_base64_loose(expected["nonce"].as_str().unwrap()).unwrap()
        );
        assert_eq!(
            token.signature(),
            &decode_base64_loose(envelope["signature"].as_str().unwrap()).unwrap()[..]
        );

        // Ed25519 is deterministic: signing the same claims with bob's key must give the
        // fixture byte for byte, which proves our encoder writes exactly the spec's form.
        let bob = principal("bob");
        assert_eq!(bob.did(), payload.issuer);
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
        let rebuilt = builder.sign(&bob).unwrap();
        assert_eq!(rebuilt.as_bytes(), &bytes[..]);
        assert_eq!(rebuilt.cid(), token.cid());
    }
}

struct InvocationCase {
    name: String,
    invocation: Invocation,
    proofs: Vec<Delegation>,
    time: u64,
}

fn invocation_cases(kind: &str) -> Vec<(InvocationCase, Option<String>)> {
    let fixture = shared_json("conformance/ucan-1.0.0/invocation.json");
    fixture[kind]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let invocation = Invocation::decode(&dag_json_bytes(&case["invocation"]))
                .unwrap_or_else(|e| panic!("{}: invocation does not decode: {e}", case["name"]));
            let proofs = case["proofs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|proof| Delegation::decode(&dag_json_bytes(proof)).unwrap())
                .collect();
            (
                InvocationCase {
                    name: case["name"].as_str().unwrap().to_owned(),
                    invocation,
                    proofs,
                    time: case["time"].as_u64().unwrap(),
                },
                case["error"]["name"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn all_seven_valid_invocations_validate() {
    let cases = invocation_cases("valid");
    assert_eq!(cases.len(), 7);
    for (case, _) in cases {
        let result = Validator::new(case.time).validate_invocation(&case.invocation, &case.proofs);
        assert!(result.is_ok(), "{}: {result:?}", case.name);
    }
}

#[test]
fn all_thirteen_invalid_invocations_fail_with_the_named_error() {
    let cases = invocation_cases("invalid");
    assert_eq!(cases.len(), 13);
    for (case, expected) in cases {
        let expected = expected.expect("every invalid case names its error");
        let error = Validator::new(case.time)
            .validate_invocation(&case.invocation, &case.proofs)
            .expect_err(&case.name);
        assert_eq!(error.name(), expected, "{}: {error}", case.name);
    }
}

#[test]
fn policy_cases_hold_and_fail_as_specified() {
    let fixture = shared_json("conformance/ucan-1.0.0/policy.json");
    let mut checked = (0, 0);
    for (kind, should_hold) in [("valid", true), ("invalid", false)] {
        let groups = fixture[kind].as_array().unwrap();
        for group in groups {
            let args = json_to_ipld(&group["args"]).unwrap();
            for policy in group["policies"].as_array().unwrap() {
                let parsed = Policy::from_ipld(&json_to_ipld(policy).unwrap())
                    .unwrap_or_else(|e| panic!("{policy}: {e}"));
                assert_eq!(
                    parsed.matches(&args),
                    should_hold,
                    "{kind}: {policy} on {}",
                    group["args"]
                );
                // The IPLD form survives a round trip.
                assert_eq!(Policy::from_ipld(&parsed.to_ipld()).unwrap(), parsed);
            }
        }
        if should_hold {
            checked.0 = groups.len();
        } else {
            checked.1 = groups.len();
        }
    }
    assert_eq!(checked, (6, 4));
}
