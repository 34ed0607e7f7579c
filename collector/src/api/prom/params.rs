//! Request parameters as Prometheus reads them: the URL query string and, for a
//! form-encoded POST, the body, merged (body first, as Go's `Request.ParseForm`), with
//! repeated keys (`match[]`) kept; and Prometheus's time and duration syntax.

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{Method, header};

use super::PromError;
use crate::api::ApiError;

/// Largest form body read: long PromQL expressions fit many times over.
const MAX_FORM_BYTES: usize = 4 * 1024 * 1024;

/// The merged parameters of one request.
#[derive(Debug, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    /// Builds parameters from already-split pairs.
    #[cfg(test)]
    pub(crate) fn from_pairs(pairs: Vec<(String, String)>) -> Params {
        Params(pairs)
    }

    /// The first value of `name`, if given and not empty (Go's `FormValue`).
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// Every value of `name`, in order.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// A time parameter in Prometheus's syntax, or `default` when absent.
    pub(crate) fn time_or(&self, name: &str, default: i64) -> Result<i64, PromError> {
        match self.get(name) {
            None => Ok(default),
            Some(text) => parse_time(text)
                .map_err(|e| PromError::bad_data(format!("invalid parameter {name:?}: {e}"))),
        }
    }

    /// A time parameter that must be given.
    pub(crate) fn time(&self, name: &str) -> Result<i64, PromError> {
        match self.get(name) {
            None => Err(PromError::bad_data(format!(
                "invalid parameter {name:?}: missing"
            ))),
            Some(_) => self.time_or(name, 0),
        }
    }
}

impl<S: Send + Sync> FromRequest<S> for Params {
    type Rejection = PromError;

    async fn from_request(req: Request<Body>, _state: &S) -> Result<Params, PromError> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        let is_form = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        let query = req.uri().query().unwrap_or("").to_owned();
        if req.method() == Method::POST && is_form {
            let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
                .await
                .map_err(|_| {
                    PromError::from(ApiError::new(
                        vantage_proto::ErrorCode::InvalidArgument,
                        format!("form body larger than {MAX_FORM_BYTES} bytes"),
                    ))
                })?;
            pairs = serde_urlencoded::from_bytes(&body)
                .map_err(|e| PromError::bad_data(format!("invalid form body: {e}")))?;
        }
        let from_query: Vec<(String, String)> = serde_urlencoded::from_str(&query)
            .map_err(|e| PromError::bad_data(format!("invalid query string: {e}")))?;
        pairs.extend(from_query);
        Ok(Params(pairs))
    }
}

/// Smallest and largest times Prometheus accepts as "unbounded" (its `minTime`/`maxTime`
/// are ±(2^63-1)/1000 ms around the epoch, rendered in RFC 3339 by clients such as
/// Grafana and promtool; both are accepted and clamp to our i64 ms range).
pub(crate) const MIN_TIME_MS: i64 = i64::MIN / 1000;
/// See [`MIN_TIME_MS`].
pub(crate) const MAX_TIME_MS: i64 = i64::MAX / 1000;

/// Parses a time the way Prometheus's API does: float Unix seconds (rounded to the
/// millisecond) or RFC 3339 with optional fraction. Returns milliseconds.
pub(crate) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<f64>()
        && !text.eq_ignore_ascii_case("nan")
        && !text.to_ascii_lowercase().contains("inf")
    {
        let whole = secs.trunc();
        let frac = ((secs - whole) * 1000.0).round();
        let ms = whole * 1000.0 + frac;
        if !(MIN_TIME_MS as f64..=MAX_TIME_MS as f64).contains(&ms) {
            return Err(format!("cannot parse {text:?} to a valid timestamp"));
        }
        return Ok(ms as i64);
    }
    if let Ok(dt) =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
    {
        let ms = dt.unix_timestamp_nanos().div_euclid(1_000_000);
        return Ok(i64::try_from(ms).unwrap_or(if ms < 0 { MIN_TIME_MS } else { MAX_TIME_MS }));
    }
    // Go's time package writes years past 9999 with more digits; Prometheus special-cases
    // its own min/max times, which clients send back verbatim.
    match text {
        "-292273086-05-16T16:47:06Z" => Ok(MIN_TIME_MS),
        "292277025-08-18T07:12:54.999999999Z" => Ok(MAX_TIME_MS),
        _ => Err(format!("cannot parse {text:?} to a valid timestamp")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_prometheus_parses_them() {
        assert_eq!(parse_time("1435781451.781").unwrap(), 1_435_781_451_781);
        assert_eq!(parse_time("1435781451").unwrap(), 1_435_781_451_000);
        assert_eq!(parse_time("-1.5").unwrap(), -1_500);
        assert_eq!(
            parse_time("2015-07-01T20:10:51.781Z").unwrap(),
            1_435_781_451_781
        );
        assert_eq!(
            parse_time("2015-07-01T22:10:51+02:00").unwrap(),
            1_435_781_451_000
        );
        assert_eq!(
            parse_time("292277025-08-18T07:12:54.999999999Z").unwrap(),
            MAX_TIME_MS
        );
        for bad in [
            "",
            "yesterday",
            "NaN",
            "Inf",
            "1e300",
            "2015-13-01T00:00:00Z",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeated_and_empty_parameters() {
        let p = Params::from_pairs(vec![
            ("match[]".into(), "up".into()),
            ("match[]".into(), "down".into()),
            ("time".into(), "".into()),
        ]);
        assert_eq!(p.all("match[]"), vec!["up", "down"]);
        assert_eq!(p.get("time"), None);
        assert_eq!(p.time_or("time", 7).unwrap(), 7);
        let err = Params::from_pairs(vec![("time".into(), "x".into())])
            .time_or("time", 0)
            .unwrap_err();
        assert!(
            err.message.contains(r#"invalid parameter "time""#),
            "{err:?}"
        );
    }
}
