//! The part of Go's `text/template` that Prometheus alert labels and annotations use,
//! with Prometheus's functions, so existing rule files render as they do in Prometheus.
//!
//! Parsing checks what Go's parser checks (unclosed actions, undefined variables and
//! functions, unbalanced `end`), because `promtool check rules` refuses a file whose
//! template does not parse. Execution errors never fail an evaluation: the annotation
//! becomes `<error expanding template: ...>`, as in Prometheus.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use super::gofmt;

/// The variables Prometheus defines in front of every alert template.
const PREDEFINED_VARS: &[&str] = &["$", "$labels", "$externalLabels", "$externalURL", "$value"];

/// Function names known to Prometheus 2.42's template engine and Go's builtins. A
/// template naming anything else fails to parse, as in Prometheus.
const FUNCTIONS: &[&str] = &[
    // Go builtins.
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "js",
    "urlquery",
    "slice",
    "call",
    // Prometheus.
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
];

/// Most output one template may produce; a runaway `range` stops here.
const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Most actions one expansion may execute, for the same reason.
const MAX_STEPS: usize = 100_000;
/// How deep a template may nest blocks (`if`, `range`, `with`, `define`, an `else with`
/// chain) and parenthesized pipelines, and how deep an expansion may go in blocks and
/// `template` calls together. Parser and expansion recurse once per level: 5,000 nested
/// `{{ if }}`s in an annotation overflowed the stack and aborted the collector. Go grows
/// its stacks instead; Prometheus's templates nest a handful deep.
const MAX_DEPTH: usize = 100;

/// One sample of a `query` result, as Prometheus's templates see it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QuerySample {
    /// The series' labels, `__name__` included.
    pub(crate) labels: BTreeMap<String, String>,
    /// Its value.
    pub(crate) value: f64,
}

/// Runs `query "..."` from a template at the evaluation time.
pub(crate) type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<QuerySample>, String>;

/// What an alert template sees: `.Labels`, `.ExternalLabels`, `.ExternalURL`, `.Value`.
#[derive(Clone, Debug, Default)]
pub(crate) struct AlertData {
    /// The alert's labels.
    pub(crate) labels: BTreeMap<String, String>,
    /// Labels that identify this collector (none by default).
    pub(crate) external_labels: BTreeMap<String, String>,
    /// The collector's external URL.
    pub(crate) external_url: String,
    /// The value of the alert's series.
    pub(crate) value: f64,
}

/// A parsed template.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    name: String,
    nodes: Vec<Node>,
    defines: BTreeMap<String, Vec<Node>>,
}

#[derive(Clone, Debug)]
enum Node {
    Text(String),
    Action(Pipe),
    If(Vec<(Pipe, Vec<Node>)>, Vec<Node>),
    Range(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
    Template(String, Option<Pipe>),
    Break,
    Continue,
}

#[derive(Clone, Debug)]
struct Pipe {
    decl: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Arg>>,
    text: String,
    line: usize,
}

#[derive(Clone, Debug)]
enum Arg {
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Dot,
    Field(String),
    Var(String),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
}

/// A template value: Go's dynamic values, narrowed to what these templates produce.
#[derive(Clone, Debug)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Map(Arc<BTreeMap<String, String>>),
    AnyMap(BTreeMap<String, Value>),
    Samples(Vec<QuerySample>),
    Sample(QuerySample),
    Root(Arc<AlertData>),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Map(_) => "map[string]string",
            Value::AnyMap(_) => "map[string]interface {}",
            Value::Samples(_) => "template.queryResult",
            Value::Sample(_) => "*template.sample",
            Value::Root(_) => {
                "struct { Labels map[string]string; ExternalLabels map[string]string; ExternalURL string; Value interface {} }"
            }
        }
    }

    fn truth(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::Map(m) => !m.is_empty(),
            Value::AnyMap(m) => !m.is_empty(),
            Value::Samples(s) => !s.is_empty(),
            Value::Sample(_) | Value::Root(_) => true,
        }
    }

    /// Go's `fmt.Sprint` of the value.
    fn print(&self, out: &mut String) {
        match self {
            Value::Nil => out.push_str("<no value>"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Float(f) => out.push_str(&gofmt::format_g(*f, None)),
            Value::Str(s) => out.push_str(s),
            Value::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}:{v}");
                }
                out.push(']');
            }
            Value::AnyMap(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print(out);
                }
                out.push(']');
            }
            Value::Samples(s) => {
                out.push('[');
                for (i, smp) in s.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    print_sample(out, smp);
                }
                out.push(']');
            }
            Value::Sample(s) => print_sample(out, s),
            Value::Root(d) => {
                let _ = write!(out, "{{map[");
                for (i, (k, v)) in d.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{k}:{v}");
                }
                out.push_str("] map[] ");
                out.push_str(&d.external_url);
                out.push(' ');
                out.push_str(&gofmt::format_g(d.value, None));
                out.push('}');
            }
        }
    }

    fn to_display(&self) -> String {
        let mut s = String::new();
        self.print(&mut s);
        s
    }
}

fn print_sample(out: &mut String, s: &QuerySample) {
    out.push_str("&{map[");
    for (i, (k, v)) in s.labels.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let _ = write!(out, "{k}:{v}");
    }
    let _ = write!(out, "] {}}}", gofmt::format_g(s.value, None));
}

// ---------------------------------------------------------------------------------
// Parsing

enum Item {
    Text(String),
    Action(String, usize),
}

/// Splits the text into text and actions, applying `{{-` / `-}}` trimming.
fn lex_items(text: &str) -> Result<Vec<Item>, (usize, String)> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut line = 1usize;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let mut t = rest;
            if trim_next {
                t = t.trim_start();
            }
            if !t.is_empty() {
                items.push(Item::Text(t.to_string()));
            }
            break;
        };
        let mut t = &rest[..open];
        line += rest[..open].matches('\n').count();
        let after = &rest[open + 2..];
        let left_trim = after.starts_with("- ")
            || after.starts_with("-\t")
            || after.starts_with("-\n")
            || after.starts_with("-\r");
        if trim_next {
            t = t.trim_start();
        }
        if left_trim {
            t = t.trim_end();
        }
        if !t.is_empty() {
            items.push(Item::Text(t.to_string()));
        }
        let body_start = if left_trim { &after[2..] } else { after };
        let trimmed = body_start.trim_start();
        if trimmed.starts_with("/*") {
            let Some(end) = trimmed.find("*/") else {
                return Err((line, "unclosed comment".to_string()));
            };
            let after_comment = trimmed[end + 2..].trim_start();
            let (right_trim, tail) = if let Some(t) = after_comment.strip_prefix("-}}") {
                (true, t)
            } else if let Some(t) = after_comment.strip_prefix("}}") {
                (false, t)
            } else {
                return Err((line, "comment ends before closing delimiter".to_string()));
            };
            line += trimmed[..end].matches('\n').count();
            trim_next = right_trim;
            rest = tail;
            continue;
        }
        let (content, consumed, right_trim) =
            find_action_end(body_start).ok_or_else(|| (line, "unclosed action".to_string()))?;
        items.push(Item::Action(content.to_string(), line));
        line += content.matches('\n').count();
        trim_next = right_trim;
        rest = &body_start[consumed..];
    }
    Ok(items)
}

