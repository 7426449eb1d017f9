//! The `membrane` binary run as a real process on temporary data dirs.

mod common;

use common::membrane;
use membrane_tests::shared_json;

#[test]
fn init_creates_private_keys_once_and_id_reports_them() {
    use std::os::unix::fs::PermissionsExt as _;
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("laptop");

    let init = membrane(&dir, &["--json", "init"]);
    assert_eq!(init.code, 0, "{}", init.stderr);
    let created = init.json();
    assert_eq!(created["type"], "init");
    for key in ["device.key", "root.key"] {
        let mode = std::fs::metadata(dir.join("identity").join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let secret = std::fs::read_to_string(dir.join("identity").join(key)).unwrap();
        assert!(
            !init.stdout.contains(secret.trim()),
            "a secret key was printed"
        );
    }

    let id = membrane(&dir, &["id", "--json"]).json();
    assert_eq!(id["data"]["root"], created["data"]["root"]);
    assert_eq!(id["data"]["device"], created["data"]["device"]);
    assert!(
        id["data"]["device"]
            .as_str()
            .unwrap()
            .starts_with("did:key:z6Mk")
    );
    assert!(
        id["data"]["peer_id"]
            .as_str()
            .unwrap()
            .starts_with("12D3KooW")
    );

    let again = membrane(&dir, &["init"]);
    assert_eq!(again.code, 3);
    assert!(
        again.stderr.contains("already initialized"),
        "{}",
        again.stderr
    );
    assert_eq!(
        membrane(&dir, &["id", "--json"]).json(),
        id,
        "the identity was kept"
    );
}

#[test]
fn commands_without_an_identity_say_what_to_do() {
    let temp = tempfile::tempdir().unwrap();
    let run = membrane(temp.path(), &["id"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.contains("membrane init"), "{}", run.stderr);
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one clear line: {}",
        run.stderr
    );
}

#[test]
fn delegated_tokens_verify_here_and_elsewhere_with_their_proof() {
    let temp = tempfile::tempdir().unwrap();
    let (laptop, friend) = (temp.path().join("laptop"), temp.path().join("friend"));
    assert_eq!(membrane(&laptop, &["init"]).code, 0);
    assert_eq!(membrane(&friend, &["init"]).code, 0);
    let friend_did = membrane(&friend, &["id", "--json"]).json()["data"]["device"]
        .as_str()
        .unwrap()
        .to_owned();

    let issued = membrane(
        &laptop,
        &[
            "--json",
            "token",
            "delegate",
            "--aud",
            &friend_did,
            "--cmd",
            "/membrane/doc/read",
            "--pol",
            r#"[["==", ".doc", "automerge:calendar"]]"#,
            "--ttl",
            "1h",
        ],
    );
    assert_eq!(issued.code, 0, "{}", issued.stderr);
    let issued = issued.json()["data"].clone();
    let token = issued["token"].as_str().unwrap();
    let proof = issued["proofs"][0].as_str().unwrap();

    // On the laptop, its own authority is an available proof.
    let here = membrane(&laptop, &["--json", "token", "verify", token]);
    assert_eq!(here.code, 0, "{}{}", here.stdout, here.stderr);
    assert_eq!(here.json()["data"]["audience"], friend_did.as_str());

    // Elsewhere the chain must be supplied.
    let missing = membrane(&friend, &["token", "verify", token]);
    assert_eq!(missing.code, 1);
    assert_eq!(missing.stdout.lines().next(), Some("UnavailableProof"));
    let supplied = membrane(&friend, &["token", "verify", token, "--proof", proof]);
    assert_eq!(supplied.code, 0, "{}", supplied.stdout);

    // An hour and a minute later, it has expired.
    let later = issued["expiration"].as_u64().unwrap() + 60;
    let expired = membrane(
        &friend,
        &[
            "token",
            "verify",
            token,
            "--proof",
            proof,
            "--at",
            &later.to_string(),
        ],
    );
    assert_eq!(expired.code, 1);
    assert_eq!(expired.stdout.lines().next(), Some("Expired"));

    // Inspect shows the decoded claims.
    let inspected = membrane(&friend, &["--json", "token", "inspect", token]).json();
    assert_eq!(inspected["data"]["cid"], issued["cid"]);
    assert_eq!(inspected["data"]["payload"]["cmd"], "/membrane/doc/read");
    assert_eq!(inspected["data"]["signature_valid"], true);
}

#[test]
fn a_fixture_key_signs_tokens_the_fixture_way() {
    let fixture = shared_json("conformance/ucan-1.0.0/delegation.json");
    let temp = tempfile::tempdir().unwrap();
    let key_file = temp.path().join("alice.key");
    std::fs::write(&key_file, fixture["principals"]["alice"].as_str().unwrap()).unwrap();
    let bob = fixture["valid"][0]["envelope"]["payload"]["iss"]
        .as_str()
        .unwrap();
    let run = membrane(
        temp.path(),
        &[
            "--json",
            "token",
            "delegate",
            "--key",
            key_file.to_str().unwrap(),
            "--aud",
            bob,
            "--cmd",
            "/msg/send",
            "--no-expiry",
        ],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let data = run.json()["data"].clone();
    assert_eq!(
        data["subject"], data["issuer"],
        "with --key the subject is the key itself"
    );
    let verified = membrane(
        temp.path(),
        &["token", "verify", data["token"].as_str().unwrap()],
    );
    assert_eq!(verified.code, 0, "{}", verified.stdout);
}

#[test]
fn verify_names_the_spec_error_for_every_fixture_invocation() {
    let fixture = shared_json("conformance/ucan-1.0.0/invocation.json");
    let temp = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for (kind, valid) in [("valid", true), ("invalid", false)] {
        for case in fixture[kind].as_array().unwrap() {
            let mut args = vec![
                "token".to_owned(),
                "verify".to_owned(),
                case["invocation"]["/"]["bytes"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                "--at".to_owned(),
                case["time"].as_u64().unwrap().to_string(),
            ];
            for proof in case["proofs"].as_array().unwrap() {
                args.push("--proof".to_owned());
                args.push(proof["/"]["bytes"].as_str().unwrap().to_owned());
            }
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = membrane(temp.path(), &args);
            if valid {
                assert_eq!(run.code, 0, "{}: {}", case["name"], run.stdout);
            } else {
                assert_eq!(run.code, 1, "{}: {}", case["name"], run.stdout);
                assert_eq!(
                    run.stdout.lines().next(),
                    case["error"]["name"].as_str(),
                    "{}",
                    case["name"]
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 20);
}

#[test]
fn bad_input_gets_a_clear_error() {
    let temp = tempfile::tempdir().unwrap();
    let garbage = membrane(temp.path(), &["token", "inspect", "not a token!"]);
    assert_eq!(garbage.code, 3);
    assert!(
        garbage
            .stderr
            .contains("neither a readable file nor base64"),
        "{}",
        garbage.stderr
    );

    let not_cbor = membrane(temp.path(), &["token", "verify", "AAAA"]);
    assert_eq!(not_cbor.code, 1);
    assert_eq!(not_cbor.stdout.lines().next(), Some("MalformedToken"));

    let bad_did = membrane(
        temp.path(),
        &["token", "delegate", "--aud", "did:key:zBad", "--cmd", "/x"],
    );
    assert_eq!(
        bad_did.code, 2,
        "clap rejects the argument: {}",
        bad_did.stderr
    );
    assert!(bad_did.stderr.contains("--aud"), "{}", bad_did.stderr);

    let bad_cmd = membrane(
        temp.path(),
        &[
            "token",
            "delegate",
            "--aud",
            "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp",
            "--cmd",
            "/Doc/",
        ],
    );
    assert_eq!(bad_cmd.code, 2, "{}", bad_cmd.stderr);
}

#[test]
fn completions_cover_every_subcommand_in_each_shell() {
    let temp = tempfile::tempdir().unwrap();
    for (shell, marker) in [
        ("bash", "_membrane()"),
        ("zsh", "#compdef membrane"),
        ("fish", "complete -c membrane"),
    ] {
        let run = membrane(temp.path(), &["completions", shell]);
        assert_eq!(run.code, 0, "{shell}: {}", run.stderr);
        assert!(run.stdout.contains(marker), "{shell}: no {marker:?}");
        for subcommand in [
            "init",
            "run",
            "status",
            "doc",
            "grant",
            "requests",
            "config",
            "completions",
        ] {
            assert!(
                run.stdout.contains(subcommand),
                "{shell} completes {subcommand}"
            );
        }
        // Deeper levels too: `config set` offers its keys (clap_complete's fish script
        // completes positional values of no command).
        if shell != "fish" {
            assert!(
                run.stdout.contains("limits.max_connections"),
                "{shell} completes config keys"
            );
        }
    }
    let wrapped = membrane(temp.path(), &["--json", "completions", "fish"]).data();
    assert_eq!(wrapped["shell"], "fish");
    assert!(
        wrapped["script"]
            .as_str()
            .unwrap()
            .contains("complete -c membrane")
    );
}
