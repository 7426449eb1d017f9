//! Pairing a new device by QR code: the invitation ticket, the proof a joiner sends, the
//! short code both people compare, and the inviter's bookkeeping. Pure: time and secrets
//! come in as arguments.
//!
//! The ticket carries the inviter device's key, the person's root, the inviter's addresses,
//! a 128-bit single-use secret and an expiry. The joiner dials the inviter (the transport
//! authenticates both keys), and proves it read the ticket with
//! `HMAC-SHA256(secret, "membrane/pair/1" ‖ root key ‖ inviter key ‖ joiner key)`. A relay
//! in the middle has its own key, so a proof it forwards names the wrong joiner and fails;
//! a ticket altered to name another person fails too, without spending the invitation.

use std::{fmt, str::FromStr};

use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use sha2::{Digest as _, Sha256};

use crate::{did::Did, ucan::UnixTime};

/// Version byte of the ticket format.
pub const TICKET_VERSION: u8 = 1;
/// Failed proofs after which an invitation is burned.
pub const MAX_FAILED_ATTEMPTS: u32 = 5;
/// Longest ticket text accepted.
const MAX_TICKET_LEN: usize = 2048;
/// Domain separation for the proof and the verification code.
const CONTEXT: &[u8] = b"membrane/pair/1";

/// Why a ticket text is not a ticket.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum TicketError {
    /// Not multibase, or not base32.
    #[error("not a pairing code (expected multibase base32 text starting with `b` or `B`)")]
    NotBase32,
    /// Truncated or otherwise undecodable.
    #[error("the pairing code is truncated or corrupt")]
    Corrupt,
    /// A version this Membrane does not read.
    #[error(
        "pairing code version {0} is not supported (this Membrane reads version {TICKET_VERSION})"
    )]
    UnsupportedVersion(u8),
    /// Longer than any ticket.
    #[error("the pairing code is too long")]
    TooLong,
}

/// Why a pairing attempt is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PairingError {
    /// Past its expiry.
    #[error("the invitation expired")]
    Expired,
    /// Already used by a device.
    #[error("the invitation was already used")]
    AlreadyUsed,
    /// Too many wrong proofs.
    #[error("the invitation was burned after {MAX_FAILED_ATTEMPTS} failed attempts")]
    Burned,
    /// The device has no open invitation at all.
    #[error("this device has no open invitation (run `membrane pair invite` on it)")]
    NoInvitation,
    /// The proof does not match the secret and the two keys of this connection.
    #[error("wrong secret, or the proof is not bound to this connection")]
    WrongProof,
}

/// What a QR code (or the copyable text) carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairingTicket {
    /// The inviting device.
    pub inviter: Did,
    /// The person it belongs to.
    pub root: Did,
    /// Where to reach the inviter: binary multiaddrs.
    pub addrs: Vec<Vec<u8>>,
    /// The single-use secret.
    pub secret: [u8; 16],
    /// When the invitation lapses.
    pub expires: UnixTime,
}

#[derive(Serialize, Deserialize)]
struct Wire(u8, ByteBuf, ByteBuf, Vec<ByteBuf>, ByteBuf, u64);

impl PairingTicket {
    fn to_bytes(&self) -> Vec<u8> {
        let wire = Wire(
            TICKET_VERSION,
            ByteBuf::from(self.inviter.as_bytes().to_vec()),
            ByteBuf::from(self.root.as_bytes().to_vec()),
            self.addrs.iter().cloned().map(ByteBuf::from).collect(),
            ByteBuf::from(self.secret.to_vec()),
            self.expires,
        );
        serde_ipld_dagcbor::to_vec(&wire).expect("a ticket always encodes")
    }
}

impl fmt::Display for PairingTicket {
    /// Multibase base32 in upper case (`B…`): QR codes store it in their compact
    /// alphanumeric mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&multibase::encode(
            multibase::Base::Base32Upper,
            self.to_bytes(),
        ))
    }
}

