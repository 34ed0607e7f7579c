//! A tonic codec for OTLP exports that keeps the (decompressed) protobuf bytes each
//! request was decoded from next to the decoded message, so ingest can write those bytes
//! to the WAL as they are instead of encoding the message again, and take their length
//! as the request size instead of walking the message for it.

use std::marker::PhantomData;

use bytes::{Buf as _, Bytes};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// A decoded message and the bytes it was decoded from.
#[derive(Debug)]
pub struct Encoded<T> {
    /// The message.
    pub message: T,
    /// Its protobuf encoding exactly as received (after gRPC decompression).
    pub bytes: Bytes,
}

/// Encodes responses `E` like tonic's prost codec; decodes requests `D` into
/// [`Encoded<D>`].
pub struct KeepBytesCodec<E, D>(PhantomData<fn(E) -> D>);

impl<E, D> Default for KeepBytesCodec<E, D> {
    fn default() -> Self {
        KeepBytesCodec(PhantomData)
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
        KeepBytesDecoder(PhantomData)
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
pub struct KeepBytesDecoder<D>(PhantomData<fn() -> D>);

impl<D: prost::Message + Default> Decoder for KeepBytesDecoder<D> {
    type Item = Encoded<D>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Encoded<D>>, Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        // INTERNAL, as tonic's prost codec answers a message that does not parse.
        let message = D::decode(bytes.as_ref()).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Some(Encoded { message, bytes }))
    }
}
