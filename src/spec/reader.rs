//! A checked reader over one raw node: typed accessors that record problems
//! (wrong type, duplicates, missing values) and, at `finish`, every property or
//! child nobody asked for, with a "did you mean".

use miette::SourceSpan;

use super::diagnostic::{choices_help, Problem, Problems};
use super::model::Spanned;
use super::raw::{join, RawEntry, RawNode, RawValue};

pub struct Reader<'a, 'p> {
    node: &'a RawNode,
    what: String,
    used_props: Vec<bool>,
    used_children: Vec<bool>,
    args_used: usize,
    asked: Vec<&'static str>,
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
            problems,
        }
    }

    pub fn span(&self) -> SourceSpan {
        self.node.name_span
    }

    /// The node's name: its first argument (`agent "alice"`) or a `name` property (TOML `[[agent]]`).
    pub fn name(&mut self, example: &str) -> Option<Spanned<String>> {
        if let Some(first) = self.node.args.first() {
            self.args_used = 1;
            return self.string_of(first, "name");
        }
        if let Some(v) = self.prop_entry("name") {
            return self.string_of(v, "name");
        }
        self.problems.push(
            Problem::new(format!("{} needs a name", self.what), self.node.name_span, "name missing")
                .help(format!("for example: {example}")),
        );
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
                        .help(format!("for example: {example}")),
                );
                None
            }
        }
    }

    /// All positional arguments as strings (`models "a" "b"`).
    pub fn args_str(&mut self) -> Vec<Spanned<String>> {
        self.args_used = self.node.args.len();
        let node = self.node;
        node.args.iter().filter_map(|a| self.string_of(a, "a value")).collect()
    }

    fn prop_entry(&mut self, key: &'static str) -> Option<&'a RawEntry> {
        self.asked.push(key);
        let mut found: Option<(usize, &'a RawEntry)> = None;
        for (i, p) in self.node.props.iter().enumerate() {
            if p.key == key {
                if let Some((first, _)) = found {
                    self.problems.push(
                        Problem::new(format!("`{key}` is set twice"), p.key_span, "set again here")
                            .also(self.node.props[first].key_span, "first set here")
                            .help("KDL keeps the last value; fleet asks you to say it once"),
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
        let from_prop = self.prop_entry(key);
        let mut from_child: Option<&'a RawEntry> = None;
        for (i, c) in self.node.children.iter().enumerate() {
            if c.name != key {
                continue;
            }
            self.used_children[i] = true;
            if from_prop.is_some() || from_child.is_some() {
                self.problems.push(
                    Problem::new(format!("`{key}` is set twice"), c.name_span, "set again here")
                        .help("say it once, as a property or as a child, not both"),
                );
                continue;
            }
            match c.args.as_slice() {
                [one] if c.props.is_empty() && c.children.is_empty() => from_child = Some(one),
                [] => self.problems.push(
                    Problem::new(format!("`{key}` needs a value"), c.name_span, "value missing")
                        .help(format!("write `{key} <value>`")),
                ),
                _ => self.problems.push(
                    Problem::new(format!("`{key}` takes exactly one value"), c.name_span, "here")
                        .help(format!("write `{key} <value>`")),
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
                    RawValue::Str(s) if s.parse::<i128>().is_ok() => format!("drop the quotes: `{key}={s}`"),
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

    /// Children with this name (marks them used).
    pub fn children(&mut self, key: &'static str) -> Vec<&'a RawNode> {
        self.asked.push(key);
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
        for c in self.children(key) {
            if c.args.is_empty() {
                self.problems.push(
                    Problem::new(format!("`{key}` needs at least one value"), c.name_span, "empty")
                        .help(format!("write `{key} \"value\"`")),
                );
            }
            let mut r = Reader::new(c, self.problems);
            out.extend(r.args_str());
            r.finish();
        }
        out
    }

    /// Reports leftovers: extra arguments, unknown properties and children.
    pub fn finish(self) {
        let node = self.node;
        if node.args.len() > self.args_used {
            let extra = &node.args[self.args_used..];
            let span = extra.iter().skip(1).fold(extra[0].span, |acc, a| join(acc, a.span));
            let help = if self.args_used == 0 {
                format!("{} takes no positional arguments; use `key=value` properties", self.what)
            } else {
                format!("{} takes {} argument(s); quote values that contain spaces", self.what, self.args_used)
            };
            self.problems.push(Problem::new(format!("unexpected argument to {}", self.what), span, "not expected").help(help));
        }
        let mut known: Vec<&str> = self.asked.clone();
        known.sort();
        known.dedup();
        for (i, p) in node.props.iter().enumerate() {
            if !self.used_props[i] {
                self.problems.push(
                    Problem::new(format!("unknown property `{}` on {}", p.key, self.what), p.key_span, "unknown property")
                        .help(choices_help(&p.key, &known)),
                );
            }
        }
        for (i, c) in node.children.iter().enumerate() {
            if !self.used_children[i] {
                self.problems.push(
                    Problem::new(format!("unknown setting `{}` in {}", c.name, self.what), c.name_span, "unknown setting")
                        .help(choices_help(&c.name, &known)),
                );
            }
        }
    }
}
