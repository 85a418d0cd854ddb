//! A checked reader over one raw node: typed accessors that record problems
//! (wrong type, duplicates, missing values) and, at `finish`, every property or
//! child nobody asked for, with a "did you mean".

use miette::SourceSpan;

use super::diagnostic::{choices_help, did_you_mean, Problem, Problems, Syntax};
use super::raw::{join, RawEntry, RawNode, RawValue};
use super::Spanned;

/// How a key may be written on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// A scalar: a property (`port=4000`) or a child with one value (`port 4000`).
    Setting,
    /// Only as a property (`name`, in TOML's `[[agent]] name = "…"`).
    Property,
    /// A child with values (`fallback "a" "b"`).
    List,
    /// A child with its own settings (`identity role="…"`).
    Block,
}

pub struct Reader<'a, 'p> {
    node: &'a RawNode,
    what: String,
    used_props: Vec<bool>,
    used_children: Vec<bool>,
    args_used: usize,
    asked: Vec<(&'static str, Shape)>,
    /// The setting a stray positional argument most likely meant (`heartbeat "30m"`).
    positional_means: Option<&'static str>,
    /// A missing name, reported at `finish` unless a misspelt `name` is reported instead.
    missing_name: Option<Problem>,
    pub problems: &'p mut Problems,
}

impl<'a, 'p> Reader<'a, 'p> {
    pub fn new(node: &'a RawNode, problems: &'p mut Problems) -> Self {
        Reader {
            node,
            what: format!("`{}`", node.name),
            used_props: vec![false; node.props.len()],
            used_children: vec![false; node.children.len()],
            args_used: 0,
            asked: Vec::new(),
            positional_means: None,
            missing_name: None,
            problems,
        }
    }

    pub fn span(&self) -> SourceSpan {
        self.node.name_span
    }

    pub fn syntax(&self) -> Syntax {
        self.problems.syntax
    }

    /// The node's name: its first argument (`agent "alice"`) or a `name` property (TOML `[[agent]]`).
    /// `example` is the KDL spelling of a named node, e.g. `agent "alice" model="demo-small"`.
    pub fn name(&mut self, example: &str) -> Option<Spanned<String>> {
        if let Some(first) = self.node.args.first() {
            self.args_used = 1;
            return self.string_of(first, "the name");
        }
        if let Some(v) = self.prop_entry("name", Shape::Property) {
            return self.string_of(v, "the name");
        }
        let help = match self.syntax() {
            Syntax::Kdl => format!("for example: `{example}`"),
            Syntax::Toml => {
                let name = example.split('"').nth(1).unwrap_or("…");
                if self.problems.named_kinds.contains(&self.node.name.as_str()) {
                    format!("name it in the table header: `[{}.{name}]`", self.node.name)
                } else {
                    format!("add `name = \"{name}\"`")
                }
            }
        };
        self.missing_name =
            Some(Problem::new(format!("{} needs a name", self.what), self.node.name_span, "name missing").help(help));
        None
    }

    /// The first positional argument as a string, when the node takes one.
    pub fn arg_str(&mut self, what: &str, example: &str) -> Option<Spanned<String>> {
        match self.node.args.first() {
            Some(first) => {
                self.args_used = 1;
                self.string_of(first, what)
            }
            None => {
                self.problems.push(
                    Problem::new(format!("{} needs {what}", self.what), self.node.name_span, "argument missing")
                        .help(format!("for example: `{example}`")),
                );
                None
            }
        }
    }

    /// The first positional argument (`keys "database"`), or, since TOML has no positional
    /// arguments, a `key` setting (`keys = { backend = "database" }`).
    pub fn arg_or(&mut self, key: &'static str, what: &str, example: &str) -> Option<Spanned<String>> {
        if !self.node.args.is_empty() {
            return self.arg_str(what, example);
        }
        if self.node.props.iter().any(|p| p.key == key) || self.node.children.iter().any(|c| c.name == key) {
            return self.str_opt(key);
        }
        self.asked.push((key, Shape::Setting));
        let help = match self.syntax() {
            Syntax::Kdl => format!("for example: `{example}`"),
            Syntax::Toml => format!("for example: `{} = {{ {key} = \"…\" }}`", self.node.name),
        };
        self.problems.push(
            Problem::new(format!("{} needs {what}", self.what), self.node.name_span, format!("{key} missing"))
                .help(help),
        );
        None
    }

