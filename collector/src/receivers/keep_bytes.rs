//! A tonic codec for OTLP exports that hands ingest each request's (decompressed)
//! protobuf bytes instead of a decoded message. Ingest decodes what it must read
//! (`Received::into_request`), writes the bytes to the WAL as they are when validation
//! changes nothing, takes their length as the request size, and decodes a logs export
//! only when its scan says validation would change it.

use std::marker::PhantomData;

use bytes::{Buf as _, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// Encodes responses `E` with tonic's prost encoder; requests come out as their bytes.
pub struct KeepBytesCodec<E>(PhantomData<fn(E)>);

impl<E> Default for KeepBytesCodec<E> {
    fn default() -> Self {
        KeepBytesCodec(PhantomData)
    }
}

impl<E> Codec for KeepBytesCodec<E>
where
    E: prost::Message + Send + 'static,
{
    type Encode = E;
    type Decode = Bytes;
    type Encoder = ProstEncoder<E>;
    type Decoder = BytesDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        BytesDecoder
    }
}

/// Splits one message's bytes off tonic's buffer (no copy: `BytesMut::split_to`).
pub struct BytesDecoder;

impl Decoder for BytesDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
