//! One error-code enum for everything that crosses the network, mapped to both gRPC
//! and HTTP status, so the OTLP/gRPC and OTLP/HTTP receivers and the query API answer
//! the same failure the same way.

/// What went wrong, in the terms a client can act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The request is malformed; retrying it unchanged will fail again.
    InvalidArgument,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// The body's content type is not one this endpoint reads.
    UnsupportedMediaType,
    /// Ingest is behind; retry after the delay the response names.
    ResourceExhausted,
    /// The server is starting or stopping; retry later.
    Unavailable,
    /// The work asked for did not finish in the time it was given; asking again
    /// unchanged will likely fail again.
    Timeout,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// No valid credential came with the request.
    Unauthenticated,
    /// The credential is valid but lacks the permission.
    PermissionDenied,
    /// A bug or an I/O failure on our side; details are in the server log, never the body.
    Internal,
}

impl ErrorCode {
    /// The gRPC status code the OTLP specification prescribes for this failure.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument | ErrorCode::UnsupportedMediaType => {
                tonic::Code::InvalidArgument
            }
            // OTLP: a request over the server's size limit is not retryable.
            ErrorCode::PayloadTooLarge => tonic::Code::InvalidArgument,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::AlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The HTTP status for this failure (OTLP/HTTP and the query API).
    pub fn http_status(self) -> http::StatusCode {
        match self {
            ErrorCode::InvalidArgument => http::StatusCode::BAD_REQUEST,
            ErrorCode::PayloadTooLarge => http::StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedMediaType => http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::ResourceExhausted => http::StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Unavailable => http::StatusCode::SERVICE_UNAVAILABLE,
            // As Prometheus answers a query timeout, which Grafana users already know.
            ErrorCode::Timeout => http::StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::NotFound => http::StatusCode::NOT_FOUND,
            ErrorCode::AlreadyExists => http::StatusCode::CONFLICT,
            ErrorCode::Unauthenticated => http::StatusCode::UNAUTHORIZED,
            ErrorCode::PermissionDenied => http::StatusCode::FORBIDDEN,
            ErrorCode::Internal => http::StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Whether a client should retry the same request later (OTLP retryable codes).
    pub fn retryable(self) -> bool {
        matches!(self, ErrorCode::ResourceExhausted | ErrorCode::Unavailable)
    }

    /// A stable snake_case name for JSON error bodies and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArgument => "invalid_argument",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ResourceExhausted => "resource_exhausted",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Timeout => "timeout",
            ErrorCode::NotFound => "not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_maps_to_the_otlp_retryable_codes() {
        assert_eq!(
            ErrorCode::ResourceExhausted.grpc_code(),
            tonic::Code::ResourceExhausted
        );
        assert_eq!(ErrorCode::ResourceExhausted.http_status(), 429);
        assert_eq!(ErrorCode::Unavailable.http_status(), 503);
        assert!(ErrorCode::Unavailable.retryable());
        assert!(!ErrorCode::InvalidArgument.retryable());
        assert_eq!(ErrorCode::PayloadTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::Timeout.http_status(), 503);
        assert!(!ErrorCode::Timeout.retryable());
    }
}
