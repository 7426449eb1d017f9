//! The wall clock, read here and passed into the protocol crate as an argument.

use std::time::{SystemTime, UNIX_EPOCH};

use membrane_protocol::ucan::UnixTime;

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}
