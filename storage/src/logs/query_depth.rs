//! How deeply a log query may nest, so that no query can overflow a thread's stack.
//!
//! Tantivy's query grammar recurses once per group `(…)` and once per `NOT`, and so do
//! the steps after it (rewriting, building the query, running and dropping it).
//! `NOT NOT … NOT a` a few thousand times, 20 KB of text, overflowed the stack of the
//! thread that parsed it and aborted the whole collector. Elasticsearch bounds the same
//! thing (`indices.query.bool.max_nested_depth`); no one writes a query 64 groups deep.
//!
//! The grammar itself is the judge of the depth: a query with few enough `(` and `NOT`
//! that it cannot nest deeper than the limit is parsed where it is; any other is parsed
//! on a thread with a stack sized for its worst case, measured, and refused there if it
//! is too deep. Mirroring the grammar's lexing instead (phrases, escapes, regexes, its
//! lenient error recovery) could be fooled into counting too few levels.

use tantivy::query_grammar::UserInputAst;

use super::search::LogQueryError;

/// The deepest a query may nest groups and `NOT`s.
pub(crate) const MAX_QUERY_DEPTH: usize = 64;

/// The most `(` and `NOT`s a query may hold at all: it bounds the parser's recursion,
/// and so the stack the deep-query thread needs. A list of ids is one group however long.
pub(crate) const MAX_QUERY_NESTERS: usize = 4096;

/// The stack of the thread that parses a query that may nest deeper than the limit:
/// a debug build's parser takes ~7 KiB per level (twice, when it fails and the lenient
/// parser is run for the message). Only the pages touched are ever mapped.
const DEEP_PARSE_STACK_BYTES: usize = 128 << 20;

/// Parses `text` with `parse`, refusing a result that nests past [`MAX_QUERY_DEPTH`]: where
/// it is when the text cannot make the parser recurse deeper than that, otherwise on a
/// thread with a deep stack.
pub(crate) fn parse_bounded(
    text: &str,
    parse: impl FnOnce(&str) -> Result<UserInputAst, LogQueryError> + Send,
) -> Result<UserInputAst, LogQueryError> {
    let nesters = nesters(text);
    if nesters <= MAX_QUERY_DEPTH {
        return parse(text).and_then(within_depth);
    }
    if nesters > MAX_QUERY_NESTERS {
        return Err(LogQueryError::TooComplex(format!(
            "it has {nesters} groups and NOTs, over the maximum of {MAX_QUERY_NESTERS}"
        )));
    }
    crate::deep_stack::on_deep_stack("log-query-parse", DEEP_PARSE_STACK_BYTES, || {
        parse(text).and_then(within_depth)
    })
    .unwrap_or_else(|| {
        Err(LogQueryError::Internal(tantivy::TantivyError::SystemError(
            "cannot start the query parser's thread".into(),
        )))
    })
}

/// `ast` if it nests no deeper than [`MAX_QUERY_DEPTH`]; otherwise the error, with the
/// tree taken apart where it stands (on the deep thread, if it may be deep).
fn within_depth(ast: UserInputAst) -> Result<UserInputAst, LogQueryError> {
    let depth = depth(&ast);
    if depth <= MAX_QUERY_DEPTH {
        return Ok(ast);
    }
    dismantle(ast);
    Err(LogQueryError::TooComplex(format!(
        "it nests {depth} levels deep (groups and NOTs), over the maximum of {MAX_QUERY_DEPTH}"
    )))
}

/// An upper bound on how deep the grammar recurses (less a few levels of its own): every
/// level it enters takes a `(` or a `NOT` followed by a space, wherever they stand
/// (inside phrases too).
fn nesters(text: &str) -> usize {
    let groups = text.bytes().filter(|&b| b == b'(').count();
    let nots = text
        .match_indices("NOT")
        .filter(|&(at, _)| {
            text[at + 3..]
                .chars()
                .next()
                .is_some_and(|c| c.is_whitespace())
        })
        .count();
    groups + nots
}

/// The levels of `ast`: a leaf is 1, a clause or boost one more than its deepest part.
/// Iterative, so measuring a deep query cannot overflow the stack it protects.
fn depth(ast: &UserInputAst) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(ast, 1usize)];
    while let Some((node, level)) = pending.pop() {
        deepest = deepest.max(level);
        match node {
            UserInputAst::Clause(clauses) => {
                pending.extend(clauses.iter().map(|(_, sub)| (sub, level + 1)));
            }
            UserInputAst::Boost(inner, _) => pending.push((inner, level + 1)),
            UserInputAst::Leaf(_) => {}
        }
    }
    deepest
}

