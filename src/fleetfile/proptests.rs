//! Bad fleet files at scale (issue 24, item 9): 100,000 generated files — KDL or TOML, built from
//! the sections fleet knows with values of every type, then bent by byte-level damage — and none
//! panics the parser; every refusal is a diagnostic whose spans lie inside the file and which says
//! something (a message; a label for each span).

use proptest::prelude::*;

use super::{parse, SourceFile};

const KINDS: &[&str] = &[
    "fleet",
    "litellm",
    "provider",
    "model",
    "gateway",
    "agent",
    "serve",
    "image",
    "host",
    "sandbox",
    "budget",
    "limits",
    "openclaw",
    "soul",
    "skill",
    "channel",
    "unknown-thing",
];
const PROPS: &[&str] = &[
    "port",
    "type",
    "model",
    "gateway",
    "host",
    "response",
    "input-cost",
    "output-cost",
    "usd",
    "per",
    "rpm",
    "image",
    "workspace",
    "network",
    "listen",
    "version",
    "every",
    "arch",
    "url",
    "sha256",
    "key",
    "x",
];

const WORDISH: &[char] = &['a', 'b', 'z', '0', '9', '.', '_', ':', '/', '-', 'e', 'n', 'v'];

fn word(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(WORDISH), 0..max).prop_map(|v| v.into_iter().collect())
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        word(12).prop_map(|s| format!("\"{s}\"")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f}")),
        Just("#true".to_string()),
        Just("null".to_string()),
        Just("\"env:FLEET_PROPTEST_NOPE\"".to_string()),
        Just("\"file:/nonexistent\"".to_string()),
        prop::collection::vec(any::<char>(), 0..6)
            .prop_map(|v| format!("\"{}\"", v.into_iter().filter(|c| !matches!(c, '"' | '\\')).collect::<String>())),
    ]
}

fn node(depth: u32) -> BoxedStrategy<String> {
    let leaf = (
        prop::sample::select(KINDS),
        prop::collection::vec(value(), 0..3),
        prop::collection::vec((prop::sample::select(PROPS), value()), 0..4),
    )
        .prop_map(|(k, args, props)| {
            let mut s = k.to_string();
            for a in args {
                s.push(' ');
                s.push_str(&a);
            }
            for (p, v) in props {
                s.push_str(&format!(" {p}={v}"));
            }
            s
        });
    if depth == 0 {
        return leaf.boxed();
    }
    (leaf, prop::collection::vec(node(depth - 1), 0..3))
        .prop_map(|(head, kids)| if kids.is_empty() { head } else { format!("{head} {{\n{}\n}}", kids.join("\n")) })
        .boxed()
}

/// A fleet file: known-shaped nodes, then damage (a byte range cut out, a character put in).
fn kdl_file() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(node(1), 0..6),
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        any::<char>(),
        0u8..4,
    )
        .prop_map(|(nodes, a, b, c, damage)| {
            let mut text = format!("fleet \"p\"\n{}\n", nodes.join("\n"));
            if damage & 1 == 1 && !text.is_empty() {
                let (i, j) = (a.index(text.len()), b.index(text.len()));
                let (i, j) = (i.min(j), i.max(j));
                if text.is_char_boundary(i) && text.is_char_boundary(j) {
                    text.replace_range(i..j, "");
                }
            }
            if damage & 2 == 2 {
                let i = a.index(text.len() + 1);
                if text.is_char_boundary(i) {
                    text.insert(i, c);
                }
            }
            text
        })
}

/// The same shapes as TOML tables.
fn toml_file() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (prop::sample::select(KINDS), word(5), prop::collection::vec((prop::sample::select(PROPS), value()), 0..4)),
        0..8,
    )
    .prop_map(|tables| {
        let mut text = String::from("[fleet]\nname = \"p\"\n");
        for (k, name, props) in tables {
            text.push_str(&if name.is_empty() { format!("[{k}]\n") } else { format!("[{k}.{name}]\n") });
            for (p, v) in props {
                text.push_str(&format!("{p} = {}\n", v.replace("#true", "true").replace("null", "\"\"")));
            }
        }
        text
    })
}

fn check(name: &str, text: String) -> Result<(), TestCaseError> {
    let len = text.len();
    match parse(SourceFile::new(name, text), std::path::Path::new("/nonexistent-proptest")) {
        Ok(_) => {}
        Err(e) => {
            use miette::Diagnostic;
            prop_assert!(!e.to_string().is_empty(), "a refusal says something");
            for l in e.labels().into_iter().flatten() {
                prop_assert!(l.offset() + l.len() <= len, "a span past the end: {:?} of {len}", l);
            }
            for p in e.problems() {
                prop_assert!(!p.message.is_empty());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100_000, failure_persistence: None, ..ProptestConfig::default() })]

    /// 100,000 fleet files, each KDL or TOML (about half each).
    #[test]
    fn no_generated_fleet_file_panics_and_every_refusal_points_inside_it(
        (name, text) in prop_oneof![
            kdl_file().prop_map(|t| ("fleet.kdl", t)),
            toml_file().prop_map(|t| ("fleet.toml", t)),
        ]
    ) {
        check(name, text)?;
    }
}
