//! `membrane token …`: inspect, verify and issue UCAN 1.0 tokens.

pub(crate) mod delegate;
pub(crate) mod inspect;
pub(crate) mod verify;

use std::path::PathBuf;

use clap::Subcommand;

use crate::output::Output;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Decode a token and show its envelope, payload and CID.
    ///
    /// TOKEN is a file (raw bytes or base64) or base64 text.
    /// Example: membrane token inspect grant.ucan
    Inspect(inspect::Args),
    /// Validate a token and its proof chain at a given time.
    ///
    /// Exits 0 when valid; exits 1 and prints the spec's error name (InvalidSignature,
    /// Expired, …) when not. Proofs come from --proof and, when this data dir holds an
    /// identity, from the delegations this device holds.
    /// Example: membrane token verify inv.ucan --proof dlg.ucan --at 1767225600
    Verify(verify::Args),
    /// Issue a delegation signed by this device (its authority from your root as proof)
    /// or by --key FILE, and print it as base64.
    ///
    /// Example: membrane token delegate --aud did:key:z6Mk… --cmd /membrane/doc/read --ttl 30d
    Delegate(Box<delegate::Args>),
}

pub(crate) fn run(
    command: Command,
    data_dir: Option<PathBuf>,
    out: &mut Output,
) -> anyhow::Result<()> {
    match command {
        Command::Inspect(args) => inspect::run(args, out),
        Command::Verify(args) => verify::run(args, data_dir, out),
        Command::Delegate(args) => delegate::run(*args, data_dir, out),
    }
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian, UTC).
pub(crate) fn format_time(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rest = seconds % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3_600,
        rest % 3_600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_time(1_767_225_600), "2026-01-01T00:00:00Z");
        assert_eq!(super::format_time(951_782_400), "2000-02-29T00:00:00Z");
    }
}
