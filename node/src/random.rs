//! Randomness from the operating system. The protocol crate takes random bytes as
//! arguments; this is where they come from in a real node.

/// Why the OS could not supply randomness.
#[derive(Debug, thiserror::Error)]
#[error("the operating system's random source failed: {0}")]
pub struct RandomError(String);

/// `N` bytes from the OS's cryptographic random source.
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomError> {
    let mut buffer = [0u8; N];
    getrandom::fill(&mut buffer).map_err(|error| RandomError(error.to_string()))?;
    Ok(buffer)
}
