//! Pairing by QR code with real processes on loopback: `membrane pair invite` on a running
//! device, `membrane pair join` (code or PNG) on a new one, both screens showing the same
//! verification code, and the new devices then syncing the person's documents; and every
//! bad code failing with one clear line while the joining device stays unlinked.
//!
//! Every child process is killed when its guard drops, so a failing test leaves nothing
//! behind. Nothing sleeps and hopes: conditions are polled with a generous deadline.
//!
//! Daemons log at `info`; set `MEMBRANE_TEST_LOG` to another `RUST_LOG` filter (e.g.
//! `debug,libp2p_swarm=info`) to investigate a failure: a failing test then prints each
//! daemon's whole log instead of its last 40 lines.

mod common;

use std::{
    io::BufReader,
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use common::{
    Daemon, TIMEOUT, change_hashes, lines_in_background, membrane, read_all_in_background,
    wait_exit, wait_for, whole,
};
use membrane_protocol::pairing::{PairingTicket, TicketError};
use serde_json::{Value, json};

/// The letters of upper-case base32 (RFC 4648), the alphabet of pairing codes.
const BASE32: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------------------------------------------------------------------------------------
// Identities

/// `membrane init` (a new person with this device); returns the root DID.
fn init_person(dir: &Path) -> String {
    let data = membrane(dir, &["--json", "init"]).data();
    data["root"].as_str().unwrap().to_owned()
}

/// `membrane init --join` (a device key only); returns the device DID.
fn init_joining(dir: &Path) -> String {
    let data = membrane(dir, &["--json", "init", "--join"]).data();
    let device = data["device"].as_str().unwrap().to_owned();
    assert_unlinked(dir);
    device
}

/// `membrane id --json`.
fn identity(dir: &Path) -> Value {
    membrane(dir, &["--json", "id"]).data()
}

/// The data dir has a device key and belongs to nobody yet.
fn assert_unlinked(dir: &Path) {
    let id = identity(dir);
    assert_eq!(
        id["root"],
        Value::Null,
        "{} is still unlinked: {id}",
        dir.display()
    );
    assert_eq!(id["holds_root_key"], false, "{id}");
}

// ---------------------------------------------------------------------------------------
// `membrane pair invite`, which blocks until an attempt ends the invitation

/// A running `membrane pair invite`; killed when dropped unless it has exited.
struct Invite {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Option<thread::JoinHandle<String>>,
    /// The pairing code (`B…`).
    code: String,
    /// The whole first JSON line (`--json` only).
    invitation: Value,
}

impl Invite {
    /// `membrane --data-dir DIR --json pair invite ARGS…`, up to its `invitation` line.
    fn json(dir: &Path, args: &[&str]) -> Self {
        let mut invite = Self::spawn(dir, true, args);
        let first = invite.next_line("the invitation line");
        let invitation: Value =
            serde_json::from_str(&first).unwrap_or_else(|e| panic!("{first:?}: {e}"));
        assert_eq!(invitation["type"], "invitation", "{first}");
        invite.code = invitation["data"]["code"].as_str().unwrap().to_owned();
        invite.invitation = invitation;
        assert!(invite.code.starts_with('B'), "{first}");
        assert!(
            invite.code[1..].chars().all(|c| BASE32.contains(c)),
            "upper-case base32: {first}"
        );
        invite
    }

    /// `membrane --data-dir DIR pair invite ARGS…` (human output), up to the line that says
    /// it waits; returns the invite (with the code from the line that gives the code to
    /// type) and the lines printed so far.
    fn human(dir: &Path, args: &[&str]) -> (Self, Vec<String>) {
        let mut invite = Self::spawn(dir, false, args);
        let mut printed = Vec::new();
        loop {
            let line = invite.next_line("line saying it waits for the new device");
            if let Some((_, code)) = line.split_once("membrane pair join ") {
                invite.code = code.trim().to_owned();
            }
            let waiting = line.starts_with("Waiting for the new device");
            printed.push(line);
            if waiting {
                break;
            }
        }
        assert!(invite.code.starts_with('B'), "a code to type: {printed:#?}");
        (invite, printed)
    }

    fn spawn(dir: &Path, json: bool, args: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_membrane"));
        command.arg("--data-dir").arg(dir);
        if json {
            command.arg("--json");
        }
        command.args(["pair", "invite"]).args(args);
        let mut child = command
            .env_remove("MEMBRANE_DATA_DIR")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the membrane binary runs");
        let lines = lines_in_background(child.stdout.take().unwrap());
        let stderr = Some(read_all_in_background(child.stderr.take().unwrap()));
        Self {
            child,
            lines,
            stderr,
            code: String::new(),
            invitation: Value::Null,
        }
    }

    /// The next line on stdout; fails the test after [`TIMEOUT`] or at EOF.
    fn next_line(&mut self, what: &str) -> String {
        match self.lines.recv_timeout(TIMEOUT) {
            Ok(line) => line,
            Err(error) => {
                let status = wait_exit(&mut self.child, Duration::ZERO);
                panic!(
                    "`pair invite` printed no {what} ({error}; exit {status:?}; stderr: {})",
                    self.stderr_text()
                );
            }
        }
    }

    /// The next JSON line, which must be a `pairing` event; returns its `data`.
    fn next_event(&mut self) -> Value {
        let line = self.next_line("pairing event");
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        assert_eq!(event["type"], "pairing", "{line}");
        event["data"].clone()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit; returns the exit code and whatever stdout lines are left.
    fn exit(&mut self) -> (i32, Vec<String>) {
        let status = wait_exit(&mut self.child, TIMEOUT)
            .unwrap_or_else(|| panic!("`pair invite` still running after {TIMEOUT:?}"));
        // The reader ends at EOF, which follows the exit.
        let rest = self.lines.iter().collect();
        let code = status
            .code()
            .unwrap_or_else(|| panic!("`pair invite` was killed: {status:?}"));
        (code, rest)
    }

    /// Everything on stderr (after the exit; empty while running).
    fn stderr_text(&mut self) -> String {
        if self.running() {
            return String::new();
        }
        self.stderr
            .take()
            .map(|reader| reader.join().unwrap())
            .unwrap_or_default()
    }
}

impl Drop for Invite {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------------------
// QR pictures

/// The text of the first QR code in a PNG file, read as a phone camera app would (not
/// with the CLI's own reader); `None` when there is none.
fn decode_qr_png(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut decoder = png::Decoder::new(BufReader::new(file));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder
        .read_info()
        .unwrap_or_else(|e| panic!("{} is not a PNG: {e}", path.display()));
    let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buffer).unwrap();
    let (width, height) = (info.width as usize, info.height as usize);
    let channels = info.color_type.samples();
    let grey = |x: usize, y: usize| -> u8 {
        let at = (y * width + x) * channels;
        match channels {
            1 | 2 => buffer[at],
            _ => {
                ((u32::from(buffer[at]) + u32::from(buffer[at + 1]) + u32::from(buffer[at + 2]))
                    / 3) as u8
            }
        }
    };
    let mut image = rqrr::PreparedImage::prepare_from_greyscale(width, height, grey);
    image
        .detect_grids()
        .into_iter()
        .find_map(|grid| grid.decode().ok().map(|(_, text)| text))
}

/// A white PNG with no QR code in it.
fn write_blank_png(path: &Path) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 200, 200);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(&[255; 200 * 200]).unwrap();
    writer.finish().unwrap();
}

