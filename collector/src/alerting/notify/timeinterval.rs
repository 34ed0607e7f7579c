//! Alertmanager's time intervals (`time_intervals`, and the older `mute_time_intervals`
//! list), used by routes' `mute_time_intervals` and `active_time_intervals`: times of
//! day, weekdays, days of the month (negative counts from the end), months and years,
//! each a list of single values or `start:end` ranges (inclusive; times end exclusive).
//! Only the `UTC` location is supported (Vantage ships no time-zone database).

use serde::Deserialize;
use time::OffsetDateTime;

/// One named interval list as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NamedFile {
    pub(super) name: String,
    #[serde(default)]
    pub(super) time_intervals: Vec<IntervalFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IntervalFile {
    #[serde(default)]
    times: Vec<TimeRangeFile>,
    #[serde(default)]
    weekdays: Vec<String>,
    #[serde(default)]
    days_of_month: Vec<String>,
    #[serde(default)]
    months: Vec<String>,
    #[serde(default)]
    years: Vec<String>,
    location: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TimeRangeFile {
    start_time: String,
    end_time: String,
}

/// One interval: a time matches when every non-empty list has a range containing it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TimeInterval {
    times: Vec<(u32, u32)>,
    weekdays: Vec<(u8, u8)>,
    days_of_month: Vec<(i32, i32)>,
    months: Vec<(u8, u8)>,
    years: Vec<(i32, i32)>,
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn range<T: Copy + PartialOrd>(text: &str, one: impl Fn(&str) -> Option<T>) -> Option<(T, T)> {
    let (a, b) = match text.split_once(':') {
        Some((a, b)) => (one(a.trim())?, one(b.trim())?),
        None => {
            let v = one(text.trim())?;
            (v, v)
        }
    };
    (a <= b).then_some((a, b))
}

fn minutes(text: &str) -> Option<u32> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

impl TimeInterval {
    /// Validates one interval; errors are pushed with `path`.
    pub(super) fn parse(path: &str, f: &IntervalFile, errors: &mut Vec<String>) -> TimeInterval {
        let mut out = TimeInterval::default();
        if let Some(loc) = &f.location
            && loc != "UTC"
        {
            errors.push(format!(
                "{path}.location: {loc:?} is not supported by Vantage (only UTC)"
            ));
        }
        for (i, t) in f.times.iter().enumerate() {
            match (minutes(&t.start_time), minutes(&t.end_time)) {
                (Some(a), Some(b)) if a < b => out.times.push((a, b)),
                _ => errors.push(format!(
                    "{path}.times[{i}]: start_time and end_time must be HH:MM with start before end"
                )),
            }
        }
        for (i, w) in f.weekdays.iter().enumerate() {
            let day = |s: &str| {
                WEEKDAYS
                    .iter()
                    .position(|d| d.eq_ignore_ascii_case(s))
                    .map(|p| p as u8)
            };
            match range(w, day) {
                Some(r) => out.weekdays.push(r),
                None => errors.push(format!(
                    "{path}.weekdays[{i}]: {w:?} is not a weekday or range"
                )),
            }
        }
        for (i, d) in f.days_of_month.iter().enumerate() {
            let day = |s: &str| {
                s.parse::<i32>()
                    .ok()
                    .filter(|d| (1..=31).contains(&d.abs()))
            };
            let parsed = match d.split_once(':') {
                Some((a, b)) => day(a.trim())
                    .zip(day(b.trim()))
                    .filter(|(a, b)| a.signum() != b.signum() || a <= b),
                None => day(d.trim()).map(|v| (v, v)),
            };
            match parsed {
                Some(r) => out.days_of_month.push(r),
                None => errors.push(format!(
                    "{path}.days_of_month[{i}]: {d:?} is not a day (1..31, -31..-1) or range"
                )),
            }
        }
        for (i, m) in f.months.iter().enumerate() {
            let month = |s: &str| {
                MONTHS
                    .iter()
                    .position(|n| n.eq_ignore_ascii_case(s))
                    .map(|p| p as u8 + 1)
                    .or_else(|| s.parse::<u8>().ok().filter(|m| (1..=12).contains(m)))
            };
            match range(m, month) {
                Some(r) => out.months.push(r),
                None => errors.push(format!("{path}.months[{i}]: {m:?} is not a month or range")),
            }
        }
        for (i, y) in f.years.iter().enumerate() {
            match range(y, |s| s.parse::<i32>().ok().filter(|y| *y > 0)) {
                Some(r) => out.years.push(r),
                None => errors.push(format!("{path}.years[{i}]: {y:?} is not a year or range")),
            }
        }
        out
    }

    /// Whether the UTC time `ms` (milliseconds since the epoch) is inside.
    pub fn contains(&self, ms: i64) -> bool {
        let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
            return false;
        };
        let minute = u32::from(t.hour()) * 60 + u32::from(t.minute());
        let weekday = t.weekday().number_days_from_sunday();
        let day = i32::from(t.day());
        let month_len = i32::from(t.month().length(t.year()));
        let month = u8::from(t.month());
        let any = |empty: bool, hit: bool| empty || hit;
        let from_end = |d: i32| if d < 0 { month_len + 1 + d } else { d };
        any(
            self.times.is_empty(),
            self.times.iter().any(|&(a, b)| a <= minute && minute < b),
        ) && any(
            self.weekdays.is_empty(),
            self.weekdays
                .iter()
                .any(|&(a, b)| a <= weekday && weekday <= b),
        ) && any(
            self.days_of_month.is_empty(),
            self.days_of_month
                .iter()
                .any(|&(a, b)| from_end(a) <= day && day <= from_end(b)),
        ) && any(
            self.months.is_empty(),
            self.months.iter().any(|&(a, b)| a <= month && month <= b),
        ) && any(
            self.years.is_empty(),
            self.years
                .iter()
                .any(|&(a, b)| a <= t.year() && t.year() <= b),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<TimeInterval, Vec<String>> {
        let f: IntervalFile = serde_yaml_ng::from_str(yaml).unwrap();
        let mut errors = Vec::new();
        let t = TimeInterval::parse("x", &f, &mut errors);
        if errors.is_empty() {
            Ok(t)
        } else {
            Err(errors)
        }
    }

    fn ms(text: &str) -> i64 {
        let t =
            OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).unwrap();
        (t.unix_timestamp_nanos() / 1_000_000) as i64
    }

    #[test]
    fn business_hours_and_month_ends() {
        let t = parse(
            "times: [{start_time: '09:00', end_time: '17:00'}]\nweekdays: ['monday:friday']\n",
        )
        .unwrap();
        assert!(
            t.contains(ms("2026-11-25T10:00:00Z")),
            "a Wednesday morning"
        );
        assert!(!t.contains(ms("2026-11-25T17:00:00Z")), "end is exclusive");
        assert!(!t.contains(ms("2026-11-28T10:00:00Z")), "a Saturday");
        let t = parse("days_of_month: ['-3:-1']\nmonths: [february]\nyears: ['2028']\n").unwrap();
        assert!(
            t.contains(ms("2028-02-27T00:00:00Z")),
            "leap year: the 27th is third from the end"
        );
        assert!(!t.contains(ms("2028-02-26T23:59:00Z")));
        assert!(!t.contains(ms("2027-02-27T00:00:00Z")));
    }

    #[test]
    fn bad_intervals_are_refused() {
        for bad in [
            "times: [{start_time: '17:00', end_time: '09:00'}]",
            "times: [{start_time: '9:00', end_time: '10:00'}]",
            "weekdays: [funday]",
            "weekdays: ['friday:monday']",
            "days_of_month: ['0']",
            "months: ['13']",
            "location: Europe/Paris",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
