//! Raw tree → typed model, one function per node kind. Cross-references are
//! checked afterwards in `validate.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::SourceSpan;

use super::model::*;
use super::secret::SecretRef;
use crate::syntax::diagnostic::{choices_help, did_you_mean, Problem, Problems, Syntax};
use crate::syntax::raw::{RawNode, RawValue};
use crate::syntax::reader::Reader;

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

pub struct LitellmRaw {
    pub span: SourceSpan,
    pub host: Option<Spanned<String>>,
    /// `host` is written but invalid (already reported).
    pub host_attempted: bool,
    pub port: Option<Spanned<u16>>,
    pub bind: Option<String>,
    pub version: Option<Spanned<String>>,
    pub path: Option<PathBuf>,
    pub keys: KeyBackend,
    pub keys_url_span: Option<miette::SourceSpan>,
    pub master_key: Option<Spanned<SecretRef>>,
    pub default_model: Option<Spanned<String>>,
    pub callback: Option<Callback>,
    pub start_timeout_s: Option<u64>,
}

pub struct GatewayRaw {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    /// `host` is written but invalid (already reported).
    pub host_attempted: bool,
    pub image: Option<Spanned<String>>,
    /// `image` is written but invalid (already reported).
    pub image_attempted: bool,
    pub port: Option<Spanned<u16>>,
    /// `listen="10.0.0.2"`: the address of its (remote) host where fleet reaches it.
    pub listen: Option<Spanned<String>>,
    /// `target="m2"` / `target="@gpu"`: the cluster member or group it runs on.
    pub target: Option<Spanned<String>>,
}

pub struct AgentRaw {
    pub name: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    /// `gateway` is written but invalid (already reported).
    pub gateway_attempted: bool,
    pub model: Option<Spanned<String>>,
    /// `model` is written but invalid, or misspelt (already reported).
    pub model_attempted: bool,
    pub rest: Agent,
}

