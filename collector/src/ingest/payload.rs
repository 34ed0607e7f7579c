//! The bytes of one WAL record: which tenant sent the batch, and the batch itself as
//! the OTLP protobuf it arrived as (minus rejected records).
//!
//! Layout: `version u8 (=1) | tenant_len u8 | tenant | OTLP Export*ServiceRequest`.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// Why a WAL record could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Shorter than its header says.
    #[error("wal payload truncated")]
    Truncated,
    /// Written by a format this build does not know.
    #[error("wal payload version {0} is not supported")]
    Version(u8),
    /// The tenant is not UTF-8.
    #[error("wal payload tenant is not utf-8")]
    Tenant,
}

/// Frames an encoded request with its tenant.
pub fn encode(tenant: &str, request: &impl prost::Message) -> Bytes {
    debug_assert!(
        tenant.len() <= u8::MAX as usize,
        "tenant names are at most 64 bytes"
    );
    let mut buf = BytesMut::with_capacity(2 + tenant.len() + request.encoded_len());
    buf.put_u8(VERSION);
    buf.put_u8(tenant.len() as u8);
    buf.put_slice(tenant.as_bytes());
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = request.encode(&mut buf);
    buf.freeze()
}

/// Splits a framed record into tenant and request bytes.
pub fn decode(payload: &[u8]) -> Result<(&str, &[u8]), PayloadError> {
    let (&version, rest) = payload.split_first().ok_or(PayloadError::Truncated)?;
    if version != VERSION {
        return Err(PayloadError::Version(version));
    }
    let (&len, rest) = rest.split_first().ok_or(PayloadError::Truncated)?;
    let len = len as usize;
    if rest.len() < len {
        return Err(PayloadError::Truncated);
    }
    let (tenant, body) = rest.split_at(len);
    let tenant = std::str::from_utf8(tenant).map_err(|_| PayloadError::Tenant)?;
    Ok((tenant, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

    #[test]
    fn round_trip_and_garbage() {
        let req = ExportLogsServiceRequest::default();
        let framed = encode("default", &req);
        let (tenant, body) = decode(&framed).unwrap();
        assert_eq!(tenant, "default");
        assert!(body.is_empty());
        assert!(decode(&[]).is_err());
        assert!(decode(&[2, 0]).is_err());
        assert!(decode(&[1, 9, b'a']).is_err());
        assert!(decode(&[1, 1, 0xff]).is_err());
    }
}