// ---------------------------------------------------------------------------------------
// Altered codes

/// `code` with the character at `index` replaced by `letter`.
fn with_char(code: &str, index: usize, letter: char) -> String {
    let mut chars: Vec<char> = code.chars().collect();
    chars[index] = letter;
    chars.into_iter().collect()
}

/// Another base32 letter than `c`.
fn other_letter(c: char) -> char {
    if c == 'A' { 'B' } else { 'A' }
}

/// `code` with one character changed inside the 16-byte secret, so that it is still a
/// well-formed code for the same inviter, person, addresses and expiry, only with a wrong
/// secret. (The ticket ends with the secret, a CBOR byte string of 16, then the expiry, a
/// CBOR `u32`: 1 + 16 + 1 + 4 bytes. The result is checked against the parser.)
fn with_wrong_secret(code: &str) -> String {
    let body_len = code.len() - 1;
    let bytes = body_len * 5 / 8;
    let secret_start_bit = (bytes - 21) * 8;
    // A few characters into the secret: all 5 bits of it are secret bits.
    let index = 1 + secret_start_bit.div_ceil(5) + 5;
    let original = code.as_bytes()[index] as char;
    let altered = with_char(code, index, other_letter(original));
    let real: PairingTicket = code.parse().unwrap();
    let wrong: PairingTicket = altered
        .parse()
        .unwrap_or_else(|e| panic!("the altered code still parses: {e}"));
    assert_ne!(wrong.secret, real.secret, "the change is in the secret");
    let mut same_but_secret = real;
    same_but_secret.secret = wrong.secret;
    assert_eq!(wrong, same_but_secret, "only the secret changed");
    altered
}