/// Finds the `}}` closing an action, skipping quoted strings. Returns the content,
/// the bytes consumed including the delimiter, and whether it was `-}}` trimming.
fn find_action_end(s: &str) -> Option<(&str, usize, bool)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    if b[i.min(b.len() - 1)] == b'\n' {
                        return None;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b' ' | b'\t' | b'\n' | b'\r' if s[i..].trim_start().starts_with("-}}") => {
                let ws = s[i..].len() - s[i..].trim_start().len();
                return Some((&s[..i], i + ws + 3, true));
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some((&s[..i], i + 2, false)),
            _ => {}
        }
        i += 1;
    }
    None
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            '|' => {
                out.push(Tok::Pipe);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                out.push(Tok::Declare);
                i += 2;
            }
            '=' => {
                out.push(Tok::Assign);
                i += 1;
            }
            '.' if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) => {
                let (tok, n) = number(&chars[i..])?;
                out.push(tok);
                i += n;
            }
            '.' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && ident(chars[j]) {
                    j += 1;
                }
                if j == start {
                    out.push(Tok::Dot);
                } else {
                    out.push(Tok::Field(chars[start..j].iter().collect()));
                }
                i = j;
            }
            '$' => {
                let mut j = i + 1;
                while j < chars.len() && ident(chars[j]) {
                    j += 1;
                }
                out.push(Tok::Var(chars[i..j].iter().collect()));
                i = j;
            }
            '"' => {
                let mut j = i + 1;
                let mut v = String::new();
                loop {
                    let Some(&c) = chars.get(j) else {
                        return Err("unterminated quoted string".to_string());
                    };
                    j += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&e) = chars.get(j) else {
                                return Err("unterminated quoted string".to_string());
                            };
                            j += 1;
                            match e {
                                'n' => v.push('\n'),
                                't' => v.push('\t'),
                                'r' => v.push('\r'),
                                '\\' => v.push('\\'),
                                '"' => v.push('"'),
                                '\'' => v.push('\''),
                                'a' => v.push('\u{7}'),
                                'b' => v.push('\u{8}'),
                                'f' => v.push('\u{c}'),
                                'v' => v.push('\u{b}'),
                                'x' | 'u' | 'U' => {
                                    let n = match e {
                                        'x' => 2,
                                        'u' => 4,
                                        _ => 8,
                                    };
                                    let hex: String =
                                        chars.get(j..j + n).unwrap_or(&[]).iter().collect();
                                    let code = u32::from_str_radix(&hex, 16)
                                        .map_err(|_| "invalid syntax".to_string())?;
                                    v.push(
                                        char::from_u32(code)
                                            .ok_or_else(|| "invalid syntax".to_string())?,
                                    );
                                    j += n;
                                }
                                _ => return Err("invalid syntax".to_string()),
                            }
                        }
                        c => v.push(c),
                    }
                }
                out.push(Tok::Str(v));
                i = j;
            }
            '`' => {
                let mut j = i + 1;
                while j < chars.len() && chars[j] != '`' {
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unterminated raw quoted string".to_string());
                }
                out.push(Tok::Str(chars[i + 1..j].iter().collect()));
                i = j + 1;
            }
            '\'' => {
                let (v, n) = match (chars.get(i + 1), chars.get(i + 2), chars.get(i + 3)) {
                    (Some('\\'), Some(e), Some('\'')) => {
                        let v = match e {
                            'n' => '\n',
                            't' => '\t',
                            '\\' => '\\',
                            '\'' => '\'',
                            _ => return Err("invalid syntax".to_string()),
                        };
                        (v, 4)
                    }
                    (Some(&c), Some('\''), _) => (c, 3),
                    _ => return Err("unterminated character constant".to_string()),
                };
                out.push(Tok::Int(i64::from(u32::from(v))));
                i += n;
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || *d == '.')) =>
            {
                let (tok, n) = number(&chars[i..])?;
                out.push(tok);
                i += n;
            }
            c if c.is_alphabetic() || c == '_' => {
                let mut j = i;
                while j < chars.len() && ident(chars[j]) {
                    j += 1;
                }
                out.push(Tok::Ident(chars[i..j].iter().collect()));
                i = j;
            }
            c => return Err(format!("unexpected {c:?} in command")),
        }
    }
    Ok(out)
}

fn number(chars: &[char]) -> Result<(Tok, usize), String> {
    let mut j = 0;
    while j < chars.len()
        && (chars[j].is_ascii_alphanumeric()
            || chars[j] == '.'
            || chars[j] == '_'
            || ((chars[j] == '-' || chars[j] == '+')
                && (j == 0 || matches!(chars[j - 1], 'e' | 'E' | 'p' | 'P'))))
    {
        j += 1;
    }
    let text: String = chars[..j].iter().filter(|c| **c != '_').collect();
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b.to_string()),
        None => (false, text.trim_start_matches('+').to_string()),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o") {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b") {
        i64::from_str_radix(b, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') && body.chars().all(|c| c.is_ascii_digit()) {
        i64::from_str_radix(&body[1..], 8).ok()
    } else {
        body.parse::<i64>().ok()
    };
    if let Some(i) = int {
        return Ok((Tok::Int(if neg { -i } else { i }), j));
    }
    match body.parse::<f64>() {
        Ok(f) if !body.contains(|c: char| c.is_alphabetic() && c != 'e' && c != 'E') => {
            Ok((Tok::Float(if neg { -f } else { f }), j))
        }
        _ => Err(format!(
            "bad number syntax: {:?}",
            chars[..j].iter().collect::<String>()
        )),
    }
}

/// A parse failure: line and reason.
type ParseError = (usize, String);

struct Parser<'a> {
    items: &'a [Item],
    pos: usize,
    vars: Vec<String>,
    defines: BTreeMap<String, Vec<Node>>,
    range_depth: usize,
    /// Blocks and parenthesized pipelines open around the current item.
    depth: usize,
}

enum Closer {
    Eof,
    End,
    Else(Vec<Tok>, usize, String),
}

