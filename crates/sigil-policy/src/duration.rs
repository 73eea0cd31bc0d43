//! Durations written as `90s`, `5m`, `1h`, `7d` (one unit, whole numbers).

use std::time::Duration;

/// Parses `<n><unit>` with unit `s`, `m`, `h` or `d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} does not start with a whole number"))?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86_400),
        _ => {
            return Err(format!(
                "{s:?} has unit {unit:?}; use s, m, h or d (e.g. 90s, 5m, 1h)"
            ));
        }
    }
    .ok_or_else(|| format!("{s:?} is too large"))?;
    Ok(Duration::from_secs(secs))
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s != 0 && s.is_multiple_of(86_400) {
        format!("{}d", s / 86_400)
    } else if s != 0 && s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s != 0 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_case::test_case;

    #[test_case("90s", 90)]
    #[test_case("5m", 300)]
    #[test_case("1h", 3600)]
    #[test_case("2d", 172_800)]
    fn ok(s: &str, secs: u64) {
        assert_eq!(parse_duration(s).unwrap(), Duration::from_secs(secs));
        assert_eq!(
            parse_duration(&format_duration(Duration::from_secs(secs)))
                .unwrap()
                .as_secs(),
            secs
        );
    }

    #[test_case("")]
    #[test_case("h")]
    #[test_case("5")]
    #[test_case("5 minutes")]
    #[test_case("-1h")]
    #[test_case("99999999999999999999d")]
    fn bad(s: &str) {
        assert!(parse_duration(s).is_err());
    }
}
