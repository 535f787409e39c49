//! A small FHIRPath subset: enough for the `expression` of every R4 SearchParameter.
//!
//! Expressions are parsed once (when the registry is loaded) into an [`Expr`] and evaluated over
//! `serde_json::Value` resources with [`evaluate`]. Evaluation never panics and its work is
//! bounded ([`EvalError::Budget`]).
//!
//! Supported: path navigation (repeating elements are flattened), choice elements
//! (`Patient.deceased` finds `deceasedBoolean`/`deceasedDateTime`), indexers (`entry[0]`), the
//! operators `|`, `=`, `!=`, `~`, `!~`, `<`, `<=`, `>`, `>=`, `and`, `or`, `xor`, `implies`,
//! `in`, `contains`, `is`, `as`, `+`, `-`, `*`, `/`, `div`, `mod`, `&`, and the functions
//! `where`, `select`, `exists`, `all`, `empty`, `not`, `first`, `last`, `tail`, `skip`, `take`,
//! `count`, `distinct`, `single`, `resolve`, `as`, `is`, `ofType`, `extension`, `hasValue`,
//! `trace`, `iif`. `resolve()` does not load anything: it yields a stand-in that only knows the
//! referenced resource's type, which is what `where(resolve() is Patient)` needs.

use std::borrow::Cow;
use std::fmt;

use serde_json::Value;

/// Longest expression accepted, in bytes.
const MAX_EXPR_LEN: usize = 4096;
/// Deepest nesting of parentheses, function arguments and unary operators in the source.
const MAX_NESTING: usize = 32;
/// Deepest syntax tree accepted (bounds the recursion of evaluation).
const MAX_DEPTH: usize = 128;
/// Work units (nodes produced, items visited) one evaluation may spend.
const BUDGET: usize = 500_000;

/// A parsed FHIRPath expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `{}`
    Empty,
    Literal(Value),
    /// `$this`
    This,
    /// `%resource`, `%context`, `%ucum`…: resolved at parse time to a root reference or literal.
    Env(EnvVar),
    /// An identifier that starts a path: a type name matching the focus (`Patient`) or a member.
    Ident(String),
    /// `focus.name`
    Member(Box<Expr>, String),
    /// `focus.f(args)`; a `None` focus is `$this`.
    Call(Option<Box<Expr>>, Func, Vec<Expr>),
    /// `focus.as(T)`, `focus is T`, `focus.ofType(T)`
    Type(Option<Box<Expr>>, TypeOp, String),
    /// `focus[index]`
    Index(Box<Expr>, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// Unary minus.
    Neg(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvVar {
    /// `%resource`, `%rootResource`, `%context`: the resource being evaluated.
    Resource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TypeOp {
    Is,
    As,
    OfType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Where,
    Select,
    Exists,
    All,
    Empty,
    Not,
    First,
    Last,
    Tail,
    Skip,
    Take,
    Count,
    Distinct,
    Single,
    Resolve,
    Extension,
    HasValue,
    Trace,
    Iif,
}

impl Func {
    fn by_name(name: &str) -> Option<(Self, usize, usize)> {
        // (function, min args, max args)
        Some(match name {
            "where" => (Self::Where, 1, 1),
            "select" => (Self::Select, 1, 1),
            "exists" => (Self::Exists, 0, 1),
            "all" => (Self::All, 1, 1),
            "empty" => (Self::Empty, 0, 0),
            "not" => (Self::Not, 0, 0),
            "first" => (Self::First, 0, 0),
            "last" => (Self::Last, 0, 0),
            "tail" => (Self::Tail, 0, 0),
            "skip" => (Self::Skip, 1, 1),
            "take" => (Self::Take, 1, 1),
            "count" => (Self::Count, 0, 0),
            "distinct" => (Self::Distinct, 0, 0),
            "single" => (Self::Single, 0, 0),
            "resolve" => (Self::Resolve, 0, 0),
            "extension" => (Self::Extension, 1, 1),
            "hasValue" => (Self::HasValue, 0, 0),
            "trace" => (Self::Trace, 1, 2),
            "iif" => (Self::Iif, 2, 3),
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    Mul,
    Div,
    DivInt,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Equiv,
    Ne,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// Why an expression could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// Byte offset in the expression.
    pub pos: usize,
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.message, self.pos)
    }
}

impl std::error::Error for ParseError {}

/// Why an evaluation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvalError {
    /// The expression did more work than allowed on this resource.
    Budget,
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Budget => f.write_str("FHIRPath evaluation exceeded its work budget"),
        }
    }
}

impl std::error::Error for EvalError {}

// ---------------------------------------------------------------------------------------------
// Lexer

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A backtick-delimited identifier: never a keyword.
    Quoted(String),
    Str(String),
    Num(String),
    Date(String),
    Env(String),
    Dollar(String),
    Punct(&'static str),
}

fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let err = |pos: usize, m: &str| ParseError {
        pos,
        message: m.to_string(),
    };
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if c == b'/' && b.get(i + 1) == Some(&b'*') {
            let rest = src.get(i + 2..).unwrap_or_default();
            let end = rest
                .find("*/")
                .ok_or_else(|| err(i, "unterminated comment"))?;
            i += 2 + end + 2;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((start, Tok::Ident(src[start..i].to_string())));
            continue;
        }
        if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if b.get(i) == Some(&b'.') && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
            }
            out.push((start, Tok::Num(src[start..i].to_string())));
            continue;
        }
        match c {
            b'\'' | b'`' => {
                let (s, next) =
                    lex_quoted(src, i, c).ok_or_else(|| err(i, "unterminated string"))?;
                i = next;
                out.push((
                    start,
                    if c == b'\'' {
                        Tok::Str(s)
                    } else {
                        Tok::Quoted(s)
                    },
                ));
            }
            b'@' => {
                i += 1;
                while i < b.len()
                    && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b':' | b'.' | b'+'))
                {
                    i += 1;
                }
                out.push((start, Tok::Date(src[start + 1..i].to_string())));
            }
            b'%' => {
                i += 1;
                let name = if b.get(i) == Some(&b'`') || b.get(i) == Some(&b'\'') {
                    let q = b[i];
                    let (s, next) =
                        lex_quoted(src, i, q).ok_or_else(|| err(i, "unterminated name"))?;
                    i = next;
                    s
                } else {
                    let s = i;
                    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                        i += 1;
                    }
                    src[s..i].to_string()
                };
                out.push((start, Tok::Env(name)));
            }
            b'$' => {
                i += 1;
                let s = i;
                while i < b.len() && b[i].is_ascii_alphabetic() {
                    i += 1;
                }
                out.push((start, Tok::Dollar(src[s..i].to_string())));
            }
            _ => {
                const PUNCTS: [&str; 19] = [
                    "!=", "!~", "<=", ">=", ".", "(", ")", "[", "]", ",", "|", "=", "~", "<", ">",
                    "+", "-", "*", "/",
                ];
                let rest = &b[i..];
                let p = PUNCTS
                    .iter()
                    .chain(["&", "{", "}"].iter())
                    .find(|p| rest.starts_with(p.as_bytes()))
                    .ok_or_else(|| err(i, "unexpected character"))?;
                i += p.len();
                out.push((start, Tok::Punct(p)));
            }
        }
    }
    Ok(out)
}

