//! A bounds-checked reader of the protobuf wire format, for the decoders that borrow
//! from their input instead of building prost messages: Prometheus remote write, the
//! OTLP logs scan and the agent's item counts of queued requests. Every malformed input
//! is an error, never a panic or a read past the end; the checks are prost's (a varint of at most ten bytes, the tenth at most 1; a
//! field number from 1 to 2³²−1; lengths within the message).

/// Wire type of varints (ints, bools, enums).
pub(crate) const VARINT: u8 = 0;
/// Wire type of 8-byte fields (fixed64, double).
pub(crate) const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
pub(crate) const LEN: u8 = 2;
/// Wire type of 4-byte fields (fixed32, float).
pub(crate) const FIXED32: u8 = 5;

/// Why bytes are not a message: a short description for an error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Malformed {}

/// A cursor over one message's bytes.
pub(crate) struct Wire<'a> {
    buf: &'a [u8],
}

impl<'a> Wire<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Wire { buf }
    }

    #[inline]
    pub(crate) fn varint(&mut self) -> Result<u64, Malformed> {
        // Keys and short lengths, most varints, are one byte.
        if let Some((&b, rest)) = self.buf.split_first()
            && b < 0x80
        {
            self.buf = rest;
            return Ok(u64::from(b));
        }
        self.long_varint()
    }

    fn long_varint(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(Malformed("varint ends early"))?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(Malformed("varint overflows 64 bits"));
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Malformed("varint longer than 10 bytes"))
    }

    /// The next field number and wire type, or `None` at the end.
    pub(crate) fn key(&mut self) -> Result<Option<(u64, u8)>, Malformed> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return Err(Malformed("field key over 32 bits"));
        }
        let field = k >> 3;
        if field == 0 {
            return Err(Malformed("field number 0"));
        }
        Ok(Some((field, (k & 7) as u8)))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.buf.len() {
            return Err(Malformed("field runs past the end of its message"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// A length-delimited field's bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| Malformed("length overflows"))?;
        self.take(n)
    }

    /// A length-delimited field read as a message of its own.
    pub(crate) fn message(&mut self) -> Result<Wire<'a>, Malformed> {
        self.bytes().map(Wire::new)
    }

    /// A string field: UTF-8, as prost requires.
    pub(crate) fn str(&mut self) -> Result<&'a str, Malformed> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Malformed("string is not valid UTF-8"))
    }

    /// A string field checked and skipped: [`Self::str`] without the `&str`, and quicker
    /// on ASCII (`is_ascii` is inlined and word-at-a-time; most strings in logs are).
    pub(crate) fn skip_str(&mut self) -> Result<(), Malformed> {
        let bytes = self.bytes()?;
        if bytes.is_ascii() || std::str::from_utf8(bytes).is_ok() {
            Ok(())
        } else {
            Err(Malformed("string is not valid UTF-8"))
        }
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], Malformed> {
        let (head, rest) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(Malformed("field runs past the end of its message"))?;
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, Malformed> {
        self.fixed().map(u64::from_le_bytes)
    }

    pub(crate) fn fixed32(&mut self) -> Result<u32, Malformed> {
        self.fixed().map(u32::from_le_bytes)
    }

    /// What is left to read: where the next field starts.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Skips a field of an unknown number. Groups (wire types 3 and 4, deprecated since
    /// proto2) are refused.
    pub(crate) fn skip(&mut self, wire_type: u8) -> Result<(), Malformed> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed::<8>().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed::<4>().map(drop),
            _ => Err(Malformed("unsupported wire type")),
        }
    }
}
