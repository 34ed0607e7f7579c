//! Time parameters of the query API: RFC 3339, Unix seconds (integer or fractional),
//! Unix nanoseconds (integers of 16 digits or more), and `now` / `now-15m`.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::config::parse_duration;

/// Parses a time parameter relative to `now_ns`.
pub fn parse_time(text: &str, now_ns: i64) -> Result<i64, String> {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("now") {
        if rest.is_empty() {
            return Ok(now_ns);
        }
        let ago = rest
            .strip_prefix('-')
            .ok_or_else(|| format!("{text:?}: after `now` only `-<duration>` is allowed"))?;
        let d = parse_duration(ago)?;
        return Ok(now_ns.saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)));
    }
    if let Ok(n) = t.parse::<i64>() {
        // 16+ digits cannot be seconds (that is past the year 300,000): nanoseconds.
        return Ok(if t.trim_start_matches('-').len() >= 16 {
            n
        } else {
            n.saturating_mul(1_000_000_000)
        });
    }
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs.abs() < 9.2e9 {
            return Ok((secs * 1e9).round() as i64);
        }
        return Err(format!("{text:?} is out of range"));
    }
    OffsetDateTime::parse(t, &Rfc3339)
        .map(|dt| i64::try_from(dt.unix_timestamp_nanos()).unwrap_or(i64::MAX))
        .map_err(|_| format!("{text:?} is not a time: use RFC 3339, Unix seconds, Unix nanoseconds or now-<duration>"))
}

/// Formats ns since the epoch as RFC 3339 with nanoseconds.
pub fn format_time(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|dt| dt.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_000_000_000_000_000;

    #[test]
    fn forms() {
        assert_eq!(parse_time("now", NOW).unwrap(), NOW);
        assert_eq!(parse_time("now-1h", NOW).unwrap(), NOW - 3_600_000_000_000);
        assert_eq!(parse_time("1764000000", NOW).unwrap(), NOW);
        assert_eq!(parse_time("1764000000.5", NOW).unwrap(), NOW + 500_000_000);
        assert_eq!(parse_time("1764000000000000000", NOW).unwrap(), NOW);
        assert_eq!(parse_time("2025-11-24T16:00:00Z", NOW).unwrap(), NOW);
        assert_eq!(
            parse_time("2025-11-24T17:00:00.25+01:00", NOW).unwrap(),
            NOW + 250_000_000
        );
        assert!(parse_time("yesterday", NOW).is_err());
        assert!(parse_time("now+1h", NOW).is_err());
        assert!(parse_time("1e300", NOW).is_err());
        assert_eq!(format_time(NOW), "2025-11-24T16:00:00Z");
    }
}
