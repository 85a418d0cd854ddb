//! The surface-neutral tree both KDL and TOML parse into: nodes with positional
//! arguments, named properties and children, every piece carrying its span.
//! One typed decoder (`decode.rs`) reads this tree, so both syntaxes get the same
//! checks and the same diagnostics.

use miette::SourceSpan;

#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    Str(String),
    Int(i128),
    Float(f64),
    Bool(bool),
    Null,
    /// A TOML value KDL has no word for (date-time, inline table in a list…).
    Other(&'static str),
}

impl RawValue {
    pub fn type_name(&self) -> &'static str {
        match self {
            RawValue::Str(_) => "a string",
            RawValue::Int(_) => "an integer",
            RawValue::Float(_) => "a number",
            RawValue::Bool(_) => "a boolean",
            RawValue::Null => "null",
            RawValue::Other(t) => t,
        }
    }
}

#[derive(Debug, Clone)]
pub struct RawEntry {
    pub value: RawValue,
    pub span: SourceSpan,
}

#[derive(Debug, Clone)]
pub struct RawProp {
    pub key: String,
    pub key_span: SourceSpan,
    pub value: RawEntry,
}

#[derive(Debug, Clone)]
pub struct RawNode {
    pub name: String,
    pub name_span: SourceSpan,
    pub args: Vec<RawEntry>,
    pub props: Vec<RawProp>,
    pub children: Vec<RawNode>,
}

impl RawNode {
    pub fn new(name: impl Into<String>, name_span: SourceSpan) -> Self {
        RawNode { name: name.into(), name_span, args: vec![], props: vec![], children: vec![] }
    }
}

/// Joins two spans into one covering both.
pub fn join(a: SourceSpan, b: SourceSpan) -> SourceSpan {
    let start = a.offset().min(b.offset());
    let end = (a.offset() + a.len()).max(b.offset() + b.len());
    SourceSpan::from(start..end)
}