impl FromStr for PairingTicket {
    type Err = TicketError;

    fn from_str(text: &str) -> Result<Self, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError::TooLong);
        }
        let body = text
            .strip_prefix(['b', 'B'])
            .ok_or(TicketError::NotBase32)?;
        if body.is_empty()
            || !body
                .chars()
                .all(|c| c.is_ascii_alphanumeric() && !"0189".contains(c))
        {
            return Err(TicketError::NotBase32);
        }
        // Valid characters that do not decode: cut short, or mistyped.
        let (_, bytes) = multibase::decode(text).map_err(|_| TicketError::Corrupt)?;
        let version = *bytes.get(1).ok_or(TicketError::Corrupt)?;
        let wire: Wire = serde_ipld_dagcbor::from_slice(&bytes).map_err(|_| {
            // A different layout may well be a newer version.
            if bytes.len() > 2 && bytes[0] == 0x86 && version != TICKET_VERSION {
                TicketError::UnsupportedVersion(version)
            } else {
                TicketError::Corrupt
            }
        })?;
        if wire.0 != TICKET_VERSION {
            return Err(TicketError::UnsupportedVersion(wire.0));
        }
        let key = |bytes: &ByteBuf| -> Result<Did, TicketError> {
            let key = crate::key::PublicKey::from_bytes(bytes).map_err(|_| TicketError::Corrupt)?;
            Ok(key.to_did())
        };
        Ok(Self {
            inviter: key(&wire.1)?,
            root: key(&wire.2)?,
            addrs: wire.3.into_iter().map(ByteBuf::into_vec).collect(),
            secret: wire
                .4
                .as_ref()
                .try_into()
                .map_err(|_| TicketError::Corrupt)?,
            expires: wire.5,
        })
    }
}

fn transcript(root: &Did, inviter: &Did, joiner: &Did) -> Vec<u8> {
    let mut out = CONTEXT.to_vec();
    out.extend_from_slice(root.as_bytes());
    out.extend_from_slice(inviter.as_bytes());
    out.extend_from_slice(joiner.as_bytes());
    out
}

/// The joiner's proof that it knows the secret, bound to the ticket's person and to both
/// keys of the connection.
pub fn proof(ticket: &PairingTicket, joiner: &Did) -> [u8; 32] {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(&ticket.secret).expect("HMAC takes any key length");
    mac.update(&transcript(&ticket.root, &ticket.inviter, joiner));
    mac.finalize().into_bytes().into()
}

/// Six digits both people compare on their screens.
pub fn verification_code(ticket: &PairingTicket, joiner: &Did) -> String {
    let digest = Sha256::new()
        .chain_update(b"membrane/pair/1/code")
        .chain_update(ticket.secret)
        .chain_update(transcript(&ticket.root, &ticket.inviter, joiner))
        .finalize();
    let number = u32::from_be_bytes(digest[..4].try_into().expect("4 bytes")) % 1_000_000;
    format!("{number:06}")
}

/// The inviter's record of one invitation.
#[derive(Debug, Clone)]
pub struct Invitation {
    ticket: PairingTicket,
    failed: u32,
    used_by: Option<Did>,
}

impl Invitation {
    /// A new invitation for `ticket`.
    pub fn new(ticket: PairingTicket) -> Self {
        Self {
            ticket,
            failed: 0,
            used_by: None,
        }
    }

    /// The ticket.
    pub fn ticket(&self) -> &PairingTicket {
        &self.ticket
    }

    /// Failed attempts so far.
    pub fn failed_attempts(&self) -> u32 {
        self.failed
    }

