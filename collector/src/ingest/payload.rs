//! The bytes of one WAL record: which tenant sent the batch, and the batch itself as
//! the OTLP protobuf it arrived as (minus rejected records).
//!
//! Layout: `version u8 (=1) | tenant_len u8 | tenant | OTLP Export*ServiceRequest`, or
//! with the batch id the client sent (`x-vantage-batch-id`), so the id is durable
//! exactly when its batch is: `version u8 (=2) | tenant_len u8 | tenant | id [16] LE |
//! request`.

use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;
const VERSION_WITH_ID: u8 = 2;

/// A framed record, split.
#[derive(Debug, PartialEq, Eq)]
pub struct Framed<'a> {
    /// Who sent the batch.
    pub tenant: &'a str,
    /// The batch id the client sent, if any.
    pub batch_id: Option<u128>,
    /// The encoded OTLP request.
    pub body: &'a [u8],
}

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
    encode_with_id(tenant, None, request)
}

/// Frames an encoded request with its tenant and, when the client sent one, its batch id.
pub fn encode_with_id(
    tenant: &str,
    batch_id: Option<u128>,
    request: &impl prost::Message,
) -> Bytes {
    let mut buf = header(tenant, batch_id, request.encoded_len());
    // Encoding into a buffer with enough capacity cannot fail.
    let _ = request.encode(&mut buf);
    buf.freeze()
}

/// Frames a request that is already encoded (the protobuf bytes a client sent) with its
/// tenant and batch id: a copy, where [`encode_with_id`] walks the whole message twice.
pub fn frame_encoded(tenant: &str, batch_id: Option<u128>, body: &[u8]) -> Bytes {
    let mut buf = header(tenant, batch_id, body.len());
    buf.put_slice(body);
    buf.freeze()
}

/// The header of a record whose body is `body_len` bytes, with room for the body.
fn header(tenant: &str, batch_id: Option<u128>, body_len: usize) -> BytesMut {
    debug_assert!(
        tenant.len() <= u8::MAX as usize,
        "tenant names are at most 64 bytes"
    );
    let mut buf = BytesMut::with_capacity(2 + tenant.len() + 16 + body_len);
    buf.put_u8(if batch_id.is_some() {
        VERSION_WITH_ID
    } else {
        VERSION
    });
    buf.put_u8(tenant.len() as u8);
    buf.put_slice(tenant.as_bytes());
    if let Some(id) = batch_id {
        buf.put_slice(&id.to_le_bytes());
    }
    buf
}

/// Splits a framed record into tenant and request bytes.
pub fn decode(payload: &[u8]) -> Result<(&str, &[u8]), PayloadError> {
    decode_framed(payload).map(|f| (f.tenant, f.body))
}

/// Splits a framed record into tenant, batch id and request bytes.
pub fn decode_framed(payload: &[u8]) -> Result<Framed<'_>, PayloadError> {
    let (&version, rest) = payload.split_first().ok_or(PayloadError::Truncated)?;
    if version != VERSION && version != VERSION_WITH_ID {
        return Err(PayloadError::Version(version));
    }
    let (&len, rest) = rest.split_first().ok_or(PayloadError::Truncated)?;
    let len = len as usize;
    if rest.len() < len {
        return Err(PayloadError::Truncated);
    }
    let (tenant, body) = rest.split_at(len);
    let tenant = std::str::from_utf8(tenant).map_err(|_| PayloadError::Tenant)?;
    let (batch_id, body) = if version == VERSION_WITH_ID {
        if body.len() < 16 {
            return Err(PayloadError::Truncated);
        }
        let (id, body) = body.split_at(16);
        let mut b = [0u8; 16];
        b.copy_from_slice(id);
        (Some(u128::from_le_bytes(b)), body)
    } else {
        (None, body)
    };
    Ok(Framed {
        tenant,
        batch_id,
        body,
    })
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
        assert!(decode(&[2, 1, b'a', 1, 2]).is_err(), "id cut short");
    }

    proptest::proptest! {
        #[test]
        fn ids_round_trip(tenant in "[a-z]{1,64}", id in proptest::option::of(proptest::prelude::any::<u128>()), n in 0usize..5) {
            let req = ExportLogsServiceRequest {
                resource_logs: vec![Default::default(); n],
            };
            let framed = encode_with_id(&tenant, id, &req);
            let f = decode_framed(&framed).unwrap();
            proptest::prop_assert_eq!(f.tenant, tenant.as_str());
            proptest::prop_assert_eq!(f.batch_id, id);
            proptest::prop_assert_eq!(
                <ExportLogsServiceRequest as prost::Message>::decode(f.body).unwrap(),
                req.clone()
            );
            let body = prost::Message::encode_to_vec(&req);
            proptest::prop_assert_eq!(&frame_encoded(&tenant, id, &body), &framed, "a pre-encoded body frames the same");
        }
    }
}
