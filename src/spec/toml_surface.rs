//! TOML → raw tree. Tables become nodes, scalar keys properties, arrays of
//! scalars a child node with arguments, arrays of tables repeated children.
//! `[agent.alice]` (a table of named tables) is the TOML spelling of `agent "alice" {…}`.

use miette::SourceSpan;
use toml_edit::{ImDocument, Item, Table, Value};

use super::diagnostic::{Problem, Problems};
use super::raw::{RawEntry, RawNode, RawProp, RawValue};

pub fn parse(text: &str, named_kinds: &[&str], problems: &mut Problems) -> Vec<RawNode> {
    let doc = match ImDocument::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(err) => {
            let span = err.span().map(SourceSpan::from).unwrap_or_else(|| (0..0).into());
            let message = err.message().trim().to_string();
            problems.push(
                Problem::new(format!("syntax error: {message}"), span, "here")
                    .help("fleet files may be TOML: `[agent.alice]` then `model = \"demo-small\"`"),
            );
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let key_span = key_span(root, key);
        if named_kinds.contains(&key) {
            named(key, key_span, item, &mut out, problems);
        } else {
            out.push(item_node(key, key_span, item));
        }
    }
    out
}

fn key_span(t: &Table, key: &str) -> SourceSpan {
    t.get_key_value(key)
        .and_then(|(k, item)| k.span().or_else(|| item.span()))
        .map(SourceSpan::from)
        .unwrap_or_else(|| (0..0).into())
}

/// `[agent.alice]` / `agent = { alice = {…} }` / `[[agent]] name = "alice"`.
fn named(kind: &str, kind_span: SourceSpan, item: &Item, out: &mut Vec<RawNode>, problems: &mut Problems) {
    match item {
        Item::Table(t) => {
            for (name, sub) in t.iter() {
                let span = key_span(t, name);
                let mut node = item_node(kind, span, sub);
                node.args.insert(0, RawEntry { value: RawValue::Str(name.to_string()), span });
                out.push(node);
            }
        }
        Item::Value(Value::InlineTable(t)) => {
            for (name, v) in t.iter() {
                let span = t
                    .key(name)
                    .and_then(|k| k.span())
                    .map(SourceSpan::from)
                    .unwrap_or(kind_span);
                let mut node = value_node(kind, span, v);
                node.args.insert(0, RawEntry { value: RawValue::Str(name.to_string()), span });
                out.push(node);
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                let span = t.span().map(SourceSpan::from).unwrap_or(kind_span);
                out.push(table_node(kind, span, t));
            }
        }
        _ => problems.push(
            Problem::new(format!("`{kind}` must be a table of named {kind}s"), kind_span, "not a table")
                .help(format!("write `[{kind}.<name>]` followed by its settings")),
        ),
    }
}

fn item_node(name: &str, span: SourceSpan, item: &Item) -> RawNode {
    match item {
        Item::Table(t) => table_node(name, span, t),
        Item::Value(v) => value_node(name, span, v),
        Item::ArrayOfTables(_) | Item::None => RawNode::new(name, span),
    }
}

fn value_node(name: &str, span: SourceSpan, v: &Value) -> RawNode {
    match v {
        Value::InlineTable(t) => {
            let mut node = RawNode::new(name, span);
            for (k, v) in t.iter() {
                let kspan = t.key(k).and_then(|k| k.span()).map(SourceSpan::from).unwrap_or(span);
                add(&mut node, k, kspan, v);
            }
            node
        }
        Value::Array(a) => {
            let mut node = RawNode::new(name, span);
            node.args = a.iter().map(entry).collect();
            node
        }
        scalar => {
            let mut node = RawNode::new(name, span);
            node.args.push(entry(scalar));
            node
        }
    }
}

fn table_node(name: &str, span: SourceSpan, t: &Table) -> RawNode {
    let mut node = RawNode::new(name, span);
    for (k, item) in t.iter() {
        let kspan = key_span(t, k);
        match item {
            Item::Value(v) => add(&mut node, k, kspan, v),
            Item::Table(sub) => node.children.push(table_node(k, kspan, sub)),
            Item::ArrayOfTables(a) => {
                for sub in a.iter() {
                    node.children.push(table_node(k, kspan, sub));
                }
            }
            Item::None => {}
        }
    }
    node
}

/// A key inside a table: scalars are properties; arrays and inline tables children.
fn add(node: &mut RawNode, key: &str, key_span: SourceSpan, v: &Value) {
    match v {
        Value::Array(a) if a.iter().all(|x| matches!(x, Value::InlineTable(_))) && !a.is_empty() => {
            for x in a.iter() {
                node.children.push(value_node(key, key_span, x));
            }
        }
        Value::Array(_) | Value::InlineTable(_) => node.children.push(value_node(key, key_span, v)),
        scalar => node.props.push(RawProp { key: key.to_string(), key_span, value: entry(scalar) }),
    }
}

fn entry(v: &Value) -> RawEntry {
    let span = v.span().map(SourceSpan::from).unwrap_or_else(|| (0..0).into());
    let value = match v {
        Value::String(s) => RawValue::Str(s.value().clone()),
        Value::Integer(i) => RawValue::Int(i128::from(*i.value())),
        Value::Float(f) => RawValue::Float(*f.value()),
        Value::Boolean(b) => RawValue::Bool(*b.value()),
        Value::Datetime(_) => RawValue::Other("a date-time"),
        Value::Array(_) => RawValue::Other("an array"),
        Value::InlineTable(_) => RawValue::Other("a table"),
    };
    RawEntry { value, span }
}