    /// All positional arguments as strings (`models "a" "b"`).
    pub fn args_str(&mut self) -> Vec<Spanned<String>> {
        self.args_used = self.node.args.len();
        let node = self.node;
        let what = format!("each value of `{}`", node.name);
        node.args.iter().filter_map(|a| self.string_of(a, &what)).collect()
    }

    fn prop_entry(&mut self, key: &'static str, shape: Shape) -> Option<&'a RawEntry> {
        self.asked.push((key, shape));
        let mut found: Option<(usize, &'a RawEntry)> = None;
        for (i, p) in self.node.props.iter().enumerate() {
            if p.key == key {
                if let Some((first, _)) = found {
                    self.problems.push(
                        Problem::new(format!("`{key}` is set twice"), p.key_span, "set again here")
                            .also(self.node.props[first].key_span, "first set here")
                            .help("KDL would keep the last value; fleet asks you to say it once: remove one"),
                    );
                }
                found = Some((i, &p.value));
                self.used_props[i] = true;
            }
        }
        found.map(|(_, e)| e)
    }

    /// A scalar setting, written either as a property (`port=4000`) or a child (`port 4000`).
    fn setting(&mut self, key: &'static str) -> Option<&'a RawEntry> {
        let from_prop = self.prop_entry(key, Shape::Setting);
        let prop_span = self.node.props.iter().find(|p| p.key == key).map(|p| p.key_span);
        let mut from_child: Option<&'a RawEntry> = None;
        let mut first_child: Option<SourceSpan> = None;
        let example = match self.syntax() {
            Syntax::Kdl => format!("{key} <value>"),
            Syntax::Toml => format!("{key} = <value>"),
        };
        for (i, c) in self.node.children.iter().enumerate() {
            if c.name != key {
                continue;
            }
            self.used_children[i] = true;
            if let Some(first) = prop_span.or(first_child) {
                self.problems.push(
                    Problem::new(format!("`{key}` is set twice"), c.name_span, "set again here")
                        .also(first, "first set here")
                        .help("say it once, as a property or as a child, not both"),
                );
                continue;
            }
            first_child = Some(c.name_span);
            match c.args.as_slice() {
                [one] if c.props.is_empty() && c.children.is_empty() => from_child = Some(one),
                [] if c.props.is_empty() && c.children.is_empty() => self.problems.push(
                    Problem::new(format!("`{key}` needs a value"), c.name_span, "value missing")
                        .help(format!("write `{example}`")),
                ),
                _ => self.problems.push(
                    Problem::new(format!("`{key}` takes exactly one value"), c.name_span, "not a single value")
                        .help(format!("write `{example}`")),
                ),
            }
        }
        from_prop.or(from_child)
    }

    fn string_of(&mut self, e: &RawEntry, what: &str) -> Option<Spanned<String>> {
        match &e.value {
            RawValue::Str(s) => Some(Spanned::new(s.clone(), e.span)),
            other => {
                self.problems.push(
                    Problem::new(
                        format!("{what} must be a string, found {}", other.type_name()),
                        e.span,
                        "expected a string",
                    )
                    .help("put the value in double quotes"),
                );
                None
            }
        }
    }

    pub fn str_opt(&mut self, key: &'static str) -> Option<Spanned<String>> {
        let e = self.setting(key)?;
        self.string_of(e, &format!("`{key}`"))
    }

    pub fn bool_opt(&mut self, key: &'static str) -> Option<Spanned<bool>> {
        let e = self.setting(key)?;
        match &e.value {
            RawValue::Bool(b) => Some(Spanned::new(*b, e.span)),
            other => {
                let (kdl, toml) = (format!("{key} #true"), format!("{key} = true"));
                let example = self.syntax().pick(&kdl, &toml).to_string();
                self.problems.push(
                    Problem::new(
                        format!("`{key}` must be true or false, found {}", other.type_name()),
                        e.span,
                        "expected a boolean",
                    )
                    .help(format!("write `{example}`")),
                );
                None
            }
        }
    }

    pub fn int_opt(&mut self, key: &'static str, min: i128, max: i128) -> Option<Spanned<i128>> {
        let e = self.setting(key)?;
        match &e.value {
            RawValue::Int(i) if (min..=max).contains(i) => Some(Spanned::new(*i, e.span)),
            RawValue::Int(i) => {
                self.problems.push(
                    Problem::new(format!("`{key}` is out of range: {i}"), e.span, "out of range")
                        .help(format!("use a whole number from {min} to {max}")),
                );
                None
            }
            other => {
                let hint = match other {
                    RawValue::Str(s) if s.trim().parse::<i128>().is_ok() => {
                        format!("drop the quotes: `{}`", self.syntax().assign(key, s.trim()))
                    }
                    _ => format!("use a whole number from {min} to {max}"),
                };
                self.problems.push(
                    Problem::new(
                        format!("`{key}` must be an integer, found {}", other.type_name()),
                        e.span,
                        "expected an integer",
                    )
                    .help(hint),
                );
                None
            }
        }
    }

    /// A number (integer or decimal) within `min..=max`: prices and budgets in USD.
    pub fn num_opt(&mut self, key: &'static str, min: f64, max: f64) -> Option<Spanned<f64>> {
        let e = self.setting(key)?;
        let v = match &e.value {
            RawValue::Int(i) => *i as f64,
            RawValue::Float(f) => *f,
            other => {
                let hint = match other {
                    RawValue::Str(s) if s.trim().trim_start_matches('$').parse::<f64>().is_ok() => {
                        format!("drop the quotes: `{}`", self.syntax().assign(key, s.trim().trim_start_matches('$')))
                    }
                    _ => format!("write a number, e.g. `{}`", self.syntax().assign(key, "0.5")),
                };
                self.problems.push(
                    Problem::new(
                        format!("`{key}` must be a number, found {}", other.type_name()),
                        e.span,
                        "expected a number",
                    )
                    .help(hint),
                );
                return None;
            }
        };
        if !v.is_finite() || v < min || v > max {
            self.problems.push(
                Problem::new(format!("`{key}` is out of range: {v}"), e.span, "out of range")
                    .help(format!("use a number from {min} to {max}")),
            );
            return None;
        }
        Some(Spanned::new(v, e.span))
    }

    fn children_shaped(&mut self, key: &'static str, shape: Shape) -> Vec<&'a RawNode> {
        self.asked.push((key, shape));
        let node = self.node;
        node.children
            .iter()
            .enumerate()
            .filter(|(_, c)| c.name == key)
            .map(|(i, c)| {
                self.used_children[i] = true;
                c
            })
            .collect()
    }

    /// Children with this name (marks them used).
    pub fn children(&mut self, key: &'static str) -> Vec<&'a RawNode> {
        self.children_shaped(key, Shape::Block)
    }

    /// At most one child with this name.
    pub fn child(&mut self, key: &'static str) -> Option<&'a RawNode> {
        let cs = self.children(key);
        for extra in cs.iter().skip(1) {
            self.problems.push(
                Problem::new(format!("`{key}` appears twice"), extra.name_span, "again here")
                    .also(cs[0].name_span, "first here")
                    .help(format!("merge the two `{key}` blocks into one")),
            );
        }
        cs.first().copied()
    }

    /// A string list written as one or more children with arguments (`fallback "a" "b"`,
    /// TOML `fallback = ["a", "b"]`).
    pub fn list(&mut self, key: &'static str) -> Vec<Spanned<String>> {
        let mut out = Vec::new();
        let example = self.syntax().pick(&format!("{key} \"value\""), &format!("{key} = [\"value\"]")).to_string();
        for c in self.children_shaped(key, Shape::List) {
            if c.args.is_empty() {
                self.problems.push(
                    Problem::new(format!("`{key}` needs at least one value"), c.name_span, "empty")
                        .help(format!("write `{example}`, or remove it")),
                );
            }
            let mut r = Reader::new(c, self.problems);
            out.extend(r.args_str());
            r.finish();
        }
        out
    }

    /// Says which setting a lone positional argument probably meant, for the help of
    /// `finish`; returns whether there is such an argument.
    pub fn positional_means(&mut self, key: &'static str) -> bool {
        self.positional_means = Some(key);
        self.node.args.len() == 1 && self.args_used == 0
    }

    /// Whether the user tried to give `key`: it is written (perhaps with a wrong type
    /// that was already reported), or an unknown key is a misspelling of it. Checks that
    /// a required key is missing use this so that one mistake gives one diagnostic.
    /// Call it after every key of the node was asked for.
    pub fn attempted(&self, key: &str) -> bool {
        let known: Vec<&str> = self.asked.iter().map(|(k, _)| *k).collect();
        let close = |got: &str| !known.contains(&got) && did_you_mean(got, known.iter().copied()) == Some(key);
        self.node.props.iter().any(|p| p.key == key || close(&p.key))
            || self.node.children.iter().any(|c| c.name == key || close(&c.name))
    }

    /// Reports leftovers: extra arguments, unknown properties and children.
    pub fn finish(mut self) {
        if let Some(p) = self.missing_name.take() {
            if !self.attempted("name") {
                self.problems.push(p);
            }
        }
        let node = self.node;
        let syntax = self.syntax();
        if node.args.len() > self.args_used {
            let extra = &node.args[self.args_used..];
            let span = extra.iter().skip(1).fold(extra[0].span, |acc, a| join(acc, a.span));
            let help = match (syntax, self.args_used, self.positional_means, extra) {
                (_, 0, Some(key), [one]) => {
                    let value = match &one.value {
                        RawValue::Str(s) => format!("{s:?}"),
                        RawValue::Int(i) => i.to_string(),
                        RawValue::Float(f) => f.to_string(),
                        other => other.type_name().to_string(),
                    };
                    match syntax {
                        Syntax::Kdl => format!("name the value: `{} {key}={value}`", node.name),
                        Syntax::Toml => format!("name the value: `{} = {{ {key} = {value} }}`", node.name),
                    }
                }
                (Syntax::Toml, ..) => format!("{} takes a table of settings: `{} = {{ … }}`", self.what, node.name),
                (Syntax::Kdl, 0, ..) => {
                    format!("{} takes no positional arguments; use `key=value` properties", self.what)
                }
                (Syntax::Kdl, n, ..) => {
                    format!("{} takes {n} argument(s); quote values that contain spaces", self.what)
                }
            };
            self.problems
                .push(Problem::new(format!("unexpected argument to {}", self.what), span, "not expected").help(help));
        }
        let mut known_props: Vec<&str> =
            self.asked.iter().filter(|(_, s)| matches!(s, Shape::Setting | Shape::Property)).map(|(k, _)| *k).collect();
        known_props.sort();
        known_props.dedup();
        let mut known_children: Vec<&str> =
            self.asked.iter().filter(|(_, s)| *s != Shape::Property).map(|(k, _)| *k).collect();
        known_children.sort();
        known_children.dedup();
        for (i, p) in node.props.iter().enumerate() {
            if self.used_props[i] {
                continue;
            }
            let shape = self.asked.iter().find(|(k, _)| *k == p.key).map(|(_, s)| *s);
            let problem = match shape {
                Some(Shape::List) => {
                    let example = match &p.value.value {
                        RawValue::Str(s) => format!("\"{s}\""),
                        _ => "\"…\"".to_string(),
                    };
                    Problem::new(format!("`{}` is a list, not a single value", p.key), p.key_span, "written as a value")
                        .help(match syntax {
                            Syntax::Kdl => format!("write it as a child: `{{ {} {example} }}`", p.key),
                            Syntax::Toml => format!("write `{} = [{example}]`", p.key),
                        })
                }
                Some(_) => Problem::new(
                    format!("`{}` is a block, not a single value", p.key),
                    p.key_span,
                    "written as a value",
                )
                .help(match syntax {
                    Syntax::Kdl => format!("write it as a child block: `{{ {} … }}`", p.key),
                    Syntax::Toml => format!("write a table: `{} = {{ … }}`", p.key),
                }),
                None => Problem::new(
                    format!("unknown property `{}` on {}", p.key, self.what),
                    p.key_span,
                    "unknown property",
                )
                .help(choices_help(&p.key, &known_props)),
            };
            self.problems.push(problem);
        }
        for (i, c) in node.children.iter().enumerate() {
            if !self.used_children[i] {
                self.problems.push(
                    Problem::new(
                        format!("unknown setting `{}` in {}", c.name, self.what),
                        c.name_span,
                        "unknown setting",
                    )
                    .help(choices_help(&c.name, &known_children)),
                );
            }
        }
    }
}