    /// Checks a joiner's proof at `now`. Success uses the invitation up; a wrong proof
    /// counts towards burning it.
    pub fn redeem(
        &mut self,
        now: UnixTime,
        joiner: &Did,
        presented: &[u8],
    ) -> Result<(), PairingError> {
        if self.used_by.is_some() {
            return Err(PairingError::AlreadyUsed);
        }
        if self.failed >= MAX_FAILED_ATTEMPTS {
            return Err(PairingError::Burned);
        }
        if now > self.ticket.expires {
            return Err(PairingError::Expired);
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.ticket.secret).expect("any key length");
        mac.update(&transcript(&self.ticket.root, &self.ticket.inviter, joiner));
        if mac.verify_slice(presented).is_err() {
            self.failed += 1;
            return Err(if self.failed >= MAX_FAILED_ATTEMPTS {
                PairingError::Burned
            } else {
                PairingError::WrongProof
            });
        }
        self.used_by = Some(*joiner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SecretKey;

    fn ticket(expires: UnixTime) -> PairingTicket {
        PairingTicket {
            inviter: SecretKey::from_seed([1; 32]).did(),
            root: SecretKey::from_seed([2; 32]).did(),
            addrs: vec![vec![4, 127, 0, 0, 1, 6, 0x0f, 0xa1]],
            secret: [9; 16],
            expires,
        }
    }

    #[test]
    fn ticket_text_round_trips_and_bad_text_is_refused() {
        let t = ticket(1_000);
        let text = t.to_string();
        assert!(text.starts_with('B'));
        assert!(
            text.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        );
        assert!(text.len() < 300, "{} characters", text.len());
        assert_eq!(text.parse::<PairingTicket>(), Ok(t));
        assert_eq!(
            text[..text.len() / 2].parse::<PairingTicket>(),
            Err(TicketError::Corrupt)
        );
        assert_eq!("zABC".parse::<PairingTicket>(), Err(TicketError::NotBase32));
        assert_eq!("".parse::<PairingTicket>(), Err(TicketError::NotBase32));
        assert_eq!(
            "B!!!!".parse::<PairingTicket>(),
            Err(TicketError::NotBase32)
        );
    }

    #[test]
    fn proofs_are_bound_to_both_keys() {
        let t = ticket(1_000);
        let joiner = SecretKey::from_seed([3; 32]).did();
        let relay = SecretKey::from_seed([4; 32]).did();
        let good = proof(&t, &joiner);
        let mut invitation = Invitation::new(t.clone());
        // A ticket altered to name another person gives a proof that fails, unspent.
        let mut other_person = t.clone();
        other_person.root = SecretKey::from_seed([5; 32]).did();
        assert_eq!(
            invitation.redeem(10, &joiner, &proof(&other_person, &joiner)),
            Err(PairingError::WrongProof)
        );
        // The relay forwards the joiner's proof over its own connection: wrong binding.
        assert_eq!(
            invitation.redeem(10, &relay, &good),
            Err(PairingError::WrongProof)
        );
        assert_eq!(invitation.redeem(10, &joiner, &good), Ok(()));
        assert_eq!(
            invitation.redeem(10, &joiner, &good),
            Err(PairingError::AlreadyUsed)
        );
        assert_eq!(verification_code(&t, &joiner).len(), 6);
        assert_ne!(
            verification_code(&t, &joiner),
            verification_code(&t, &relay)
        );
    }

    #[test]
    fn invitations_expire_and_burn() {
        let t = ticket(100);
        let joiner = SecretKey::from_seed([3; 32]).did();
        let good = proof(&t, &joiner);
        assert_eq!(
            Invitation::new(t.clone()).redeem(101, &joiner, &good),
            Err(PairingError::Expired)
        );
        let mut invitation = Invitation::new(t);
        for _ in 0..4 {
            assert_eq!(
                invitation.redeem(10, &joiner, &[0; 32]),
                Err(PairingError::WrongProof)
            );
        }
        assert_eq!(
            invitation.redeem(10, &joiner, &[0; 32]),
            Err(PairingError::Burned)
        );
        assert_eq!(
            invitation.redeem(10, &joiner, &good),
            Err(PairingError::Burned)
        );
    }
}