impl Parser<'_> {
    /// Runs `f` one level deeper, refusing to go past [`MAX_DEPTH`].
    fn nested<T>(
        &mut self,
        line: usize,
        f: impl FnOnce(&mut Self) -> Result<T, ParseError>,
    ) -> Result<T, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err((
                line,
                format!("template nests more than {MAX_DEPTH} levels deep"),
            ));
        }
        self.depth += 1;
        let result = f(self);
        self.depth -= 1;
        result
    }

    /// The line of the item just read (1 before any).
    fn line(&self) -> usize {
        self.items[..self.pos]
            .iter()
            .rev()
            .find_map(|item| match item {
                Item::Action(_, line) => Some(*line),
                Item::Text(_) => None,
            })
            .unwrap_or(1)
    }

    fn list(&mut self) -> Result<(Vec<Node>, Closer), ParseError> {
        self.nested(self.line(), Self::list_items)
    }

    fn list_items(&mut self) -> Result<(Vec<Node>, Closer), ParseError> {
        let mut nodes = Vec::new();
        while self.pos < self.items.len() {
            let item = &self.items[self.pos];
            self.pos += 1;
            match item {
                Item::Text(t) => nodes.push(Node::Text(t.clone())),
                Item::Action(text, line) => {
                    let line = *line;
                    let toks = tokenize(text).map_err(|e| (line, e))?;
                    match toks.first() {
                        None => return Err((line, "missing value for command".to_string())),
                        Some(Tok::Ident(k)) if k == "end" => return Ok((nodes, Closer::End)),
                        Some(Tok::Ident(k)) if k == "else" => {
                            return Ok((
                                nodes,
                                Closer::Else(toks[1..].to_vec(), line, text.clone()),
                            ));
                        }
                        Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                            let is_if = k == "if";
                            nodes.push(self.conditional(is_if, &toks[1..], line, text)?);
                        }
                        Some(Tok::Ident(k)) if k == "range" => {
                            let mark = self.vars.len();
                            let pipe = self.pipe(&toks[1..], line, text, true)?;
                            self.range_depth += 1;
                            let (body, end) = self.list()?;
                            self.range_depth -= 1;
                            let else_ = match end {
                                Closer::End => Vec::new(),
                                Closer::Else(rest, l, _) => {
                                    if !rest.is_empty() {
                                        return Err((
                                            l,
                                            "unexpected tokens after else".to_string(),
                                        ));
                                    }
                                    self.vars.truncate(mark);
                                    let (e, end) = self.list()?;
                                    if !matches!(end, Closer::End) {
                                        return Err((l, "unexpected EOF".to_string()));
                                    }
                                    e
                                }
                                Closer::Eof => return Err((line, "unexpected EOF".to_string())),
                            };
                            self.vars.truncate(mark);
                            nodes.push(Node::Range(pipe, body, else_));
                        }
                        Some(Tok::Ident(k)) if k == "define" || k == "block" => {
                            let is_block = k == "block";
                            let Some(Tok::Str(name)) = toks.get(1) else {
                                return Err((line, format!("unexpected token in {k} clause")));
                            };
                            let name = name.clone();
                            let arg = if is_block && toks.len() > 2 {
                                Some(self.pipe(&toks[2..], line, text, false)?)
                            } else {
                                None
                            };
                            let saved = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
                            let (body, end) = self.list()?;
                            self.vars = saved;
                            if !matches!(end, Closer::End) {
                                return Err((line, format!("unexpected EOF in {k}")));
                            }
                            self.defines.insert(name.clone(), body);
                            if is_block {
                                nodes.push(Node::Template(name, arg));
                            }
                        }
                        Some(Tok::Ident(k)) if k == "template" => {
                            let Some(Tok::Str(name)) = toks.get(1) else {
                                return Err((
                                    line,
                                    "unexpected token in template clause".to_string(),
                                ));
                            };
                            let arg = if toks.len() > 2 {
                                Some(self.pipe(&toks[2..], line, text, false)?)
                            } else {
                                None
                            };
                            nodes.push(Node::Template(name.clone(), arg));
                        }
                        Some(Tok::Ident(k)) if k == "break" || k == "continue" => {
                            if self.range_depth == 0 {
                                return Err((line, format!("{{{{{k}}}}} outside {{{{range}}}}")));
                            }
                            nodes.push(if k == "break" {
                                Node::Break
                            } else {
                                Node::Continue
                            });
                        }
                        _ => nodes.push(Node::Action(self.pipe(&toks, line, text, false)?)),
                    }
                }
            }
        }
        Ok((nodes, Closer::Eof))
    }

    fn conditional(
        &mut self,
        is_if: bool,
        toks: &[Tok],
        line: usize,
        text: &str,
    ) -> Result<Node, (usize, String)> {
        let mark = self.vars.len();
        let pipe = self.pipe(toks, line, text, false)?;
        let (body, end) = self.list()?;
        self.vars.truncate(mark);
        let mut branches = vec![(pipe, body)];
        let mut else_ = Vec::new();
        let mut end = end;
        loop {
            match end {
                Closer::End => break,
                Closer::Eof => return Err((line, "unexpected EOF".to_string())),
                Closer::Else(rest, l, t) => {
                    let keyword = if is_if { "if" } else { "with" };
                    if matches!(rest.first(), Some(Tok::Ident(k)) if k == keyword) {
                        // An `else with` chain becomes nested `with`s (below).
                        if !is_if && self.depth + branches.len() >= MAX_DEPTH {
                            return Err((
                                l,
                                format!("template nests more than {MAX_DEPTH} levels deep"),
                            ));
                        }
                        let p = self.pipe(&rest[1..], l, &t, false)?;
                        let (b, e) = self.list()?;
                        self.vars.truncate(mark);
                        branches.push((p, b));
                        end = e;
                    } else if rest.is_empty() {
                        let (b, e) = self.list()?;
                        self.vars.truncate(mark);
                        if !matches!(e, Closer::End) {
                            return Err((l, "expected end; found else".to_string()));
                        }
                        else_ = b;
                        break;
                    } else {
                        return Err((l, "unexpected tokens after else".to_string()));
                    }
                }
            }
        }
        if is_if {
            Ok(Node::If(branches, else_))
        } else {
            let mut branches = branches.into_iter();
            let (pipe, body) = branches.next().unwrap_or_else(|| unreachable_pipe(line));
            // `else with` chains nest like Go's parser builds them.
            let mut tail = else_;
            let rest: Vec<_> = branches.collect();
            for (p, b) in rest.into_iter().rev() {
                tail = vec![Node::With(p, b, tail)];
            }
            Ok(Node::With(pipe, body, tail))
        }
    }

    fn pipe(
        &mut self,
        toks: &[Tok],
        line: usize,
        text: &str,
        in_range: bool,
    ) -> Result<Pipe, (usize, String)> {
        let mut decl = Vec::new();
        let mut assign = false;
        let mut rest = toks;
        // `$x :=`, `$x =`, and in range `$i, $e :=`.
        if let Some(Tok::Var(v)) = rest.first() {
            match rest.get(1) {
                Some(Tok::Declare) => {
                    decl.push(v.clone());
                    rest = &rest[2..];
                }
                Some(Tok::Assign) => {
                    if !self.vars.contains(v) {
                        return Err((line, format!("undefined variable {v:?}")));
                    }
                    decl.push(v.clone());
                    assign = true;
                    rest = &rest[2..];
                }
                Some(Tok::Comma) if in_range => {
                    if let (Some(Tok::Var(v2)), Some(Tok::Declare)) = (rest.get(2), rest.get(3)) {
                        decl.push(v.clone());
                        decl.push(v2.clone());
                        rest = &rest[4..];
                    } else {
                        return Err((line, "too many declarations in range".to_string()));
                    }
                }
                _ => {}
            }
        }
        let (cmds, used) = self.commands(rest, line)?;
        if used != rest.len() {
            return Err((line, "unexpected \")\" in command".to_string()));
        }
        if !assign {
            self.vars.extend(decl.iter().cloned());
        }
        Ok(Pipe {
            decl,
            assign,
            cmds,
            text: text.trim().to_string(),
            line,
        })
    }

    /// Parses commands separated by `|` up to the end or a `)`; returns how many
    /// tokens were used.
    fn commands(
        &mut self,
        toks: &[Tok],
        line: usize,
    ) -> Result<(Vec<Vec<Arg>>, usize), ParseError> {
        let mut cmds = Vec::new();
        let mut cur: Vec<Arg> = Vec::new();
        let mut i = 0;
        while i < toks.len() {
            match &toks[i] {
                Tok::RParen => break,
                Tok::Pipe => {
                    if cur.is_empty() {
                        return Err((line, "missing value for command".to_string()));
                    }
                    cmds.push(std::mem::take(&mut cur));
                    i += 1;
                    continue;
                }
                Tok::LParen => {
                    let (inner, used) = self.nested(line, |p| p.commands(&toks[i + 1..], line))?;
                    if toks.get(i + 1 + used) != Some(&Tok::RParen) {
                        return Err((line, "unclosed left paren".to_string()));
                    }
                    if inner.is_empty() {
                        return Err((line, "missing value for parenthesized pipeline".to_string()));
                    }
                    i += used + 2;
                    let fields = take_fields(toks, &mut i);
                    cur.push(Arg::Sub(
                        Box::new(Pipe {
                            decl: Vec::new(),
                            assign: false,
                            cmds: inner,
                            text: String::new(),
                            line,
                        }),
                        fields,
                    ));
                    continue;
                }
                Tok::Dot => {
                    i += 1;
                    cur.push(Arg::Dot(Vec::new()));
                    continue;
                }
                Tok::Field(f) => {
                    let mut fields = vec![f.clone()];
                    i += 1;
                    fields.extend(take_fields(toks, &mut i));
                    cur.push(Arg::Dot(fields));
                    continue;
                }
                Tok::Var(v) => {
                    if !self.vars.contains(v) {
                        return Err((line, format!("undefined variable {v:?}")));
                    }
                    i += 1;
                    let fields = take_fields(toks, &mut i);
                    cur.push(Arg::Var(v.clone(), fields));
                    continue;
                }
                Tok::Ident(name) => {
                    let arg = match name.as_str() {
                        "true" => Arg::Bool(true),
                        "false" => Arg::Bool(false),
                        "nil" => Arg::Nil,
                        n if FUNCTIONS.contains(&n) => Arg::Func(n.to_string()),
                        n => return Err((line, format!("function {n:?} not defined"))),
                    };
                    cur.push(arg);
                }
                Tok::Str(s) => cur.push(Arg::Str(s.clone())),
                Tok::Int(n) => cur.push(Arg::Int(*n)),
                Tok::Float(f) => cur.push(Arg::Float(*f)),
                Tok::Comma | Tok::Declare | Tok::Assign => {
                    return Err((line, format!("unexpected {:?} in operand", toks[i])));
                }
            }
            i += 1;
        }
        if cur.is_empty() {
            return Err((line, "missing value for command".to_string()));
        }
        if matches!(cur.first(), Some(Arg::Nil)) {
            return Err((line, "nil is not a command".to_string()));
        }
        cmds.push(cur);
        Ok((cmds, i))
    }
}

