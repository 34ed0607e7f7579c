//! Durations as Prometheus's HTTP API accepts them for `step` and `timeout`.

use super::PromqlError;

/// Parses `"1.5"` (float seconds) or a Prometheus duration (`"5m"`, `"1h30m"`,
/// `"500ms"`; units y w d h m s ms, largest first) into milliseconds.
pub fn parse_duration_ms(s: &str) -> Result<i64, PromqlError> {
    let err = || PromqlError::bad(format!("cannot parse {s:?} to a valid duration"));
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return Err(err());
        }
        let ms = (secs * 1000.0).round();
        if ms > i64::MAX as f64 || ms < i64::MIN as f64 {
            return Err(err());
        }
        return Ok(ms as i64);
    }
    if s.is_empty() {
        return Err(err());
    }
    // Units in the order they must appear, with their length in ms.
    const UNITS: [(&str, i64); 7] = [
        ("y", 365 * 24 * 3_600_000),
        ("w", 7 * 24 * 3_600_000),
        ("d", 24 * 3_600_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total: i64 = 0;
    let mut next_unit = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return Err(err());
        }
        let n: i64 = s[start..i].parse().map_err(|_| err())?;
        let ustart = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[ustart..i];
        let pos = UNITS[next_unit..]
            .iter()
            .position(|(u, _)| *u == unit)
            .ok_or_else(err)?;
        let (_, ms) = UNITS[next_unit + pos];
        next_unit += pos + 1;
        total = n
            .checked_mul(ms)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_and_prometheus_durations() {
        assert_eq!(parse_duration_ms("1.5").unwrap(), 1500);
        assert_eq!(parse_duration_ms("15").unwrap(), 15_000);
        assert_eq!(parse_duration_ms("5m").unwrap(), 300_000);
        assert_eq!(parse_duration_ms("1h30m").unwrap(), 5_400_000);
        assert_eq!(parse_duration_ms("500ms").unwrap(), 500);
        assert_eq!(parse_duration_ms("1d2h3m4s5ms").unwrap(), 93_784_005);
        assert_eq!(parse_duration_ms("0").unwrap(), 0);
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "", "m", "5", "5x", "1m1h", "1.5m", "5m5m", "NaN", "Inf", "-5m",
        ] {
            if bad == "5" {
                continue;
            }
            let e = parse_duration_ms(bad).unwrap_err();
            assert_eq!(e.error_type(), "bad_data", "{bad}");
        }
        assert!(parse_duration_ms("99999999999999999999y").is_err());
    }
}
