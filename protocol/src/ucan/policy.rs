//! The UCAN 1.0 policy language: constraints a delegation puts on invocation arguments.
//!
//! A [`Policy`] is a list of statements that must all hold on an invocation's `args`:
//!
//! ```text
//! ["==", ".doc", "automerge:…"]      ["!=", sel, value]    ["<" | "<=" | ">" | ">=", sel, number]
//! ["like", ".path", "/profile/*"]    ["not", stmt]         ["and", [stmt…]]   ["or", [stmt…]]
//! ["all", ".items", stmt]            ["any", ".to", stmt]
//! ```
//!
//! Selectors are the jq subset the spec allows: `.`, `.field`, `["field"]`, `[index]`,
//! `[-index]`, `[start:end]`, `[]` (values of a map; a no-op on lists), each optionally
//! followed by `?`. A missing map key selects `null`; anything else that cannot be
//! resolved makes the selector fail.
//!
//! Evaluation is three-valued (Kleene logic): true, false, or *unresolved* (a selector
//! failed). Unresolved never counts as true and a `not` of it stays unresolved, so a
//! statement whose outcome depends on a field that cannot be resolved never holds, not
//! even under negation. (`and` is false as soon as one part is false and `or` true as soon
//! as one part is true, whatever the unresolved parts would have been.) A policy holds only
//! if every statement is true.

use std::{cmp::Ordering, fmt};

use ipld_core::ipld::Ipld;

/// Deepest nesting of `not`/`and`/`or`/`all`/`any` accepted.
const MAX_POLICY_DEPTH: usize = 32;
/// Most statements in one policy, counting nested ones.
const MAX_POLICY_STATEMENTS: usize = 1024;
/// Longest selector text accepted.
const MAX_SELECTOR_LEN: usize = 1024;

/// Why a value is not a policy.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum PolicyError {
    /// The policy or a statement has the wrong shape.
    #[error("malformed policy: {0}")]
    Malformed(String),
    /// An operator that the spec does not define.
    #[error("unknown policy operator {0:?}")]
    UnknownOperator(String),
    /// A selector that does not parse.
    #[error("bad selector {selector:?}: {problem}")]
    BadSelector {
        /// The selector text.
        selector: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// A `like` pattern that does not parse.
    #[error("bad glob pattern {0:?}")]
    BadPattern(String),
    /// Nested too deeply or too many statements.
    #[error(
        "policy too large (at most {MAX_POLICY_STATEMENTS} statements, nesting {MAX_POLICY_DEPTH})"
    )]
    TooLarge,
}

fn malformed(what: impl Into<String>) -> PolicyError {
    PolicyError::Malformed(what.into())
}

/// A list of statements, all of which must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy(Vec<Statement>);

/// One policy statement.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Statement {
    /// `["==", sel, value]`: deep equality (numbers compare by value: `1 == 1.0`).
    Equal(Selector, Ipld),
    /// `["!=", sel, value]`: `["not", ["==", sel, value]]`.
    NotEqual(Selector, Ipld),
    /// `["<" | "<=" | ">" | ">=", sel, number]`: false for non-numbers.
    Compare(Selector, Comparison, Ipld),
    /// `["like", sel, pattern]`: anchored glob, `*` any run, `\*` a literal star.
    Like(Selector, Glob),
    /// `["not", stmt]`
    Not(Box<Statement>),
    /// `["and", [stmt…]]`: empty is true.
    And(Vec<Statement>),
    /// `["or", [stmt…]]`: empty is true.
    Or(Vec<Statement>),
    /// `["all", sel, stmt]`: every element of a list (or value of a map); false on others.
    All(Selector, Box<Statement>),
    /// `["any", sel, stmt]`: some element; false on non-collections and empty ones.
    Any(Selector, Box<Statement>),
}

/// An ordering operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
}

impl Comparison {
    fn operator(self) -> &'static str {
        match self {
            Self::Less => "<",
            Self::LessOrEqual => "<=",
            Self::Greater => ">",
            Self::GreaterOrEqual => ">=",
        }
    }

    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Self::Less => ordering == Ordering::Less,
            Self::LessOrEqual => ordering != Ordering::Greater,
            Self::Greater => ordering == Ordering::Greater,
            Self::GreaterOrEqual => ordering != Ordering::Less,
        }
    }
}

