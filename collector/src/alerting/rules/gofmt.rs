//! Number formatting as Go's `fmt` and Prometheus's template helpers do it, so an
//! annotation reads the same here as it does in Prometheus (`{{ $value }}` prints
//! `1e+06`, `humanize` prints `1.235k`).

/// Go's `strconv.FormatFloat(v, 'g', prec, 64)`, with `fmt`'s spelling of the
/// non-finite values (`+Inf`, `-Inf`, `NaN`); `prec = None` is the shortest
/// representation that round-trips (what `%v` prints).
pub(crate) fn format_g(v: f64, prec: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    let neg = v.is_sign_negative();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if v == 0.0 {
        out.push('0');
        return out;
    }
    let (digits, dp) = decimal_digits(v.abs(), prec);
    let nd = digits.len() as i64;
    let shortest = prec.is_none();
    let mut p = match prec {
        None => nd,
        Some(p) => p.max(1) as i64,
    };
    let mut eprec = p;
    if eprec > nd && nd >= dp {
        eprec = nd;
    }
    if shortest {
        eprec = 6;
    }
    let exp = dp - 1;
    if exp < -4 || exp >= eprec {
        if p > nd {
            p = nd;
        }
        fmt_e(&mut out, &digits, dp, p - 1);
        return out;
    }
    if p > dp {
        p = nd;
    }
    fmt_f(&mut out, &digits, dp, (p - dp).max(0));
    out
}

/// Go's `%.Nf` (`strconv.FormatFloat(v, 'f', n, 64)`).
pub(crate) fn format_f(v: f64, prec: usize) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.to_string();
    }
    format!("{v:.prec$}")
}

/// Go's `%.Ne`.
pub(crate) fn format_e(v: f64, prec: usize) -> String {
    if !v.is_finite() {
        return format_g(v, None);
    }
    let s = format!("{:.*e}", prec, v);
    match s.split_once('e') {
        Some((mant, exp)) => {
            let e: i64 = exp.parse().unwrap_or(0);
            let sign = if e < 0 { '-' } else { '+' };
            format!("{mant}e{sign}{:02}", e.abs())
        }
        None => s,
    }
}

/// Significant digits (no trailing zeros) and the decimal point position
/// (`v = 0.d1d2... × 10^dp`) of a positive finite `v`.
fn decimal_digits(v: f64, prec: Option<usize>) -> (Vec<u8>, i64) {
    let s = match prec {
        None => format!("{v:e}"),
        Some(p) => format!("{:.*e}", p.max(1) - 1, v),
    };
    let (mant, exp) = s.split_once('e').unwrap_or((s.as_str(), "0"));
    let e: i64 = exp.parse().unwrap_or(0);
    let mut digits: Vec<u8> = mant.bytes().filter(u8::is_ascii_digit).collect();
    while digits.len() > 1 && digits.last() == Some(&b'0') {
        digits.pop();
    }
    (digits, e + 1)
}

fn fmt_e(out: &mut String, digits: &[u8], dp: i64, prec: i64) {
    out.push(digits.first().copied().unwrap_or(b'0') as char);
    if prec > 0 {
        out.push('.');
        for i in 1..=prec as usize {
            out.push(digits.get(i).copied().unwrap_or(b'0') as char);
        }
    }
    let exp = if digits.is_empty() { 0 } else { dp - 1 };
    out.push('e');
    out.push(if exp < 0 { '-' } else { '+' });
    let a = exp.abs();
    if a < 10 {
        out.push('0');
    }
    out.push_str(&a.to_string());
}

fn fmt_f(out: &mut String, digits: &[u8], dp: i64, prec: i64) {
    if dp > 0 {
        for i in 0..dp as usize {
            out.push(digits.get(i).copied().unwrap_or(b'0') as char);
        }
    } else {
        out.push('0');
    }
    if prec > 0 {
        out.push('.');
        for i in 1..=prec {
            let j = dp + i - 1;
            let d = if j < 0 {
                b'0'
            } else {
                digits.get(j as usize).copied().unwrap_or(b'0')
            };
            out.push(d as char);
        }
    }
}

