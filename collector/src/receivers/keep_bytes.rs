//! A tonic codec for OTLP exports that keeps the (decompressed) protobuf bytes each
//! request was decoded from next to the decoded message, so ingest can write those bytes
//! to the WAL as they are instead of encoding the message again, and take their length
//! as the request size instead of walking the message for it. Logs exports are not
//! decoded here at all: ingest scans their bytes and decodes only when it must.

use std::marker::PhantomData;

use bytes::{Buf as _, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A message's bytes and, unless the codec was told not to, the decoded message.
#[derive(Debug)]
pub struct Encoded<T> {
    /// The message; `None` from a codec made with `decode: false`.
    pub message: Option<T>,
    /// Its protobuf encoding exactly as received (after gRPC decompression).
    pub bytes: Bytes,
}

/// Encodes responses `E` like tonic's prost codec; decodes requests `D` into
/// [`Encoded<D>`].
pub struct KeepBytesCodec<E, D> {
    decode: bool,
    types: PhantomData<fn(E) -> D>,
}

impl<E, D> KeepBytesCodec<E, D> {
    /// A codec that decodes each request (`decode`) or only splits off its bytes.
    pub fn new(decode: bool) -> Self {
        KeepBytesCodec {
            decode,
            types: PhantomData,
        }
    }
}

impl<E, D> Codec for KeepBytesCodec<E, D>
where
    E: prost::Message + Send + 'static,
    D: prost::Message + Default + Send + 'static,
{
    type Encode = E;
    type Decode = Encoded<D>;
    type Encoder = MessageEncoder<E>;
    type Decoder = KeepBytesDecoder<D>;

    fn encoder(&mut self) -> Self::Encoder {
        MessageEncoder(PhantomData)
    }

    fn decoder(&mut self) -> Self::Decoder {
        KeepBytesDecoder {
            decode: self.decode,
            types: PhantomData,
        }
    }
}

/// Encodes a response message into tonic's buffer.
pub struct MessageEncoder<E>(PhantomData<fn(E)>);

impl<E: prost::Message> Encoder for MessageEncoder<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        // tonic's buffer grows as it is written to, so encoding cannot run out of room.
        item.encode(dst)
            .map_err(|e| Status::internal(format!("response encoding failed: {e}")))
    }
}

/// Splits one message's bytes off tonic's buffer (no copy: `BytesMut::split_to`) and
/// decodes the message from them.
pub struct KeepBytesDecoder<D> {
    decode: bool,
    types: PhantomData<fn() -> D>,
}

impl<D: prost::Message + Default> Decoder for KeepBytesDecoder<D> {
    type Item = Encoded<D>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Encoded<D>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        // INVALID_ARGUMENT, as the OTLP specification asks for a malformed request
        // (tonic's own prost codec answers INTERNAL).
        let message = self
            .decode
            .then(|| {
                D::decode(bytes.as_ref()).map_err(|e| Status::invalid_argument(undecodable(&e)))
            })
            .transpose()?;
        Ok(Some(Encoded { message, bytes }))
    }
}

/// The message for a request that does not decode, the same from the codec and from
/// ingest (which decodes logs exports itself).
pub fn undecodable(e: &prost::DecodeError) -> String {
    format!("request is not valid protobuf: {e}")
}
