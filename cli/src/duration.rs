//! Human durations such as `30d`, `12h`, `10m`, `90s`, `2w`.

/// Parses a duration into seconds.
pub(crate) fn parse_seconds(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("{text:?} has no unit; use s, m, h, d or w (e.g. 30d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 604_800,
        other => return Err(format!("unknown unit {other:?}; use s, m, h, d or w")),
    };
    number
        .checked_mul(unit_seconds)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_seconds;

    #[test]
    fn parses_units_and_rejects_garbage() {
        assert_eq!(parse_seconds("30d"), Ok(30 * 86_400));
        assert_eq!(parse_seconds("10m"), Ok(600));
        assert_eq!(parse_seconds("2w"), Ok(2 * 604_800));
        assert!(parse_seconds("30").is_err());
        assert!(parse_seconds("d").is_err());
        assert!(parse_seconds("5y").is_err());
        assert!(parse_seconds("99999999999999999999d").is_err());
    }
}
