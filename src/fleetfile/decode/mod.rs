//! Raw tree → typed model: `decode` hands each node to its section's file (one file a
//! section: `image`, `host`, `serve` (and `trace`), `litellm`, `provider`, `openclaw`, `gateway`,
//! `agent`), which reads it and checks what it can alone; `common` holds what they share.
//! Cross-references are checked afterwards in `validate.rs`.

use std::path::{Path, PathBuf};

use miette::SourceSpan;

use super::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems};
use crate::syntax::raw::{RawNode, RawValue};
use crate::syntax::reader::Reader;

mod agent;
mod common;
pub(crate) mod gateway;
mod host;
mod image;
mod litellm;
mod openclaw;
mod provider;
mod sandbox;
mod serve;

use agent::agent;
pub use agent::AgentRaw;
use common::expand_home;
pub use common::{check_slug, node_version_ok, parse_duration};
use gateway::gateway;
pub use gateway::GatewayRaw;
use host::host;
use image::image;
use litellm::litellm;
pub use litellm::LitellmRaw;
use openclaw::openclaw;
use provider::provider;
use serve::{serve, trace_export};

pub const TOP_LEVEL: [&str; 11] =
    ["fleet", "image", "host", "litellm", "openclaw", "provider", "gateway", "agent", "serve", "trace", "moved"];

/// Node kinds that come many to a file, each with a name (`[agent.alice]` in TOML).
pub const NAMED_KINDS: [&str; 5] = ["image", "host", "provider", "gateway", "agent"];

