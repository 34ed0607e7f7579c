//! Cutting a byte stream into lines with a hard size limit, and decoding them.
//!
//! The splitter keeps only the unfinished tail of the stream (at most `max_line_bytes`
//! plus one read), so a file with a 100 MB line costs no more memory than one with short
//! lines: a line longer than the limit leaves in pieces of at most the limit, each
//! counted. It also tracks the stream offset just past the last piece it emitted, which
//! is what a checkpoint may record.

use crate::config::Encoding;

/// One piece of text cut from the stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Piece<'a> {
    /// The bytes, without the newline (and without a `\r` before it).
    pub(crate) bytes: &'a [u8],
    /// True when this piece is part of a line longer than the limit.
    pub(crate) split: bool,
    /// Stream offset of the piece's first byte.
    pub(crate) start: u64,
    /// Stream offset just past the piece and its newline: where a restart would resume.
    pub(crate) end: u64,
}

/// A line splitter for one file.
#[derive(Debug)]
pub(crate) struct Splitter {
    buf: Vec<u8>,
    /// Stream offset of `buf[0]`: everything before it has been emitted.
    buf_start: u64,
    max_line_bytes: usize,
    /// Whether to move a forced cut back to a UTF-8 character boundary.
    utf8: bool,
    /// The previous piece was a forced cut, so the line's rest continues it.
    in_split: bool,
}

impl Splitter {
    /// A splitter whose stream starts at `offset` (the checkpoint).
    pub(crate) fn new(offset: u64, max_line_bytes: usize, encoding: Encoding) -> Self {
        Splitter {
            buf: Vec::new(),
            buf_start: offset,
            max_line_bytes: max_line_bytes.max(4),
            utf8: encoding == Encoding::Utf8,
            in_split: false,
        }
    }

    /// Offset just past the last emitted piece: a restart resumes here.
    pub(crate) fn committed(&self) -> u64 {
        self.buf_start
    }

    /// Offset just past the last byte fed: the next read starts here.
    pub(crate) fn fed(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// Bytes of an unfinished line held.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> usize {
        self.buf.len()
    }

    /// Forgets everything and restarts the stream at `offset` (after a truncation).
    pub(crate) fn reset(&mut self, offset: u64) {
        self.buf = Vec::new();
        self.buf_start = offset;
        self.in_split = false;
    }

    /// Feeds the next bytes of the stream; calls `emit` for every complete line and every
    /// forced cut of an over-long one.
    pub(crate) fn feed(&mut self, data: &[u8], mut emit: impl FnMut(Piece<'_>)) {
        self.buf.extend_from_slice(data);
        let mut start = 0usize;
        let mut scan = 0usize;
        loop {
            let newline = memchr(b'\n', &self.buf[scan..]).map(|i| scan + i);
            match newline {
                Some(nl) if nl - start <= self.max_line_bytes => {
                    let mut end = nl;
                    if end > start && self.buf[end - 1] == b'\r' {
                        end -= 1;
                    }
                    // The newline right after a forced cut ends the line, adds no piece.
                    if !(self.in_split && end == start) {
                        emit(Piece {
                            bytes: &self.buf[start..end],
                            split: self.in_split,
                            start: self.buf_start + start as u64,
                            end: self.buf_start + nl as u64 + 1,
                        });
                    }
                    self.in_split = false;
                    start = nl + 1;
                    scan = start;
                }
                _ => {
                    if self.buf.len() - start > self.max_line_bytes {
                        let cut = self.cut_point(start);
                        emit(Piece {
                            bytes: &self.buf[start..cut],
                            split: true,
                            start: self.buf_start + start as u64,
                            end: self.buf_start + cut as u64,
                        });
                        self.in_split = true;
                        start = cut;
                        scan = start;
                        continue;
                    }
                    break;
                }
            }
        }
        if start > 0 {
            self.buf.drain(..start);
            self.buf_start += start as u64;
        }
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // An idle file should not keep a large buffer alive.
            self.buf = Vec::new();
        }
    }