fn unreachable_pipe(line: usize) -> (Pipe, Vec<Node>) {
    (
        Pipe {
            decl: Vec::new(),
            assign: false,
            cmds: Vec::new(),
            text: String::new(),
            line,
        },
        Vec::new(),
    )
}

fn take_fields(toks: &[Tok], i: &mut usize) -> Vec<String> {
    let mut fields = Vec::new();
    while let Some(Tok::Field(f)) = toks.get(*i) {
        fields.push(f.clone());
        *i += 1;
    }
    fields
}

impl Template {
    /// Parses `text` as Prometheus parses an alert template named `name` (the rule's
    /// `__alert_<name>`), with `$labels`, `$externalLabels`, `$externalURL` and
    /// `$value` defined. The error reads as Go's: `template: NAME:LINE: reason`.
    pub(crate) fn parse(name: &str, text: &str) -> Result<Template, String> {
        let fail = |(line, msg): (usize, String)| format!("template: {name}:{line}: {msg}");
        let items = lex_items(text).map_err(fail)?;
        let mut p = Parser {
            items: &items,
            pos: 0,
            vars: PREDEFINED_VARS.iter().map(|s| s.to_string()).collect(),
            defines: BTreeMap::new(),
            range_depth: 0,
            depth: 0,
        };
        let (nodes, end) = p.list().map_err(fail)?;
        match end {
            Closer::Eof => {}
            Closer::End => {
                let line = items.len();
                return Err(fail((line.min(1), "unexpected {{end}}".to_string())));
            }
            Closer::Else(_, line, _) => {
                return Err(fail((line, "unexpected {{else}}".to_string())));
            }
        }
        Ok(Template {
            name: name.to_string(),
            nodes,
            defines: p.defines,
        })
    }

    /// Expands the template; an error is rendered as Prometheus renders it into the
    /// annotation (`<error expanding template: ...>`).
    pub(crate) fn expand(&self, data: &AlertData, query: Option<QueryFn<'_>>) -> String {
        match self.execute(data, query) {
            Ok(s) => s,
            Err(e) => format!(
                "<error expanding template: error executing template {}: template: {}:{}: executing \"{}\" at <{}>: {}>",
                self.name, self.name, e.line, self.name, e.at, e.message
            ),
        }
    }

    fn execute(&self, data: &AlertData, query: Option<QueryFn<'_>>) -> Result<String, ExecError> {
        let root = Value::Root(Arc::new(data.clone()));
        let vars = vec![
            ("$".to_string(), root.clone()),
            (
                "$labels".to_string(),
                Value::Map(Arc::new(data.labels.clone())),
            ),
            (
                "$externalLabels".to_string(),
                Value::Map(Arc::new(data.external_labels.clone())),
            ),
            (
                "$externalURL".to_string(),
                Value::Str(data.external_url.clone()),
            ),
            ("$value".to_string(), Value::Float(data.value)),
        ];
        let mut ex = Exec {
            t: self,
            vars,
            out: String::new(),
            steps: 0,
            query,
            external_url: data.external_url.clone(),
            depth: 0,
        };
        ex.walk(&self.nodes, &root)?;
        Ok(ex.out)
    }
}

/// An execution failure: where and why.
#[derive(Debug)]
struct ExecError {
    line: usize,
    at: String,
    message: String,
}

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a, 'q> {
    t: &'a Template,
    vars: Vec<(String, Value)>,
    out: String,
    steps: usize,
    query: Option<QueryFn<'q>>,
    external_url: String,
    depth: usize,
}

impl Exec<'_, '_> {
    fn err(&self, pipe: &Pipe, message: impl Into<String>) -> ExecError {
        ExecError {
            line: pipe.line,
            at: pipe.text.clone(),
            message: message.into(),
        }
    }

    /// Expands `nodes` one level deeper (a block's body or a `template` call), refusing
    /// to go past [`MAX_DEPTH`].
    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, ExecError> {
        if self.depth >= MAX_DEPTH {
            return Err(ExecError {
                line: 1,
                at: String::new(),
                message: format!("exceeded maximum template depth ({MAX_DEPTH})"),
            });
        }
        self.depth += 1;
        let flow = self.walk_nodes(nodes, dot);
        self.depth -= 1;
        flow
    }

