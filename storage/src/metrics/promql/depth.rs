//! How long and how deep a PromQL query may be, so that no query can overflow a
//! thread's stack.
//!
//! The parser and the evaluator both recurse once per level of the expression, and an
//! expression nests with every binary operator (`1+1+…+1` is a chain as deep as it is
//! long) as well as with parentheses and calls. A 12 KB chain of `+` overflowed the
//! stack of the thread evaluating it and aborted the whole collector. The parser also
//! takes time quadratic in such a chain (it re-derives each operand's type: 6,000 levels
//! ~0.45 s, 24,000 ~7.6 s, release build). Prometheus, in Go, grows its stacks instead;
//! VictoriaMetrics limits a query to 16 KiB (`-search.maxQueryLen`), as here. A short
//! query is parsed where it is, a longer one on a thread whose stack fits the deepest
//! expression its length allows, and either is measured before it is evaluated.

use promql_parser::parser::Expr;

use super::PromqlError;

/// The longest query accepted: it bounds the parser's depth and time (under a second
/// for the worst 16 KiB).
pub const MAX_QUERY_BYTES: usize = 16 * 1024;

/// The deepest an expression may nest: operators, parentheses, calls, aggregations and
/// subqueries each add a level. Hand-written queries stay under 20; a generated chain of
/// 100 `or`s is still accepted. A debug build evaluates every shape twice as deep within
/// [`QUERY_STACK_BYTES`] (tested), a release build far deeper.
pub const MAX_QUERY_DEPTH: usize = 128;

/// The stack of the threads that parse and evaluate queries: the collector's runtime
/// gives its workers and blocking pool this instead of tokio's 2 MiB, for the margin
/// above. Only the pages touched are ever mapped.
pub const QUERY_STACK_BYTES: usize = 8 << 20;

/// Queries up to this long are parsed on the caller's thread: at most ~2,000 levels,
/// which the parser takes within a 2 MiB stack even in a debug build (measured: 6,000
/// levels did, 20,000 did not); deeper ones are refused before they are evaluated.
const INLINE_PARSE_BYTES: usize = 4 * 1024;

/// The stack of the thread that parses a longer query: [`MAX_QUERY_BYTES`] nest at most
/// 8 K levels, ~3 MiB in a debug build. Only the pages touched are ever mapped.
const DEEP_PARSE_STACK_BYTES: usize = 32 << 20;

/// Parses `query` with `parse` and refuses it if it is too long or nests too deep.
pub(super) fn parse_bounded(
    query: &str,
    parse: impl FnOnce(&str) -> Result<Expr, PromqlError> + Send,
) -> Result<Expr, PromqlError> {
    if query.len() <= INLINE_PARSE_BYTES {
        return parse(query).and_then(within_depth);
    }
    if query.len() > MAX_QUERY_BYTES {
        return Err(PromqlError::Parse(format!(
            "the query is {} bytes long, over the maximum of {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    crate::deep_stack::on_deep_stack("promql-parse", DEEP_PARSE_STACK_BYTES, || {
        parse(query).and_then(within_depth)
    })
    .unwrap_or_else(|| Err(PromqlError::exec("cannot start the query parser's thread")))
}

/// `expr` if it nests no deeper than [`MAX_QUERY_DEPTH`]; otherwise the error, with the
/// tree taken apart where it stands.
fn within_depth(expr: Expr) -> Result<Expr, PromqlError> {
    let depth = depth(&expr);
    if depth <= MAX_QUERY_DEPTH {
        return Ok(expr);
    }
    dismantle(expr);
    Err(PromqlError::Parse(format!(
        "the query nests {depth} expressions deep, over the maximum of {MAX_QUERY_DEPTH}"
    )))
}

/// The direct sub-expressions of `expr`.
fn children(expr: &Expr) -> Vec<&Expr> {
    match expr {
        Expr::Aggregate(a) => std::iter::once(&*a.expr)
            .chain(a.param.as_deref())
            .collect(),
        Expr::Unary(u) => vec![&*u.expr],
        Expr::Binary(b) => vec![&*b.lhs, &*b.rhs],
        Expr::Paren(p) => vec![&*p.expr],
        Expr::Subquery(s) => vec![&*s.expr],
        Expr::Call(c) => c.args.args.iter().map(|a| &**a).collect(),
        Expr::NumberLiteral(_)
        | Expr::StringLiteral(_)
        | Expr::VectorSelector(_)
        | Expr::MatrixSelector(_)
        | Expr::Extension(_) => Vec::new(),
    }
}

/// The levels of `expr`, a leaf being 1. Iterative, so measuring a deep query cannot
/// overflow the stack it protects.
pub(super) fn depth(expr: &Expr) -> usize {
    let mut deepest = 0;
    let mut pending = vec![(expr, 1usize)];
    while let Some((node, level)) = pending.pop() {
        deepest = deepest.max(level);
        pending.extend(children(node).into_iter().map(|c| (c, level + 1)));
    }
    deepest
}

/// Drops `expr` one node at a time: the compiler's drop of a deep tree recurses as deep.
fn dismantle(expr: Expr) {
    let mut pending = vec![expr];
    while let Some(node) = pending.pop() {
        match node {
            Expr::Aggregate(a) => {
                pending.extend(std::iter::once(*a.expr).chain(a.param.map(|p| *p)))
            }
            Expr::Unary(u) => pending.push(*u.expr),
            Expr::Binary(b) => pending.extend([*b.lhs, *b.rhs]),
            Expr::Paren(p) => pending.push(*p.expr),
            Expr::Subquery(s) => pending.push(*s.expr),
            Expr::Call(c) => pending.extend(c.args.args.into_iter().map(|a| *a)),
            _ => {}
        }
    }
}