    /// Emits what is held as a final piece (the file is being released); true if any.
    pub(crate) fn finish(&mut self, mut emit: impl FnMut(Piece<'_>)) -> bool {
        if self.buf.is_empty() {
            return false;
        }
        let mut end = self.buf.len();
        if self.buf[end - 1] == b'\r' {
            end -= 1;
        }
        let n = self.buf.len();
        emit(Piece {
            bytes: &self.buf[..end],
            split: self.in_split,
            start: self.buf_start,
            end: self.buf_start + n as u64,
        });
        self.reset(self.buf_start + n as u64);
        true
    }

    /// Where to cut an over-long line starting at `start`: `max_line_bytes` on, moved
    /// back (at most 3 bytes) so a UTF-8 character is not torn in two.
    fn cut_point(&self, start: usize) -> usize {
        let mut cut = start + self.max_line_bytes;
        if self.utf8 {
            let mut back = 0;
            while back < 3 && cut > start + 1 && (self.buf[cut] & 0xC0) == 0x80 {
                cut -= 1;
                back += 1;
            }
            if (self.buf[cut] & 0xC0) == 0x80 {
                cut = start + self.max_line_bytes;
            }
        }
        cut
    }
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// Decodes a line; the flag says whether UTF-8 input held invalid sequences (replaced
/// by U+FFFD, the line still kept).
pub(crate) fn decode(bytes: &[u8], encoding: Encoding) -> (String, bool) {
    match encoding {
        Encoding::Utf8 => match std::str::from_utf8(bytes) {
            Ok(s) => (s.to_string(), false),
            Err(_) => (String::from_utf8_lossy(bytes).into_owned(), true),
        },
        Encoding::Latin1 => (bytes.iter().map(|b| *b as char).collect(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(chunks: &[&[u8]], max: usize) -> (Vec<(Vec<u8>, bool)>, Splitter) {
        let mut s = Splitter::new(0, max, Encoding::Latin1);
        let mut out = Vec::new();
        for c in chunks {
            s.feed(c, |p| out.push((p.bytes.to_vec(), p.split)));
        }
        (out, s)
    }

    #[test]
    fn lines_across_chunks_and_crlf() {
        let (out, s) = run(&[b"ab", b"c\r\nde", b"f\n", b"gh"], 100);
        assert_eq!(
            out,
            vec![(b"abc".to_vec(), false), (b"def".to_vec(), false)]
        );
        assert_eq!(s.committed(), 9);
        assert_eq!(s.fed(), 11);
        assert_eq!(s.pending(), 2);
    }

    #[test]
    fn long_lines_are_cut_and_flagged() {
        let (out, s) = run(&[b"0123456789AB\nxy\n"], 5);
        assert_eq!(
            out,
            vec![
                (b"01234".to_vec(), true),
                (b"56789".to_vec(), true),
                (b"AB".to_vec(), true),
                (b"xy".to_vec(), false)
            ]
        );
        assert_eq!(s.committed(), 16);
    }

    #[test]
    fn a_cut_on_the_newline_adds_no_empty_piece() {
        let (out, _) = run(&[b"01234", b"5", b"\n"], 5);
        assert_eq!(out, vec![(b"01234".to_vec(), true), (b"5".to_vec(), true)]);
        let (out, _) = run(&[b"01234567", b"\n"], 4);
        assert_eq!(
            out,
            vec![(b"0123".to_vec(), true), (b"4567".to_vec(), true)]
        );
    }

    #[test]
    fn a_utf8_character_is_not_torn() {
        let mut s = Splitter::new(0, 4, Encoding::Utf8);
        let mut out = Vec::new();
        s.feed("abcé€x\n".as_bytes(), |p| out.push(p.bytes.to_vec()));
        for piece in &out {
            assert!(std::str::from_utf8(piece).is_ok(), "{piece:?}");
        }
        assert_eq!(out.concat(), "abcé€x".as_bytes());
    }

    #[test]
    fn finish_emits_the_unterminated_tail() {
        let (_, mut s) = run(&[b"a\nlast"], 100);
        let mut got = Vec::new();
        assert!(s.finish(|p| got.push(p.bytes.to_vec())));
        assert_eq!(got, vec![b"last".to_vec()]);
        assert_eq!(s.committed(), 6);
        assert!(!s.finish(|_| {}));
    }

    #[test]
    fn decoding() {
        assert_eq!(
            decode(b"caf\xc3\xa9", Encoding::Utf8),
            ("café".into(), false)
        );
        let (text, bad) = decode(b"caf\xe9", Encoding::Utf8);
        assert!(bad && text.contains('\u{FFFD}'));
        assert_eq!(decode(b"caf\xe9", Encoding::Latin1), ("café".into(), false));
    }

    proptest! {
        /// However the stream is chunked: pieces re-join into the lines, no piece is over
        /// the limit, the committed offset sits just past the last newline or cut, and
        /// memory holds at most the limit.
        #[test]
        fn splitting_is_lossless_and_bounded(
            data in proptest::collection::vec(prop_oneof![Just(b'\n'), Just(b'a'), Just(b'b'), Just(b'\r')], 0..400),
            cuts in proptest::collection::vec(1usize..50, 0..20),
            max in 1usize..40,
        ) {
            let mut s = Splitter::new(1000, max, Encoding::Latin1);
            let max = s.max_line_bytes;
            let mut pieces: Vec<(Vec<u8>, bool)> = Vec::new();
            let mut at = 0;
            let mut cuts = cuts.into_iter();
            while at < data.len() {
                let n = cuts.next().unwrap_or(data.len()).min(data.len() - at);
                s.feed(&data[at..at + n], |p| pieces.push((p.bytes.to_vec(), p.split)));
                prop_assert!(s.pending() <= max);
                at += n;
            }
            for (p, _) in &pieces {
                prop_assert!(p.len() <= max);
            }
            // Rebuild the lines: consecutive split pieces form one line.
            let terminated = match data.iter().rposition(|b| *b == b'\n') {
                Some(i) => &data[..=i],
                None => &data[..0],
            };
            let mut expected: Vec<Vec<u8>> = terminated
                .split(|b| *b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .collect();
            expected.pop();
            let joined: Vec<u8> = pieces.iter().flat_map(|(p, _)| p.clone()).collect();
            let expected_joined: Vec<u8> = expected.concat();
            // Every byte of a terminated line is in a piece exactly once (a `\r` at a
            // forced cut stays in the piece, so compare without them).
            let strip = |v: &[u8]| v.iter().copied().filter(|b| *b != b'\r').collect::<Vec<u8>>();
            prop_assert!(strip(&joined).starts_with(&strip(&expected_joined)));
            prop_assert!(s.committed() >= 1000 + terminated.len() as u64);
            prop_assert_eq!(s.fed(), 1000 + data.len() as u64);
        }
    }
}
