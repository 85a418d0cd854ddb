//! TOML → raw tree. Tables become nodes, scalar keys properties, arrays of
//! scalars a child node with arguments, arrays of tables repeated children.
//! `[agent.alice]` (a table of named tables) is the TOML spelling of `agent "alice" {…}`.

use miette::SourceSpan;
use toml_edit::{ImDocument, Item, Table, Value};

use crate::syntax::diagnostic::{Problem, Problems};
use crate::syntax::raw::{RawEntry, RawNode, RawProp, RawValue};

pub fn parse(text: &str, named_kinds: &[&str], problems: &mut Problems) -> Vec<RawNode> {
    let doc = match ImDocument::parse(text.to_string()) {
        Ok(doc) => doc,
        Err(err) => {
            let at = err.span().map(|s| s.start).unwrap_or(0).min(text.len());
            let p = syntax_error(text, err.message(), at);
            problems.push(Problem { message: format!("syntax error: {}", p.message), ..p });
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    let root = doc.as_table();
    for (key, item) in root.iter() {
        let key_span = key_span(root, key);
        if named_kinds.contains(&key) {
            named(text, key, key_span, item, &mut out, problems);
        } else if let Item::ArrayOfTables(a) = item {
            // `[[moved]]`: a node per table.
            out.extend(a.iter().map(|t| table_node(key, t.span().map(SourceSpan::from).unwrap_or(key_span), t)));
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
fn named(text: &str, kind: &str, kind_span: SourceSpan, item: &Item, out: &mut Vec<RawNode>, problems: &mut Problems) {
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
                let span = t.key(name).and_then(|k| k.span()).map(SourceSpan::from).unwrap_or(kind_span);
                let mut node = value_node(kind, span, v);
                node.args.insert(0, RawEntry { value: RawValue::Str(name.to_string()), span });
                out.push(node);
            }
        }
        Item::ArrayOfTables(a) => {
            for t in a.iter() {
                // The `[[kind]]` header, not the whole table.
                let span = match t.span() {
                    Some(r) => {
                        let header = text[r.clone()].find(['\n', '\r']).unwrap_or(r.len());
                        SourceSpan::from(r.start..r.start + header)
                    }
                    None => kind_span,
                };
                out.push(table_node(kind, span, t));
            }
        }
        _ => {
            let name = item.as_str().filter(|s| !s.is_empty()).unwrap_or("<name>");
            problems.push(
                Problem::new(format!("`{kind}` must be a table of named {kind}s"), kind_span, "not a table")
                    .help(format!("write a table per {kind}: `[{kind}.{name}]` on its own line, then its settings")),
            )
        }
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

/// A TOML parse error in plain words, pointing at the mistake, with the fix.
fn syntax_error(text: &str, message: &str, at: usize) -> Problem {
    let mut lines = message.trim().lines();
    let headline = lines.next().unwrap_or("invalid TOML").trim();
    let detail = lines.map(str::trim).collect::<Vec<_>>().join("; ");
    let line_start = text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0);
    let line_end = text[at..].find(['\n', '\r']).map(|i| at + i).unwrap_or(text.len());
    let line = &text[line_start..line_end];
    let key = line.split_once('=').map(|(k, _)| k.trim()).filter(|k| !k.is_empty() && !k.starts_with('['));
    let rest = &text[at..line_end];
    let word_len = rest.find(|c: char| c.is_whitespace() || ",]}#".contains(c)).unwrap_or(rest.len());
    let word = &rest[..word_len];
    let span = |from: usize, len: usize| SourceSpan::from(from..(from + len.max(1)).min(text.len()).max(from));
    let quoted = |value: &str| match key {
        Some(k) => format!("{k} = \"{value}\""),
        None => format!("\"{value}\""),
    };

    if headline == "invalid string" && detail.contains("expected `\"`") {
        let after = rest.trim();
        if after.is_empty() || after.starts_with('#') {
            let k = key.unwrap_or("the key");
            let eq = line.find('=').map(|i| line_start + i).unwrap_or(at);
            return Problem::new(
                format!("`{k} =` has no value"),
                SourceSpan::from(line_start..eq + 1),
                "value missing",
            )
            .help(format!("give it a value, e.g. `{}`, or remove the line", quoted("…")));
        }
        return Problem::new(format!("`{word}` is not a TOML value"), span(at, word_len), "needs quotes")
            .help(format!("text needs double quotes: `{}`", quoted(word)));
    }
    if headline == "invalid basic string" || headline == "invalid literal string" {
        let quote = if headline == "invalid basic string" { '"' } else { '\'' };
        let open = line.find('=').and_then(|eq| line[eq..].find(quote).map(|q| line_start + eq + q)).unwrap_or(at);
        let end = line_start + line.trim_end().len();
        return Problem::new(
            "unterminated string",
            SourceSpan::from(open..end.max(open + 1)),
            "this string is not closed on its line",
        )
        .help(format!(
            "add the closing `{quote}`; strings end on the line they start (`\"\"\"` opens a multi-line one)"
        ));
    }
    if let Some(dup) = headline.strip_prefix("duplicate key `").or(detail.strip_prefix("duplicate key `")) {
        let dup_key = dup.split('`').next().unwrap_or("");
        let table = dup.split('`').nth(2).unwrap_or("");
        if headline == "invalid table header" {
            // The same `[kind.name]` twice.
            let header = line.trim();
            let first =
                text[..line_start].match_indices(header).find(|(i, _)| *i == 0 || text.as_bytes()[i - 1] == b'\n');
            let mut p = Problem::new(
                format!("`{header}` appears twice"),
                SourceSpan::from(line_start..line_start + header.len()),
                "again here",
            )
            .help("merge the two tables into one");
            if let Some((i, _)) = first {
                p = p.also(SourceSpan::from(i..i + header.len()), "first here");
            }
            return p;
        }
        let table_start = text[..line_start].rfind("\n[").map(|i| i + 1).unwrap_or(0);
        let first = text[table_start..line_start].match_indices(dup_key).find(|(i, _)| {
            let abs = table_start + i;
            let before = &text[text[..abs].rfind('\n').map(|j| j + 1).unwrap_or(0)..abs];
            before.trim().is_empty() && text[abs + dup_key.len()..].trim_start().starts_with('=')
        });
        let mut p =
            Problem::new(format!("`{dup_key}` is set twice in `[{table}]`"), span(at, dup_key.len()), "set again here")
                .help("a key appears once per table; remove one of them");
        if let Some((i, _)) = first {
            p = p.also(span(table_start + i, dup_key.len()), "first set here");
        }
        return p;
    }
    if headline == "invalid table header" {
        return Problem::new("invalid table header", span(at, 1), "expected `]`")
            .help("a table header is `[kind.name]` on a line of its own, e.g. `[agent.alice]`");
    }
    if headline == "invalid inline table" {
        let before = text[..at].trim_end();
        let comma = if rest.starts_with(',') && rest[1..].trim_start().starts_with('}') {
            Some(at)
        } else if before.ends_with(',') && rest.starts_with('}') {
            Some(before.len() - 1)
        } else {
            None
        };
        if let Some(comma) = comma {
            return Problem::new("trailing comma in an inline table", span(comma, 1), "remove this `,`")
                .help("TOML inline tables take no comma before `}`");
        }
        if rest.trim().is_empty() {
            return Problem::new(
                "an inline table must be on one line",
                span(at.saturating_sub(1), 1),
                "not closed on this line",
            )
            .help("keep `{ … }` on one line, or use a table header like `[agent.alice.identity]` instead");
        }
    }
    if headline == "invalid array" && detail.contains("expected `]`") {
        return Problem::new("missing `,` between array items", span(at, word_len), "expected `,` before this")
            .help("separate array items with commas: `[\"a\", \"b\"]`");
    }
    if headline.starts_with("expected newline") {
        return Problem::new("unexpected text after the value", span(at, word_len), "not part of the value")
            .help("one `key = value` per line; text needs double quotes, numbers are digits only");
    }
    if headline.starts_with("expected `.`, `=`") {
        let k = line[..at - line_start].trim();
        return Problem::new(format!("expected `=` after `{k}`"), span(at, word_len), "expected `=` before this")
            .help(format!("write `{k} = {}`", rest.trim()));
    }
    let message = if detail.is_empty() { headline.to_string() } else { format!("{headline}: {detail}") };
    Problem::new(message, span(at, 1), "here")
        .help("fleet's TOML form: `[agent.alice]` then `model = \"demo-small\"`; see https://toml.io for the syntax")
}
