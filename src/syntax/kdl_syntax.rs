//! Plain-language diagnostics for the KDL syntax mistakes people actually make.
//!
//! When the kdl parser fails, its messages describe parser states ("Expected property
//! value", "not EOF"), it may report one mistake several times, and some of its spans
//! cover the file from its first byte. So on failure this scanner walks the text with
//! KDL's lexical rules and explains the first mistake it recognises, with a span on the
//! mistake itself; `None` means it recognised none, and the parser's own report is used.

use miette::SourceSpan;

use super::diagnostic::Problem;

/// A `{` and what it opened.
struct Open {
    at: usize,
    /// The node the block belongs to, as written.
    node: String,
    /// Indentation of the line the node starts on.
    indent: usize,
    line: usize,
    closed_at: Option<usize>,
}

pub fn explain(text: &str) -> Option<Problem> {
    Scanner {
        text,
        pos: 0,
        node: None,
        key: None,
        opens: Vec::new(),
        stack: Vec::new(),
        continued: false,
        node_arg: false,
    }
    .run()
}

struct Scanner<'t> {
    text: &'t str,
    pos: usize,
    /// The current node's name and where it starts, once one is read on this line;
    /// with its first argument once read, `agent "alice"`.
    node: Option<(String, usize)>,
    node_arg: bool,
    /// The key of a `key=` just read, while its value is expected.
    key: Option<(String, usize)>,
    opens: Vec<Open>,
    /// Indices into `opens` of the blocks open at `pos`.
    stack: Vec<usize>,
    /// A `\` continues the node on the next line.
    continued: bool,
}

fn is_newline(c: char) -> bool {
    matches!(c, '\n' | '\r' | '\u{85}' | '\u{0B}' | '\u{0C}' | '\u{2028}' | '\u{2029}')
}

fn is_space(c: char) -> bool {
    !is_newline(c) && (c.is_whitespace() || c == '\u{FEFF}')
}

/// Characters that end a bare word (identifier or number).
fn ends_word(c: char) -> bool {
    is_space(c) || is_newline(c) || "\\/(){}[];=\"#".contains(c)
}

impl<'t> Scanner<'t> {
    fn peek(&self) -> Option<char> {
        self.text[self.pos..].chars().next()
    }