/// Reads a `'…'` or `` `…` `` literal starting at `start`; returns the unescaped text and the
/// offset after the closing quote.
fn lex_quoted(src: &str, start: usize, quote: u8) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = src.get(start + 1..)?.char_indices();
    while let Some((off, c)) = chars.next() {
        if c as u32 == u32::from(quote) {
            return Some((out, start + 1 + off + 1));
        }
        if c != '\\' {
            out.push(c);
            continue;
        }
        let (_, e) = chars.next()?;
        match e {
            'n' => out.push('\n'),
            'r' => out.push('\r'),
            't' => out.push('\t'),
            'f' => out.push('\u{c}'),
            'u' => {
                let mut code = 0u32;
                for _ in 0..4 {
                    code = code * 16 + chars.next()?.1.to_digit(16)?;
                }
                out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            other => out.push(other),
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Parser (precedence climbing, FHIRPath operator precedence)

/// Parses a FHIRPath expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ParseError {
            pos: 0,
            message: "expression too long".into(),
        });
    }
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        len: src.len(),
    };
    let e = p.expr(0)?;
    if p.pos != p.toks.len() {
        return Err(p.err("unexpected token"));
    }
    if depth(&e) > MAX_DEPTH {
        return Err(ParseError {
            pos: 0,
            message: "expression nested too deeply".into(),
        });
    }
    Ok(e)
}

