//! UCAN 1.0 capability tokens.
//!
//! A token is a DAG-CBOR envelope `[signature, {"h": varsig-header, "ucan/<type>@1.0.0": payload}]`
//! signed with Ed25519 over the DAG-CBOR bytes of that second element. Its CID is CIDv1,
//! codec dag-cbor (0x71), sha2-256 over the whole envelope.
//!
//! - [`Delegation`]: `iss` lets `aud` act on `sub` (or, with `sub` null, a *powerline*: on
//!   anything `iss` may act on) for commands under `cmd`, constrained by the policy `pol`.
//! - [`Invocation`]: `iss` asks to run `cmd` with `args` on `sub`, proven by `prf`, the CIDs
//!   of a delegation chain ordered from the subject's own delegation to the invoker's.
//! - [`Revocation`]: revokes one delegation by CID, issued by a principal in its chain.
//!
//! [`Validator`] checks chains at a given time and returns the spec's named errors
//! ([`ValidationError::name`]). Sizes and depth are bounded before any signature work.

mod canonical;
mod command;
mod delegation;
mod envelope;
mod invocation;
pub mod json;
mod payload;
pub mod policy;
mod revocation;
mod validate;

pub use cid::Cid;
pub use command::{Command, CommandError};
pub use delegation::{Delegation, DelegationBuilder, DelegationPayload};
pub use envelope::{
    AnyToken, DecodeError, EncodeError, TokenKind, VARSIG_ED25519_DAG_CBOR, decode_any, token_cid,
};
pub use invocation::{Invocation, InvocationBuilder, InvocationPayload};
pub use ipld_core::ipld::Ipld;
pub use policy::{Policy, PolicyError};
pub use revocation::{REVOKE_COMMAND, Revocation, RevocationError, RevocationSet};
pub use validate::{
    ProofStore, ValidChain, ValidationError, Validator, VerifiedSignatures, find_chain,
};

/// Seconds since the Unix epoch. Always passed in: nothing here reads a clock.
pub type UnixTime = u64;

/// Largest envelope accepted, checked before decoding: 64 KiB.
pub const MAX_TOKEN_SIZE: usize = 64 * 1024;
/// Longest delegation chain accepted, checked before any signature is verified.
pub const MAX_CHAIN_DEPTH: usize = 16;
/// Largest integer the spec allows in time fields (2^53 − 1, safe in every language).
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Decodes base64 text the way people paste it: standard or URL-safe alphabet, padded or
/// not, surrounding whitespace ignored.
pub fn decode_base64_loose(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    use base64::{
        Engine as _, alphabet,
        engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig},
    };
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let text = text.trim();
    GeneralPurpose::new(&alphabet::STANDARD, config)
        .decode(text)
        .or_else(|_| GeneralPurpose::new(&alphabet::URL_SAFE, config).decode(text))
}

/// Standard padded base64, the form the UCAN fixtures use.
pub fn encode_base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
