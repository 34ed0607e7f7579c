//! The body's tokenizer: Tantivy's `default` analyzer in one pass.
//!
//! Tantivy's `default` is three stages (split on anything not alphanumeric, drop tokens
//! of 40 bytes or more, lower-case), each walking the token again behind its own
//! stream. [`BodyTokenizer`] does the same in one walk over the bytes, with ASCII
//! decided a byte at a time. It produces exactly the tokens, offsets and positions of
//! `default` (the tests compare the two on arbitrary text), so it is registered under
//! that name: partitions written before it, and the queries on them, are unchanged.

use tantivy::tokenizer::{Token, TokenStream, Tokenizer};

/// Tokens this long in bytes or longer are not indexed (Tantivy's `default` limit: long
/// runs are hashes and base64, which nobody types into a search box).
pub(crate) const MAX_TOKEN_BYTES: usize = 40;

/// Splits on what is not alphanumeric, drops long tokens, lower-cases; see the module.
#[derive(Clone, Default)]
pub struct BodyTokenizer {
    token: Token,
    /// An ASCII text lower-cased as a whole (vectorised), tokens are then copied from it;
    /// kept to reuse its allocation.
    lowered: String,
}

/// The tokens of one text, from [`BodyTokenizer`].
pub struct BodyTokenStream<'a> {
    text: &'a str,
    /// `text` lower-cased when it is ASCII (then the same length), else empty.
    lowered: &'a str,
    /// Byte offset where the search for the next token starts.
    cursor: usize,
    /// Whether the whole text is ASCII: then words are found with [`BlockMask`]s.
    ascii: bool,
    block: BlockMask,
    token: &'a mut Token,
}

impl Tokenizer for BodyTokenizer {
    type TokenStream<'a> = BodyTokenStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> BodyTokenStream<'a> {
        self.token.reset();
        let ascii = text.is_ascii();
        self.lowered.clear();
        if ascii {
            self.lowered.push_str(text);
            self.lowered.make_ascii_lowercase();
        }
        BodyTokenStream {
            text,
            lowered: &self.lowered,
            cursor: 0,
            ascii,
            block: BlockMask::default(),
            token: &mut self.token,
        }
    }
}

/// ASCII letters and digits: the alphanumeric characters of one byte.
const ASCII_ALPHANUMERIC: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    table
};

/// Bits of one 64-byte block of an ASCII text, set where the byte is alphanumeric.
/// Word boundaries in log lines come every few bytes and cannot be predicted; found as
/// bits, they cost no mispredicted branch per byte (measured: the byte-at-a-time loop
/// took about as long as Tantivy's three stages).
#[derive(Default)]
struct BlockMask {
    /// Index of the block `bits` describes, plus one (0: none yet).
    block_plus_one: usize,
    bits: u64,
}

impl BlockMask {
    /// The bits of block `block` of `bytes`; bytes past the end read as separators.
    fn get(&mut self, bytes: &[u8], block: usize) -> u64 {
        if self.block_plus_one != block + 1 {
            let start = block * 64;
            let chunk = &bytes[start.min(bytes.len())..(start + 64).min(bytes.len())];
            let mut bits = 0u64;
            for (i, &b) in chunk.iter().enumerate() {
                bits |= u64::from(ASCII_ALPHANUMERIC[usize::from(b)]) << i;
            }
            self.block_plus_one = block + 1;
            self.bits = bits;
        }
        self.bits
    }
}

/// Whether the character at byte `at` of `text` is alphanumeric, and its length.
#[inline]
fn char_at(text: &str, at: usize) -> (bool, usize) {
    let byte = text.as_bytes()[at];
    if byte.is_ascii() {
        return (ASCII_ALPHANUMERIC[usize::from(byte)], 1);
    }
    match text[at..].chars().next() {
        Some(c) => (c.is_alphanumeric(), c.len_utf8()),
        // `at` is always on a character boundary short of the end.
        None => (false, 1),
    }
}

