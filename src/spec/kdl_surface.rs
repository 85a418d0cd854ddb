//! KDL (v2, with v1 accepted) → raw tree.

use kdl::{KdlDocument, KdlNode, KdlValue};

use super::diagnostic::{Problem, Problems};
use super::raw::{RawEntry, RawNode, RawProp, RawValue};

pub fn parse(text: &str, problems: &mut Problems) -> Vec<RawNode> {
    match KdlDocument::parse(text) {
        Ok(doc) => doc.nodes().iter().map(node).collect(),
        Err(err) => {
            for d in err.diagnostics {
                let message = d.message.clone().unwrap_or_else(|| "invalid KDL".to_string());
                let label = d.label.clone().unwrap_or_else(|| "here".to_string());
                let help = d.help.clone().unwrap_or_else(|| {
                    "fleet files are KDL: `node \"arg\" key=\"value\" { child … }`; \
                     strings need double quotes"
                        .to_string()
                });
                problems.push(Problem::new(format!("syntax error: {message}"), d.span, label).help(help));
            }
            Vec::new()
        }
    }
}

fn node(n: &KdlNode) -> RawNode {
    let mut raw = RawNode::new(n.name().value(), n.name().span());
    for e in n.entries() {
        let entry = RawEntry { value: value(e.value()), span: value_span(e) };
        match e.name() {
            Some(key) => raw.props.push(RawProp {
                key: key.value().to_string(),
                key_span: key.span(),
                value: entry,
            }),
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