// ---------------------------------------------------------------------------------------
// Tests

#[test]
fn laptop_phone_and_tablet_pair_and_converge() {
    let started = Instant::now();
    let temp = tempfile::tempdir().unwrap();
    let (laptop_dir, phone_dir, tablet_dir) = (
        temp.path().join("laptop"),
        temp.path().join("phone"),
        temp.path().join("tablet"),
    );
    let person = init_person(&laptop_dir);
    let laptop = Daemon::start(&laptop_dir, &[]);
    let content = temp.path().join("calendar.json");
    std::fs::write(&content, json!({"monday": "tennis"}).to_string()).unwrap();
    let calendar = membrane(
        &laptop_dir,
        &[
            "--json",
            "doc",
            "new",
            "--name",
            "calendar",
            "--content",
            content.to_str().unwrap(),
        ],
    )
    .data()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // The laptop shows a code (and writes it as a PNG); the phone types it.
    let inv1 = temp.path().join("inv1.png");
    let mut invite = Invite::json(&laptop_dir, &["--png", inv1.to_str().unwrap()]);
    assert_eq!(
        invite.invitation["data"]["png"],
        inv1.to_str().unwrap(),
        "{}",
        invite.invitation
    );
    let expires = invite.invitation["data"]["expires"].as_u64().unwrap();
    let now = unix_now();
    assert!(
        (now + 590..=now + 610).contains(&expires),
        "ten minutes by default: expires {expires}, now {now}"
    );
    assert_eq!(
        decode_qr_png(&inv1).as_deref(),
        Some(invite.code.as_str()),
        "inv1.png holds the printed code"
    );
    assert!(invite.running(), "the invite waits for a device");
    let phone_device = init_joining(&phone_dir);
    let joined = membrane(
        &phone_dir,
        &["--json", "pair", "join", &invite.code, "--name", "phone"],
    )
    .data();
    assert_eq!(joined["root"], person.as_str(), "{joined}");
    assert_eq!(joined["device"], phone_device.as_str(), "{joined}");
    let phone_code = joined["verification_code"].as_str().unwrap().to_owned();
    assert!(
        phone_code.len() == 6 && phone_code.chars().all(|c| c.is_ascii_digit()),
        "six digits: {joined}"
    );
    let event = invite.next_event();
    assert_eq!(
        event,
        json!({
            "outcome": "joined",
            "device": phone_device,
            "name": "phone",
            "verification_code": phone_code,
        }),
        "the laptop shows the same code as the phone"
    );
    let (exit, rest) = invite.exit();
    assert_eq!((exit, rest), (0, vec![]), "done after the join");
    let phone_id = identity(&phone_dir);
    assert_eq!(phone_id["root"], person.as_str(), "{phone_id}");
    assert_eq!(phone_id["holds_root_key"], false, "{phone_id}");

    // The phone syncs the calendar from the laptop.
    let phone = Daemon::start(&phone_dir, &[&laptop.addr]);
    assert_eq!(phone.device, phone_device);
    wait_for("the phone to receive the calendar", || {
        whole(&phone_dir, &calendar) == Some(json!({"monday": "tennis"}))
    });

    // The phone, which holds no root key, invites the tablet; the tablet reads the PNG.
    let inv2 = temp.path().join("inv2.png");
    let mut invite = Invite::json(
        &phone_dir,
        &["--png", inv2.to_str().unwrap(), "--name", "tablet"],
    );
    assert_eq!(
        decode_qr_png(&inv2).as_deref(),
        Some(invite.code.as_str()),
        "inv2.png holds the printed code"
    );
    let ticket: PairingTicket = invite.code.parse().unwrap();
    assert_eq!(
        ticket.inviter.to_string(),
        phone_device,
        "the phone invites"
    );
    assert_eq!(ticket.root.to_string(), person, "for the same person");
    let tablet_device = init_joining(&tablet_dir);
    let joined = membrane(
        &tablet_dir,
        &["--json", "pair", "join", "--qr", inv2.to_str().unwrap()],
    )
    .data();
    assert_eq!(joined["root"], person.as_str(), "{joined}");
    assert_eq!(joined["device"], tablet_device.as_str(), "{joined}");
    let tablet_code = joined["verification_code"].as_str().unwrap().to_owned();
    let event = invite.next_event();
    assert_eq!(
        event,
        json!({
            "outcome": "joined",
            "device": tablet_device,
            "name": "tablet",
            "verification_code": tablet_code,
        }),
        "the phone shows the same code as the tablet, and the name from --name"
    );
    assert_eq!(invite.exit(), (0, vec![]));
    let tablet_id = identity(&tablet_dir);
    assert_eq!(tablet_id["root"], person.as_str(), "{tablet_id}");
    assert_eq!(tablet_id["holds_root_key"], false, "{tablet_id}");

    // The tablet syncs through the phone, and its edit reaches the laptop.
    let tablet = Daemon::start(&tablet_dir, &[&phone.addr]);
    assert_eq!(tablet.device, tablet_device);
    wait_for("the tablet to receive the calendar", || {
        whole(&tablet_dir, &calendar) == Some(json!({"monday": "tennis"}))
    });
    let set = membrane(
        &tablet_dir,
        &["doc", "set", "calendar", "/friday", r#""swim""#],
    );
    assert_eq!(
        (set.code, set.stdout.trim()),
        (0, "saved"),
        "{}",
        set.stderr
    );
    let expected = json!({"monday": "tennis", "friday": "swim"});
    let took = wait_for("the tablet's edit on the phone and the laptop", || {
        [&laptop_dir, &phone_dir]
            .iter()
            .all(|dir| whole(dir, &calendar).as_ref() == Some(&expected))
    });
    eprintln!("the tablet's edit reached the laptop {took:?} later");
    let got: Vec<Value> = [&laptop_dir, &phone_dir, &tablet_dir]
        .iter()
        .map(|dir| membrane(dir, &["--json", "doc", "get", "calendar"]).data())
        .collect();
    assert_eq!(got, vec![expected.clone(), expected.clone(), expected]);
    let hashes = change_hashes(&laptop_dir, &calendar);
    assert_eq!(hashes, change_hashes(&phone_dir, &calendar));
    assert_eq!(hashes, change_hashes(&tablet_dir, &calendar));

    // The tablet is lost: the LAPTOP revokes it (the phone added it). Both the laptop and
    // the phone drop it, and the two keep syncing without it.
    let listed = membrane(&laptop_dir, &["--json", "devices"]).data();
    assert_eq!(listed.as_array().map(Vec::len), Some(3), "{listed}");
    let revoke = membrane(&laptop_dir, &["--json", "devices", "revoke", "tablet"]);
    assert_eq!(revoke.code, 0, "{}", revoke.stderr);
    let peers = |dir: &Path| -> Vec<Value> {
        membrane(dir, &["--json", "status"]).data()["peers"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    wait_for("the laptop and the phone to drop the tablet", || {
        [&laptop_dir, &phone_dir]
            .iter()
            .all(|dir| !peers(dir).contains(&json!(tablet_device)))
    });
    let set = membrane(&laptop_dir, &["doc", "set", "calendar", "/sunday", "rest"]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    wait_for("the phone to keep syncing with the laptop", || {
        whole(&phone_dir, &calendar).is_some_and(|doc| doc["sunday"] == "rest")
    });
    assert!(
        whole(&tablet_dir, &calendar).is_some_and(|doc| doc.get("sunday").is_none()),
        "nothing reaches the revoked tablet"
    );
    let refused = membrane(&laptop_dir, &["devices", "revoke", &laptop.device]);
    assert_eq!(refused.code, 3, "a device cannot revoke itself");

    tablet.stop();
    phone.stop();
    laptop.stop();
    eprintln!(
        "laptop_phone_and_tablet_pair_and_converge: {:?}",
        started.elapsed()
    );
}

#[test]
fn bad_codes_fail_with_a_clear_error_on_both_sides() {
    let started = Instant::now();
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    let person = init_person(&laptop_dir);
    let _laptop = Daemon::start(&laptop_dir, &[]);
    let guesser_dir = temp.path().join("guesser");
    let guesser = init_joining(&guesser_dir);
    let join = |dir: &Path, code: &str| membrane(dir, &["--json", "pair", "join", code]);

    let mut invite = Invite::json(&laptop_dir, &[]);
    let code = invite.code.clone();

    // A wrong secret: a well-formed code that reaches the laptop and is refused there; the
    // laptop reports the attempt and keeps the invitation open.
    let wrong = with_wrong_secret(&code);
    join(&guesser_dir, &wrong).fails_clearly(&["the inviting device refused", "wrong secret"]);
    assert_unlinked(&guesser_dir);
    let event = invite.next_event();
    assert_eq!(event["outcome"], "refused", "{event}");
    assert_eq!(event["device"], guesser.as_str(), "{event}");
    assert_eq!(event["still_open"], true, "{event}");
    assert!(
        event["reason"].as_str().unwrap().contains("wrong secret"),
        "{event}"
    );
    assert!(
        invite.running(),
        "a wrong secret leaves the invitation open"
    );

    // One character changed in the middle of the code (the person's key), in a way the
    // parser detects: refused before any network.
    let middle = code.len() / 2;
    let corrupt = BASE32
        .chars()
        .map(|letter| with_char(&code, middle, letter))
        .find(|altered| altered.parse::<PairingTicket>() == Err(TicketError::Corrupt))
        .expect("some letter makes the key in the middle invalid");
    join(&guesser_dir, &corrupt)
        .fails_clearly(&["this is not a pairing code", "truncated or corrupt"]);
    assert_unlinked(&guesser_dir);

    // Cut short.
    for truncated in [&code[..code.len() / 2], &code[..code.len() - 7]] {
        join(&guesser_dir, truncated)
            .fails_clearly(&["this is not a pairing code", "truncated or corrupt"]);
        assert_unlinked(&guesser_dir);
    }
    // Not a code at all.
    join(&guesser_dir, "hello").fails_clearly(&["this is not a pairing code", "base32"]);
    assert_unlinked(&guesser_dir);

    // A picture without a QR code, and a file that is no picture.
    let blank = temp.path().join("blank.png");
    write_blank_png(&blank);
    assert_eq!(decode_qr_png(&blank), None);
    let qr = |path: &Path| {
        membrane(
            &guesser_dir,
            &["--json", "pair", "join", "--qr", path.to_str().unwrap()],
        )
    };
    qr(&blank).fails_clearly(&["no QR code", "blank.png"]);
    assert_unlinked(&guesser_dir);
    let text = temp.path().join("code.png");
    std::fs::write(&text, &code).unwrap();
    qr(&text).fails_clearly(&["not a PNG"]);
    assert_unlinked(&guesser_dir);

    // None of those reached the laptop; the invitation is still open, and the same
    // device, which failed six times, now joins with the real code.
    assert!(invite.running());
    let joined = join(&guesser_dir, &code).data();
    assert_eq!(joined["root"], person.as_str(), "{joined}");
    let event = invite.next_event();
    assert_eq!(
        event["outcome"], "joined",
        "only the wrong secret was reported: {event}"
    );
    assert_eq!(event["device"], guesser.as_str(), "{event}");
    assert_eq!(event["verification_code"], joined["verification_code"]);
    assert_eq!(invite.exit(), (0, vec![]));
    assert_eq!(identity(&guesser_dir)["root"], person.as_str());

    // The same code again, from another new device: the laptop says it was used.
    let second_dir = temp.path().join("second");
    init_joining(&second_dir);
    join(&second_dir, &code).fails_clearly(&["the inviting device refused", "already used"]);
    assert_unlinked(&second_dir);

    // An invitation that lapses: the invite gives up (exit 1) and a later join is refused.
    let mut invite = Invite::json(&laptop_dir, &["--ttl", "1s"]);
    let expires = invite.invitation["data"]["expires"].as_u64().unwrap();
    let waited = Instant::now();
    let (exit, rest) = invite.exit();
    eprintln!("the 1 s invitation gave up after {:?}", waited.elapsed());
    assert_eq!(exit, 1, "{rest:?}");
    let rest: Vec<Value> = rest
        .iter()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        rest,
        vec![json!({"type": "pairing", "data": {"outcome": "expired"}})]
    );
    assert_eq!(invite.stderr_text(), "", "a lapsed invitation is no error");
    assert!(unix_now() > expires, "the code has expired by now");
    let late_dir = temp.path().join("late");
    init_joining(&late_dir);
    join(&late_dir, &invite.code).fails_clearly(&["expired"]);
    assert_unlinked(&late_dir);

    // Five wrong secrets burn an invitation (human output this time): the invite gives up
    // (exit 1) and even the right code is refused afterwards.
    let (mut invite, printed) = Invite::human(&laptop_dir, &[]);
    assert!(
        printed.len() > 10
            && printed
                .iter()
                .any(|line| line.contains('▀') || line.contains('▄')),
        "a QR code drawn in the terminal: {printed:#?}"
    );
    let wrong = with_wrong_secret(&invite.code);
    for attempt in 1..=5 {
        let run = join(&late_dir, &wrong);
        if attempt < 5 {
            run.fails_clearly(&["the inviting device refused", "wrong secret"]);
            let line = invite.next_line("refusal");
            assert!(line.starts_with("Refused a device: wrong secret"), "{line}");
        } else {
            run.fails_clearly(&["the inviting device refused", "burned"]);
            let line = invite.next_line("refusal");
            assert!(
                line.starts_with("Refused a device: the invitation was burned"),
                "{line}"
            );
        }
        assert_unlinked(&late_dir);
    }
    assert_eq!(
        invite.exit(),
        (1, vec![]),
        "a burned invitation ends the invite"
    );
    join(&late_dir, &invite.code).fails_clearly(&["the inviting device refused", "burned"]);
    assert_unlinked(&late_dir);

    eprintln!(
        "bad_codes_fail_with_a_clear_error_on_both_sides: {:?}",
        started.elapsed()
    );
}

/// A code altered outside the secret (here: the person's key, still a valid curve point)
/// is refused without spending the invitation: the proof binds the ticket's person as well
/// as the secret and both device keys, so the inviter sees a wrong proof, reports it, and
/// the real code still works.
#[test]
fn a_code_with_another_person_in_it_does_not_spend_the_invitation() {
    let temp = tempfile::tempdir().unwrap();
    let laptop_dir = temp.path().join("laptop");
    let person = init_person(&laptop_dir);
    let _laptop = Daemon::start(&laptop_dir, &[]);
    let mut invite = Invite::json(&laptop_dir, &[]);
    let code = invite.code.clone();
    let real: PairingTicket = code.parse().unwrap();
    let middle = code.len() / 2;
    let altered = BASE32
        .chars()
        .map(|letter| with_char(&code, middle, letter))
        .find(|altered| {
            altered
                .parse::<PairingTicket>()
                .is_ok_and(|t| t.root != real.root && t.secret == real.secret)
        })
        .expect("some letter keeps the key in the middle a valid point");

    let dir = temp.path().join("joiner");
    init_joining(&dir);
    let run = membrane(&dir, &["--json", "pair", "join", &altered]);
    run.fails_clearly(&[]);
    assert_unlinked(&dir);
    // The invitation must still be open for the real code, and the inviter's reports must
    // show that join and nothing joined before it.
    let retry = membrane(&dir, &["--json", "pair", "join", &code]);
    assert_eq!(
        retry.code, 0,
        "after one attempt with an altered code, the real code is refused: {}",
        retry.stderr
    );
    let joined = retry.data();
    let event = loop {
        let event = invite.next_event();
        if event["outcome"] != "refused" || event["still_open"] != true {
            break event;
        }
    };
    assert_eq!(event["outcome"], "joined", "{event}");
    assert_eq!(
        event["verification_code"], joined["verification_code"],
        "the inviter reported the attempt with the altered code as joined: {event}"
    );
    assert_eq!(identity(&dir)["root"], person.as_str());
}