/// The outcome of evaluating a statement: `Err(Unresolved)` when a selector failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unresolved;

type Outcome = Result<bool, Unresolved>;

impl Policy {
    /// The statements.
    pub fn statements(&self) -> &[Statement] {
        &self.0
    }

    /// A policy from statements.
    pub fn new(statements: Vec<Statement>) -> Self {
        Self(statements)
    }

    /// Whether there are no constraints.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Parses the IPLD form (a list of statements).
    pub fn from_ipld(value: &Ipld) -> Result<Self, PolicyError> {
        let Ipld::List(items) = value else {
            return Err(malformed("a policy is a list of statements"));
        };
        Self::from_statements(items)
    }

    /// Parses the statements of the IPLD form.
    pub(crate) fn from_statements(items: &[Ipld]) -> Result<Self, PolicyError> {
        let mut budget = MAX_POLICY_STATEMENTS;
        items
            .iter()
            .map(|item| Statement::parse(item, 0, &mut budget))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Parses the JSON form used on the command line, e.g. `[["==", ".doc", "x"]]`.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|error| malformed(error.to_string()))?;
        let ipld =
            super::json::json_to_ipld(&value).map_err(|error| malformed(error.to_string()))?;
        Self::from_ipld(&ipld)
    }

    /// The IPLD form.
    pub fn to_ipld(&self) -> Ipld {
        Ipld::List(self.0.iter().map(Statement::to_ipld).collect())
    }

    /// Whether every statement holds on `args`.
    pub fn matches(&self, args: &Ipld) -> bool {
        self.0
            .iter()
            .all(|statement| statement.evaluate(args) == Ok(true))
    }
}

impl Statement {
    fn parse(value: &Ipld, depth: usize, budget: &mut usize) -> Result<Self, PolicyError> {
        if depth > MAX_POLICY_DEPTH || *budget == 0 {
            return Err(PolicyError::TooLarge);
        }
        *budget -= 1;
        let Ipld::List(parts) = value else {
            return Err(malformed("a statement is a list"));
        };
        let Some(Ipld::String(operator)) = parts.first() else {
            return Err(malformed("a statement starts with its operator"));
        };
        let arity = |n: usize| {
            if parts.len() == n {
                Ok(())
            } else {
                Err(malformed(format!("{operator:?} takes {} operands", n - 1)))
            }
        };
        let selector = |index: usize| match &parts[index] {
            Ipld::String(text) => Selector::parse(text),
            _ => Err(malformed("a selector is a string")),
        };
        let nested = |index: usize, budget: &mut usize| {
            Self::parse(&parts[index], depth + 1, budget).map(Box::new)
        };
        let comparison = match operator.as_str() {
            "<" => Some(Comparison::Less),
            "<=" => Some(Comparison::LessOrEqual),
            ">" => Some(Comparison::Greater),
            ">=" => Some(Comparison::GreaterOrEqual),
            _ => None,
        };
        if let Some(comparison) = comparison {
            arity(3)?;
            let value = &parts[2];
            if !matches!(value, Ipld::Integer(_) | Ipld::Float(_)) {
                return Err(malformed(format!("{operator:?} compares with a number")));
            }
            return Ok(Self::Compare(selector(1)?, comparison, value.clone()));
        }
        match operator.as_str() {
            "==" | "!=" => {
                arity(3)?;
                let value = parts[2].clone();
                Ok(if operator == "==" {
                    Self::Equal(selector(1)?, value)
                } else {
                    Self::NotEqual(selector(1)?, value)
                })
            }
            "like" => {
                arity(3)?;
                let Ipld::String(pattern) = &parts[2] else {
                    return Err(malformed("\"like\" takes a string pattern"));
                };
                Ok(Self::Like(selector(1)?, Glob::parse(pattern)?))
            }
            "not" => {
                arity(2)?;
                Ok(Self::Not(nested(1, budget)?))
            }
            "and" | "or" => {
                arity(2)?;
                let Ipld::List(items) = &parts[1] else {
                    return Err(malformed(format!(
                        "{operator:?} takes a list of statements"
                    )));
                };
                let statements = items
                    .iter()
                    .map(|item| Self::parse(item, depth + 1, budget))
                    .collect::<Result<_, _>>()?;
                Ok(if operator == "and" {
                    Self::And(statements)
                } else {
                    Self::Or(statements)
                })
            }
            "all" | "any" => {
                arity(3)?;
                let selector = selector(1)?;
                let statement = nested(2, budget)?;
                Ok(if operator == "all" {
                    Self::All(selector, statement)
                } else {
                    Self::Any(selector, statement)
                })
            }
            other => Err(PolicyError::UnknownOperator(other.to_owned())),
        }
    }

