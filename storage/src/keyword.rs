//! The tokenizers of keyword fields (a whole value is one term), for values past
//! Tantivy's term limit.
//!
//! Tantivy drops a token longer than `MAX_TOKEN_LEN` (65,530 bytes) and logs a warning
//! every time. A sender putting a 70 KB attribute, service or scope name on each record
//! made the collector write one warning line per record, at ingest rate. These
//! tokenizers drop such a value before Tantivy sees it, silently: it stays in the stored
//! record and comes back with every hit, and it cannot be matched exactly, as before.

use tantivy::tokenizer::{
    LowerCaser, MAX_TOKEN_LEN, RawTokenizer, RemoveLongFilter, TextAnalyzer, TokenizerManager,
};

/// The name Tantivy gives its whole-value tokenizer; keyword fields name it.
pub(crate) const RAW: &str = "raw";

/// A whole value as one term, unless it is longer than Tantivy indexes.
pub(crate) fn raw() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN + 1))
        .build()
}

/// [`raw`], lowercased.
pub(crate) fn raw_lowercase() -> TextAnalyzer {
    TextAnalyzer::builder(RawTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TOKEN_LEN + 1))
        .filter(LowerCaser)
        .build()
}

/// Tantivy's tokenizers, with [`RAW`] replaced by [`raw`].
pub(crate) fn tokenizers() -> TokenizerManager {
    let manager = TokenizerManager::default();
    manager.register(RAW, raw());
    manager
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(mut analyzer: TextAnalyzer, text: &str) -> Vec<String> {
        let mut out = Vec::new();
        analyzer
            .token_stream(text)
            .process(&mut |t| out.push(t.text.clone()));
        out
    }

    #[test]
    fn values_tantivy_can_index_are_one_term_and_longer_ones_none() {
        let longest = "v".repeat(MAX_TOKEN_LEN);
        let kept = tokens(raw(), &longest);
        assert_eq!((kept.len(), kept[0].len()), (1, MAX_TOKEN_LEN));
        assert_eq!(tokens(raw(), "GET /a b"), ["GET /a b"]);
        assert!(tokens(raw(), &format!("{longest}v")).is_empty());
        assert_eq!(tokens(raw_lowercase(), "ERROR"), ["error"]);
        assert!(tokens(raw_lowercase(), &"E".repeat(70_000)).is_empty());
        let mut manager = tokenizers().get(RAW).expect("registered");
        let mut n = 0;
        manager
            .token_stream(&"x".repeat(70_000))
            .process(&mut |_| n += 1);
        assert_eq!(n, 0, "the manager's raw is ours");
    }
}
