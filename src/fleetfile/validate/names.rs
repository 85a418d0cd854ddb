//! What every section's checks share: the names the file declares (hosts, images, the models the
//! providers offer), the nodes that did not decode (references to them are not reported again),
//! and the checks of a reference against them.

use std::collections::BTreeMap;

use miette::SourceSpan;

use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems, Syntax};

pub struct Index<'a> {
    pub syntax: Syntax,
    pub hosts: &'a [Host],
    pub host_names: Vec<&'a str>,
    pub image_names: Vec<&'a str>,
    /// Model name → where its provider offers it.
    pub offered: BTreeMap<&'a str, &'a Spanned<String>>,
    pub model_names: Vec<&'a str>,
    broken: &'a [(&'static str, Option<String>)],
}

impl<'a> Index<'a> {
    /// The index of a file's names; a model offered by two providers is reported here.
    pub fn new(
        p: &mut Problems,
        hosts: &'a [Host],
        images: &'a [Image],
        providers: &'a [Provider],
        broken: &'a [(&'static str, Option<String>)],
    ) -> Index<'a> {
        let mut offered: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
        for prov in providers {
            for m in &prov.models {
                if let Some(first) = offered.get(m.name.value.as_str()) {
                    p.push(
                        Problem::new(
                            format!("model {:?} is offered by two providers", m.name.value),
                            m.name.span,
                            "offered again here",
                        )
                        .also(first.span, "first offered here")
                        .help("a model name routes to one provider; remove it from one of them"),
                    );
                } else {
                    offered.insert(m.name.value.as_str(), &m.name);
                }
            }
        }
        Index {
            syntax: p.syntax,
            hosts,
            host_names: hosts.iter().map(|h| h.name.value.as_str()).collect(),
            image_names: images.iter().map(|i| i.name.value.as_str()).collect(),
            model_names: offered.keys().copied().collect(),
            offered,
            broken,
        }
    }

    /// Whether a node of `kind` named `name` was declared but did not decode (already reported).
    pub fn is_broken(&self, kind: &str, name: &str) -> bool {
        self.broken.iter().any(|(k, n)| *k == kind && n.as_deref().is_none_or(|n| n == name))
    }

    pub fn any_broken(&self, kind: &str) -> bool {
        self.broken.iter().any(|(k, _)| *k == kind)
    }

    /// A model an agent or the proxy names must be offered by a provider.
    pub fn check_model(&self, p: &mut Problems, m: &Spanned<String>, role: &str) {
        if self.offered.contains_key(m.value.as_str()) || self.is_broken("model", &m.value) {
            return;
        }
        let help = if self.model_names.is_empty() {
            format!(
                "no provider offers any model yet; declare one, e.g. `{}`",
                self.syntax.pick(
                    &format!("provider \"demo\" type=\"mock\" {{ model \"{}\" }}", m.value),
                    &format!("[provider.demo] type = \"mock\", models = [\"{}\"]", m.value)
                )
            )
        } else {
            choices_help(&m.value, &self.model_names)
        };
        p.push(
            Problem::new(format!("no provider offers the {role} model {:?}", m.value), m.span, "unknown model")
                .help(help),
        );
    }

    /// A reference to a declared node of `kind`.
    pub fn check_ref(&self, p: &mut Problems, r: &Spanned<String>, kind: &str, known: &[&str]) {
        if known.contains(&r.value.as_str()) || self.is_broken(kind, &r.value) {
            return;
        }
        let help =
            if known.is_empty() { format!("the fleet declares no {kind}") } else { choices_help(&r.value, known) };
        p.push(Problem::new(format!("unknown {kind} {:?}", r.value), r.span, format!("no such {kind}")).help(help));
    }

    /// The host something runs on: as given, or the only one.
    pub fn resolve_host(
        &self,
        p: &mut Problems,
        given: Option<Spanned<String>>,
        attempted: bool,
        what: &str,
        span: SourceSpan,
    ) -> Spanned<String> {
        match given {
            Some(h) => {
                self.check_ref(p, &h, "host", &self.host_names);
                h
            }
            None if self.hosts.len() == 1 => Spanned::new(self.hosts[0].name.value.clone(), span),
            None => {
                if !attempted && !self.any_broken("host") {
                    p.push(
                        Problem::new(format!("{what} needs a `host`: the fleet has several"), span, "which host?")
                            .help(format!(
                                "add `{}`, one of: {}",
                                self.syntax.assign("host", "\"…\""),
                                self.host_names.join(", ")
                            )),
                    );
                }
                Spanned::new(String::new(), span)
            }
        }
    }
}

/// Reports every name declared again; returns, per name, whether it is such a repeat.
pub fn dupes<'a>(p: &mut Problems, kind: &str, names: impl Iterator<Item = &'a Spanned<String>>) -> Vec<bool> {
    let mut seen: BTreeMap<&str, SourceSpan> = BTreeMap::new();
    let mut out = Vec::new();
    for n in names {
        if let Some(first) = seen.get(n.value.as_str()) {
            p.push(
                Problem::new(format!("duplicate {kind} {:?}", n.value), n.span, "declared again here")
                    .also(*first, "first declared here")
                    .help(format!("{kind} names must be unique; rename or remove one")),
            );
            out.push(true);
        } else {
            seen.insert(&n.value, n.span);
            out.push(false);
        }
    }
    out
}

/// Drops the repeats `dupes` found, so that each is reported once.
pub fn keep_first<T>(items: Vec<T>, repeat: &[bool]) -> Vec<T> {
    items.into_iter().zip(repeat).filter(|(_, r)| !**r).map(|(x, _)| x).collect()
}