    /// The IPLD form.
    pub fn to_ipld(&self) -> Ipld {
        let op = |name: &str| Ipld::String(name.to_owned());
        let sel = |selector: &Selector| Ipld::String(selector.text.clone());
        Ipld::List(match self {
            Self::Equal(s, v) => vec![op("=="), sel(s), v.clone()],
            Self::NotEqual(s, v) => vec![op("!="), sel(s), v.clone()],
            Self::Compare(s, c, v) => vec![op(c.operator()), sel(s), v.clone()],
            Self::Like(s, glob) => vec![op("like"), sel(s), Ipld::String(glob.text.clone())],
            Self::Not(inner) => vec![op("not"), inner.to_ipld()],
            Self::And(items) => vec![
                op("and"),
                Ipld::List(items.iter().map(Self::to_ipld).collect()),
            ],
            Self::Or(items) => vec![
                op("or"),
                Ipld::List(items.iter().map(Self::to_ipld).collect()),
            ],
            Self::All(s, inner) => vec![op("all"), sel(s), inner.to_ipld()],
            Self::Any(s, inner) => vec![op("any"), sel(s), inner.to_ipld()],
        })
    }

    fn evaluate(&self, input: &Ipld) -> Outcome {
        match self {
            Self::Equal(selector, expected) => Ok(ipld_equal(&selector.select(input)?, expected)),
            Self::NotEqual(selector, expected) => {
                Ok(!ipld_equal(&selector.select(input)?, expected))
            }
            Self::Compare(selector, comparison, bound) => {
                let value = selector.select(input)?;
                Ok(compare_numbers(&value, bound)
                    .is_some_and(|ordering| comparison.holds(ordering)))
            }
            Self::Like(selector, glob) => Ok(match selector.select(input)? {
                Ipld::String(text) => glob.matches(&text),
                _ => false,
            }),
            Self::Not(inner) => inner.evaluate(input).map(|holds| !holds),
            Self::And(items) => {
                let mut unresolved = false;
                for item in items {
                    match item.evaluate(input) {
                        Ok(true) => {}
                        Ok(false) => return Ok(false),
                        Err(Unresolved) => unresolved = true,
                    }
                }
                if unresolved {
                    Err(Unresolved)
                } else {
                    Ok(true)
                }
            }
            Self::Or(items) => {
                if items.is_empty() {
                    return Ok(true);
                }
                any_of(items.iter().map(|item| item.evaluate(input)))
            }
            Self::All(selector, inner) => match collection(selector.select(input)?) {
                None => Ok(false),
                Some(values) => {
                    let mut unresolved = false;
                    for value in &values {
                        match inner.evaluate(value) {
                            Ok(true) => {}
                            Ok(false) => return Ok(false),
                            Err(Unresolved) => unresolved = true,
                        }
                    }
                    if unresolved {
                        Err(Unresolved)
                    } else {
                        Ok(true)
                    }
                }
            },
            Self::Any(selector, inner) => match collection(selector.select(input)?) {
                None => Ok(false),
                Some(values) => any_of(values.iter().map(|value| inner.evaluate(value))),
            },
        }
    }
}

/// True if any outcome is true; unresolved if none is true and one is unresolved.
fn any_of(outcomes: impl Iterator<Item = Outcome>) -> Outcome {
    let mut unresolved = false;
    for outcome in outcomes {
        match outcome {
            Ok(true) => return Ok(true),
            Ok(false) => {}
            Err(Unresolved) => unresolved = true,
        }
    }
    if unresolved {
        Err(Unresolved)
    } else {
        Ok(false)
    }
}

/// The elements of a list or the values of a map; `None` for anything else.
fn collection(value: Ipld) -> Option<Vec<Ipld>> {
    match value {
        Ipld::List(items) => Some(items),
        Ipld::Map(map) => Some(map.into_values().collect()),
        _ => None,
    }
}