pub fn decode(nodes: &[RawNode], base: &Path, p: &mut Problems) -> Decoded {
    let mut d = Decoded::default();
    let mut fleet_span: Option<SourceSpan> = None;
    let mut litellm_span: Option<SourceSpan> = None;
    let mut openclaw_span: Option<SourceSpan> = None;
    let mut serve_span: Option<SourceSpan> = None;
    for n in nodes {
        match n.name.as_str() {
            "fleet" => {
                if let Some(first) = fleet_span {
                    p.push(
                        Problem::new("`fleet` is declared twice", n.name_span, "second declaration")
                            .also(first, "first declared here")
                            .help("a file describes one fleet; merge the two blocks"),
                    );
                    continue;
                }
                fleet_span = Some(n.name_span);
                d.fleet_declared = true;
                d.fleet = fleet(n, base, p, &mut d.spend_default);
            }
            "litellm" => {
                if let Some(first) = litellm_span {
                    p.push(
                        Problem::new("`litellm` is declared twice", n.name_span, "second declaration")
                            .also(first, "first declared here")
                            .help("a fleet has one LiteLLM proxy; merge the two blocks"),
                    );
                    continue;
                }
                litellm_span = Some(n.name_span);
                d.litellm = Some(litellm(n, base, p));
            }
            "openclaw" => {
                if let Some(first) = openclaw_span {
                    p.push(
                        Problem::new("`openclaw` is declared twice", n.name_span, "second declaration")
                            .also(first, "first declared here")
                            .help("pin the versions once, in one block"),
                    );
                    continue;
                }
                openclaw_span = Some(n.name_span);
                d.openclaw = Some(openclaw(n, p));
            }
            "serve" => {
                if let Some(first) = serve_span {
                    p.push(
                        Problem::new("`serve` is declared twice", n.name_span, "second declaration")
                            .also(first, "first declared here")
                            .help("a fleet has one daemon; merge the two blocks"),
                    );
                    continue;
                }
                serve_span = Some(n.name_span);
                d.serve = serve(n, p).map(|s| (s, n.name_span));
            }
            "trace" => {
                if let Some((_, first)) = &d.trace {
                    p.push(
                        Problem::new("`trace` is declared twice", n.name_span, "second declaration")
                            .also(*first, "first declared here")
                            .help("merge the two blocks"),
                    );
                    continue;
                }
                d.trace = trace_export(n, base, p).map(|t| (t, n.name_span));
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

/// Help for a path that does not exist: the closest file in the same directory, if any.
fn missing_file_help(base: &Path, given: &str) -> String {
    let rel = Path::new(given);
    let dir = rel.parent().unwrap_or(Path::new(""));
    let file = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let siblings: Vec<String> = std::fs::read_dir(base.join(dir))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    match did_you_mean(&file, siblings.iter().map(String::as_str)) {
        Some(s) => {
            format!("did you mean \"{}\"? (paths are relative to the fleet file's directory)", dir.join(s).display())
        }
        None => format!("paths are relative to the fleet file's directory ({})", base.display()),
    }
}

/// Names become addresses, ids, aliases and directory names: keep them plain.
pub fn check_slug(p: &mut Problems, what: &str, name: &Spanned<String>) {
    let s = name.value.as_str();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        let suggestion: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .collect::<String>()
            .trim_matches(|c| c == '-' || c == '_')
            .chars()
            .take(63)
            .collect();
        let help = if !suggestion.is_empty() && suggestion != s {
            format!("try \"{suggestion}\": {what} names are lowercase letters, digits, `-` and `_` (at most 63)")
        } else {
            format!("{what} names are 1–63 lowercase letters, digits, `-` or `_`, starting with a letter or digit")
        };
        p.push(Problem::new(format!("invalid {what} name {s:?}"), name.span, "invalid name").help(help));
    }
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

fn expand_home(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => PathBuf::from(s),
    }
}

/// A secret reference; `env_example` names a plausible variable for the help.
fn secret(r: &mut Reader, key: &'static str, base: &Path, env_example: &str) -> Option<Spanned<SecretRef>> {
    let v = r.str_opt(key)?;
    let example = r.syntax().assign(key, &format!("\"env:{env_example}\""));
    match SecretRef::parse(&v.value, base) {
        Ok(s) => Some(Spanned::new(s, v.span)),
        Err("inline secret") => {
            let shell_var = v.value.strip_prefix('$').map(|n| n.trim_matches(|c| c == '{' || c == '}'));
            let problem = match shell_var {
                Some(var) if !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Problem::new(format!("`{key}` looks like a shell variable"), v.span, "not expanded by fleet").help(
                        format!(
                            "reference the variable with env:, e.g. `{}`",
                            r.syntax().assign(key, &format!("\"env:{var}\""))
                        ),
                    )
                }
                _ => Problem::new(format!("`{key}` holds an inline secret"), v.span, "secret written into the file")
                    .help(format!("never commit a secret; reference it: `{example}` (or \"file:PATH\")")),
            };
            r.problems.push(problem);
            None
        }
        Err(why) => {
            r.problems.push(Problem::new(format!("invalid secret reference in `{key}`"), v.span, why).help(format!(
                "write \"env:NAME\" for an environment variable, e.g. `{example}`,\nor \"file:PATH\" for a file (relative to the fleet file)"
            )));
            None
        }
    }
}

fn image(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Image> {
    let mut r = Reader::new(n, p);
    let name = r.name("image \"openclaw-base\" { recipe \"recipes/openclaw-base.kdl\" }");
    let recipe = r.str_opt("recipe").map(|s| Spanned::new(base.join(&s.value), s.span));
    let mut urls = BTreeMap::new();
    let url_nodes = r.children("url");
    for u in &url_nodes {
        let mut ur = Reader::new(u, r.problems);
        let url = ur.arg_or("url", "a URL", "url \"https://…/openclaw-base-amd64.tar.gz\" arch=\"amd64\" sha256=\"…\"");
        let arch = ur.str_opt("arch");
        let sha = ur.str_opt("sha256");
        let missing: Vec<&str> = ["arch", "sha256"].into_iter().filter(|k| !ur.attempted(k)).collect();
        ur.finish();
        let (Some(url), Some(arch), Some(sha)) = (url, arch, sha) else {
            if !missing.is_empty() {
                let what = missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ");
                let example = r.syntax().pick(
                    "url \"https://…\" arch=\"amd64\" sha256=\"<64 hex digits>\"",
                    "url = [{ url = \"https://…\", arch = \"amd64\", sha256 = \"<64 hex digits>\" }]",
                );
                r.problems.push(
                    Problem::new(format!("an image `url` needs {what}"), u.name_span, "incomplete")
                        .help(format!("write `{example}`")),
                );
            }
            continue;
        };
        let Some(a) = Arch::parse(&arch.value) else {
            r.problems.push(
                Problem::new(format!("unknown architecture {:?}", arch.value), arch.span, "unknown")
                    .help(choices_help(&arch.value, &Arch::ALL)),
            );
            continue;
        };
        if sha.value.len() != 64 || !sha.value.chars().all(|c| c.is_ascii_hexdigit()) {
            r.problems.push(
                Problem::new("`sha256` must be 64 hex digits", sha.span, "not a sha256")
                    .help("copy it from the image's .sha256 file"),
            );
            continue;
        }
        if urls.insert(a, ImageUrl { url: url.value, sha256: sha.value.to_ascii_lowercase() }).is_some() {
            r.problems.push(
                Problem::new(format!("two URLs for {}", a.as_str()), arch.span, "second URL for this arch")
                    .help("give each architecture one URL"),
            );
        }
    }
    let recipe_attempted = r.attempted("recipe");
    r.finish();
    let name = name?;
    check_slug(p, "image", &name);
    let span = name.span;
    if recipe.is_none() && url_nodes.is_empty() && !recipe_attempted {
        p.push(
            Problem::new(format!("image {:?} has no source", name.value), span, "neither recipe nor url")
                .help(match p.syntax {
                    Syntax::Kdl => "give a `recipe \"recipes/….kdl\"` to build it, or `url … arch=… sha256=…` to fetch it",
                    Syntax::Toml => "give `recipe = \"recipes/….kdl\"` to build it, or `url = [{ url = …, arch = …, sha256 = … }]` to fetch it",
                }),
        );
    }
    if let Some(rec) = &recipe {
        if !rec.value.is_file() {
            let given = rec.value.strip_prefix(base).unwrap_or(&rec.value).display().to_string();
            p.push(
                Problem::new(format!("recipe file not found: {given}"), rec.span, "no such file")
                    .help(missing_file_help(base, &given)),
            );
        }
    }
    Some(Image { name, recipe, urls })
}

fn host(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Host> {
    let mut r = Reader::new(n, p);
    let name = r.name("host \"local\" runtime=\"process\"");
    let runtime = match r.str_opt("runtime") {
        None => Some(Runtime::Process),
        Some(s) => match s.value.as_str() {
            "process" => Some(Runtime::Process),
            "incus" => Some(Runtime::Incus),
            other => {
                r.problems.push(
                    Problem::new(format!("unknown runtime {other:?}"), s.span, "unknown runtime")
                        .help(choices_help(other, &Runtime::ALL)),
                );
                None
            }
        },
    };
    let remote = r.str_opt("remote");
    let address = r.str_opt("address");
    let trust_token = secret(&mut r, "trust-token", base, "EDGE_TOKEN");
    let incus_config = r.str_opt("incus-config");
    let arch_raw = r.str_opt("arch");
    let arch_declared = arch_raw.is_some();
    let arch = match arch_raw {
        None => Some(Arch::native()),
        Some(s) => {
            let a = Arch::parse(&s.value);
            match a {
                None => r.problems.push(
                    Problem::new(format!("unknown architecture {:?}", s.value), s.span, "unknown")
                        .help(choices_help(&s.value, &Arch::ALL)),
                ),
                // A process host is this machine: it runs its own architecture's Node and images only.
                Some(a) if runtime == Some(Runtime::Process) && a != Arch::native() => r.problems.push(
                    Problem::new(
                        format!("a process host runs on this machine, which is {}", Arch::native().as_str()),
                        s.span,
                        "not this machine's architecture",
                    )
                    .help("drop `arch` (it defaults to this machine's), or use an incus host of that architecture"),
                ),
                Some(_) => {}
            }
            a
        }
    };
    r.finish();
    let name = name?;
    check_slug(p, "host", &name);
    if runtime == Some(Runtime::Process) {
        let incus_only = [("remote", remote.as_ref().map(|r| r.span)), ("address", address.as_ref().map(|a| a.span))]
            .into_iter()
            .chain([("trust-token", trust_token.as_ref().map(|t| t.span))])
            .chain([("incus-config", incus_config.as_ref().map(|c| c.span))]);
        for (key, span) in incus_only {
            if let Some(span) = span {
                p.push(
                    Problem::new(
                        format!("`{key}` only applies to the incus runtime"),
                        span,
                        "ignored by the process runtime",
                    )
                    .help(format!("set runtime=\"incus\" or drop `{key}`")),
                );
            }
        }
    }
    if let (Some(rem), Some(addr)) = (&remote, &address) {
        p.push(
            Problem::new("a host takes either `remote` or `address`", addr.span, "and an address")
                .also(rem.span, "a remote")
                .help("`remote` names a remote already in the Incus client config; `address` (with `trust-token`) has fleet enrol the host itself: keep one"),
        );
    }
    if let Some(a) = &address {
        if let Err(why) = check_incus_address(&a.value) {
            p.push(Problem::new(format!("invalid host address {:?}", a.value), a.span, why).help(
                "write the incusd's HTTPS address, as `core.https_address` sets it: `address=\"https://10.0.0.2:8443\"`",
            ));
        }
    }
    if let (Some(t), None) = (&trust_token, &address) {
        p.push(
            Problem::new("`trust-token` without an `address`", t.span, "nothing to redeem it at")
                .help("add the host's `address=\"https://…:8443\"`; a host given by `remote` is enrolled already"),
        );
    }
    Some(Host {
        name,
        runtime: runtime?,
        remote: remote.map(|r| r.value),
        address,
        trust_token,
        incus_config: incus_config.map(|c| base.join(c.value)),
        arch: arch?,
        arch_declared,
    })
}

/// An incusd's HTTPS address: `https://HOST:PORT` (the port may be left out: 8443).
fn check_incus_address(a: &str) -> Result<(), &'static str> {
    let rest = a.strip_prefix("https://").ok_or("not an https:// URL")?;
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || rest.contains('/') || rest.contains('@') || rest.contains(char::is_whitespace) {
        return Err("expected https://HOST:PORT");
    }
    // `HOST:PORT`, `[V6]:PORT`, or a host alone (Incus's default port).
    if let Some((host, port)) = rest.rsplit_once(':').filter(|(_, p)| !p.contains(']')) {
        if host.is_empty() || (host.contains(':') && !host.starts_with('[')) {
            return Err("expected https://HOST:PORT");
        }
        port.parse::<u16>().map_err(|_| "the port is not a number")?;
    }
    Ok(())
}

/// `serve { listen "127.0.0.1:8700"; reply-timeout "3m" }` (TOML: `[serve] listen = …`).
fn serve(n: &RawNode, p: &mut Problems) -> Option<Serve> {
    let mut r = Reader::new(n, p);
    let listen = r.str_opt("listen");
    let timeout = r.str_opt("reply-timeout");
    r.finish();
    let (bind, port) = match &listen {
        None => crate::netaddr::split_listen(DEFAULT_SERVE_LISTEN)?,
        Some(l) => match crate::netaddr::split_listen(&l.value) {
            Some(hp) => hp,
            None => {
                p.push(
                    Problem::new(format!("invalid listen address {:?}", l.value), l.span, "not IP:PORT")
                        .help(format!("write an IP address and a port, e.g. {DEFAULT_SERVE_LISTEN:?}")),
                );
                return None;
            }
        },
    };
    let reply_timeout_s = match timeout {
        None => DEFAULT_REPLY_TIMEOUT_S,
        Some(t) => match parse_duration(&t.value) {
            Some(s) => s,
            None => {
                p.push(
                    Problem::new(format!("invalid duration {:?}", t.value), t.span, "not a duration")
                        .help("write a number and a unit: \"90s\", \"3m\""),
                );
                return None;
            }
        },
    };
    Some(Serve { bind, port, reply_timeout_s, export: None })
}

/// `trace { otlp "URL" headers="env:…"; capture-content #false; project "…" }` (TOML: `[trace] otlp = "…"`,
/// `headers = "env:…"`).
fn trace_export(n: &RawNode, base: &Path, p: &mut Problems) -> Option<TraceExport> {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let example = r.syntax().pick(
        "otlp \"http://127.0.0.1:4318/v1/traces\" headers=\"env:OTLP_HEADERS\"",
        "otlp = \"http://127.0.0.1:4318/v1/traces\"",
    );
    let capture_content = r.bool_opt("capture-content").map(|b| b.value).unwrap_or(false);
    let project = r.str_opt("project").map(|s| s.value);
    let (otlp, headers, attempted) = match r.child("otlp") {
        Some(c) => {
            let mut cr = Reader::new(c, r.problems);
            let url = cr.arg_str("the receiver's OTLP/HTTP traces endpoint", example);
            let headers = secret(&mut cr, "headers", base, "OTLP_HEADERS");
            cr.finish();
            (url, headers, true)
        }
        None => {
            let url = r.str_opt("otlp");
            let attempted = r.attempted("otlp");
            (url, None, attempted)
        }
    };
    let headers = headers.or_else(|| secret(&mut r, "headers", base, "OTLP_HEADERS"));
    r.finish();
    match otlp {
        Some(u) if u.value.starts_with("http://") || u.value.starts_with("https://") => {
            Some(TraceExport { otlp: u.value, headers: headers.map(|h| h.value), capture_content, project })
        }
        Some(u) => {
            p.push(
                Problem::new("`otlp` must be an http:// or https:// URL", u.span, "not an http URL")
                    .help(format!("the receiver's OTLP/HTTP traces endpoint: `{example}`")),
            );
            None
        }
        None => {
            if !attempted {
                p.push(
                    Problem::new("`trace` says nowhere to export to", span, "no `otlp`")
                        .help(format!("add the receiver's OTLP/HTTP traces endpoint: `{example}`")),
                );
            }
            None
        }
    }
}

fn litellm(n: &RawNode, base: &Path, p: &mut Problems) -> LitellmRaw {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let host = r.str_opt("host");
    let mut port = r.int_opt("port", 1, 65535).map(|v| Spanned::new(v.value as u16, v.span));
    let mut bind = r.str_opt("bind").map(|s| s.value);
    let listen = r.str_opt("listen");
    let version = r.str_opt("version");
    let path = r.str_opt("path").map(|s| base.join(s.value));
    let master_key = secret(&mut r, "master-key", base, "LITELLM_MASTER_KEY");
    let default_model = r.str_opt("default-model");
    let callback_url = r.str_opt("callback-url");
    let callback_token = secret(&mut r, "callback-token", base, "FLEET_CALLBACK_TOKEN");
    let start_timeout = r.str_opt("start-timeout");
    // `keys "database" url="env:…"`; TOML also takes the plain `keys = "file"`.
    let keys_node = r.child("keys");
    let keys_word = if keys_node.is_none() { r.str_opt("keys") } else { None };
    let (kind, url, url_attempted, at) = match keys_node {
        Some(k) => {
            let mut kr = Reader::new(k, r.problems);
            let kind = kr.arg_or("backend", "a backend", "keys \"file\"");
            let url = secret(&mut kr, "url", base, "LITELLM_DATABASE_URL");
            let url_attempted = kr.attempted("url");
            kr.finish();
            (kind, url, url_attempted, k.name_span)
        }
        None => {
            let at = n.props.iter().find(|p| p.key == "keys").map(|p| p.key_span).unwrap_or(span);
            (keys_word, None, false, at)
        }
    };
    let keys_url_span = url.as_ref().map(|u| u.span);
    let keys = match kind.as_ref().map(|k| k.value.as_str()) {
        Some("file") | None => KeyBackend::File,
        Some("database") => match url {
            Some(url) => KeyBackend::Database { url: url.value },
            None if url_attempted => KeyBackend::File,
            None => {
                r.problems.push(Problem::new("the database key backend needs a `url`", at, "no url").help(format!(
                    "write `{}`",
                    r.problems.syntax.pick(
                        "keys \"database\" url=\"env:LITELLM_DATABASE_URL\"",
                        "keys = { backend = \"database\", url = \"env:LITELLM_DATABASE_URL\" }"
                    )
                )));
                KeyBackend::File
            }
        },
        Some(other) => {
            let span = kind.as_ref().map(|k| k.span).unwrap_or(at);
            r.problems.push(
                Problem::new(format!("unknown key backend {other:?}"), span, "unknown backend")
                    .help(choices_help(other, &["file", "database"])),
            );
            KeyBackend::File
        }
    };
    let host_attempted = r.attempted("host");
    r.finish();
    // `listen "IP:PORT"` (as `serve` says it): the address and port at once.
    if let Some(l) = listen {
        match (crate::netaddr::split_listen(&l.value), &bind, &port) {
            (Some((ip, at)), None, None) => {
                bind = Some(ip);
                port = Some(Spanned::new(at, l.span));
            }
            (Some(_), _, _) => p.push(
                Problem::new("`listen` and `bind`/`port` say the same thing twice", l.span, "one or the other")
                    .help("keep `listen \"IP:PORT\"`, or `bind` and `port`"),
            ),
            (None, _, _) => p.push(
                Problem::new(format!("invalid listen address {:?}", l.value), l.span, "not IP:PORT")
                    .help("write an IP address of this machine and a port, e.g. \"10.0.0.1:4000\""),
            ),
        }
    }
    if let Some(v) = &version {
        if v.value == "1.107.0" {
            p.push(
                Problem::new("litellm 1.107.0 is a known-compromised release", v.span, "refused")
                    .help(format!("pin another version; fleet's default is {DEFAULT_LITELLM_VERSION}")),
            );
        }
    }
    let start_timeout_s = start_timeout.and_then(|t| match parse_duration(&t.value) {
        Some(secs) => Some(secs),
        None => {
            p.push(
                Problem::new(format!("invalid duration {:?}", t.value), t.span, "not a duration")
                    .help("a whole number and a unit: \"90s\", \"2m\""),
            );
            None
        }
    });
    let callback = match callback_url {
        Some(u) if !(u.value.starts_with("http://") || u.value.starts_with("https://")) => {
            p.push(
                Problem::new("`callback-url` must start with http:// or https://", u.span, "not an http URL")
                    .help("e.g. \"http://127.0.0.1:8700/v1/events\""),
            );
            None
        }
        Some(u) => Some(Callback { url: u.value, token: callback_token }),
        None => None,
    };
    LitellmRaw {
        span,
        host,
        host_attempted,
        port,
        bind,
        version,
        path,
        keys,
        keys_url_span,
        master_key,
        default_model,
        callback,
        start_timeout_s,
    }
}

fn provider(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Provider> {
    let mut r = Reader::new(n, p);
    let name = r.name("provider \"demo\" type=\"mock\" { model \"demo-small\" }");
    let type_value = r.str_opt("type");
    let kind = type_value.as_ref().and_then(|t| {
        let k = ProviderKind::parse(&t.value);
        if k.is_none() {
            r.problems.push(
                Problem::new(format!("unknown provider type {:?}", t.value), t.span, "unknown type")
                    .help(choices_help(&t.value, &ProviderKind::ALL)),
            );
        }
        k
    });
    let env_example = match kind {
        Some(ProviderKind::OpenAi) => "OPENAI_API_KEY".to_string(),
        Some(ProviderKind::Anthropic) => "ANTHROPIC_API_KEY".to_string(),
        Some(ProviderKind::OpenRouter) => "OPENROUTER_API_KEY".to_string(),
        _ => match &name {
            Some(n) => {
                format!("{}_API_KEY", n.value.to_ascii_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"))
            }
            None => "API_KEY".to_string(),
        },
    };
    let api_key = secret(&mut r, "api-key", base, &env_example);
    let url = r.str_opt("url");
    let mut models: Vec<ModelDecl> =
        r.list("models").into_iter().map(|m| ModelDecl { name: m, response: None, price: None }).collect();
    for m in r.children("model") {
        let mut mr = Reader::new(m, r.problems);
        let name = mr.name("model \"demo-small\" response=\"Hello!\"");
        let response = mr.str_opt("response");
        let price = super::decode_spend::price(&mut mr);
        mr.finish();
        if let (Some(resp), Some(k)) = (&response, kind) {
            if k != ProviderKind::Mock {
                r.problems.push(
                    Problem::new("`response` only applies to mock models", resp.span, "ignored by a real provider")
                        .help("drop `response`, or make this provider type=\"mock\""),
                );
            }
        }
        if let Some(name) = name {
            models.push(ModelDecl { name, response: response.map(|r| r.value), price });
        }
    }
    let span = r.span();
    let syntax = r.syntax();
    let type_attempted = r.attempted("type");
    let models_attempted = r.attempted("models") || r.attempted("model");
    let url_attempted = r.attempted("url");
    let key_attempted = r.attempted("api-key");
    r.finish();
    if type_value.is_none() && !type_attempted {
        let what = match &name {
            Some(n) => format!("provider {:?}", n.value),
            None => "a provider".to_string(),
        };
        let span = name.as_ref().map(|n| n.span).unwrap_or(span);
        p.push(Problem::new(format!("{what} needs a `type`"), span, "type missing").help(format!(
            "add `{}`, one of: {}",
            syntax.assign("type", "\"…\""),
            ProviderKind::ALL.join(", ")
        )));
    }
    let name = name?;
    check_slug(p, "provider", &name);
    let kind = kind?;
    let span = name.span;
    if models.is_empty() && !models_attempted {
        p.push(Problem::new(format!("provider {:?} offers no models", name.value), span, "no models").help(format!(
            "list them: `{}`",
            syntax.pick("models \"gpt-4o-mini\" \"gpt-4o\"", "models = [\"gpt-4o-mini\", \"gpt-4o\"]")
        )));
    }
    if kind == ProviderKind::OpenAiCompatible && url.is_none() && !url_attempted {
        p.push(
            Problem::new(format!("provider {:?} (openai-compatible) needs a `url`", name.value), span, "url missing")
                .help(format!(
                    "add the server's OpenAI-style base URL: `{}`",
                    syntax.assign("url", "\"http://host:8000/v1\"")
                )),
        );
    }
    if kind.needs_key() && api_key.is_none() && !key_attempted {
        p.push(
            Problem::new(
                format!("provider {:?} ({}) needs an `api-key`", name.value, kind.as_str()),
                span,
                "api-key missing",
            )
            .help(format!(
                "reference it, never inline it: `{}`",
                syntax.assign("api-key", &format!("\"env:{env_example}\""))
            )),
        );
    }
    if let Some(u) = &url {
        if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
            p.push(
                Problem::new("`url` must start with http:// or https://", u.span, "not an http URL")
                    .help(format!("for example: `{}`", syntax.assign("url", "\"http://host:8000/v1\""))),
            );
        }
    }
    Some(Provider { name, kind, api_key, url: url.map(|u| u.value), models })
}

/// Node versions OpenClaw accepts (its `engines`: `>=24.16.0 <25 || >=26.1.0`).
pub fn node_version_ok(v: &str) -> bool {
    let parts: Vec<u64> = v.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let (major, minor) = (parts.first().copied().unwrap_or(0), parts.get(1).copied().unwrap_or(0));
    parts.len() == 3 && ((major == 24 && minor >= 16) || (major == 26 && minor >= 1) || major > 26)
}

fn openclaw(n: &RawNode, p: &mut Problems) -> OpenClaw {
    let mut r = Reader::new(n, p);
    let version = r.str_opt("version");
    let node = r.str_opt("node");
    r.finish();
    if let Some(v) = &node {
        if !node_version_ok(&v.value) {
            p.push(Problem::new(format!("OpenClaw refuses Node {}", v.value), v.span, "refused Node version").help(
                format!("OpenClaw needs Node >=24.16.0 <25 or >=26.1.0; fleet's default is {DEFAULT_NODE_VERSION}"),
            ));
        }
    }
    OpenClaw {
        version: version.map(|v| v.value).unwrap_or_else(|| DEFAULT_OPENCLAW_VERSION.to_string()),
        node: node.map(|v| v.value).unwrap_or_else(|| DEFAULT_NODE_VERSION.to_string()),
    }
}

fn gateway(n: &RawNode, p: &mut Problems) -> Option<GatewayRaw> {
    let mut r = Reader::new(n, p);
    let name = r.name("gateway \"main\" host=\"local\"");
    let host = r.str_opt("host");
    let image = r.str_opt("image");
    let port = r.int_opt("port", 1024, 65535).map(|v| Spanned::new(v.value as u16, v.span));
    let listen = r.str_opt("listen");
    let target = r.str_opt("target");
    let host_attempted = r.attempted("host");
    let image_attempted = r.attempted("image");
    r.finish();
    let name = name?;
    check_slug(p, "gateway", &name);
    // `listen "10.0.0.2"` or `listen "10.0.0.2:18789"` (the port then is the gateway's `port`).
    let mut port = port;
    let mut listen = listen;
    if let Some(l) = listen.take() {
        match (l.value.parse::<std::net::IpAddr>(), crate::netaddr::split_listen(&l.value)) {
            (Ok(_), _) => listen = Some(l),
            (_, Some((ip, at))) => {
                match &port {
                    Some(p0) if p0.value != at => p.push(
                        Problem::new(format!("`listen` says port {at}, `port` says {}", p0.value), l.span, "two ports")
                            .also(p0.span, "here")
                            .help("write the port once: in `listen`, or in `port`"),
                    ),
                    _ => port = Some(Spanned::new(at, l.span)),
                }
                listen = Some(Spanned::new(ip, l.span));
            }
            _ => p.push(
                Problem::new(format!("`listen` must be an IP address, not {:?}", l.value), l.span, "not an IP address")
                    .help("the address of the gateway's host that fleet reaches, e.g. listen=\"10.0.0.2\" or \"10.0.0.2:18789\""),
            ),
        }
    }
    if let Some(t) = &target {
        let member = t.value.strip_prefix('@').unwrap_or(&t.value);
        if member.is_empty() || !member.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.') {
            p.push(
                Problem::new(format!("`target` {:?} is not a cluster member or group name", t.value), t.span, "not a member")
                    .help("a member (`target=\"m2\"`) or a group with `@` (`target=\"@gpu\"`), as `incus cluster list` names them"),
            );
        }
    }
    Some(GatewayRaw { name, host, host_attempted, image, image_attempted, port, listen, target })
}

pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    (n > 0).then_some(n * mult)
}

fn agent(n: &RawNode, base: &Path, p: &mut Problems) -> Option<AgentRaw> {
    let mut r = Reader::new(n, p);
    let syntax = r.syntax();
    let name = r.name("agent \"alice\" gateway=\"main\" model=\"demo-small\"");
    let gateway = r.str_opt("gateway");
    let model = r.str_opt("model");
    let fallbacks = r.list("fallback");
    let wake = r.str_opt("wake").map(|w| w.value);
    let fresh = r.bool_opt("fresh");
    let restore = r.str_opt("restore");
    let wake_restored = r.str_opt("wake-restored").map(|w| w.value);
    if let Some(id) = &restore {
        if crate::archive::agent_of(&id.value).is_none() {
            r.problems.push(
                Problem::new(format!("{:?} is not an archive id", id.value), id.span, "not an archive id")
                    .help("an archive id is the agent's name and its UTC time, e.g. \"alice-20261129T070000Z\"; `fleet archive list` shows them"),
            );
        }
        if let Some(f) = fresh.as_ref().filter(|f| f.value) {
            r.problems.push(
                Problem::new("`fresh` and `restore` exclude each other", f.span, "fresh here")
                    .help("keep `restore` to bring that archive back, or `fresh` to start anew"),
            );
        }
    }
    let mut identity = Identity::default();
    if let Some(i) = r.child("identity") {
        let mut ir = Reader::new(i, r.problems);
        identity.name = ir.str_opt("name").map(|s| s.value);
        identity.role = ir.str_opt("role").map(|s| s.value);
        identity.emoji = ir.str_opt("emoji").map(|s| s.value);
        identity.vibe = ir.str_opt("vibe").map(|s| s.value);
        ir.finish();
    }
    let mut files = BTreeMap::new();
    if let Some(s) = r.child("soul") {
        if let Some(src) = file_source(s, base, r.problems, false) {
            files.insert("SOUL.md".to_string(), src);
        }
    }
    for f in r.children("file") {
        let fname = f.args.first().or_else(|| f.props.iter().find(|p| p.key == "name").map(|p| &p.value)).and_then(
            |a| match &a.value {
                RawValue::Str(s) => Some(Spanned::new(s.clone(), a.span)),
                _ => None,
            },
        );
        let Some(fname) = fname else {
            r.problems.push(Problem::new("`file` needs a workspace file name", f.name_span, "file name missing").help(
                format!(
                    "write `{}`",
                    syntax.pick(
                        "file \"USER.md\" path=\"users/alice.md\"",
                        "file = [{ name = \"USER.md\", path = \"users/alice.md\" }]"
                    )
                ),
            ));
            continue;
        };
        if !WORKSPACE_FILES.contains(&fname.value.as_str()) {
            r.problems.push(
                Problem::new(
                    format!("OpenClaw does not accept a workspace file named {:?}", fname.value),
                    fname.span,
                    "unsupported file",
                )
                .help(match did_you_mean(&fname.value, WORKSPACE_FILES) {
                    Some(s) => format!("did you mean {s:?}? (one of {})", WORKSPACE_FILES.join(", ")),
                    None => format!("use one of {}", WORKSPACE_FILES.join(", ")),
                }),
            );
            continue;
        }
        if let Some(src) = file_source(f, base, r.problems, true) {
            if files.insert(fname.value.clone(), src).is_some() {
                r.problems.push(
                    Problem::new(format!("{} is given twice", fname.value), fname.span, "again here")
                        .help("`soul` is the same file as `file \"SOUL.md\"`; keep one"),
                );
            }
        }
    }
    let heartbeat = r.child("heartbeat").and_then(|h| {
        let mut hr = Reader::new(h, r.problems);
        let every = hr.str_opt("every");
        let prompt = hr.str_opt("prompt").map(|s| s.value);
        let stray_value = hr.positional_means("every");
        let every_attempted = stray_value || hr.attempted("every");
        hr.finish();
        let Some(every) = every else {
            if !every_attempted {
                r.problems.push(
                    Problem::new("`heartbeat` needs `every`", h.name_span, "interval missing").help(format!(
                        "say how often the agent wakes: `{}`",
                        syntax.pick("heartbeat every=\"30m\"", "heartbeat = { every = \"30m\" }")
                    )),
                );
            }
            return None;
        };
        match parse_duration(&every.value) {
            Some(seconds) => Some(Heartbeat { every: every.value.clone(), seconds, prompt }),
            None => {
                r.problems.push(
                    Problem::new(format!("invalid duration {:?}", every.value), every.span, "not a duration")
                        .help("write a whole number and a unit (s, m, h or d), with no space: \"90s\", \"30m\", \"2h\", \"1d\""),
                );
                None
            }
        }
    });
    let spend = super::decode_spend::spend(&mut r);
    let gateway_attempted = r.attempted("gateway");
    let model_attempted = r.attempted("model");
    r.finish();
    let name = name?;
    check_slug(p, "agent", &name);
    if name.value == RESERVED_AGENT {
        p.push(
            Problem::new("`main` is OpenClaw's own default agent", name.span, "reserved name")
                .help("every gateway already has an agent called main; give this one another name"),
        );
    }
    let rest = Agent {
        name: name.clone(),
        gateway: Spanned::new(String::new(), name.span),
        model: Spanned::new(String::new(), name.span),
        fallbacks,
        identity,
        files,
        heartbeat,
        wake,
        fresh: fresh.is_some_and(|f| f.value),
        restore,
        wake_restored,
        moved_from: None,
        spend,
    };
    Some(AgentRaw { name, gateway, gateway_attempted, model, model_attempted, rest })
}

/// `soul file="souls/alice.md"` / `soul "inline text"` / `file "USER.md" path=… | text=…`.
fn file_source(n: &RawNode, base: &Path, p: &mut Problems, named: bool) -> Option<FileSource> {
    let mut r = Reader::new(n, p);
    let syntax = r.syntax();
    if named {
        let _ = r.arg_or("name", "a file name", "file \"USER.md\" path=\"users/alice.md\"");
    }
    let path_key = if named { "path" } else { "file" };
    let example = syntax.assign(path_key, if named { "\"users/alice.md\"" } else { "\"souls/alice.md\"" });
    let path = r.str_opt(path_key);
    let text = r.str_opt("text");
    let inline = if named { None } else { n.args.first() };
    if inline.is_some() {
        let _ = r.arg_str("text", "soul \"You are …\"");
    }
    let span = r.span();
    let attempted = inline.is_some() || r.attempted(path_key) || r.attempted("text");
    r.finish();
    let inline_text = inline.and_then(|a| match &a.value {
        RawValue::Str(s) => Some(s.clone()),
        _ => None,
    });
    match (path, text.map(|t| t.value).or(inline_text)) {
        (Some(path), None) => {
            let full = base.join(&path.value);
            if !full.is_file() {
                let dangling = full.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && !full.exists();
                let problem = if full.is_dir() {
                    Problem::new(format!("{} is a directory, not a file", path.value), path.span, "a directory")
                        .help(format!("name a file inside it, e.g. `{}/SOUL.md`", path.value.trim_end_matches('/')))
                } else if dangling {
                    let target = std::fs::read_link(&full).map(|t| t.display().to_string()).unwrap_or_default();
                    Problem::new(
                        format!("{} is a symbolic link to {target}, which does not exist", path.value),
                        path.span,
                        "dangling link",
                    )
                    .help("point the link at an existing file, or name the file itself")
                } else {
                    Problem::new(format!("file not found: {}", path.value), path.span, "no such file")
                        .help(missing_file_help(base, &path.value))
                };
                p.push(problem);
                return None;
            }
            Some(FileSource::Path(full))
        }
        (None, Some(text)) => Some(FileSource::Text(text)),
        (Some(path), Some(_)) => {
            p.push(
                Problem::new(format!("give `{path_key}` or text, not both"), path.span, "both given")
                    .help(format!("keep `{example}` or the text")),
            );
            None
        }
        (None, None) if attempted => None,
        (None, None) => {
            p.push(
                Problem::new(format!("`{}` needs content", n.name), span, "empty")
                    .help(format!("write `{example}` or give the text")),
            );
            None
        }
    }
}