impl BodyTokenStream<'_> {
    /// The next run of alphanumeric characters from the cursor, as (start, end, whether
    /// it is all ASCII), or `None` at the end of the text.
    fn next_word(&mut self) -> Option<(usize, usize, bool)> {
        let (start, end, ascii) = if self.ascii {
            let (start, end) = self.next_ascii_word()?;
            (start, end, true)
        } else {
            self.next_word_by_char()?
        };
        self.cursor = end;
        Some((start, end, ascii))
    }

    /// [`Self::next_word`] in an ASCII text, a block of bits at a time.
    fn next_ascii_word(&mut self) -> Option<(usize, usize)> {
        let bytes = self.text.as_bytes();
        // The first set bit at or after the cursor starts the word...
        let mut at = self.cursor;
        let start = loop {
            if at >= bytes.len() {
                self.cursor = bytes.len();
                return None;
            }
            let (block, bit) = (at / 64, at % 64);
            let ahead = self.block.get(bytes, block) >> bit;
            if ahead != 0 {
                break at + ahead.trailing_zeros() as usize;
            }
            at = (block + 1) * 64;
        };
        // ...and the first clear bit after it ends it.
        let mut at = start;
        let end = loop {
            if at >= bytes.len() {
                break bytes.len();
            }
            let (block, bit) = (at / 64, at % 64);
            let ahead = !self.block.get(bytes, block) >> bit;
            if ahead != 0 {
                break (at + ahead.trailing_zeros() as usize).min(bytes.len());
            }
            at = (block + 1) * 64;
        };
        Some((start, end))
    }

    /// [`Self::next_word`] a character at a time, for texts with non-ASCII characters.
    fn next_word_by_char(&mut self) -> Option<(usize, usize, bool)> {
        let len = self.text.len();
        let mut start = self.cursor;
        loop {
            if start >= len {
                self.cursor = len;
                return None;
            }
            let (alphanumeric, width) = char_at(self.text, start);
            if alphanumeric {
                break;
            }
            start += width;
        }
        let mut end = start;
        let mut ascii = true;
        while end < len {
            let (alphanumeric, width) = char_at(self.text, end);
            if !alphanumeric {
                break;
            }
            ascii &= width == 1;
            end += width;
        }
        Some((start, end, ascii))
    }
}