/// Deep equality where integers and floats compare by numeric value.
pub(crate) fn ipld_equal(a: &Ipld, b: &Ipld) -> bool {
    match (a, b) {
        (Ipld::Integer(_) | Ipld::Float(_), Ipld::Integer(_) | Ipld::Float(_)) => {
            compare_numbers(a, b) == Some(Ordering::Equal)
        }
        (Ipld::List(x), Ipld::List(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| ipld_equal(x, y))
        }
        (Ipld::Map(x), Ipld::Map(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, vx), (ky, vy))| kx == ky && ipld_equal(vx, vy))
        }
        _ => a == b,
    }
}

/// Orders two numbers by value; `None` if either is not a number (or is NaN).
fn compare_numbers(a: &Ipld, b: &Ipld) -> Option<Ordering> {
    match (a, b) {
        (Ipld::Integer(x), Ipld::Integer(y)) => Some(x.cmp(y)),
        (Ipld::Integer(x), Ipld::Float(y)) => compare_int_float(*x, *y),
        (Ipld::Float(x), Ipld::Integer(y)) => compare_int_float(*y, *x).map(Ordering::reverse),
        (Ipld::Float(x), Ipld::Float(y)) => x.partial_cmp(y),
        _ => None,
    }
}

fn compare_int_float(int: i128, float: f64) -> Option<Ordering> {
    if float.is_nan() {
        return None;
    }
    // Exact for integers within ±2^53 (the only ones the spec allows); for larger ones
    // the float's integer part decides, then the fraction.
    let truncated = float.trunc();
    if truncated >= 1.7e38 {
        return Some(Ordering::Less);
    }
    if truncated <= -1.7e38 {
        return Some(Ordering::Greater);
    }
    match int.cmp(&(truncated as i128)) {
        Ordering::Equal => 0.0_f64.partial_cmp(&(float - truncated)),
        other => Some(other),
    }
}

/// A parsed selector, keeping its original text for lossless re-encoding.
#[derive(Clone, PartialEq)]
pub struct Selector {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq)]
enum Access {
    Field(String),
    Index(i64),
    Slice(Option<i64>, Option<i64>),
    Values,
}

#[derive(Debug, Clone, PartialEq)]
struct Segment {
    access: Access,
    optional: bool,
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Selector({})", self.text)
    }
}

impl Selector {
    /// Parses selector text.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let bad = |problem| PolicyError::BadSelector {
            selector: text.to_owned(),
            problem,
        };
        if text.len() > MAX_SELECTOR_LEN {
            return Err(bad("too long"));
        }
        if !text.starts_with('.') {
            return Err(bad("a selector starts with `.`"));
        }
        if text.contains("..") {
            return Err(bad("`..` is not allowed"));
        }
        let chars: Vec<char> = text.chars().collect();
        let mut segments = Vec::new();
        let mut at = 0;
        while at < chars.len() {
            let access = match chars[at] {
                '.' if at + 1 == chars.len() => {
                    if at == 0 {
                        break; // the identity selector `.`
                    }
                    return Err(bad("a selector does not end with `.`"));
                }
                '.' if chars[at + 1] == '[' => {
                    at += 1;
                    continue;
                }
                '.' => {
                    let start = at + 1;
                    let mut end = start;
                    while end < chars.len() && is_field_char(chars[end], end == start) {
                        end += 1;
                    }
                    if end == start {
                        return Err(bad("expected a field name after `.`"));
                    }
                    at = end;
                    Access::Field(chars[start..end].iter().collect())
                }
                '[' => {
                    let close = find_bracket_end(&chars, at).ok_or_else(|| bad("unclosed `[`"))?;
                    let inner: String = chars[at + 1..close].iter().collect();
                    at = close + 1;
                    parse_bracket(&inner).ok_or_else(|| bad("bad `[…]` segment"))?
                }
                _ => return Err(bad("unexpected character")),
            };
            let mut optional = false;
            while at < chars.len() && chars[at] == '?' {
                optional = true;
                at += 1;
            }
            segments.push(Segment { access, optional });
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    /// The original text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Resolves the selector on `input`.
    fn select(&self, input: &Ipld) -> Result<Ipld, Unresolved> {
        let mut current = input.clone();
        for segment in &self.segments {
            match resolve(&current, &segment.access) {
                Some(next) => current = next,
                // "Return early when a segment can't be resolved, even if a later one is optional."
                None if segment.optional => return Ok(Ipld::Null),
                None => return Err(Unresolved),
            }
        }
        Ok(current)
    }
}

