//! Span-carrying errors for fleet files and recipes, rendered by miette.

use std::fmt;
use std::sync::Arc;

use miette::{Diagnostic, LabeledSpan, NamedSource, SourceSpan};

/// One problem at one place in a source file.
#[derive(Debug, Clone)]
pub struct Problem {
    pub message: String,
    pub span: SourceSpan,
    pub label: String,
    pub help: Option<String>,
    /// Secondary places worth pointing at (e.g. the first definition of a duplicate).
    pub also: Vec<(SourceSpan, String)>,
}

impl Problem {
    pub fn new(message: impl Into<String>, span: SourceSpan, label: impl Into<String>) -> Self {
        Problem { message: message.into(), span, label: label.into(), help: None, also: Vec::new() }
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn also(mut self, span: SourceSpan, label: impl Into<String>) -> Self {
        self.also.push((span, label.into()));
        self
    }
}

/// The syntax a file is written in, so that help shows fixes the user can paste.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Syntax {
    #[default]
    Kdl,
    Toml,
}

impl Syntax {
    /// `key=value` in KDL, `key = value` in TOML.
    pub fn assign(self, key: &str, value: &str) -> String {
        match self {
            Syntax::Kdl => format!("{key}={value}"),
            Syntax::Toml => format!("{key} = {value}"),
        }
    }

    /// One of two spellings of the same example.
    pub fn pick<'a>(self, kdl: &'a str, toml: &'a str) -> &'a str {
        match self {
            Syntax::Kdl => kdl,
            Syntax::Toml => toml,
        }
    }
}

/// Collects problems while a whole file is checked, so the user sees all of them at once.
#[derive(Debug, Default)]
pub struct Problems {
    list: Vec<Problem>,
    pub syntax: Syntax,
    /// Node kinds whose TOML spelling names them in the table header (`[agent.alice]`).
    pub named_kinds: &'static [&'static str],
}

impl Problems {
    pub fn new(syntax: Syntax) -> Self {
        Problems { list: Vec::new(), syntax, named_kinds: &[] }
    }
    pub fn push(&mut self, p: Problem) {
        self.list.push(p);
    }
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
    pub fn len(&self) -> usize {
        self.list.len()
    }
    pub fn into_report(mut self, source: &SourceFile) -> SpecError {
        self.list.sort_by_key(|p| p.span.offset());
        SpecError {
            src: source.named(),
            problems: self.list.into_iter().map(|p| ProblemDiag { p, src: source.named() }).collect(),
            warning: false,
        }
    }

    /// The same report, as warnings: printed, nothing refused.
    pub fn into_warning_report(self, source: &SourceFile) -> SpecError {
        SpecError { warning: true, ..self.into_report(source) }
    }
}

/// A source file's name (as the user should see it) and text.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub name: String,
    pub text: Arc<String>,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: String) -> Self {
        SourceFile { name: name.into(), text: Arc::new(text) }
    }
    pub fn named(&self) -> NamedSource<Arc<String>> {
        NamedSource::new(self.name.clone(), self.text.clone()).with_language(if self.name.ends_with(".toml") {
            "TOML"
        } else {
            "KDL"
        })
    }
}

/// Every problem found in one file; the top-level error of `fleet validate`.
#[derive(Debug)]
pub struct SpecError {
    src: NamedSource<Arc<String>>,
    problems: Vec<ProblemDiag>,
    /// Warnings (`fleet::spec::warning`): said, and the run goes on.
    warning: bool,
}

impl SpecError {
    pub fn problems(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().map(|d| &d.p)
    }
    /// A file that could not even be read: no source to point at.
    pub fn unreadable(name: &str, why: &str) -> Self {
        let src = SourceFile::new(name, String::new());
        let mut ps = Problems::default();
        ps.push(Problem::new(format!("cannot read {name}: {why}"), SourceSpan::from(0..0), "here"));
        ps.into_report(&src)
    }
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.problems.len();
        if n == 1 {
            write!(f, "{}", self.problems[0].p.message)
        } else {
            write!(f, "{n} problems in {}", self.src.name())
        }
    }
}

impl std::error::Error for SpecError {}

impl Diagnostic for SpecError {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(if self.warning { "fleet::spec::warning" } else { "fleet::spec" }))
    }
    fn severity(&self) -> Option<miette::Severity> {
        self.warning.then_some(miette::Severity::Warning)
    }
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        if self.problems.len() == 1 {
            Some(&self.src)
        } else {
            None
        }
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        if self.problems.len() == 1 {
            self.problems[0].labels()
        } else {
            None
        }
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        if self.problems.len() == 1 {
            self.problems[0].help()
        } else {
            None
        }
    }
    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn Diagnostic> + 'a>> {
        if self.problems.len() == 1 {
            None
        } else {
            Some(Box::new(self.problems.iter().map(|d| d as &dyn Diagnostic)))
        }
    }
}

#[derive(Debug)]
struct ProblemDiag {
    p: Problem,
    src: NamedSource<Arc<String>>,
}

impl fmt::Display for ProblemDiag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.p.message)
    }
}

impl std::error::Error for ProblemDiag {}

impl Diagnostic for ProblemDiag {
    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let primary = LabeledSpan::new_primary_with_span(Some(self.p.label.clone()), self.p.span);
        let also = self.p.also.iter().map(|(s, l)| LabeledSpan::new_with_span(Some(l.clone()), *s));
        Some(Box::new(std::iter::once(primary).chain(also)))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.p.help.as_ref().map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
}

/// "did you mean" for a misspelt name among known ones.
pub fn did_you_mean<'a>(got: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (edit_distance(got, k), k))
        .filter(|(d, k)| *d <= k.len().max(got.len()).div_ceil(3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Optimal string alignment distance: edits, with a swap of neighbours counting once.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// A help line listing the known choices, with a suggestion when one is close.
pub fn choices_help(got: &str, known: &[&str]) -> String {
    let list = known.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ");
    match did_you_mean(got, known.iter().copied()) {
        Some(s) if known.len() == 1 => format!("did you mean `{s}`?"),
        Some(s) => format!("did you mean `{s}`?\nknown: {list}"),
        None if known.is_empty() => "none are declared".to_string(),
        None => format!("known: {list}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        assert_eq!(did_you_mean("agnet", ["agent", "host", "gateway"]), Some("agent"));
        assert_eq!(did_you_mean("gatway", ["agent", "host", "gateway"]), Some("gateway"));
        assert_eq!(did_you_mean("zzz", ["agent", "host"]), None);
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