/// Drops `ast` one node at a time: the compiler's drop of a deep tree recurses as deep.
fn dismantle(ast: UserInputAst) {
    let mut pending = vec![ast];
    while let Some(node) = pending.pop() {
        match node {
            UserInputAst::Clause(clauses) => pending.extend(clauses.into_iter().map(|(_, s)| s)),
            UserInputAst::Boost(inner, _) => pending.push(*inner),
            UserInputAst::Leaf(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The grammar's parse, as `parse_query_for` calls it.
    fn grammar(text: &str) -> Result<UserInputAst, LogQueryError> {
        tantivy::query_grammar::parse_query(text).map_err(|_| LogQueryError::Parse {
            position: 0,
            message: "syntax error".into(),
        })
    }

    /// Runs `f` on a thread with tokio's default stack (2 MiB): a quarter of what the
    /// collector's threads have, not a test thread's.
    fn on_small_stack<T: Send>(f: impl FnOnce() -> T + Send) -> T {
        crate::deep_stack::on_deep_stack("test", 2 << 20, f).expect("a test thread")
    }

    fn message(result: Result<UserInputAst, LogQueryError>) -> String {
        match result {
            Err(LogQueryError::TooComplex(message)) => message,
            Err(other) => panic!("unexpected error {other}"),
            Ok(ast) => panic!("parsed, depth {}", depth(&ast)),
        }
    }

    #[test]
    fn nesting_at_the_limit_parses_and_past_it_is_refused() {
        let groups = |n: usize| format!("{}a{}", "(".repeat(n), ")".repeat(n));
        let nots = |n: usize| format!("{}a", "NOT ".repeat(n));
        let alternatives = |n: usize| format!("{}b{}", "(a OR ".repeat(n), ")".repeat(n));
        // Exactly at the limit, both ways through: few nesters parsed inline, many (100
        // sibling groups beside it) on the deep thread.
        let inline = alternatives(MAX_QUERY_DEPTH - 1);
        assert!(nesters(&inline) <= MAX_QUERY_DEPTH);
        let at = on_small_stack(|| parse_bounded(&inline, grammar)).unwrap();
        assert_eq!(depth(&at), MAX_QUERY_DEPTH);
        let wide = format!(
            "{} {}",
            alternatives(MAX_QUERY_DEPTH - 2),
            "(b) ".repeat(100)
        );
        assert!(nesters(&wide) > MAX_QUERY_DEPTH);
        let at = on_small_stack(|| parse_bounded(&wide, grammar)).unwrap();
        assert_eq!(depth(&at), MAX_QUERY_DEPTH);
        let past = format!(
            "{} {}",
            alternatives(MAX_QUERY_DEPTH - 1),
            "(b) ".repeat(100)
        );
        assert!(message(on_small_stack(|| parse_bounded(&past, grammar))).contains("nests 65"));
        let at = on_small_stack(|| parse_bounded(&nots(MAX_QUERY_DEPTH - 1), grammar)).unwrap();
        assert_eq!(depth(&at), MAX_QUERY_DEPTH);

        let deep = on_small_stack(|| parse_bounded(&nots(MAX_QUERY_DEPTH), grammar));
        assert!(message(deep).contains("nests 65 levels deep"));
        // Redundant groups collapse into what they hold: parsed on the deep thread, and
        // as shallow as their content for every step after.
        let redundant = on_small_stack(|| parse_bounded(&groups(1000), grammar)).unwrap();
        assert_eq!(depth(&redundant), 1);
        let deep = on_small_stack(|| parse_bounded(&alternatives(1000), grammar));
        assert!(message(deep).contains("nests 1001 levels deep"));
    }

    #[test]
    fn hostile_nesting_is_refused_without_overflowing_a_small_stack() {
        for hostile in [
            "NOT ".repeat(5000) + "a",
            "(".repeat(4000) + "a" + &")".repeat(4000),
            "NOT (".repeat(2000) + "a",
            "\"".to_string() + &"(".repeat(3000) + "\"",
        ] {
            let result = on_small_stack(|| parse_bounded(&hostile, grammar));
            if let Ok(ast) = result {
                assert!(depth(&ast) <= MAX_QUERY_DEPTH, "{}", &hostile[..20]);
            }
        }
        let too_many = "(".repeat(MAX_QUERY_NESTERS + 1);
        let refused = on_small_stack(|| parse_bounded(&too_many, grammar));
        assert!(message(refused).contains("4097 groups and NOTs, over the maximum of 4096"));
    }

    #[test]
    fn long_flat_queries_are_not_nesting() {
        let ids = (0..5000)
            .map(|i| format!("{i:032x}"))
            .collect::<Vec<_>>()
            .join(" OR ");
        let query = format!("trace_id:({ids}) AND NOTICE");
        assert_eq!(nesters(&query), 1);
        let ast = on_small_stack(|| parse_bounded(&query, grammar)).unwrap();
        assert!(depth(&ast) <= 3);
        assert_eq!(nesters("NOT a NOT\tb NOTa aNOT"), 2);
    }
}