/// Height of the syntax tree.
fn depth(e: &Expr) -> usize {
    1 + match e {
        Expr::Empty | Expr::Literal(_) | Expr::This | Expr::Env(_) | Expr::Ident(_) => 0,
        Expr::Member(f, _) | Expr::Neg(f) => depth(f),
        Expr::Type(f, _, _) => f.as_deref().map_or(0, depth),
        Expr::Call(f, _, args) => {
            let a = args.iter().map(depth).max().unwrap_or(0);
            a.max(f.as_deref().map_or(0, depth))
        }
        Expr::Index(a, b) | Expr::Binary(_, a, b) => depth(a).max(depth(b)),
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
    len: usize,
}

/// Binary operators by precedence level, lowest first.
const LEVELS: &[&[(&str, BinOp)]] = &[
    &[("implies", BinOp::Implies)],
    &[("or", BinOp::Or), ("xor", BinOp::Xor)],
    &[("and", BinOp::And)],
    &[("in", BinOp::In), ("contains", BinOp::Contains)],
    &[
        ("=", BinOp::Eq),
        ("~", BinOp::Equiv),
        ("!=", BinOp::Ne),
        ("!~", BinOp::NotEquiv),
    ],
    &[
        ("<=", BinOp::Le),
        (">=", BinOp::Ge),
        ("<", BinOp::Lt),
        (">", BinOp::Gt),
    ],
    &[("|", BinOp::Union)],
    // level 7: `is` / `as` (handled specially)
    &[],
    &[("+", BinOp::Add), ("-", BinOp::Sub), ("&", BinOp::Concat)],
    &[
        ("*", BinOp::Mul),
        ("/", BinOp::Div),
        ("div", BinOp::DivInt),
        ("mod", BinOp::Mod),
    ],
];
const TYPE_LEVEL: usize = 7;

impl Parser {
    fn err(&self, m: &str) -> ParseError {
        let pos = self.toks.get(self.pos).map_or(self.len, |t| t.0);
        ParseError {
            pos,
            message: m.to_string(),
        }
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Tok::Punct(q)) if *q == p)
    }

    fn expect(&mut self, p: &str) -> Result<(), ParseError> {
        if self.is_punct(p) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("expected `{p}`")))
        }
    }

    /// The operator at the cursor if it belongs to `level`.
    fn op_at(&self, level: usize) -> Option<BinOp> {
        let tok = self.peek()?;
        LEVELS.get(level)?.iter().find_map(|(s, op)| {
            let hit = match tok {
                Tok::Punct(p) => p == s,
                Tok::Ident(w) => w == s,
                _ => false,
            };
            hit.then_some(*op)
        })
    }

    /// Parses a nested full expression (in parentheses, brackets or arguments), bounding the
    /// parser's recursion.
    fn nested(&mut self) -> Result<Expr, ParseError> {
        if self.depth >= MAX_NESTING {
            return Err(self.err("expression nested too deeply"));
        }
        self.depth += 1;
        let r = self.expr(0);
        self.depth -= 1;
        r
    }

    fn expr(&mut self, level: usize) -> Result<Expr, ParseError> {
        if level >= LEVELS.len() {
            return self.unary();
        }
        let mut left = self.expr(level + 1)?;
        loop {
            if level == TYPE_LEVEL {
                let op = match self.peek() {
                    Some(Tok::Ident(w)) if w == "is" => TypeOp::Is,
                    Some(Tok::Ident(w)) if w == "as" => TypeOp::As,
                    _ => break,
                };
                self.pos += 1;
                let t = self.type_spec()?;
                left = Expr::Type(Some(Box::new(left)), op, t);
                continue;
            }
            let Some(op) = self.op_at(level) else { break };
            self.pos += 1;
            let right = self.expr(level + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn type_spec(&mut self) -> Result<String, ParseError> {
        let mut name = self.ident()?;
        while self.is_punct(".") {
            self.pos += 1;
            name = self.ident()?; // `FHIR.Quantity` → `Quantity`
        }
        Ok(name)
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Some(Tok::Ident(s) | Tok::Quoted(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.err("expected an identifier")),
        }
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        if self.is_punct("-") || self.is_punct("+") {
            let neg = self.is_punct("-");
            self.pos += 1;
            if self.depth >= MAX_NESTING {
                return Err(self.err("expression nested too deeply"));
            }
            self.depth += 1;
            let e = self.unary();
            self.depth -= 1;
            let e = e?;
            return Ok(if neg { Expr::Neg(Box::new(e)) } else { e });
        }
        self.postfix()
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut e = self.term()?;
        loop {
            if self.is_punct(".") {
                self.pos += 1;
                let name = self.ident()?;
                e = self.invocation(Some(e), name)?;
            } else if self.is_punct("[") {
                self.pos += 1;
                let idx = self.nested()?;
                self.expect("]")?;
                e = Expr::Index(Box::new(e), Box::new(idx));
            } else {
                return Ok(e);
            }
        }
    }

    /// `name` or `name(args)` applied to `focus` (None: the path start / `$this`).
    fn invocation(&mut self, focus: Option<Expr>, name: String) -> Result<Expr, ParseError> {
        if !self.is_punct("(") {
            return Ok(match focus {
                Some(f) => Expr::Member(Box::new(f), name),
                None => Expr::Ident(name),
            });
        }
        self.pos += 1;
        let focus = focus.map(Box::new);
        let type_op = match name.as_str() {
            "as" => Some(TypeOp::As),
            "is" => Some(TypeOp::Is),
            "ofType" => Some(TypeOp::OfType),
            _ => None,
        };
        if let Some(op) = type_op {
            let t = self.type_spec()?;
            self.expect(")")?;
            return Ok(Expr::Type(focus, op, t));
        }
        let mut args = Vec::new();
        if !self.is_punct(")") {
            loop {
                args.push(self.nested()?);
                if self.is_punct(",") {
                    self.pos += 1;
                } else {
                    break;
                }
            }
        }
        self.expect(")")?;
        let (func, min, max) = Func::by_name(&name)
            .ok_or_else(|| self.err(&format!("unsupported function `{name}`")))?;
        if args.len() < min || args.len() > max {
            return Err(self.err(&format!("wrong number of arguments to `{name}`")));
        }
        Ok(Expr::Call(focus, func, args))
    }

    fn term(&mut self) -> Result<Expr, ParseError> {
        let Some(tok) = self.peek().cloned() else {
            return Err(self.err("unexpected end of expression"));
        };
        self.pos += 1;
        match tok {
            Tok::Str(s) => Ok(Expr::Literal(Value::String(s))),
            Tok::Date(s) => Ok(Expr::Literal(Value::String(s))),
            Tok::Num(n) => {
                let v = match n.parse::<i64>() {
                    Ok(i) => Value::from(i),
                    Err(_) => n
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                        .ok_or_else(|| self.err("bad number"))?,
                };
                Ok(Expr::Literal(v))
            }
            Tok::Env(name) => match name.as_str() {
                "resource" | "rootResource" | "context" => Ok(Expr::Env(EnvVar::Resource)),
                "ucum" => Ok(Expr::Literal(Value::String(
                    "http://unitsofmeasure.org".into(),
                ))),
                "sct" => Ok(Expr::Literal(Value::String(
                    "http://snomed.info/sct".into(),
                ))),
                "loinc" => Ok(Expr::Literal(Value::String("http://loinc.org".into()))),
                _ => Err(self.err(&format!("unknown environment variable %{name}"))),
            },
            Tok::Dollar(name) if name == "this" => Ok(Expr::This),
            Tok::Dollar(name) => Err(self.err(&format!("unsupported variable ${name}"))),
            Tok::Punct("(") => {
                let e = self.nested()?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                Ok(Expr::Empty)
            }
            Tok::Ident(w) if w == "true" || w == "false" => {
                Ok(Expr::Literal(Value::Bool(w == "true")))
            }
            Tok::Ident(name) | Tok::Quoted(name) => self.invocation(None, name),
            Tok::Punct(_) => {
                self.pos -= 1;
                Err(self.err("unexpected token"))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Evaluation

/// One item of a result collection: a JSON value from the resource (or computed), and its FHIR
/// type when the path told it (a choice element's suffix: `valueQuantity` → `Quantity`).
#[derive(Debug, Clone, PartialEq)]
pub struct Node<'a> {
    pub value: Cow<'a, Value>,
    /// The FHIR type name from a choice element suffix, or the type a `resolve()` stand-in
    /// points to. Resources carry their type in `resourceType`.
    pub type_name: Option<&'a str>,
    /// A `resolve()` stand-in: `value` is the Reference, `type_name` the target type; it has no
    /// children.
    pub resolved: bool,
}

impl<'a> Node<'a> {
    fn borrowed(value: &'a Value, type_name: Option<&'a str>) -> Self {
        Node {
            value: Cow::Borrowed(value),
            type_name,
            resolved: false,
        }
    }

    fn owned(value: Value) -> Self {
        Node {
            value: Cow::Owned(value),
            type_name: None,
            resolved: false,
        }
    }

    fn boolean(b: bool) -> Self {
        Self::owned(Value::Bool(b))
    }
}

/// Evaluates `expr` with `resource` as the context (`$this` and `%resource`).
pub fn evaluate<'a>(expr: &Expr, resource: &'a Value) -> Result<Vec<Node<'a>>, EvalError> {
    let mut ev = Evaluator {
        root: resource,
        budget: BUDGET,
    };
    let input = [Node::borrowed(resource, None)];
    ev.eval(expr, &input)
}

/// FHIR data type names that may appear as choice-element suffixes, spelled as in FHIR.
const CHOICE_TYPES: &[&str] = &[
    "base64Binary",
    "boolean",
    "canonical",
    "code",
    "date",
    "dateTime",
    "decimal",
    "id",
    "instant",
    "integer",
    "integer64",
    "markdown",
    "oid",
    "positiveInt",
    "string",
    "time",
    "unsignedInt",
    "uri",
    "url",
    "uuid",
    "Address",
    "Age",
    "Annotation",
    "Attachment",
    "Availability",
    "CodeableConcept",
    "CodeableReference",
    "Coding",
    "ContactDetail",
    "ContactPoint",
    "Contributor",
    "Count",
    "DataRequirement",
    "Distance",
    "Dosage",
    "Duration",
    "Expression",
    "ExtendedContactDetail",
    "HumanName",
    "Identifier",
    "Meta",
    "Money",
    "ParameterDefinition",
    "Period",
    "Quantity",
    "Range",
    "Ratio",
    "RatioRange",
    "Reference",
    "RelatedArtifact",
    "SampledData",
    "Signature",
    "Timing",
    "TriggerDefinition",
    "UsageContext",
];

const NUMERIC_TYPES: &[&str] = &[
    "decimal",
    "integer",
    "integer64",
    "positiveInt",
    "unsignedInt",
];
const QUANTITY_SUBTYPES: &[&str] = &[
    "Age",
    "Count",
    "Distance",
    "Duration",
    "MoneyQuantity",
    "SimpleQuantity",
];

/// The choice type named by `suffix` (`DateTime` → `dateTime`, `Quantity` → `Quantity`).
fn choice_type(suffix: &str) -> Option<&'static str> {
    let first = suffix.chars().next()?;
    if !first.is_ascii_uppercase() {
        return None;
    }
    CHOICE_TYPES.iter().copied().find(|t| {
        t.len() == suffix.len()
            && t.get(..1)
                .is_some_and(|f| f.eq_ignore_ascii_case(&suffix[..1]))
            && t.get(1..) == suffix.get(1..)
    })
}

fn is_primitive_type(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_lowercase())
}

/// Type and id from a reference: `Type/id`, `Type/id/_history/v`, or an absolute URL ending in
/// one of those. `None` for anything else (`#frag`, `urn:uuid:…`, conditional references…).
pub fn reference_type_id(reference: &str) -> Option<(&str, &str)> {
    let r = match reference.rfind("/_history/") {
        Some(pos) => &reference[..pos],
        None => reference,
    };
    let absolute = r.contains("://");
    let (rest, id) = r.rsplit_once('/')?;
    let (base, rtype) = match rest.rsplit_once('/') {
        Some((b, t)) => (Some(b), t),
        None => (None, rest),
    };
    if base.is_some() && !absolute {
        return None;
    }
    let type_ok = rtype.starts_with(|c: char| c.is_ascii_uppercase())
        && rtype.bytes().all(|b| b.is_ascii_alphanumeric());
    let id_ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    (type_ok && id_ok).then_some((rtype, id))
}

struct Evaluator<'a> {
    root: &'a Value,
    budget: usize,
}