fn is_field_char(c: char, first: bool) -> bool {
    if first {
        c.is_alphabetic() || c == '_'
    } else {
        c.is_alphanumeric() || matches!(c, '_' | '$' | '-')
    }
}

/// Index of the `]` closing the bracket at `open`, skipping over a quoted string.
fn find_bracket_end(chars: &[char], open: usize) -> Option<usize> {
    let mut at = open + 1;
    if chars.get(at) == Some(&'"') {
        at += 1;
        while at < chars.len() {
            match chars[at] {
                '\\' => at += 2,
                '"' => break,
                _ => at += 1,
            }
        }
        at += 1;
    }
    while at < chars.len() {
        if chars[at] == ']' {
            return Some(at);
        }
        if chars[at] == '[' || chars[at] == '"' {
            return None;
        }
        at += 1;
    }
    None
}

fn parse_bracket(inner: &str) -> Option<Access> {
    if inner.is_empty() {
        return Some(Access::Values);
    }
    if inner.starts_with('"') {
        let field: String = serde_json::from_str(inner).ok()?;
        return Some(Access::Field(field));
    }
    if let Some((start, end)) = inner.split_once(':') {
        let bound = |text: &str| -> Option<Option<i64>> {
            if text.is_empty() {
                Some(None)
            } else {
                parse_index(text).map(Some)
            }
        };
        return Some(Access::Slice(bound(start)?, bound(end)?));
    }
    parse_index(inner).map(Access::Index)
}

fn parse_index(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = text.parse().ok()?;
    (value.unsigned_abs() < (1 << 53)).then_some(value)
}

fn resolve(value: &Ipld, access: &Access) -> Option<Ipld> {
    match (access, value) {
        // A missing key on a map selects null; deeper segments then fail.
        (Access::Field(name), Ipld::Map(map)) => Some(map.get(name).cloned().unwrap_or(Ipld::Null)),
        (Access::Field(_), _) => None,
        (Access::Index(index), Ipld::List(items)) => {
            position(*index, items.len()).map(|at| items[at].clone())
        }
        (Access::Index(index), Ipld::Bytes(bytes)) => {
            position(*index, bytes.len()).map(|at| Ipld::Integer(i128::from(bytes[at])))
        }
        (Access::Index(_), _) => None,
        (Access::Slice(start, end), Ipld::List(items)) => {
            let (from, to) = slice_bounds(*start, *end, items.len());
            Some(Ipld::List(items[from..to].to_vec()))
        }
        (Access::Slice(start, end), Ipld::Bytes(bytes)) => {
            let (from, to) = slice_bounds(*start, *end, bytes.len());
            Some(Ipld::Bytes(bytes[from..to].to_vec()))
        }
        (Access::Slice(..), _) => None,
        (Access::Values, Ipld::List(items)) => Some(Ipld::List(items.clone())),
        (Access::Values, Ipld::Map(map)) => Some(Ipld::List(map.values().cloned().collect())),
        (Access::Values, _) => None,
    }
}

fn position(index: i64, len: usize) -> Option<usize> {
    let len = i64::try_from(len).ok()?;
    let at = if index < 0 { len + index } else { index };
    (0..len).contains(&at).then_some(at as usize)
}

fn slice_bounds(start: Option<i64>, end: Option<i64>, len: usize) -> (usize, usize) {
    let len = len as i64;
    let clamp = |bound: i64| (if bound < 0 { len + bound } else { bound }).clamp(0, len) as usize;
    let from = start.map_or(0, clamp);
    let to = end.map_or(len as usize, clamp);
    (from, to.max(from))
}

/// A `like` pattern: literal runs separated by `*` wildcards.
#[derive(Clone, PartialEq)]
pub struct Glob {
    text: String,
    /// The pattern split at unescaped `*`: text must start with the first part, end with
    /// the last, and contain the middle ones in order.
    parts: Vec<String>,
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.text)
    }
}

