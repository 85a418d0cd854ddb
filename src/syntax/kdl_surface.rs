//! KDL (v2, with v1 accepted) → raw tree.

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::diagnostic::{Problem, Problems};
use super::raw::{RawEntry, RawNode, RawProp, RawValue};

pub fn parse(text: &str, problems: &mut Problems) -> Vec<RawNode> {
    let parsed = KdlDocument::parse_v2(text).or_else(|_| {
        // A KDL v1 string may run over several lines, so with the v1 fallback a string
        // whose closing quote is missing swallows the lines after it and the file still
        // parses. That is far likelier a typo than a v1 multi-line string: say so.
        match super::kdl_syntax::explain(text).filter(|p| p.message == "unterminated string") {
            Some(p) => Err(p),
            None => KdlDocument::parse(text).map_err(|err| syntax_error(text, err)),
        }
    });
    match parsed {
        Ok(doc) => doc.nodes().iter().map(node).collect(),
        Err(p) => {
            problems.push(Problem { message: format!("syntax error: {}", p.message), ..p });
            Vec::new()
        }
    }
}

/// One diagnostic for a file that is not KDL: later parser errors are mostly echoes
/// of the first, so only the first mistake is shown.
fn syntax_error(text: &str, err: kdl::KdlError) -> Problem {
    if let Some(p) = super::kdl_syntax::explain(text) {
        return p;
    }
    let Some(d) = err.diagnostics.into_iter().min_by_key(|d| d.span.offset()) else {
        return Problem::new("invalid KDL", (0..0).into(), "here").help(GENERIC_HELP);
    };
    let message = d.message.clone().unwrap_or_else(|| "invalid KDL".to_string());
    // Some spans run from the start of the file to the mistake: point at its end.
    let mut span = d.span;
    let covered = text.get(span.offset()..span.offset() + span.len()).unwrap_or("");
    if covered.contains('\n') {
        let end = span.offset() + span.len();
        span = (end.saturating_sub(1)..end).into();
    }
    let label = d.label.clone().unwrap_or_else(|| "here".to_string());
    let help = d.help.clone().unwrap_or_else(|| GENERIC_HELP.to_string());
    Problem::new(message, span, label).help(help)
}

const GENERIC_HELP: &str = "fleet files are KDL: `node \"arg\" key=\"value\" { child … }`; text needs double quotes";

fn node(n: &KdlNode) -> RawNode {
    let mut raw = RawNode::new(n.name().value(), n.name().span());
    for e in n.entries() {
        let entry = RawEntry { value: value(e.value()), span: value_span(e) };
        match e.name() {
            Some(key) => raw.props.push(RawProp { key: key.value().to_string(), key_span: key.span(), value: entry }),
            None => raw.args.push(entry),
        }
    }
    if let Some(children) = n.children() {
        raw.children = children.nodes().iter().map(node).collect();
    }
    raw
}

/// The span of an entry's value alone (kdl gives the whole `key=value` span for properties).
fn value_span(e: &kdl::KdlEntry) -> miette::SourceSpan {
    let span = e.span();
    match e.name() {
        Some(key) => {
            let key_end = key.span().offset() + key.span().len();
            let end = span.offset() + span.len();
            if end > key_end + 1 {
                miette::SourceSpan::from(key_end + 1..end)
            } else {
                span
            }
        }
        None => span,
    }
}

fn value(v: &KdlValue) -> RawValue {
    match v {
        KdlValue::String(s) => RawValue::Str(s.clone()),
        KdlValue::Integer(i) => RawValue::Int(*i),
        KdlValue::Float(f) => RawValue::Float(*f),
        KdlValue::Bool(b) => RawValue::Bool(*b),
        KdlValue::Null => RawValue::Null,
    }
}