/// Prometheus's `humanize`: SI prefixes, 4 significant digits.
pub(crate) fn humanize(mut v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
        return format!("{}{prefix}", format_g(v, Some(4)));
    }
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanize1024`: binary prefixes.
pub(crate) fn humanize1024(mut v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return format_g(v, Some(4));
    }
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", format_g(v, Some(4)))
}

/// Prometheus's `humanizeDuration` of seconds: `1d 2h 3m 4s`, or `1.5s`, `250ms`.
pub(crate) fn humanize_duration(mut v: f64) -> String {
    if !v.is_finite() {
        return format_g(v, Some(4));
    }
    if v == 0.0 {
        return format!("{}s", format_g(v, Some(4)));
    }
    if v.abs() >= 1.0 {
        let mut sign = "";
        if v < 0.0 {
            sign = "-";
            v = -v;
        }
        let d = v as i64;
        let (seconds, minutes, hours, days) = (d % 60, (d / 60) % 60, (d / 3600) % 24, d / 86400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", format_g(v, Some(4)));
    }
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", format_g(v, Some(4)))
}

/// Prometheus's `humanizePercentage`: a ratio as a percentage.
pub(crate) fn humanize_percentage(v: f64) -> String {
    format!("{}%", format_g(v * 100.0, Some(4)))
}

/// Prometheus's `humanizeTimestamp`: seconds since the epoch as Go prints a UTC
/// `time.Time` (`2006-01-02 15:04:05.999999999 +0000 UTC`).
pub(crate) fn humanize_timestamp(v: f64) -> Result<String, String> {
    if !v.is_finite() {
        return Ok(format_g(v, Some(4)));
    }
    let ns = (v * 1e9).trunc();
    if ns.abs() > i64::MAX as f64 {
        return Err(format!("timestamp {v} out of range"));
    }
    // Prometheus goes through model.Time, so milliseconds, truncated.
    let ms = (ns as i64) / 1_000_000;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .map_err(|e| format!("timestamp {v}: {e}"))?;
    let mut s = format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    let nanos = t.nanosecond();
    if nanos != 0 {
        let frac = format!("{nanos:09}");
        s.push('.');
        s.push_str(frac.trim_end_matches('0'));
    }
    s.push_str(" +0000 UTC");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_g_formatting() {
        // Values checked against Go's fmt.Sprint / %.4g.
        assert_eq!(format_g(1_000_000.0, None), "1e+06");
        assert_eq!(format_g(123_456.0, None), "123456");
        assert_eq!(format_g(1_234_567.0, None), "1.234567e+06");
        assert_eq!(format_g(0.5, None), "0.5");
        assert_eq!(format_g(0.0001, None), "0.0001");
        assert_eq!(format_g(0.00001, None), "1e-05");
        assert_eq!(format_g(-2.0, None), "-2");
        assert_eq!(format_g(f64::INFINITY, None), "+Inf");
        assert_eq!(format_g(f64::NAN, None), "NaN");
        assert_eq!(format_g(100.0, Some(4)), "100");
        assert_eq!(format_g(12345.0, Some(4)), "1.234e+04");
        assert_eq!(format_g(1.5, Some(4)), "1.5");
        assert_eq!(format_g(1234.5, Some(4)), "1234");
        assert_eq!(format_g(0.0, Some(4)), "0");
    }

    #[test]
    fn humanize_matches_prometheus() {
        // Expectations from Prometheus's template_test.go.
        assert_eq!(humanize(0.0), "0");
        assert_eq!(humanize(1234567.0), "1.235M");
        assert_eq!(humanize(12345.0), "12.35k");
        assert_eq!(humanize(0.1), "100m");
        assert_eq!(humanize(0.0001), "100u");
        assert_eq!(humanize(1.0), "1");
        assert_eq!(humanize(-1234.0), "-1.234k");
        assert_eq!(humanize(f64::INFINITY), "+Inf");
        assert_eq!(humanize1024(1024.0), "1ki");
        assert_eq!(humanize1024(1_048_576.0), "1Mi");
        assert_eq!(humanize1024(0.5), "0.5");
        assert_eq!(humanize1024(1100.0), "1.074ki");
        assert_eq!(humanize_duration(0.0), "0s");
        assert_eq!(humanize_duration(1.0), "1s");
        assert_eq!(humanize_duration(60.0), "1m 0s");
        assert_eq!(humanize_duration(3600.0), "1h 0m 0s");
        assert_eq!(humanize_duration(86400.0), "1d 0h 0m 0s");
        assert_eq!(humanize_duration(90061.0), "1d 1h 1m 1s");
        assert_eq!(humanize_duration(1.5), "1.5s");
        assert_eq!(humanize_duration(0.001), "1ms");
        assert_eq!(humanize_duration(0.000001), "1us");
        assert_eq!(humanize_duration(-90061.0), "-1d 1h 1m 1s");
        assert_eq!(humanize_percentage(0.1234567), "12.35%");
        assert_eq!(humanize_percentage(1.0), "100%");
        assert_eq!(
            humanize_timestamp(1435065584.128).unwrap(),
            "2015-06-23 13:19:44.128 +0000 UTC"
        );
        assert_eq!(
            humanize_timestamp(0.0).unwrap(),
            "1970-01-01 00:00:00 +0000 UTC"
        );
    }
}