impl Glob {
    /// Parses a pattern: `*` matches any run of characters, `\*` is a literal star, and a
    /// backslash before any other character stands for that character.
    pub fn parse(pattern: &str) -> Result<Self, PolicyError> {
        let mut parts = vec![String::new()];
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(escaped) => parts.last_mut().expect("never empty").push(escaped),
                    None => return Err(PolicyError::BadPattern(pattern.to_owned())),
                },
                '*' => parts.push(String::new()),
                other => parts.last_mut().expect("never empty").push(other),
            }
        }
        Ok(Self {
            text: pattern.to_owned(),
            parts,
        })
    }

    /// Whether the whole of `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        let (first, rest) = self.parts.split_first().expect("never empty");
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ucan::json::json_to_ipld;

    fn args(json: &str) -> Ipld {
        json_to_ipld(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn holds(policy: &str, input: &str) -> bool {
        Policy::from_json(policy).unwrap().matches(&args(input))
    }

    #[test]
    fn selectors_follow_the_spec_table() {
        let input = r#"{"a": [10, 20, 30], "m": {"x": 1, "y": 2}, "k.e y": true}"#;
        assert!(holds(r#"[["==", ".a[0]", 10]]"#, input));
        assert!(holds(r#"[["==", ".a[-1]", 30]]"#, input));
        assert!(holds(r#"[["==", ".a[1:]", [20, 30]]]"#, input));
        assert!(holds(r#"[["==", ".a[:-1]", [10, 20]]]"#, input));
        assert!(holds(r#"[["==", ".m[]", [1, 2]]]"#, input));
        assert!(holds(r#"[["==", ".[\"k.e y\"]", true]]"#, input));
        assert!(holds(r#"[["==", ".missing", null]]"#, input));
        assert!(holds(r#"[["==", ".a[9]?", null]]"#, input));
        assert!(!holds(r#"[["==", ".a[9]", null]]"#, input));
        assert!(!holds(r#"[["==", ".missing.deeper", null]]"#, input));
        assert!(holds(r#"[["==", ".missing.deeper?", null]]"#, input));
        assert!(!holds(r#"[["==", ".a[9].x?", null]]"#, input));
    }

    #[test]
    fn negation_never_turns_an_unresolved_selector_into_permission() {
        let input = r#"{"a": 1}"#;
        assert!(!holds(r#"[["not", ["==", ".a.b", 2]]]"#, input));
        assert!(!holds(r#"[["!=", ".a.b", 2]]"#, input));
        assert!(holds(
            r#"[["or", [["==", ".a.b", 2], ["==", ".a", 1]]]]"#,
            input
        ));
    }

    #[test]
    fn quantifiers_and_numbers() {
        assert!(holds(r#"[["all", ".x", ["==", ".", 1]]]"#, r#"{"x": []}"#));
        assert!(!holds(r#"[["any", ".x", ["==", ".", 1]]]"#, r#"{"x": []}"#));
        assert!(!holds(r#"[["any", ".x", ["==", ".", 1]]]"#, r#"{"x": 1}"#));
        assert!(holds(r#"[["<", ".x", 1.5]]"#, r#"{"x": 1}"#));
        assert!(!holds(r#"[["<", ".x", 1.5]]"#, r#"{"x": "1"}"#));
        assert!(holds(r#"[[">=", ".x", 2]]"#, r#"{"x": 2.0}"#));
    }

    #[test]
    fn malformed_policies_are_refused() {
        assert!(Policy::from_json(r#"[["~=", ".a", 1]]"#).is_err());
        assert!(Policy::from_json(r#"[["==", "a", 1]]"#).is_err());
        assert!(Policy::from_json(r#"[["==", ".a..b", 1]]"#).is_err());
        assert!(Policy::from_json(r#"[["<", ".a", "1"]]"#).is_err());
        assert!(Policy::from_json(r#"[["like", ".a", "x\\"]]"#).is_err());
        assert!(Policy::from_json(r#"[["and", ["==", ".a", 1]]]"#).is_err());
        assert!(Policy::from_json(r#"[["not"]]"#).is_err());
        let deep = format!(
            "[{}[\"==\", \".a\", 1]{}]",
            "[\"not\", ".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(Policy::from_json(&deep), Err(PolicyError::TooLarge));
    }

    #[test]
    fn glob_matching() {
        let glob = Glob::parse("/profile/*").unwrap();
        assert!(glob.matches("/profile/"));
        assert!(glob.matches("/profile/address/street"));
        assert!(!glob.matches("/profiles"));
        let glob = Glob::parse("a*b*a").unwrap();
        assert!(glob.matches("aba"));
        assert!(!glob.matches("ab"));
        assert!(Glob::parse("*").unwrap().matches(""));
    }
}
