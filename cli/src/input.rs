//! Token arguments: a file path, or base64 text (padded or not, standard or URL-safe).

use std::path::Path;

use anyhow::Context as _;
use membrane_protocol::ucan::{MAX_TOKEN_SIZE, decode_base64_loose};

/// Reads a token given as a path to a file (raw DAG-CBOR bytes or base64 text) or as
/// base64 text on the command line.
pub(crate) fn token_bytes(argument: &str) -> anyhow::Result<Vec<u8>> {
    let path = Path::new(argument);
    if path.is_file() {
        let metadata = path
            .metadata()
            .with_context(|| format!("cannot read {argument}"))?;
        // Base64 of the largest token is about 4/3 its size; refuse anything far beyond.
        anyhow::ensure!(
            metadata.len() <= (MAX_TOKEN_SIZE as u64) * 2,
            "{argument} is {} bytes, far larger than any token",
            metadata.len()
        );
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {argument}"))?;
        return Ok(match std::str::from_utf8(&bytes) {
            Ok(text) => decode_base64_loose(text).unwrap_or(bytes),
            Err(_) => bytes,
        });
    }
    decode_base64_loose(argument).map_err(|_| {
        anyhow::anyhow!("{argument:?} is neither a readable file nor base64 token text")
    })
}