    fn rest(&self) -> &'t str {
        &self.text[self.pos..]
    }

    fn line_of(&self, at: usize) -> usize {
        self.text[..at].matches('\n').count() + 1
    }

    fn line_start(&self, at: usize) -> usize {
        self.text[..at].rfind('\n').map(|i| i + 1).unwrap_or(0)
    }

    fn line_end(&self, at: usize) -> usize {
        self.text[at..].find(['\n', '\r']).map(|i| at + i).unwrap_or(self.text.len())
    }

    fn indent_at(&self, at: usize) -> usize {
        let start = self.line_start(at);
        self.text[start..].chars().take_while(|c| *c == ' ' || *c == '\t').count()
    }

    fn run(mut self) -> Option<Problem> {
        while let Some(c) = self.peek() {
            if let Some(p) = self.step(c) {
                return Some(p);
            }
        }
        if !self.stack.is_empty() {
            return Some(self.unclosed());
        }
        None
    }

    fn step(&mut self, c: char) -> Option<Problem> {
        let start = self.pos;
        if is_space(c) {
            self.pos += c.len_utf8();
            return None;
        }
        if is_newline(c) {
            self.pos += c.len_utf8();
            if self.continued {
                self.continued = false;
            } else {
                self.end_node();
            }
            return None;
        }
        match c {
            ';' => {
                self.pos += 1;
                self.end_node();
            }
            '\\' => {
                self.pos += 1;
                self.continued = true;
            }
            '/' => return self.slash(),
            '{' => {
                let Some((node, node_at)) = self.node.take() else {
                    return Some(self.brace_without_node());
                };
                self.opens.push(Open {
                    at: start,
                    node,
                    indent: self.indent_at(node_at),
                    line: self.line_of(start),
                    closed_at: None,
                });
                self.stack.push(self.opens.len() - 1);
                self.pos += 1;
            }
            '}' => {
                let Some(i) = self.stack.pop() else {
                    return Some(self.stray_close());
                };
                self.opens[i].closed_at = Some(start);
                self.node = None;
                self.pos += 1;
            }
            '(' => match self.rest().find(')') {
                Some(i) if !self.rest()[..i].contains('\n') => self.pos += i + 1,
                _ => return self.give_up(),
            },
            '"' => return self.string(),
            '[' => return Some(self.bracket()),
            '#' => return self.hash(),
            '=' => {
                self.pos += 1;
                return self.after_equals(start);
            }
            _ => return self.word(),
        }
        None
    }

    /// Stops scanning: a mistake this scanner does not know how to explain.
    fn give_up(&mut self) -> Option<Problem> {
        self.pos = self.text.len();
        self.stack.clear();
        None
    }

    fn end_node(&mut self) {
        self.node = None;
        self.key = None;
    }

    fn after_equals(&mut self, eq: usize) -> Option<Problem> {
        let before = self.text[..eq].trim_end();
        // After the separator character — which may be wider than a byte (U+FEFF is a KDL space).
        let key_start = before
            .char_indices()
            .rev()
            .find(|&(_, c)| is_space(c) || is_newline(c) || c == '{' || c == ';')
            .map(|(i, c)| i + c.len_utf8())
            .unwrap_or(0);
        let key = self.text[key_start..eq].trim().trim_matches('"').to_string();
        let rest = self.rest();
        let value_at = rest.len() - rest.trim_start_matches(is_space).len();
        let next = rest[value_at..].chars().next();
        if next.is_none_or(|c| is_newline(c) || matches!(c, ';' | '{' | '}')) || rest[value_at..].starts_with("//") {
            let span = SourceSpan::from(key_start..eq + 1);
            return Some(
                Problem::new(format!("`{key}=` has no value"), span, "value missing")
                    .help(format!("give it a value, e.g. `{key}=\"…\"`, or remove it")),
            );
        }
        self.key = Some((key, key_start));
        None
    }

    fn slash(&mut self) -> Option<Problem> {
        let rest = self.rest();
        if rest.starts_with("//") {
            self.pos += rest.find(['\n', '\r']).unwrap_or(rest.len());
            return None;
        }
        if rest.starts_with("/-") {
            self.pos += 2;
            return None;
        }
        if rest.starts_with("/*") {
            let start = self.pos;
            let mut depth = 0usize;
            let bytes = self.text.as_bytes();
            let mut i = self.pos;
            while i + 1 < bytes.len() {
                match (bytes[i], bytes[i + 1]) {
                    (b'/', b'*') => {
                        depth += 1;
                        i += 2;
                    }
                    (b'*', b'/') => {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            self.pos = i;
                            return None;
                        }
                    }
                    _ => i += 1,
                }
            }
            return Some(
                Problem::new(
                    "unterminated comment",
                    SourceSpan::from(start..start + 2),
                    "this comment is never closed",
                )
                .help("close it with `*/`"),
            );
        }
        self.give_up()
    }

    fn string(&mut self) -> Option<Problem> {
        let start = self.pos;
        if self.rest().starts_with("\"\"\"") {
            return match self.text[start + 3..].find("\"\"\"") {
                Some(i) => {
                    self.pos = start + 3 + i + 3;
                    self.value_read(start, None)
                }
                None => Some(
                    Problem::new("unterminated multi-line string", SourceSpan::from(start..start + 3), "opened here")
                        .help("close it with `\"\"\"` on a line of its own"),
                ),
            };
        }
        let mut chars = self.text[start + 1..].char_indices();
        let mut content = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.pos = start + 1 + i + 1;
                    return self.value_read(start, Some(content));
                }
                '\\' => match chars.next() {
                    // A `\` before whitespace skips it, newlines included.
                    Some((_, w)) if is_space(w) || is_newline(w) => {
                        while chars.clone().next().is_some_and(|(_, w)| is_space(w) || is_newline(w)) {
                            chars.next();
                        }
                    }
                    Some((_, e)) => content.push(e),
                    None => break,
                },
                c if is_newline(c) => break,
                c => content.push(c),
            }
        }
        let end = self.line_end(start);
        let end = start + self.text[start..end].trim_end().len();
        Some(
            Problem::new("unterminated string", SourceSpan::from(start..end), "this string is not closed on its line")
                .help("add the closing `\"`; strings end on the line they start (`\"\"\"` opens a multi-line one)"),
        )
    }

    fn hash(&mut self) -> Option<Problem> {
        let start = self.pos;
        let hashes = self.rest().chars().take_while(|c| *c == '#').count();
        let after = &self.text[start + hashes..];
        if !after.starts_with('"') {
            // A keyword: #true, #false, #null, #inf, #-inf, #nan.
            self.pos += hashes;
            let len = self.rest().find(ends_word).unwrap_or(self.rest().len());
            self.pos += len;
            return self.value_read(start, None);
        }
        let quotes = if after.starts_with("\"\"\"") { 3 } else { 1 };
        let close = format!("{}{}", "\"".repeat(quotes), "#".repeat(hashes));
        let body = start + hashes + quotes;
        match self.text[body..].find(&close) {
            Some(i) if quotes == 3 || !self.text[body..body + i].contains('\n') => {
                self.pos = body + i + close.len();
                self.value_read(start, None)
            }
            _ => {
                let end = self.line_end(start);
                let end = start + self.text[start..end].trim_end().len();
                Some(
                    Problem::new(
                        "unterminated raw string",
                        SourceSpan::from(start..end),
                        "this string is never closed",
                    )
                    .help(format!("close it with `{close}`")),
                )
            }
        }
    }

    /// A bare word: a node name, an identifier string or a number.
    fn word(&mut self) -> Option<Problem> {
        let start = self.pos;
        let len = self.rest().find(ends_word).unwrap_or(self.rest().len());
        if len == 0 {
            return self.give_up();
        }
        let word = &self.text[start..start + len];
        self.pos += len;
        // KDL v1 raw strings: r"…", r#"…"#.
        if (word == "r" || word.strip_prefix('r').is_some_and(|h| h.chars().all(|c| c == '#')))
            && self.peek() == Some('"')
        {
            let hashes = word.len() - 1;
            let close = format!("\"{}", "#".repeat(hashes));
            return match self.text[self.pos + 1..].find(&close) {
                Some(i) => {
                    self.pos += 1 + i + close.len();
                    self.value_read(start, None)
                }
                None => self.give_up(),
            };
        }
        let digits = word.strip_prefix(['+', '-']).unwrap_or(word);
        let numeric_start = digits.starts_with(|c: char| c.is_ascii_digit())
            || (digits.starts_with('.') && digits[1..].starts_with(|c: char| c.is_ascii_digit()));
        if numeric_start && !is_number(word) {
            let example = match &self.key {
                Some((key, _)) => format!("{key}=\"{word}\""),
                None => format!("\"{word}\""),
            };
            return Some(
                Problem::new(
                    format!("`{word}` is not a valid value"),
                    SourceSpan::from(start..start + len),
                    "starts like a number but is not one",
                )
                .help(format!("text needs double quotes: `{example}`; numbers are digits only, like `4000`")),
            );
        }
        self.value_read(start, Some(word.to_string()))
    }

    /// After a value: it must be followed by a space, a newline, `;`, `=` or a brace.
    fn value_read(&mut self, start: usize, text: Option<String>) -> Option<Problem> {
        let next = self.peek();
        if let Some(c) = next {
            if !(is_space(c) || is_newline(c) || ";={}()/\\".contains(c)) {
                let at = self.pos;
                let span = SourceSpan::from(at..at + c.len_utf8());
                if c == ',' {
                    let line = &self.text[self.line_start(at)..self.line_end(at)];
                    let fixed = line.trim().replace("\", \"", "\" \"").replace("\",\"", "\" \"");
                    return Some(
                        Problem::new("unexpected `,`", span, "KDL does not separate values with commas")
                            .help(format!("separate values with spaces: `{fixed}`")),
                    );
                }
                return Some(
                    Problem::new(format!("unexpected `{c}` right after a value"), span, "expected a space before this")
                        .help("separate values with spaces, and put text in double quotes"),
                );
            }
        }
        if next == Some('=') && self.node.is_none() {
            return Some(self.property_without_node(start));
        }
        if self.key.take().is_none() && next != Some('=') {
            match &mut self.node {
                None => {
                    self.node = Some((text.unwrap_or_default(), start));
                    self.node_arg = false;
                }
                Some((name, _)) if !self.node_arg => {
                    self.node_arg = true;
                    if let Some(arg) = text {
                        name.push_str(&format!(" {arg:?}"));
                    }
                }
                Some(_) => {}
            }
        }
        None
    }

    /// `key=value` where a node name is expected, as in `{ role="x" }`.
    fn property_without_node(&self, start: usize) -> Problem {
        let eq = self.pos;
        let key = self.text[start..eq].trim_matches('"');
        let value_len = self.text[eq + 1..].find(|c: char| is_space(c) || is_newline(c) || c == ';' || c == '}');
        let value = &self.text[eq + 1..eq + 1 + value_len.unwrap_or(0)];
        Problem::new(
            format!("`{key}={value}` is a property, but there is no node before it"),
            SourceSpan::from(start..eq + 1 + value.len()),
            "property with no node",
        )
        .help(format!("inside a block, write a child node: `{key} {value}`; or put `{key}={value}` on its node's line"))
    }

    /// `models ["a", "b"]`: a list in JSON or TOML style.
    fn bracket(&self) -> Problem {
        let at = self.pos;
        let end = self.line_end(at);
        let close = self.text[at..end].find(']').map(|i| at + i + 1);
        let span = SourceSpan::from(at..close.unwrap_or(at + 1));
        let inner = &self.text[at + 1..close.map(|c| c - 1).unwrap_or(at + 1)];
        let values: Vec<&str> = inner.split(',').map(str::trim).filter(|v| !v.is_empty()).collect();
        let help = match (&self.key, values.is_empty()) {
            (Some((key, _)), false) => format!(
                "a property holds one value; for several, use a child with values separated by spaces: `{key} {}`",
                values.join(" ")
            ),
            (None, false) => {
                let node = self.node.as_ref().map(|(n, _)| format!("{n} ")).unwrap_or_default();
                format!("write the values separated by spaces: `{node}{}`", values.join(" "))
            }
            (_, true) => "write values separated by spaces, without brackets".to_string(),
        };
        Problem::new("KDL has no `[…]` lists", span, "not KDL").help(help)
    }

    fn brace_without_node(&self) -> Problem {
        let at = self.pos;
        let before = self.text[..self.line_start(at)].trim_end();
        let prev = before.rsplit('\n').next().unwrap_or("").trim();
        let help = if prev.is_empty() || prev.ends_with('}') {
            "a block belongs to the node before it on the same line: `agent \"alice\" {`".to_string()
        } else {
            format!("move the `{{` up to the end of the node's line: `{prev} {{`")
        };
        Problem::new("a `{` must be on the same line as its node", SourceSpan::from(at..at + 1), "block with no node")
            .help(help)
    }

    fn stray_close(&self) -> Problem {
        let at = self.pos;
        let span = SourceSpan::from(at..at + 1);
        // The likely culprit: the last `}` that closed a block spanning several lines
        // without being on a line of its own, as in `role="x" }`.
        let last = self.opens.iter().filter(|o| o.closed_at.is_some()).max_by_key(|o| o.closed_at).filter(|o| {
            let closed = o.closed_at.unwrap_or(at);
            self.line_of(closed) != o.line && !self.text[self.line_start(closed)..closed].trim().is_empty()
        });
        match last {
            Some(o) => {
                let closed = o.closed_at.unwrap_or(at);
                Problem::new("unexpected `}`: no block is open here", span, "nothing to close")
                    .also(SourceSpan::from(closed..closed + 1), format!("this already closed the `{}` block", o.node))
                    .help(format!(
                        "remove one of the two; the `{}` block opened on line {} is closed on line {}",
                        o.node,
                        o.line,
                        self.line_of(closed)
                    ))
            }
            None => Problem::new("unexpected `}`: no block is open here", span, "nothing to close")
                .help("remove it, or add the `{` that should open its block"),
        }
    }

    /// At the end of the file with blocks still open: find the block whose `}` is missing,
    /// using indentation to guess where it should have ended.
    fn unclosed(&self) -> Problem {
        let lines: Vec<(usize, &str)> = {
            let mut at = 0;
            self.text
                .split_inclusive('\n')
                .map(|l| {
                    let start = at;
                    at += l.len();
                    (start, l)
                })
                .collect()
        };
        for o in &self.opens {
            let indent_of = |l: &str| l.chars().take_while(|c| *c == ' ' || *c == '\t').count();
            let after = lines.iter().skip(o.line).find(|(_, l)| {
                let t = l.trim();
                !t.is_empty() && !t.starts_with("//") && indent_of(l) <= o.indent
            });
            let Some((line_at, line)) = after else { continue };
            let indent = indent_of(line);
            if line.trim().starts_with('}') {
                continue;
            }
            if o.closed_at.is_some_and(|c| c < *line_at) {
                continue;
            }
            let first = line_at + indent;
            let word_len = line.trim().find(char::is_whitespace).unwrap_or(line.trim().len());
            let line_no = self.line_of(*line_at);
            return Problem::new(
                format!("missing `}}`: the `{}` block is not closed", o.node),
                SourceSpan::from(o.at..o.at + 1),
                "this block",
            )
            .also(SourceSpan::from(first..first + word_len), "the block should end before this line")
            .help(format!("add a `}}` before line {line_no}"));
        }
        let o = &self.opens[self.stack[self.stack.len() - 1]];
        Problem::new(
            format!("missing `}}`: the `{}` block is not closed", o.node),
            SourceSpan::from(o.at..o.at + 1),
            "this block is never closed",
        )
        .help("add a `}` where the block ends")
    }
}

