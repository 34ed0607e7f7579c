//! What wraps every API response: the CORS policy (no cross-origin access unless
//! `api.cors_allowed_origins` names the origin) and security headers, so a browser
//! never sniffs, frames or caches what the API answers.

use axum::Router;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3_600);

/// Headers on every API response. The API serves JSON and event streams only: no page
/// of it is meant to be framed, sniffed as HTML, run scripts, or kept in a cache.
const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "no-referrer"),
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; frame-ancestors 'none'",
    ),
    (header::CACHE_CONTROL, "no-store"),
];

/// Wraps `router` in the CORS policy and the security headers. The allowed origins
/// are read from the live configuration per request, so a reload changes them.
pub(super) fn wrap(router: Router, live: std::sync::Arc<crate::reload::Live>) -> Router {
    // An empty list allows no origin: the layer then adds nothing and browsers refuse
    // cross-origin reads, which is the default a public API of secrets should have.
    let allowed = AllowOrigin::predicate(move |origin: &HeaderValue, _| {
        live.get()
            .cors_allowed_origins
            .iter()
            .any(|o| o.as_bytes() == origin.as_bytes())
    });
    let cors = CorsLayer::new()
        .allow_origin(allowed)
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
        .max_age(PREFLIGHT_MAX_AGE);
    let mut router = router.layer(cors);
    for (name, value) in SECURITY_HEADERS {
        router = router.layer(SetResponseHeaderLayer::if_not_present(
            name,
            HeaderValue::from_static(value),
        ));
    }
    router
}