/// Everything decoded, before defaults that depend on other nodes are filled in.
#[derive(Default)]
pub struct Decoded {
    pub openclaw: Option<OpenClaw>,
    /// Whether a `fleet` node is present, even one too broken to decode.
    pub fleet_declared: bool,
    pub fleet: Option<(Spanned<String>, Option<usize>, Option<PathBuf>)>,
    /// `fleet { budget …; limits … }`: every agent's default.
    pub spend_default: Spend,
    pub images: Vec<Image>,
    pub hosts: Vec<Host>,
    pub litellm: Option<LitellmRaw>,
    pub providers: Vec<Provider>,
    pub gateways: Vec<GatewayRaw>,
    pub agents: Vec<AgentRaw>,
    /// `serve`, with where it was declared (its port is checked against the others').
    pub serve: Option<(Serve, SourceSpan)>,
    /// `trace { … }`, with where it was declared (it needs `serve`).
    pub trace: Option<(TraceExport, SourceSpan)>,
    /// `moved from="agent.a" to="agent.b"`: (a, b), the agents' names.
    pub moved: Vec<(Spanned<String>, Spanned<String>)>,
    /// Nodes that are declared but did not decode (their problem is already reported),
    /// as (kind, name if known); models list what a broken provider offers. References
    /// to them are not reported again.
    pub broken: Vec<(&'static str, Option<String>)>,
}

pub fn decode(nodes: &[RawNode], base: &Path, p: &mut Problems) -> Decoded {
    let mut d = Decoded::default();
    let mut fleet_span: Option<SourceSpan> = None;
    let mut litellm_span: Option<SourceSpan> = None;
    let mut openclaw_span: Option<SourceSpan> = None;
    let mut serve_span: Option<SourceSpan> = None;
    let mut trace_span: Option<SourceSpan> = None;
    for n in nodes {
        match n.name.as_str() {
            "fleet" => {
                if once(p, &mut fleet_span, n, "a file describes one fleet; merge the two blocks") {
                    d.fleet_declared = true;
                    d.fleet = fleet(n, base, p, &mut d.spend_default);
                }
            }
            "litellm" => {
                if once(p, &mut litellm_span, n, "a fleet has one LiteLLM proxy; merge the two blocks") {
                    d.litellm = Some(litellm(n, base, p));
                }
            }
            "openclaw" => {
                if once(p, &mut openclaw_span, n, "pin the versions once, in one block") {
                    d.openclaw = Some(openclaw(n, p));
                }
            }
            "serve" => {
                if once(p, &mut serve_span, n, "a fleet has one daemon; merge the two blocks") {
                    d.serve = serve(n, p).map(|s| (s, n.name_span));
                }
            }
            "trace" => {
                if once(p, &mut trace_span, n, "merge the two blocks") {
                    d.trace = trace_export(n, base, p).map(|t| (t, n.name_span));
                }
            }
            "image" => match image(n, base, p) {
                Some(i) => d.images.push(i),
                None => d.broken.push(("image", raw_name(n))),
            },
            "host" => match host(n, base, p) {
                Some(h) => d.hosts.push(h),
                None => d.broken.push(("host", raw_name(n))),
            },
            "provider" => match provider(n, base, p) {
                Some(x) => d.providers.push(x),
                None => {
                    d.broken.push(("provider", raw_name(n)));
                    d.broken.extend(raw_models(n).into_iter().map(|m| ("model", Some(m))));
                }
            },
            "gateway" => match gateway(n, p) {
                Some(g) => d.gateways.push(g),
                None => d.broken.push(("gateway", raw_name(n))),
            },
            "moved" => {
                if let Some(m) = moved(n, p) {
                    d.moved.push(m);
                }
            }
            "agent" => match agent(n, base, p) {
                Some(a) => d.agents.push(a),
                None => d.broken.push(("agent", raw_name(n))),
            },
            other => p.push(
                Problem::new(format!("unknown node `{other}`"), n.name_span, "unknown node")
                    .help(choices_help(other, &TOP_LEVEL)),
            ),
        }
    }
    d
}

/// A node that comes once to a file: true for the first; the second is a problem (both spans shown).
fn once(p: &mut Problems, seen: &mut Option<SourceSpan>, n: &RawNode, help: &str) -> bool {
    if let Some(first) = *seen {
        p.push(
            Problem::new(format!("`{}` is declared twice", n.name), n.name_span, "second declaration")
                .also(first, "first declared here")
                .help(help),
        );
        return false;
    }
    *seen = Some(n.name_span);
    true
}

/// `moved from="agent.alice" to="agent.alicia"` (Terraform's `moved` block): an agent renamed.
fn moved(n: &RawNode, p: &mut Problems) -> Option<(Spanned<String>, Spanned<String>)> {
    let mut r = Reader::new(n, p);
    let example = r
        .syntax()
        .pick(
            "moved from=\"agent.alice\" to=\"agent.alicia\"",
            "[[moved]]\nfrom = \"agent.alice\"\nto = \"agent.alicia\"",
        )
        .to_string();
    let from = r.str_opt("from");
    let to = r.str_opt("to");
    let attempted = r.attempted("from") || r.attempted("to");
    r.finish();
    let (Some(from), Some(to)) = (from, to) else {
        if !attempted {
            p.push(
                Problem::new("`moved` needs `from` and `to`", n.name_span, "incomplete")
                    .help(format!("write `{example}`")),
            );
        }
        return None;
    };
    let agent = |s: &Spanned<String>, p: &mut Problems| -> Option<Spanned<String>> {
        match s.value.strip_prefix("agent.").filter(|a| !a.is_empty()) {
            Some(a) => Some(Spanned::new(a.to_string(), s.span)),
            None => {
                p.push(
                    Problem::new(format!("{:?} is not an agent's address", s.value), s.span, "not agent.<name>")
                        .help("only agents move: write \"agent.<name>\""),
                );
                None
            }
        }
    };
    let (from, to) = (agent(&from, p), agent(&to, p));
    Some((from?, to?))
}

/// The name a node was given, if it is a string, without reporting anything.
fn raw_name(n: &RawNode) -> Option<String> {
    let entry = match n.args.first() {
        Some(a) => a,
        None => &n.props.iter().find(|p| p.key == "name")?.value,
    };
    match &entry.value {
        RawValue::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// The model names a provider node lists, without reporting anything.
fn raw_models(n: &RawNode) -> Vec<String> {
    let mut out = Vec::new();
    for c in &n.children {
        match c.name.as_str() {
            "models" => out.extend(c.args.iter().filter_map(|a| match &a.value {
                RawValue::Str(s) => Some(s.clone()),
                _ => None,
            })),
            "model" => out.extend(raw_name(c)),
            _ => {}
        }
    }
    out
}

fn fleet(
    n: &RawNode,
    base: &Path,
    p: &mut Problems,
    spend: &mut Spend,
) -> Option<(Spanned<String>, Option<usize>, Option<PathBuf>)> {
    let mut r = Reader::new(n, p);
    let name = r.name("fleet \"acme\" { parallelism 8 }");
    let parallelism = r.int_opt("parallelism", 1, 256).map(|v| v.value as usize);
    let data_dir = r.str_opt("data-dir").map(|s| base.join(expand_home(&s.value)));
    *spend = super::decode_spend::spend(&mut r);
    r.finish();
    let name = name?;
    check_slug(p, "fleet", &name);
    Some((name, parallelism, data_dir))
}