/// A KDL number: decimal (with `_`, fraction, exponent) or 0x / 0o / 0b.
fn is_number(word: &str) -> bool {
    let s = word.strip_prefix(['+', '-']).unwrap_or(word);
    let digits = |t: &str, radix: u32| {
        t.starts_with(|c: char| c.is_digit(radix)) && t.chars().all(|c| c == '_' || c.is_digit(radix))
    };
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(t) = s.strip_prefix(prefix) {
            return digits(t, radix);
        }
    }
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (mantissa, None),
    };
    digits(int, 10)
        && frac.is_none_or(|f| digits(f, 10))
        && exponent.is_none_or(|e| digits(e.strip_prefix(['+', '-']).unwrap_or(e), 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(text: &str) -> (String, String) {
        let p = explain(text).expect("a problem");
        (p.message, text[p.span.offset()..p.span.offset() + p.span.len()].to_string())
    }

    #[test]
    fn numbers() {
        for ok in ["0", "4000", "-1", "+2", "1_000", "1.5", "1e10", "1.5E-3", "0x1F", "0o17", "0b101"] {
            assert!(is_number(ok), "{ok}");
        }
        for bad in ["30m", "1.106.2", "18789x", "0x", "1.", "1e", ".5"] {
            assert!(!is_number(bad), "{bad}");
        }
    }

    #[test]
    fn explains_common_mistakes_at_the_mistake() {
        assert_eq!(first("a {\n  b every=30m\n}\n"), ("`30m` is not a valid value".into(), "30m".into()));
        assert_eq!(first("a x=\"open {\n}\n"), ("unterminated string".into(), "\"open {".into()));
        assert_eq!(first("a\n}\n"), ("unexpected `}`: no block is open here".into(), "}".into()));
        assert_eq!(first("a host=\nb\n"), ("`host=` has no value".into(), "host=".into()));
        assert_eq!(first("a \"x\", \"y\"\n"), ("unexpected `,`".into(), ",".into()));
        assert_eq!(first("a \"x\"\n{\n}\n"), ("a `{` must be on the same line as its node".into(), "{".into()));
        assert_eq!(first("models [\"a\", \"b\"]\n"), ("KDL has no `[…]` lists".into(), "[\"a\", \"b\"]".into()));
        assert_eq!(
            first("a { role=\"x\" }\n"),
            ("`role=\"x\"` is a property, but there is no node before it".into(), "role=\"x\"".into())
        );
        let (m, s) = first("agent \"a\" {\n    x 1\n\nagent \"b\"\n");
        assert_eq!((m.as_str(), s.as_str()), ("missing `}`: the `agent \"a\"` block is not closed", "{"));
    }

    #[test]
    fn accepts_what_kdl_accepts() {
        let ok = "// c\nfleet \"a\" { parallelism 8; }\n/* x /* y */ */ n #\"raw \"q\"\"# (t)\"v\" k = #true \\\n  z=0x1F\nm r\"v1\" s=\"\"\"\n  multi\n  \"\"\"\n";
        assert!(explain(ok).is_none(), "{:?}", explain(ok).map(|p| p.message));
    }
}