impl TokenStream for BodyTokenStream<'_> {
    fn advance(&mut self) -> bool {
        self.token.text.clear();
        loop {
            // Every word counts a position, dropped ones too, as in `default`, so a
            // phrase does not match across a dropped word.
            self.token.position = self.token.position.wrapping_add(1);
            let Some((start, end, ascii)) = self.next_word() else {
                return false;
            };
            if end - start >= MAX_TOKEN_BYTES {
                continue;
            }
            self.token.offset_from = start;
            self.token.offset_to = end;
            if self.ascii {
                self.token.text.push_str(&self.lowered[start..end]);
            } else if ascii {
                self.token.text.push_str(&self.text[start..end]);
                self.token.text.make_ascii_lowercase();
            } else {
                let word = &self.text[start..end];
                // Char by char, as Tantivy's `LowerCaser` (no final-sigma rule).
                for c in word.chars() {
                    self.token.text.extend(c.to_lowercase());
                }
            }
            return true;
        }
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tantivy::tokenizer::{TextAnalyzer, TokenizerManager};

    use super::*;

    fn tokens(mut analyzer: TextAnalyzer, text: &str) -> Vec<Token> {
        let mut stream = analyzer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().clone());
        }
        out
    }

    fn tantivy_default() -> TextAnalyzer {
        TokenizerManager::default()
            .get("default")
            .expect("tantivy registers default")
    }

    fn ours() -> TextAnalyzer {
        TextAnalyzer::from(BodyTokenizer::default())
    }

    #[test]
    fn splits_lowercases_and_drops_long_tokens_keeping_positions() {
        let long = "a".repeat(MAX_TOKEN_BYTES);
        let text = format!("Connection RESET by peer {long} 10.0.1.14:5432, Straße ÉTÉ");
        let got: Vec<(String, usize, usize, usize)> = tokens(ours(), &text)
            .into_iter()
            .map(|t| (t.text, t.position, t.offset_from, t.offset_to))
            .collect();
        let words: Vec<&str> = got.iter().map(|t| t.0.as_str()).collect();
        assert_eq!(
            words,
            [
                "connection",
                "reset",
                "by",
                "peer",
                "10",
                "0",
                "1",
                "14",
                "5432",
                "straße",
                "été"
            ]
        );
        // The dropped 40-byte word took position 4.
        assert_eq!(got[3].1, 3);
        assert_eq!(got[4].1, 5);
        assert_eq!(&text[got[9].2..got[9].3], "Straße");
        assert_eq!(tokens(ours(), &text), tokens(tantivy_default(), &text));
    }

    #[test]
    fn words_across_and_at_the_ends_of_64_byte_blocks() {
        // Words ending on, starting on and spanning the block boundaries at 64 and 128,
        // texts ending inside a word and exactly at a block's end.
        let texts = [
            format!("{}b", "a".repeat(63)),
            format!("{} {}", "x".repeat(62), "y".repeat(39)),
            format!("{}-Word-{}", "1".repeat(60), "z".repeat(70)),
            "q".repeat(64),
            format!("{} {}", "r ".repeat(32), "s".repeat(64)),
            format!("{}END", ". ".repeat(63)),
        ];
        for text in &texts {
            assert_eq!(
                tokens(ours(), text),
                tokens(tantivy_default(), text),
                "{text:?}"
            );
        }
        let got = tokens(ours(), &texts[4]);
        assert_eq!(got.len(), 32, "the 64-byte word is dropped");
    }

    #[test]
    fn one_byte_short_of_the_limit_is_kept() {
        let text = format!("{} x", "B".repeat(MAX_TOKEN_BYTES - 1));
        let got = tokens(ours(), &text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].text, "b".repeat(MAX_TOKEN_BYTES - 1));
        assert_eq!(got, tokens(tantivy_default(), &text));
    }

    #[test]
    fn the_limit_counts_bytes_before_lower_casing() {
        // 'İ' is two bytes and lower-cases to three: 19 of them are 38 bytes, kept; 20
        // are 40, dropped, though no longer than the ASCII word that is kept.
        for n in [19, 20] {
            let text = format!("{} ok", "İ".repeat(n));
            assert_eq!(
                tokens(ours(), &text),
                tokens(tantivy_default(), &text),
                "{n}"
            );
        }
    }

    #[test]
    fn empty_and_separator_only_texts_have_no_tokens() {
        for text in ["", " ", "--- ,;: \t\n", "\u{200b}\u{3000}"] {
            assert!(tokens(ours(), text).is_empty(), "{text:?}");
            assert!(tokens(tantivy_default(), text).is_empty(), "{text:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn same_tokens_as_tantivy_default_on_any_text(text in any::<String>()) {
            prop_assert_eq!(tokens(ours(), &text), tokens(tantivy_default(), &text));
        }

        #[test]
        fn same_tokens_as_tantivy_default_on_ascii_text_across_blocks(
            text in "([A-Za-z0-9]{1,70}|[ .:,=/_\\[\\]\"-]{1,3}|\\PC){0,60}"
                .prop_filter("ascii", |t| t.is_ascii())
        ) {
            prop_assert_eq!(tokens(ours(), &text), tokens(tantivy_default(), &text));
        }

        #[test]
        fn same_tokens_as_tantivy_default_on_log_like_text(
            text in "([A-Za-z0-9]{1,45}|[ .:,=/_-]|[À-ɏ]{1,25}|[Ͱ-ϿЀ-ӿ]{1,25}|[一-龥]{1,5}|İ|ß|Σ){0,40}"
        ) {
            prop_assert_eq!(tokens(ours(), &text), tokens(tantivy_default(), &text));
        }
    }
}