type Coll<'a> = Vec<Node<'a>>;

impl<'a> Evaluator<'a> {
    fn spend(&mut self, n: usize) -> Result<(), EvalError> {
        self.budget = self.budget.checked_sub(n).ok_or(EvalError::Budget)?;
        Ok(())
    }

    fn eval(&mut self, expr: &Expr, input: &[Node<'a>]) -> Result<Coll<'a>, EvalError> {
        self.spend(1)?;
        let out = match expr {
            Expr::Empty => Vec::new(),
            Expr::Literal(v) => vec![Node::owned(v.clone())],
            Expr::This => input.to_vec(),
            Expr::Env(EnvVar::Resource) => vec![Node::borrowed(self.root, None)],
            Expr::Ident(name) => {
                let mut out = Vec::new();
                for n in input {
                    if is_type_name_of(n, name) {
                        out.push(n.clone());
                    } else {
                        self.children(n, name, &mut out)?;
                    }
                }
                out
            }
            Expr::Member(focus, name) => {
                let focus = self.eval(focus, input)?;
                let mut out = Vec::new();
                for n in &focus {
                    self.children(n, name, &mut out)?;
                }
                out
            }
            Expr::Index(focus, idx) => {
                let focus = self.eval(focus, input)?;
                let idx = self.eval(idx, input)?;
                match single_number(&idx) {
                    Some(i) if i >= 0.0 && i.fract() == 0.0 => {
                        focus.into_iter().nth(i as usize).into_iter().collect()
                    }
                    _ => Vec::new(),
                }
            }
            Expr::Type(focus, op, t) => {
                let focus = match focus {
                    Some(f) => self.eval(f, input)?,
                    None => input.to_vec(),
                };
                match op {
                    TypeOp::As | TypeOp::OfType => {
                        focus.into_iter().filter(|n| node_is(n, t)).collect()
                    }
                    TypeOp::Is => match focus.as_slice() {
                        [n] => vec![Node::boolean(node_is(n, t))],
                        _ => Vec::new(),
                    },
                }
            }
            Expr::Call(focus, func, args) => {
                let focus = match focus {
                    Some(f) => self.eval(f, input)?,
                    None => input.to_vec(),
                };
                self.call(*func, focus, args, input)?
            }
            Expr::Neg(e) => {
                let v = self.eval(e, input)?;
                match single_number(&v) {
                    Some(x) => number(-x).into_iter().collect(),
                    None => Vec::new(),
                }
            }
            Expr::Binary(op, l, r) => self.binary(*op, l, r, input)?,
        };
        self.spend(out.len())?;
        Ok(out)
    }

    /// The children called `name` of `node`, repeating elements flattened; finds choice
    /// elements (`value` → `valueQuantity`) when there is no exact match.
    fn children(
        &mut self,
        node: &Node<'a>,
        name: &str,
        out: &mut Coll<'a>,
    ) -> Result<(), EvalError> {
        if node.resolved {
            return Ok(());
        }
        let Cow::Borrowed(value) = node.value else {
            // Computed values (literals, booleans) have no children.
            return Ok(());
        };
        let Some(obj) = value.as_object() else {
            return Ok(());
        };
        let mut push = |v: &'a Value, t: Option<&'a str>| match v {
            Value::Array(items) => out.extend(
                items
                    .iter()
                    .filter(|i| !i.is_null())
                    .map(|i| Node::borrowed(i, t)),
            ),
            Value::Null => {}
            v => out.push(Node::borrowed(v, t)),
        };
        if let Some(v) = obj.get(name) {
            push(v, None);
            return Ok(());
        }
        self.spend(obj.len())?;
        for (k, v) in obj {
            if let Some(t) = k.strip_prefix(name).and_then(choice_type) {
                push(v, Some(t));
            }
        }
        Ok(())
    }

    fn call(
        &mut self,
        func: Func,
        focus: Coll<'a>,
        args: &[Expr],
        input: &[Node<'a>],
    ) -> Result<Coll<'a>, EvalError> {
        let arg = |i: usize| args.get(i);
        Ok(match func {
            Func::Where => {
                let mut out = Vec::new();
                for n in focus {
                    if let Some(crit) = arg(0) {
                        let r = self.eval(crit, std::slice::from_ref(&n))?;
                        if truthy(&r) == Some(true) {
                            out.push(n);
                        }
                    }
                }
                out
            }
            Func::Select => {
                let mut out = Vec::new();
                for n in focus {
                    if let Some(proj) = arg(0) {
                        out.extend(self.eval(proj, std::slice::from_ref(&n))?);
                    }
                }
                out
            }
            Func::Exists => {
                let found = match arg(0) {
                    None => !focus.is_empty(),
                    Some(crit) => {
                        let mut any = false;
                        for n in focus {
                            if truthy(&self.eval(crit, std::slice::from_ref(&n))?) == Some(true) {
                                any = true;
                                break;
                            }
                        }
                        any
                    }
                };
                vec![Node::boolean(found)]
            }
            Func::All => {
                let mut all = true;
                for n in focus {
                    if let Some(crit) = arg(0) {
                        if truthy(&self.eval(crit, std::slice::from_ref(&n))?) != Some(true) {
                            all = false;
                            break;
                        }
                    }
                }
                vec![Node::boolean(all)]
            }
            Func::Empty => vec![Node::boolean(focus.is_empty())],
            Func::Not => match truthy(&focus) {
                Some(b) => vec![Node::boolean(!b)],
                None => Vec::new(),
            },
            Func::First => focus.into_iter().take(1).collect(),
            Func::Last => focus.into_iter().last().into_iter().collect(),
            Func::Tail => focus.into_iter().skip(1).collect(),
            Func::Skip | Func::Take => {
                let n = match arg(0) {
                    Some(a) => single_number(&self.eval(a, input)?),
                    None => None,
                };
                let n = n.filter(|n| *n >= 0.0).map_or(0, |n| n as usize);
                if func == Func::Skip {
                    focus.into_iter().skip(n).collect()
                } else {
                    focus.into_iter().take(n).collect()
                }
            }
            Func::Count => vec![Node::owned(Value::from(focus.len()))],
            Func::Distinct => self.dedup(focus)?,
            Func::Single => {
                if focus.len() == 1 {
                    focus
                } else {
                    Vec::new()
                }
            }
            Func::Resolve => focus.iter().filter_map(|n| self.resolve(n)).collect(),
            Func::Extension => {
                let url = match arg(0) {
                    Some(a) => self.eval(a, input)?,
                    None => Vec::new(),
                };
                let Some(url) = single_str(&url).map(str::to_string) else {
                    return Ok(Vec::new());
                };
                let mut exts = Vec::new();
                for n in &focus {
                    self.children(n, "extension", &mut exts)?;
                }
                exts.retain(|e| e.value.get("url").and_then(Value::as_str) == Some(url.as_str()));
                exts
            }
            Func::HasValue => {
                let has = matches!(focus.as_slice(), [n] if !n.resolved
                    && matches!(*n.value, Value::Bool(_) | Value::Number(_) | Value::String(_)));
                vec![Node::boolean(has)]
            }
            Func::Trace => focus,
            Func::Iif => {
                // The criterion and branches are evaluated against the focus (or `$this`).
                let ctx: &[Node<'a>] = if focus.is_empty() { input } else { &focus };
                let cond = match arg(0) {
                    Some(c) => truthy(&self.eval(c, ctx)?) == Some(true),
                    None => false,
                };
                match arg(if cond { 1 } else { 2 }) {
                    Some(branch) => self.eval(branch, ctx)?,
                    None => Vec::new(),
                }
            }
        })
    }

    /// The stand-in for the resource a Reference (or canonical/uri string) points to.
    fn resolve(&self, n: &Node<'a>) -> Option<Node<'a>> {
        let Cow::Borrowed(v) = n.value else {
            return None;
        };
        let reference = match v {
            Value::String(s) => Some(s.as_str()),
            Value::Object(o) => o.get("reference").and_then(Value::as_str),
            _ => None,
        };
        let rtype = match reference {
            Some(r) if r.starts_with('#') => self.root["contained"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c.get("id").and_then(Value::as_str) == r.get(1..))
                .and_then(|c| c.get("resourceType"))
                .and_then(Value::as_str),
            Some(r) => reference_type_id(r).map(|(t, _)| t),
            None => None,
        };
        let rtype = rtype.or_else(|| v.get("type").and_then(Value::as_str))?;
        Some(Node {
            value: Cow::Borrowed(v),
            type_name: Some(rtype),
            resolved: true,
        })
    }

    fn dedup(&mut self, items: Coll<'a>) -> Result<Coll<'a>, EvalError> {
        let mut out: Coll<'a> = Vec::with_capacity(items.len());
        for n in items {
            self.spend(out.len())?;
            if !out.iter().any(|o| same_item(o, &n)) {
                out.push(n);
            }
        }
        Ok(out)
    }

    fn binary(
        &mut self,
        op: BinOp,
        l: &Expr,
        r: &Expr,
        input: &[Node<'a>],
    ) -> Result<Coll<'a>, EvalError> {
        let left = self.eval(l, input)?;
        // Short-circuit the boolean operators where the answer is already known.
        match (op, truthy(&left)) {
            (BinOp::And, Some(false)) => return Ok(vec![Node::boolean(false)]),
            (BinOp::Or, Some(true)) => return Ok(vec![Node::boolean(true)]),
            (BinOp::Implies, Some(false)) => return Ok(vec![Node::boolean(true)]),
            _ => {}
        }
        let right = self.eval(r, input)?;
        let b = |v: Option<bool>| v.map(Node::boolean).into_iter().collect::<Coll<'a>>();
        Ok(match op {
            BinOp::Union => {
                let mut all = left;
                all.extend(right);
                self.dedup(all)?
            }
            BinOp::And => match (truthy(&left), truthy(&right)) {
                (Some(true), Some(true)) => b(Some(true)),
                (_, Some(false)) | (Some(false), _) => b(Some(false)),
                _ => Vec::new(),
            },
            BinOp::Or => match (truthy(&left), truthy(&right)) {
                (_, Some(true)) | (Some(true), _) => b(Some(true)),
                (Some(false), Some(false)) => b(Some(false)),
                _ => Vec::new(),
            },
            BinOp::Xor => match (truthy(&left), truthy(&right)) {
                (Some(x), Some(y)) => b(Some(x != y)),
                _ => Vec::new(),
            },
            BinOp::Implies => match (truthy(&left), truthy(&right)) {
                (_, Some(true)) => b(Some(true)),
                (Some(true), Some(false)) => b(Some(false)),
                _ => Vec::new(),
            },
            BinOp::Eq | BinOp::Ne => {
                if left.is_empty() || right.is_empty() {
                    return Ok(Vec::new());
                }
                self.spend(left.len())?;
                let eq = if left.len() != right.len() {
                    Some(false)
                } else {
                    let mut all = Some(true);
                    for (x, y) in left.iter().zip(&right) {
                        match values_equal(&x.value, &y.value) {
                            Some(true) => {}
                            Some(false) => {
                                all = Some(false);
                                break;
                            }
                            None => all = None,
                        }
                    }
                    all
                };
                b(if op == BinOp::Eq { eq } else { eq.map(|e| !e) })
            }
            BinOp::Equiv | BinOp::NotEquiv => {
                self.spend(left.len())?;
                let eq = left.len() == right.len()
                    && left
                        .iter()
                        .zip(&right)
                        .all(|(x, y)| values_equivalent(&x.value, &y.value));
                b(Some(if op == BinOp::Equiv { eq } else { !eq }))
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = match (left.as_slice(), right.as_slice()) {
                    ([x], [y]) => compare(&x.value, &y.value),
                    _ => None,
                };
                b(ord.map(|o| match op {
                    BinOp::Lt => o.is_lt(),
                    BinOp::Le => o.is_le(),
                    BinOp::Gt => o.is_gt(),
                    _ => o.is_ge(),
                }))
            }
            BinOp::In | BinOp::Contains => {
                let (item, coll) = if op == BinOp::In {
                    (&left, &right)
                } else {
                    (&right, &left)
                };
                match item.as_slice() {
                    [x] => {
                        self.spend(coll.len())?;
                        b(Some(
                            coll.iter()
                                .any(|c| values_equal(&c.value, &x.value) == Some(true)),
                        ))
                    }
                    _ => Vec::new(),
                }
            }
            BinOp::Concat => {
                let s = |c: &Coll<'a>| single_str(c).unwrap_or_default().to_string();
                vec![Node::owned(Value::String(s(&left) + &s(&right)))]
            }
            BinOp::Add if single_str(&left).is_some() && single_str(&right).is_some() => {
                let s = format!(
                    "{}{}",
                    single_str(&left).unwrap_or_default(),
                    single_str(&right).unwrap_or_default()
                );
                vec![Node::owned(Value::String(s))]
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::DivInt | BinOp::Mod => {
                let (Some(x), Some(y)) = (single_number(&left), single_number(&right)) else {
                    return Ok(Vec::new());
                };
                let v = match op {
                    BinOp::Add => Some(x + y),
                    BinOp::Sub => Some(x - y),
                    BinOp::Mul => Some(x * y),
                    BinOp::Div => (y != 0.0).then(|| x / y),
                    BinOp::DivInt => (y != 0.0).then(|| (x / y).trunc()),
                    _ => (y != 0.0).then(|| x % y),
                };
                v.and_then(number).into_iter().collect()
            }
        })
    }
}

/// Duplicate test of `|` and `distinct()`: nodes taken from the resource are the same item when
/// they are the same JSON node (no deep comparison of large objects); computed values compare
/// by value.
fn same_item(a: &Node<'_>, b: &Node<'_>) -> bool {
    match (&a.value, &b.value) {
        (Cow::Borrowed(x), Cow::Borrowed(y)) => std::ptr::eq(*x, *y) && a.resolved == b.resolved,
        (x, y) => values_equal(x, y) == Some(true),
    }
}

/// Whether the identifier `name` at the start of a path names the focus's type
/// (`Patient.name` evaluated on a Patient).
fn is_type_name_of(n: &Node<'_>, name: &str) -> bool {
    if !name.starts_with(|c: char| c.is_ascii_uppercase()) || n.resolved {
        return false;
    }
    match n.value.get("resourceType").and_then(Value::as_str) {
        Some(rt) => rt == name || name == "Resource" || name == "DomainResource",
        None => false,
    }
}

/// FHIRPath `is`: whether the node is of type `t` (or a subtype). Without type information the
/// JSON shape decides (booleans, numbers, strings, objects).
fn node_is(n: &Node<'_>, t: &str) -> bool {
    let resource_type = if n.resolved {
        n.type_name
    } else {
        n.value.get("resourceType").and_then(Value::as_str)
    };
    if let Some(rt) = resource_type {
        return rt == t || t == "Resource" || t == "DomainResource";
    }
    if let Some(known) = n.type_name {
        return known.eq_ignore_ascii_case(t)
            || (t == "Quantity" && QUANTITY_SUBTYPES.contains(&known))
            || (t.eq_ignore_ascii_case("string") && matches!(known, "code" | "id" | "markdown"))
            || (t.eq_ignore_ascii_case("uri")
                && matches!(known, "url" | "canonical" | "oid" | "uuid"));
    }
    match &*n.value {
        Value::Bool(_) => t.eq_ignore_ascii_case("boolean"),
        Value::Number(_) => NUMERIC_TYPES.iter().any(|x| x.eq_ignore_ascii_case(t)),
        Value::String(_) => {
            (is_primitive_type(t) || t == "String" || t == "DateTime" || t == "Date" || t == "Time")
                && !t.eq_ignore_ascii_case("boolean")
                && !NUMERIC_TYPES.iter().any(|x| x.eq_ignore_ascii_case(t))
        }
        Value::Object(_) => !is_primitive_type(t),
        _ => false,
    }
}

/// Singleton evaluation of a collection as a boolean: `None` for empty.
fn truthy(c: &[Node<'_>]) -> Option<bool> {
    match c {
        [] => None,
        [n] => Some(n.value.as_bool().unwrap_or(true)),
        _ => Some(true),
    }
}

fn single_number(c: &[Node<'_>]) -> Option<f64> {
    match c {
        [n] => n.value.as_f64(),
        _ => None,
    }
}

fn single_str<'b>(c: &'b [Node<'_>]) -> Option<&'b str> {
    match c {
        [n] => n.value.as_str(),
        _ => None,
    }
}

fn number(x: f64) -> Option<Node<'static>> {
    if x.is_finite() && x.fract() == 0.0 && x.abs() < 9.0e15 {
        Some(Node::owned(Value::from(x as i64)))
    } else {
        serde_json::Number::from_f64(x).map(|n| Node::owned(Value::Number(n)))
    }
}

/// FHIRPath `=` on two items: `None` when not comparable (e.g. dates of different precision
/// are not handled: they compare as strings).
fn values_equal(a: &Value, b: &Value) -> Option<bool> {
    Some(match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Object(_), Value::Object(_)) | (Value::Array(_), Value::Array(_)) => a == b,
        (Value::Null, _) | (_, Value::Null) => return None,
        _ => false,
    })
}

fn values_equivalent(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(x), Value::String(y)) => {
            let norm = |s: &str| {
                s.split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase()
            };
            norm(x) == norm(y)
        }
        _ => values_equal(a, b) == Some(true),
    }
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval_on(expr: &str, res: &Value) -> Vec<Value> {
        let e = parse(expr).unwrap_or_else(|err| panic!("{expr}: {err}"));
        evaluate(&e, res)
            .unwrap()
            .into_iter()
            .map(|n| n.value.into_owned())
            .collect()
    }

    fn patient() -> Value {
        json!({
            "resourceType": "Patient",
            "id": "p1",
            "name": [
                {"family": "Müller", "given": ["Anna", "Maria"]},
                {"family": "Smith", "given": ["Ann"]}
            ],
            "telecom": [
                {"system": "phone", "value": "+41 44 000 00 00"},
                {"system": "email", "value": "anna@example.org"}
            ],
            "deceasedDateTime": "2020-01-01",
            "extension": [
                {"url": "http://example.org/a", "valueString": "A"},
                {"url": "http://example.org/b", "valueQuantity": {"value": 3, "unit": "kg"}}
            ],
            "generalPractitioner": [
                {"reference": "Practitioner/dr1"},
                {"reference": "Organization/o1"},
                {"reference": "https://other.example/fhir/Practitioner/dr2/_history/3"},
                {"type": "Practitioner", "identifier": {"value": "x"}},
                {"reference": "#c1"}
            ],
            "contained": [{"resourceType": "Practitioner", "id": "c1"}]
        })
    }

    #[test]
    fn paths_flatten_arrays() {
        let p = patient();
        assert_eq!(
            eval_on("Patient.name.given", &p),
            vec![json!("Anna"), json!("Maria"), json!("Ann")]
        );
        assert_eq!(
            eval_on("Patient.name.family.first()", &p),
            vec![json!("Müller")]
        );
        assert_eq!(eval_on("name[1].family", &p), vec![json!("Smith")]);
        assert!(eval_on("Practitioner.name", &p).is_empty());
        assert_eq!(eval_on("Resource.id", &p), vec![json!("p1")]);
        assert_eq!(eval_on("Patient.name.given.count()", &p), vec![json!(3)]);
    }

    #[test]
    fn choice_types() {
        let p = patient();
        assert_eq!(eval_on("Patient.deceased", &p), vec![json!("2020-01-01")]);
        assert_eq!(
            eval_on("(Patient.deceased as dateTime)", &p),
            vec![json!("2020-01-01")]
        );
        assert!(eval_on("Patient.deceased as boolean", &p).is_empty());
        assert_eq!(
            eval_on("Patient.deceased.ofType(dateTime)", &p),
            vec![json!("2020-01-01")]
        );
        assert_eq!(
            eval_on("Patient.extension.value.as(Quantity).unit", &p),
            vec![json!("kg")]
        );
        assert_eq!(
            eval_on("Patient.extension.value is FHIR.Quantity", &p),
            Vec::<Value>::new()
        );
        assert_eq!(
            eval_on("Patient.extension[1].value is FHIR.Quantity", &p),
            vec![json!(true)]
        );
    }

    #[test]
    fn deceased_expression() {
        let e = "Patient.deceased.exists() and Patient.deceased != false";
        assert_eq!(eval_on(e, &patient()), vec![json!(true)]);
        let alive = json!({"resourceType": "Patient", "deceasedBoolean": false});
        assert_eq!(eval_on(e, &alive), vec![json!(false)]);
        let dead = json!({"resourceType": "Patient", "deceasedBoolean": true});
        assert_eq!(eval_on(e, &dead), vec![json!(true)]);
        let unknown = json!({"resourceType": "Patient"});
        assert_eq!(eval_on(e, &unknown), vec![json!(false)]);
    }

    #[test]
    fn where_and_resolve() {
        let p = patient();
        assert_eq!(
            eval_on("Patient.telecom.where(system='email').value", &p),
            vec![json!("anna@example.org")]
        );
        let refs = eval_on(
            "Patient.generalPractitioner.where(resolve() is Practitioner)",
            &p,
        );
        assert_eq!(refs.len(), 4);
        assert_eq!(refs[0], json!({"reference": "Practitioner/dr1"}));
        assert_eq!(refs[3], json!({"reference": "#c1"}));
        let orgs = eval_on(
            "Patient.generalPractitioner.where(resolve() is Organization)",
            &p,
        );
        assert_eq!(orgs, vec![json!({"reference": "Organization/o1"})]);
        assert!(eval_on("Patient.generalPractitioner.resolve().name", &p).is_empty());
    }

    #[test]
    fn extensions_and_unions() {
        let p = patient();
        assert_eq!(
            eval_on("Patient.extension('http://example.org/a').value", &p),
            vec![json!("A")]
        );
        assert_eq!(
            eval_on(
                "Patient.extension.where(url = 'http://example.org/a').value",
                &p
            ),
            vec![json!("A")]
        );
        assert_eq!(
            eval_on(
                "Patient.name.family | Patient.name[0].family | Patient.id",
                &p
            ),
            vec![json!("Müller"), json!("Smith"), json!("p1")]
        );
        assert_eq!(eval_on("(1 | 2 | 1).count()", &p), vec![json!(2)]);
        assert_eq!(eval_on("1 + 2 * 3", &p), vec![json!(7)]);
        assert_eq!(eval_on("'a' & 'b'", &p), vec![json!("ab")]);
        assert_eq!(
            eval_on("Patient.name.exists(family = 'Smith')", &p),
            vec![json!(true)]
        );
        assert_eq!(
            eval_on(
                "Patient.name.given.where($this = 'Ann' or $this = 'Anna')",
                &p
            )
            .len(),
            2
        );
        assert_eq!(
            eval_on("iif(id = 'p1', 'yes', 'no')", &p),
            vec![json!("yes")]
        );
        assert_eq!(eval_on("iif(id = 'p2', 'yes')", &p), Vec::<Value>::new());
    }

    #[test]
    fn references_are_split() {
        assert_eq!(reference_type_id("Patient/1"), Some(("Patient", "1")));
        assert_eq!(
            reference_type_id("Patient/1/_history/2"),
            Some(("Patient", "1"))
        );
        assert_eq!(
            reference_type_id("http://x.org/fhir/Slot/a-b.c"),
            Some(("Slot", "a-b.c"))
        );
        assert_eq!(reference_type_id("a/Patient/1"), None);
        assert_eq!(reference_type_id("urn:uuid:0f0e"), None);
        assert_eq!(reference_type_id("#x"), None);
        assert_eq!(reference_type_id("Patient?identifier=1"), None);
        assert_eq!(reference_type_id("patient/1"), None);
    }

    #[test]
    fn parse_errors_are_reported() {
        for bad in [
            "",
            "Patient.",
            "Patient.name.where(",
            "foo(1)",
            "a ++",
            "'open",
            "%nope",
            "a..b",
            ")",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let deep = "(".repeat(200) + "a" + &")".repeat(200);
        assert!(parse(&deep).is_err());
        let long_chain = vec!["a"; 500].join(".");
        assert!(parse(&long_chain).is_err());
    }

    #[test]
    fn evaluation_never_panics_on_odd_json() {
        let exprs = [
            "Patient.name.given",
            "Patient.deceased.exists() and Patient.deceased != false",
            "Patient.telecom.where(system='phone')",
            "Patient.link.other.where(resolve() is Patient)",
            "name[0] | name[-1] | name['x']",
            "Patient.extension('u').value.as(Quantity)",
            "1 / 0 | 1 div 0 | 1 mod 0 | -'a'",
        ];
        let odd = [
            json!(null),
            json!([]),
            json!("Patient"),
            json!({"resourceType": 3}),
            json!({"resourceType": "Patient", "name": [null, 1, "x", {"given": [null, {}]}]}),
            json!({"resourceType": "Patient", "telecom": {"system": ["phone"]}, "link": [{"other": 5}]}),
            json!({"resourceType": "Patient", "deceased": null, "deceasedFoo": 1, "extension": [{"url": 1}]}),
        ];
        for e in exprs {
            let e = parse(e).unwrap();
            for v in &odd {
                let _ = evaluate(&e, v);
            }
        }
    }

    #[test]
    fn work_is_bounded() {
        let many: Vec<Value> = (0..2000)
            .map(|i| json!({"given": [i.to_string()]}))
            .collect();
        let res = json!({"resourceType": "Patient", "name": many});
        // Quadratic: each name compares against all the others.
        let e =
            parse("Patient.name.where(given in %resource.name.given).given.distinct()").unwrap();
        assert_eq!(evaluate(&e, &res), Err(EvalError::Budget));
    }
}