    fn walk_nodes(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, ExecError> {
        for node in nodes {
            self.steps += 1;
            if self.steps > MAX_STEPS || self.out.len() > MAX_OUTPUT_BYTES {
                return Err(ExecError {
                    line: 1,
                    at: String::new(),
                    message: "template produces too much output".to_string(),
                });
            }
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(pipe) => {
                    let v = self.pipe(pipe, dot)?;
                    if pipe.decl.is_empty() {
                        v.print(&mut self.out);
                    }
                }
                Node::If(branches, else_) => {
                    let mark = self.vars.len();
                    let mut done = false;
                    for (pipe, body) in branches {
                        let v = self.pipe(pipe, dot)?;
                        if v.truth() {
                            let flow = self.walk(body, dot)?;
                            self.vars.truncate(mark);
                            if !matches!(flow, Flow::Normal) {
                                return Ok(flow);
                            }
                            done = true;
                            break;
                        }
                    }
                    if !done {
                        let flow = self.walk(else_, dot)?;
                        self.vars.truncate(mark);
                        if !matches!(flow, Flow::Normal) {
                            return Ok(flow);
                        }
                    }
                    self.vars.truncate(mark);
                }
                Node::With(pipe, body, else_) => {
                    let mark = self.vars.len();
                    let v = self.pipe(pipe, dot)?;
                    let flow = if v.truth() {
                        self.walk(body, &v)?
                    } else {
                        self.walk(else_, dot)?
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range(pipe, body, else_) => {
                    let mark = self.vars.len();
                    let mut p = pipe.clone();
                    let decl = std::mem::take(&mut p.decl);
                    let v = self.pipe(&p, dot)?;
                    let elems: Vec<(Value, Value)> = match &v {
                        Value::Map(m) => m
                            .iter()
                            .map(|(k, v)| (Value::Str(k.clone()), Value::Str(v.clone())))
                            .collect(),
                        Value::AnyMap(m) => m
                            .iter()
                            .map(|(k, v)| (Value::Str(k.clone()), v.clone()))
                            .collect(),
                        Value::Samples(s) => s
                            .iter()
                            .enumerate()
                            .map(|(i, s)| (Value::Int(i as i64), Value::Sample(s.clone())))
                            .collect(),
                        Value::Int(n) => (0..*n).map(|i| (Value::Int(i), Value::Int(i))).collect(),
                        Value::Nil => Vec::new(),
                        other => {
                            return Err(self.err(
                                pipe,
                                format!("range can't iterate over {}", other.to_display()),
                            ));
                        }
                    };
                    if elems.is_empty() {
                        self.walk(else_, dot)?;
                    }
                    for (k, e) in elems {
                        let inner = self.vars.len();
                        match decl.as_slice() {
                            [one] => self.vars.push((one.clone(), e.clone())),
                            [a, b] => {
                                self.vars.push((a.clone(), k));
                                self.vars.push((b.clone(), e.clone()));
                            }
                            _ => {}
                        }
                        let flow = self.walk(body, &e)?;
                        self.vars.truncate(inner);
                        if matches!(flow, Flow::Break) {
                            break;
                        }
                    }
                    self.vars.truncate(mark);
                }
                Node::Template(name, arg) => {
                    let Some(body) = self.t.defines.get(name) else {
                        return Err(ExecError {
                            line: 1,
                            at: format!("template \"{name}\""),
                            message: format!("template {name:?} not defined"),
                        });
                    };
                    let d = match arg {
                        Some(p) => self.pipe(p, dot)?,
                        None => Value::Nil,
                    };
                    let saved = std::mem::take(&mut self.vars);
                    self.vars.push(("$".to_string(), d.clone()));
                    let r = self.walk(body, &d);
                    self.vars = saved;
                    r?;
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, ExecError> {
        let mut last: Option<Value> = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(pipe, cmd, dot, last)?);
        }
        let v = last.unwrap_or(Value::Nil);
        if pipe.assign {
            if let Some(name) = pipe.decl.first()
                && let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name)
            {
                slot.1 = v.clone();
            }
        } else {
            for name in &pipe.decl {
                self.vars.push((name.clone(), v.clone()));
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        pipe: &Pipe,
        cmd: &[Arg],
        dot: &Value,
        piped: Option<Value>,
    ) -> Result<Value, ExecError> {
        let Some(first) = cmd.first() else {
            return Err(self.err(pipe, "empty command"));
        };
        if let Arg::Func(name) = first {
            let mut args = Vec::with_capacity(cmd.len());
            // `and` / `or` stop evaluating at the deciding argument, as Go's do.
            for a in &cmd[1..] {
                args.push(self.arg(pipe, a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(pipe, name, args);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(self.err(
                pipe,
                format!("can't give argument to non-function {}", arg_text(first)),
            ));
        }
        self.arg(pipe, first, dot)
    }

    fn arg(&mut self, pipe: &Pipe, a: &Arg, dot: &Value) -> Result<Value, ExecError> {
        match a {
            Arg::Dot(fields) => self.fields(pipe, dot.clone(), fields),
            Arg::Var(name, fields) => {
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(Value::Nil);
                self.fields(pipe, v, fields)
            }
            Arg::Func(name) => self.call(pipe, name, Vec::new()),
            Arg::Str(s) => Ok(Value::Str(s.clone())),
            Arg::Int(i) => Ok(Value::Int(*i)),
            Arg::Float(f) => Ok(Value::Float(*f)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Nil),
            Arg::Sub(p, fields) => {
                let v = self.pipe(p, dot)?;
                self.fields(pipe, v, fields)
            }
        }
    }

    fn fields(&self, pipe: &Pipe, mut v: Value, fields: &[String]) -> Result<Value, ExecError> {
        for f in fields {
            v = match (&v, f.as_str()) {
                (Value::Root(d), "Labels") => Value::Map(Arc::new(d.labels.clone())),
                (Value::Root(d), "ExternalLabels") => {
                    Value::Map(Arc::new(d.external_labels.clone()))
                }
                (Value::Root(d), "ExternalURL") => Value::Str(d.external_url.clone()),
                (Value::Root(d), "Value") => Value::Float(d.value),
                (Value::Map(m), key) => Value::Str(m.get(key).cloned().unwrap_or_default()),
                (Value::AnyMap(m), key) => m.get(key).cloned().unwrap_or(Value::Nil),
                (Value::Sample(s), "Labels") => Value::Map(Arc::new(s.labels.clone())),
                (Value::Sample(s), "Value") => Value::Float(s.value),
                (Value::Nil, _) => {
                    return Err(
                        self.err(pipe, format!("nil pointer evaluating interface {{}}.{f}"))
                    );
                }
                (other, _) => {
                    return Err(self.err(
                        pipe,
                        format!("can't evaluate field {f} in type {}", other.type_name()),
                    ));
                }
            };
        }
        Ok(v)
    }

    fn call(&mut self, pipe: &Pipe, name: &str, args: Vec<Value>) -> Result<Value, ExecError> {
        let fail =
            |this: &Self, msg: String| this.err(pipe, format!("error calling {name}: {msg}"));
        let want = |n: usize| -> Result<(), ExecError> {
            if args.len() != n {
                Err(self.err(
                    pipe,
                    format!(
                        "wrong number of args for {name}: want {n} got {}",
                        args.len()
                    ),
                ))
            } else {
                Ok(())
            }
        };
        let float = |v: &Value| -> Result<f64, String> { to_float(v) };
        let string = |v: &Value| -> Result<String, ExecError> {
            match v {
                Value::Str(s) => Ok(s.clone()),
                other => Err(self.err(
                    pipe,
                    format!(
                        "wrong type for value; expected string; got {}",
                        other.type_name()
                    ),
                )),
            }
        };
        match name {
            "humanize" | "humanize1024" | "humanizeDuration" | "humanizePercentage"
            | "humanizeTimestamp" => {
                want(1)?;
                let v = float(&args[0]).map_err(|e| fail(self, e))?;
                let s = match name {
                    "humanize" => gofmt::humanize(v),
                    "humanize1024" => gofmt::humanize1024(v),
                    "humanizeDuration" => gofmt::humanize_duration(v),
                    "humanizePercentage" => gofmt::humanize_percentage(v),
                    _ => gofmt::humanize_timestamp(v).map_err(|e| fail(self, e))?,
                };
                Ok(Value::Str(s))
            }
            "toUpper" => {
                want(1)?;
                Ok(Value::Str(string(&args[0])?.to_uppercase()))
            }
            "toLower" => {
                want(1)?;
                Ok(Value::Str(string(&args[0])?.to_lowercase()))
            }
            "title" => {
                want(1)?;
                Ok(Value::Str(go_title(&string(&args[0])?)))
            }
            "safeHtml" => {
                want(1)?;
                Ok(Value::Str(string(&args[0])?))
            }
            "reReplaceAll" => {
                want(3)?;
                let (pat, repl, text) = (string(&args[0])?, string(&args[1])?, string(&args[2])?);
                let re = regex::Regex::new(&pat).map_err(|e| {
                    self.err(
                        pipe,
                        format!("error calling reReplaceAll: regexp: Compile({pat:?}): {e}"),
                    )
                })?;
                Ok(Value::Str(
                    re.replace_all(&text, repl.as_str()).into_owned(),
                ))
            }
            "match" => {
                want(2)?;
                let (pat, text) = (string(&args[0])?, string(&args[1])?);
                let re = regex::Regex::new(&pat).map_err(|e| fail(self, e.to_string()))?;
                Ok(Value::Bool(re.is_match(&text)))
            }
            "stripPort" => {
                want(1)?;
                let s = string(&args[0])?;
                Ok(Value::Str(strip_port(&s)))
            }
            "stripDomain" => {
                want(1)?;
                let s = string(&args[0])?;
                let (host, port) = match s.rsplit_once(':') {
                    Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                        (h.to_string(), Some(p))
                    }
                    _ => (s.clone(), None),
                };
                if host.starts_with('[') || host.parse::<std::net::IpAddr>().is_ok() {
                    return Ok(Value::Str(s));
                }
                let short = host.split('.').next().unwrap_or("").to_string();
                Ok(Value::Str(match port {
                    Some(p) => format!("{short}:{p}"),
                    None => short,
                }))
            }
            "pathPrefix" => {
                want(0)?;
                let path = self
                    .external_url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_string()))
                    .unwrap_or_default();
                Ok(Value::Str(path))
            }
            "externalURL" => {
                want(0)?;
                Ok(Value::Str(self.external_url.clone()))
            }
            "graphLink" | "tableLink" => {
                want(1)?;
                let expr = string(&args[0])?;
                let tab = if name == "graphLink" { 0 } else { 1 };
                let q: String =
                    serde_urlencoded::to_string([("g0.expr", expr.as_str())]).unwrap_or_default();
                Ok(Value::Str(format!("/graph?{q}&g0.tab={tab}")))
            }
            "parseDuration" => {
                want(1)?;
                let s = string(&args[0])?;
                let ms = super::file::parse_duration_ms(&s).map_err(|e| fail(self, e))?;
                Ok(Value::Float(ms as f64 / 1000.0))
            }
            "toTime" => {
                want(1)?;
                let v = float(&args[0]).map_err(|e| fail(self, e))?;
                Ok(Value::Str(
                    gofmt::humanize_timestamp(v).map_err(|e| fail(self, e))?,
                ))
            }
            "query" => {
                want(1)?;
                let q = string(&args[0])?;
                let Some(run) = self.query else {
                    return Err(fail(self, "queries are not available here".to_string()));
                };
                Ok(Value::Samples(run(&q).map_err(|e| fail(self, e))?))
            }
            "first" => {
                want(1)?;
                match &args[0] {
                    Value::Samples(s) => s.first().cloned().map(Value::Sample).ok_or_else(|| {
                        fail(
                            self,
                            "first() called on vector with no elements".to_string(),
                        )
                    }),
                    other => Err(self.err(
                        pipe,
                        format!(
                            "wrong type for value; expected template.queryResult; got {}",
                            other.type_name()
                        ),
                    )),
                }
            }
            "label" => {
                want(2)?;
                let l = string(&args[0])?;
                match &args[1] {
                    Value::Sample(s) => {
                        Ok(Value::Str(s.labels.get(&l).cloned().unwrap_or_default()))
                    }
                    other => Err(self.err(
                        pipe,
                        format!(
                            "wrong type for value; expected *template.sample; got {}",
                            other.type_name()
                        ),
                    )),
                }
            }
            "value" => {
                want(1)?;
                match &args[0] {
                    Value::Sample(s) => Ok(Value::Float(s.value)),
                    other => Err(self.err(
                        pipe,
                        format!(
                            "wrong type for value; expected *template.sample; got {}",
                            other.type_name()
                        ),
                    )),
                }
            }
            "strvalue" => {
                want(1)?;
                match &args[0] {
                    Value::Sample(s) => Ok(Value::Str(
                        s.labels.get("__value__").cloned().unwrap_or_default(),
                    )),
                    other => Err(self.err(
                        pipe,
                        format!(
                            "wrong type for value; expected *template.sample; got {}",
                            other.type_name()
                        ),
                    )),
                }
            }
            "sortByLabel" => {
                want(2)?;
                let l = string(&args[0])?;
                match &args[1] {
                    Value::Samples(s) => {
                        let mut s = s.clone();
                        s.sort_by(|a, b| a.labels.get(&l).cmp(&b.labels.get(&l)));
                        Ok(Value::Samples(s))
                    }
                    other => Err(self.err(
                        pipe,
                        format!(
                            "wrong type for value; expected template.queryResult; got {}",
                            other.type_name()
                        ),
                    )),
                }
            }
            "args" => Ok(Value::AnyMap(
                args.into_iter()
                    .enumerate()
                    .map(|(i, a)| (format!("arg{i}"), a))
                    .collect(),
            )),
            "and" => Ok(args
                .iter()
                .find(|a| !a.truth())
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Nil)),
            "or" => Ok(args
                .iter()
                .find(|a| a.truth())
                .or(args.last())
                .cloned()
                .unwrap_or(Value::Nil)),
            "not" => {
                want(1)?;
                Ok(Value::Bool(!args[0].truth()))
            }
            "len" => {
                want(1)?;
                let n = match &args[0] {
                    Value::Str(s) => s.len(),
                    Value::Map(m) => m.len(),
                    Value::AnyMap(m) => m.len(),
                    Value::Samples(s) => s.len(),
                    other => {
                        return Err(fail(self, format!("len of type {}", other.type_name())));
                    }
                };
                Ok(Value::Int(n as i64))
            }
            "index" => {
                let Some((first, keys)) = args.split_first() else {
                    return Err(fail(self, "index of untyped nil".to_string()));
                };
                let mut v = first.clone();
                for k in keys {
                    v = match (&v, k) {
                        (Value::Map(m), Value::Str(k)) => {
                            Value::Str(m.get(k).cloned().unwrap_or_default())
                        }
                        (Value::AnyMap(m), Value::Str(k)) => {
                            m.get(k).cloned().unwrap_or(Value::Nil)
                        }
                        (Value::Samples(s), Value::Int(i)) => s
                            .get(usize::try_from(*i).unwrap_or(usize::MAX))
                            .cloned()
                            .map(Value::Sample)
                            .ok_or_else(|| fail(self, format!("index out of range: {i}")))?,
                        (other, _) => {
                            return Err(fail(
                                self,
                                format!("can't index item of type {}", other.type_name()),
                            ));
                        }
                    };
                }
                Ok(v)
            }
            "print" => Ok(Value::Str(go_sprint(&args))),
            "println" => {
                let mut s = args
                    .iter()
                    .map(Value::to_display)
                    .collect::<Vec<_>>()
                    .join(" ");
                s.push('\n');
                Ok(Value::Str(s))
            }
            "printf" => {
                let Some((fmt, rest)) = args.split_first() else {
                    return Err(self.err(
                        pipe,
                        "wrong number of args for printf: want at least 1 got 0",
                    ));
                };
                let fmt = string(fmt)?;
                Ok(Value::Str(go_sprintf(&fmt, rest)))
            }
            "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
                if name != "eq" {
                    want(2)?;
                }
                let Some((a, rest)) = args.split_first() else {
                    return Err(fail(self, "missing argument for comparison".to_string()));
                };
                if rest.is_empty() {
                    return Err(fail(self, "missing argument for comparison".to_string()));
                }
                let mut result = false;
                for b in rest {
                    let ord = compare(a, b).map_err(|e| fail(self, e))?;
                    let r = match name {
                        "eq" => ord == Some(std::cmp::Ordering::Equal),
                        "ne" => ord != Some(std::cmp::Ordering::Equal),
                        "lt" => ord == Some(std::cmp::Ordering::Less),
                        "le" => matches!(
                            ord,
                            Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
                        ),
                        "gt" => ord == Some(std::cmp::Ordering::Greater),
                        _ => matches!(
                            ord,
                            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
                        ),
                    };
                    if r {
                        result = true;
                        break;
                    }
                }
                Ok(Value::Bool(result))
            }
            "html" => Ok(Value::Str(
                go_sprint(&args)
                    .replace('&', "&amp;")
                    .replace('\'', "&#39;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&#34;"),
            )),
            "urlquery" => Ok(Value::Str(
                serde_urlencoded::to_string([("", go_sprint(&args))])
                    .unwrap_or_default()
                    .trim_start_matches('=')
                    .to_string(),
            )),
            "js" => Ok(Value::Str(
                go_sprint(&args)
                    .replace('\\', "\\\\")
                    .replace('\'', "\\'")
                    .replace('"', "\\\"")
                    .replace('<', "\\u003C")
                    .replace('>', "\\u003E"),
            )),
            other => Err(self.err(
                pipe,
                format!("error calling {other}: not supported by vantage's template engine"),
            )),
        }
    }
}

fn arg_text(a: &Arg) -> String {
    match a {
        Arg::Dot(f) if f.is_empty() => ".".to_string(),
        Arg::Dot(f) => format!(".{}", f.join(".")),
        Arg::Var(v, f) if f.is_empty() => v.clone(),
        Arg::Var(v, f) => format!("{v}.{}", f.join(".")),
        Arg::Func(n) => n.clone(),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Int(i) => i.to_string(),
        Arg::Float(f) => gofmt::format_g(*f, None),
        Arg::Bool(b) => b.to_string(),
        Arg::Nil => "nil".to_string(),
        Arg::Sub(..) => "(...)".to_string(),
    }
}

/// Prometheus's `convertToFloat`.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => match (s.parse::<f64>(), s.as_str()) {
            (Ok(v), _) => Ok(v),
            (Err(_), "+Inf" | "Inf" | "inf" | "+inf") => Ok(f64::INFINITY),
            (Err(_), "-Inf" | "-inf") => Ok(f64::NEG_INFINITY),
            (Err(_), "NaN" | "nan") => Ok(f64::NAN),
            (Err(_), _) => Err(format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        },
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

fn compare(a: &Value, b: &Value) -> Result<Option<std::cmp::Ordering>, String> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Ok(Some(x.cmp(y))),
        (Value::Float(x), Value::Float(y)) => Ok(x.partial_cmp(y)),
        (Value::Str(x), Value::Str(y)) => Ok(Some(x.cmp(y))),
        (Value::Bool(x), Value::Bool(y)) => Ok(Some(x.cmp(y))),
        _ => Err("incompatible types for comparison".to_string()),
    }
}

/// Go's `strings.Title`: upper-cases the first letter of each word.
fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("").to_string();
    }
    match s.rsplit_once(':') {
        Some((h, _)) if !h.contains(':') => h.to_string(),
        _ => s.to_string(),
    }
}

/// Go's `fmt.Sprint`: spaces between operands when neither is a string.
fn go_sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && !matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)) {
            out.push(' ');
        }
        a.print(&mut out);
    }
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %x %t %%`
/// with flags `-+0 ` and width/precision.
fn go_sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut chars = fmt.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width: Option<usize> = None;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            width = Some(width.unwrap_or(0) * 10 + d as usize);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = 0;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                p = p * 10 + d as usize;
                chars.next();
            }
            prec = Some(p);
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let mut s = match (verb, arg) {
            ('v' | 's', Value::Str(s)) => match prec {
                Some(p) => s.chars().take(p).collect(),
                None => s.clone(),
            },
            ('v', v) => v.to_display(),
            (
                's',
                v @ (Value::Map(_) | Value::AnyMap(_) | Value::Samples(_) | Value::Sample(_)),
            ) => v.to_display(),
            ('d', Value::Int(i)) => i.to_string(),
            ('f' | 'F', v) => match to_float(v) {
                Ok(f) if !matches!(v, Value::Str(_)) => gofmt::format_f(f, prec.unwrap_or(6)),
                _ => format!("%!{verb}({}={})", v.type_name(), v.to_display()),
            },
            ('e', v) => match v {
                Value::Float(f) => gofmt::format_e(*f, prec.unwrap_or(6)),
                Value::Int(i) => format!("%!e(int={i})"),
                _ => format!("%!e({}={})", v.type_name(), v.to_display()),
            },
            ('g', Value::Float(f)) => gofmt::format_g(*f, prec),
            ('q', Value::Str(s)) => format!("{s:?}"),
            ('t', Value::Bool(b)) => b.to_string(),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', Value::Str(s)) => hex::encode(s),
            ('c', Value::Int(i)) => char::from_u32(*i as u32)
                .map(String::from)
                .unwrap_or_default(),
            (v, a) => format!("%!{v}({}={})", a.type_name(), a.to_display()),
        };
        if plus
            && matches!(arg, Value::Int(_) | Value::Float(_))
            && !s.starts_with('-')
            && !s.starts_with('+')
        {
            s.insert(0, '+');
        } else if space && matches!(arg, Value::Int(_) | Value::Float(_)) && !s.starts_with('-') {
            s.insert(0, ' ');
        }
        if let Some(w) = width {
            let len = s.chars().count();
            if len < w {
                let pad = w - len;
                if minus {
                    s.push_str(&" ".repeat(pad));
                } else if zero && matches!(arg, Value::Int(_) | Value::Float(_)) {
                    let (sign, digits) = if s.starts_with(['-', '+', ' ']) {
                        s.split_at(1)
                    } else {
                        ("", s.as_str())
                    };
                    s = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    s = format!("{}{s}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&s);
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_display()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(labels: &[(&str, &str)], value: f64) -> AlertData {
        AlertData {
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            external_labels: BTreeMap::new(),
            external_url: "http://vantage.example:9090/prefix".to_string(),
            value,
        }
    }

    fn render(text: &str, d: &AlertData) -> String {
        Template::parse("__alert_Test", text)
            .unwrap_or_else(|e| panic!("{text:?} does not parse: {e}"))
            .expand(d, None)
    }

    #[test]
    fn labels_values_and_helpers_render_as_prometheus() {
        let d = data(&[("instance", "host:9100"), ("job", "node")], 1234567.0);
        assert_eq!(render("{{ $labels.instance }}", &d), "host:9100");
        assert_eq!(render("{{ .Labels.job }}", &d), "node");
        assert_eq!(render("{{ $value }}", &d), "1.234567e+06");
        assert_eq!(render("{{ .Value }}", &d), "1.234567e+06");
        assert_eq!(render("{{ $value | humanize }}", &d), "1.235M");
        assert_eq!(render("{{ humanize $value }}", &d), "1.235M");
        assert_eq!(render("{{ $labels.missing }}", &d), "");
        assert_eq!(render("{{ $labels.instance | toUpper }}", &d), "HOST:9100");
        assert_eq!(render("{{ \"HELLO\" | toLower }}", &d), "hello");
        assert_eq!(render("{{ title \"hello world\" }}", &d), "Hello World");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", &d), "1234567.00");
        assert_eq!(render("{{ printf \"%s=%d\" \"a\" 3 }}", &d), "a=3");
        assert_eq!(
            render("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", &d),
            "host"
        );
        assert_eq!(render("{{ $labels.instance | stripPort }}", &d), "host");
        assert_eq!(render("{{ 0.25 | humanizePercentage }}", &d), "25%");
        assert_eq!(render("{{ 3725 | humanizeDuration }}", &d), "1h 2m 5s");
        assert_eq!(render("{{ 2048 | humanize1024 }}", &d), "2ki");
        assert_eq!(render("{{ \"1500\" | humanize }}", &d), "1.5k");
        assert_eq!(
            render("{{ $externalURL }}", &d),
            "http://vantage.example:9090/prefix"
        );
        assert_eq!(render("{{ pathPrefix }}", &d), "/prefix");
    }

    #[test]
    fn control_flow_and_variables() {
        let d = data(&[("a", "1"), ("b", "2")], 0.5);
        assert_eq!(
            render(
                "{{ if gt $value 1.0 }}high{{ else if gt $value 0.1 }}mid{{ else }}low{{ end }}",
                &d
            ),
            "mid"
        );
        assert_eq!(
            render(
                "{{ range $k, $v := $labels }}{{ $k }}={{ $v }};{{ end }}",
                &d
            ),
            "a=1;b=2;"
        );
        assert_eq!(render("{{ range .Labels }}{{ . }}{{ end }}", &d), "12");
        assert_eq!(
            render("{{ $x := \"v\" }}{{ $x }}{{ $x = \"w\" }}{{ $x }}", &d),
            "vw"
        );
        assert_eq!(render("{{ with $labels.a }}[{{ . }}]{{ end }}", &d), "[1]");
        assert_eq!(
            render("{{ with $labels.zz }}x{{ else }}none{{ end }}", &d),
            "none"
        );
        assert_eq!(render("a  {{- \" b \" -}}  c", &d), "a b c");
        assert_eq!(render("x{{/* a comment */}}y", &d), "xy");
        assert_eq!(
            render(
                "{{ define \"t\" }}<{{ . }}>{{ end }}{{ template \"t\" \"q\" }}",
                &d
            ),
            "<q>"
        );
        assert_eq!(
            render(
                "{{ if and (eq $labels.a \"1\") (ne $labels.b \"1\") }}ok{{ end }}",
                &d
            ),
            "ok"
        );
        assert_eq!(render("{{ len $labels }}", &d), "2");
        assert_eq!(render("{{ index $labels \"b\" }}", &d), "2");
    }

    #[test]
    fn query_results_with_first_value_label() {
        let d = data(&[], 0.0);
        let q = |text: &str| -> Result<Vec<QuerySample>, String> {
            assert_eq!(text, "up");
            Ok(vec![QuerySample {
                labels: [("instance".to_string(), "h1".to_string())].into(),
                value: 42.0,
            }])
        };
        let t = Template::parse("__alert_Q", "{{ with query \"up\" }}{{ . | first | value }} on {{ . | first | label \"instance\" }}{{ end }}").unwrap();
        assert_eq!(t.expand(&d, Some(&q)), "42 on h1");
        let t = Template::parse(
            "__alert_Q",
            "{{ range query \"up\" }}{{ .Labels.instance }}={{ .Value }}{{ end }}",
        )
        .unwrap();
        assert_eq!(t.expand(&d, Some(&q)), "h1=42");
    }

    #[test]
    fn parse_errors_read_as_go() {
        let e = Template::parse("__alert_A", "{{ $labels.instance ").unwrap_err();
        assert_eq!(e, "template: __alert_A:1: unclosed action");
        let e = Template::parse("__alert_A", "{{ nosuchfunc $value }}").unwrap_err();
        assert_eq!(
            e,
            "template: __alert_A:1: function \"nosuchfunc\" not defined"
        );
        let e = Template::parse("__alert_A", "line1\n{{ $foo }}").unwrap_err();
        assert_eq!(e, "template: __alert_A:2: undefined variable \"$foo\"");
        assert!(Template::parse("__alert_A", "{{ if 1 }}x").is_err());
        assert!(Template::parse("__alert_A", "{{ end }}").is_err());
        assert!(Template::parse("__alert_A", "{{ }}").is_err());
        assert!(Template::parse("__alert_A", "{{ break }}").is_err());
        assert!(Template::parse("__alert_A", "plain text, no actions").is_ok());
    }

    #[test]
    fn execution_errors_render_into_the_text() {
        let d = data(&[], 1.0);
        let out = render("{{ humanize \"abc\" }}", &d);
        assert!(out.starts_with("<error expanding template: "), "{out}");
        assert!(out.contains("invalid syntax"), "{out}");
        let out = render("{{ gt $value 1 }}", &d);
        assert!(out.contains("incompatible types for comparison"), "{out}");
        // A runaway template stops instead of eating memory.
        let out = render("{{ range 100000000 }}xxxxxxxxxx{{ end }}", &d);
        assert!(
            out.starts_with("<error expanding template"),
            "{}",
            &out[..80.min(out.len())]
        );
    }

    #[test]
    fn nesting_stops_at_the_limit_without_overflowing_a_small_stack() {
        let d = data(&[("a", "b")], 1.0);
        // tokio's default stack: a quarter of what the collector's threads have.
        let small = |f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(f)
                .unwrap()
                .join()
                .unwrap()
        };
        let ifs = |n: usize| format!("{}x{}", "{{ if true }}".repeat(n), "{{ end }}".repeat(n));
        let parens = |n: usize| format!("{{{{ {}1{} }}}}", "(".repeat(n), ")".repeat(n));
        let withs = |n: usize| {
            format!(
                "{{{{ with 0 }}}}{}z{{{{ end }}}}",
                "{{ else with 0 }}".repeat(n)
            )
        };
        let ranges = |n: usize| {
            format!(
                "{}x{}",
                "{{ range $labels }}".repeat(n),
                "{{ end }}".repeat(n)
            )
        };
        let (d1, d2) = (d.clone(), d.clone());
        small(Box::new(move || {
            // The deepest each shape may go (the template itself is the first level).
            assert_eq!(render(&ifs(MAX_DEPTH - 1), &d1), "x");
            assert_eq!(render(&parens(MAX_DEPTH - 1), &d1), "1");
            assert_eq!(render(&withs(MAX_DEPTH - 2), &d1), "");
            assert_eq!(render(&ranges(MAX_DEPTH - 1), &d1), "x");
        }));
        small(Box::new(move || {
            for (shape, text) in [
                ("if", ifs(MAX_DEPTH)),
                ("parens", parens(MAX_DEPTH)),
                ("else with", withs(MAX_DEPTH - 1)),
                ("if", ifs(5_000)),
                ("parens", parens(5_000)),
                ("else with", withs(5_000)),
            ] {
                let error = Template::parse("__alert_X", &text)
                    .err()
                    .unwrap_or_default();
                assert!(
                    error.ends_with("template nests more than 100 levels deep"),
                    "{shape}: {error}"
                );
            }
            let recursive = "{{ define \"r\" }}{{ if true }}{{ template \"r\" }}{{ end }}{{ end }}{{ template \"r\" }}";
            let out = Template::parse("__alert_X", recursive)
                .unwrap()
                .expand(&d2, None);
            assert!(
                out.contains("exceeded maximum template depth (100)"),
                "{out}"
            );
        }));
    }

    #[test]
    fn hostile_input_never_panics() {
        let d = data(&[("a", "b")], 1.0);
        for text in [
            "{{",
            "}}",
            "{{{{",
            "{{ \"unterminated }}",
            "{{ ( }}",
            "{{ ) }}",
            "{{ | }}",
            "{{ .a.b.c.d }}",
            "{{ $labels.a.b }}",
            "{{ printf }}",
            "{{ printf \"%d %s\" }}",
            "{{ index }}",
            "{{ 'x }}",
            "{{ 0x }}",
            "{{- -}}",
            "{{ $x := }}",
            "{{ range $a, $b, $c := . }}{{ end }}",
            "{{ template \"nope\" }}",
            "{{ define \"r\" }}{{ template \"r\" }}{{ end }}{{ template \"r\" }}",
            "{{ \"\\xZZ\" }}",
            "é{{ \"ü\" }}ß",
        ] {
            if let Ok(t) = Template::parse("__alert_X", text) {
                let _ = t.expand(&d, None);
            }
        }
    }
}
