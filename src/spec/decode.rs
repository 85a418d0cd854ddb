//! Raw tree → typed model, one function per node kind. Cross-references are
//! checked afterwards in `validate.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use miette::SourceSpan;

use super::diagnostic::{choices_help, Problem, Problems};
use super::model::*;
use super::raw::RawNode;
use super::reader::Reader;
use super::secret::SecretRef;

pub const TOP_LEVEL: [&str; 7] = ["fleet", "image", "host", "litellm", "provider", "gateway", "agent"];
/// Node kinds that come many to a file, each with a name (`[agent.alice]` in TOML).
pub const NAMED_KINDS: [&str; 5] = ["image", "host", "provider", "gateway", "agent"];

/// Everything decoded, before defaults that depend on other nodes are filled in.
#[derive(Default)]
pub struct Decoded {
    pub fleet: Option<(Spanned<String>, Option<usize>, Option<PathBuf>)>,
    pub images: Vec<Image>,
    pub hosts: Vec<Host>,
    pub litellm: Option<LitellmRaw>,
    pub providers: Vec<Provider>,
    pub gateways: Vec<GatewayRaw>,
    pub agents: Vec<AgentRaw>,
}

pub struct LitellmRaw {
    pub span: SourceSpan,
    pub host: Option<Spanned<String>>,
    pub port: Option<u16>,
    pub bind: Option<String>,
    pub version: Option<Spanned<String>>,
    pub path: Option<PathBuf>,
    pub keys: KeyBackend,
    pub master_key: Option<SecretRef>,
    pub default_model: Option<Spanned<String>>,
}

pub struct GatewayRaw {
    pub name: Spanned<String>,
    pub host: Option<Spanned<String>>,
    pub image: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
}

pub struct AgentRaw {
    pub name: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    pub model: Option<Spanned<String>>,
    pub rest: Agent,
}

pub fn decode(nodes: &[RawNode], base: &Path, p: &mut Problems) -> Decoded {
    let mut d = Decoded::default();
    let mut fleet_span: Option<SourceSpan> = None;
    let mut litellm_span: Option<SourceSpan> = None;
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
                d.fleet = fleet(n, base, p);
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
            "image" => d.images.extend(image(n, base, p)),
            "host" => d.hosts.extend(host(n, p)),
            "provider" => d.providers.extend(provider(n, base, p)),
            "gateway" => d.gateways.extend(gateway(n, p)),
            "agent" => d.agents.extend(agent(n, base, p)),
            other => p.push(
                Problem::new(format!("unknown node `{other}`"), n.name_span, "unknown node")
                    .help(choices_help(other, &TOP_LEVEL)),
            ),
        }
    }
    d
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
            .trim_matches('-')
            .to_string();
        let mut help = format!("{what} names are 1–63 lowercase letters, digits, `-` or `_`, starting with a letter or digit");
        if !suggestion.is_empty() && suggestion != s {
            help.push_str(&format!("; e.g. \"{suggestion}\""));
        }
        p.push(Problem::new(format!("invalid {what} name {s:?}"), name.span, "invalid name").help(help));
    }
}

fn fleet(n: &RawNode, base: &Path, p: &mut Problems) -> Option<(Spanned<String>, Option<usize>, Option<PathBuf>)> {
    let mut r = Reader::new(n, p);
    let name = r.name("fleet \"acme\" { parallelism 8 }");
    let parallelism = r.int_opt("parallelism", 1, 256).map(|v| v.value as usize);
    let data_dir = r.str_opt("data-dir").map(|s| base.join(expand_home(&s.value)));
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

fn secret(r: &mut Reader, key: &'static str, base: &Path) -> Option<SecretRef> {
    let v = r.str_opt(key)?;
    match SecretRef::parse(&v.value, base) {
        Ok(s) => Some(s),
        Err("inline secret") => {
            r.problems.push(
                Problem::new(format!("`{key}` holds an inline secret"), v.span, "secret written into the file")
                    .help("never commit secrets: reference one with \"env:NAME\" or \"file:PATH\", e.g. \"env:OPENAI_API_KEY\""),
            );
            None
        }
        Err(why) => {
            r.problems.push(Problem::new(format!("invalid secret reference in `{key}`"), v.span, why).help(
                "write \"env:NAME\" (an environment variable) or \"file:PATH\" (a file, relative to the fleet file)",
            ));
            None
        }
    }
}

fn image(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Image> {
    let mut r = Reader::new(n, p);
    let name = r.name("image \"openclaw-base\" { recipe \"recipes/openclaw-base.kdl\" }");
    let recipe = r.str_opt("recipe").map(|s| Spanned::new(base.join(&s.value), s.span));
    let mut urls = BTreeMap::new();
    for u in r.children("url") {
        let mut ur = Reader::new(u, r.problems);
        let url = ur.arg_str("a URL", "url \"https://…/openclaw-base-amd64.tar.gz\" arch=\"amd64\" sha256=\"…\"");
        let arch = ur.str_opt("arch");
        let sha = ur.str_opt("sha256");
        ur.finish();
        let (Some(url), Some(arch), Some(sha)) = (url, arch, sha) else {
            if u.props.iter().all(|p| p.key != "arch") || u.props.iter().all(|p| p.key != "sha256") {
                r.problems.push(
                    Problem::new("an image `url` needs `arch` and `sha256`", u.name_span, "incomplete")
                        .help("write `url \"https://…\" arch=\"amd64\" sha256=\"<64 hex digits>\"`"),
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
                Problem::new("`sha256` must be 64 hex digits", sha.span, "not a sha256").help("copy it from the image's .sha256 file"),
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
    let span = r.span();
    r.finish();
    let name = name?;
    check_slug(p, "image", &name);
    if recipe.is_none() && urls.is_empty() {
        p.push(
            Problem::new(format!("image {:?} has no source", name.value), span, "neither recipe nor url")
                .help("give a `recipe \"recipes/….kdl\"` to build it, or `url … arch=… sha256=…` to fetch it"),
        );
    }
    if let Some(rec) = &recipe {
        if !rec.value.is_file() {
            p.push(
                Problem::new(format!("recipe file not found: {}", rec.value.display()), rec.span, "no such file")
                    .help("paths are relative to the fleet file's directory"),
            );
        }
    }
    Some(Image { name, recipe, urls })
}

fn host(n: &RawNode, p: &mut Problems) -> Option<Host> {
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
    let arch = match r.str_opt("arch") {
        None => Some(Arch::native()),
        Some(s) => {
            let a = Arch::parse(&s.value);
            if a.is_none() {
                r.problems.push(
                    Problem::new(format!("unknown architecture {:?}", s.value), s.span, "unknown")
                        .help(choices_help(&s.value, &Arch::ALL)),
                );
            }
            a
        }
    };
    r.finish();
    let name = name?;
    check_slug(p, "host", &name);
    if let (Some(rem), Some(Runtime::Process)) = (&remote, runtime) {
        p.push(
            Problem::new("`remote` only applies to the incus runtime", rem.span, "ignored by the process runtime")
                .help("set runtime=\"incus\" or drop `remote`"),
        );
    }
    Some(Host { name, runtime: runtime?, remote: remote.map(|r| r.value), arch: arch? })
}

fn litellm(n: &RawNode, base: &Path, p: &mut Problems) -> LitellmRaw {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let host = r.str_opt("host");
    let port = r.int_opt("port", 1, 65535).map(|v| v.value as u16);
    let bind = r.str_opt("bind").map(|s| s.value);
    let version = r.str_opt("version");
    let path = r.str_opt("path").map(|s| base.join(s.value));
    let master_key = secret(&mut r, "master-key", base);
    let default_model = r.str_opt("default-model");
    let keys = match r.child("keys") {
        None => KeyBackend::File,
        Some(k) => {
            let mut kr = Reader::new(k, r.problems);
            let kind = kr.arg_str("a backend", "keys \"file\"");
            let url = secret(&mut kr, "url", base);
            kr.finish();
            match kind.as_ref().map(|k| k.value.as_str()) {
                Some("file") | None => KeyBackend::File,
                Some("database") => match url {
                    Some(url) => KeyBackend::Database { url },
                    None => {
                        r.problems.push(
                            Problem::new("the database key backend needs a `url`", k.name_span, "no url")
                                .help("write `keys \"database\" url=\"env:LITELLM_DATABASE_URL\"`"),
                        );
                        KeyBackend::File
                    }
                },
                Some(other) => {
                    let span = kind.as_ref().map(|k| k.span).unwrap_or(k.name_span);
                    r.problems.push(
                        Problem::new(format!("unknown key backend {other:?}"), span, "unknown backend")
                            .help(choices_help(other, &["file", "database"])),
                    );
                    KeyBackend::File
                }
            }
        }
    };
    r.finish();
    if let Some(v) = &version {
        if v.value == "1.107.0" {
            p.push(
                Problem::new("litellm 1.107.0 is a known-compromised release", v.span, "refused")
                    .help(format!("pin another version; fleet's default is {DEFAULT_LITELLM_VERSION}")),
            );
        }
    }
    LitellmRaw { span, host, port, bind, version, path, keys, master_key, default_model }
}

fn provider(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Provider> {
    let mut r = Reader::new(n, p);
    let name = r.name("provider \"demo\" type=\"mock\" { model \"demo-small\" }");
    let kind = match r.str_opt("type") {
        None => {
            r.problems.push(
                Problem::new(format!("provider `{}` needs a `type`", n.args.first().map(|_| "").unwrap_or("")), n.name_span, "type missing")
                    .help(format!("add type=\"…\"; one of {}", ProviderKind::ALL.join(", "))),
            );
            None
        }
        Some(t) => {
            let k = ProviderKind::parse(&t.value);
            if k.is_none() {
                r.problems.push(
                    Problem::new(format!("unknown provider type {:?}", t.value), t.span, "unknown type")
                        .help(choices_help(&t.value, &ProviderKind::ALL)),
                );
            }
            k
        }
    };
    let api_key = secret(&mut r, "api-key", base);
    let url = r.str_opt("url");
    let mut models: Vec<ModelDecl> = r.list("models").into_iter().map(|m| ModelDecl { name: m, response: None }).collect();
    for m in r.children("model") {
        let mut mr = Reader::new(m, r.problems);
        let name = mr.name("model \"demo-small\" response=\"Hello!\"");
        let response = mr.str_opt("response");
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
            models.push(ModelDecl { name, response: response.map(|r| r.value) });
        }
    }
    let span = r.span();
    r.finish();
    let name = name?;
    check_slug(p, "provider", &name);
    let kind = kind?;
    if models.is_empty() {
        p.push(
            Problem::new(format!("provider {:?} offers no models", name.value), span, "no models")
                .help("list them: `models \"gpt-4o-mini\" …` or `model \"demo-small\"`"),
        );
    }
    if kind == ProviderKind::OpenAiCompatible && url.is_none() {
        p.push(
            Problem::new("an openai-compatible provider needs a `url`", span, "url missing")
                .help("add url=\"http://host:port/v1\""),
        );
    }
    if kind.needs_key() && api_key.is_none() && !n.props.iter().any(|p| p.key == "api-key") {
        p.push(
            Problem::new(format!("provider {:?} ({}) needs an `api-key`", name.value, kind.as_str()), span, "api-key missing")
                .help("reference it, never inline it: api-key=\"env:OPENAI_API_KEY\""),
        );
    }
    if let Some(u) = &url {
        if !(u.value.starts_with("http://") || u.value.starts_with("https://")) {
            p.push(Problem::new("`url` must start with http:// or https://", u.span, "not an http URL"));
        }
    }
    Some(Provider { name, kind, api_key, url: url.map(|u| u.value), models })
}

fn gateway(n: &RawNode, p: &mut Problems) -> Option<GatewayRaw> {
    let mut r = Reader::new(n, p);
    let name = r.name("gateway \"main\" host=\"local\"");
    let host = r.str_opt("host");
    let image = r.str_opt("image");
    let port = r.int_opt("port", 1024, 65535).map(|v| Spanned::new(v.value as u16, v.span));
    r.finish();
    let name = name?;
    check_slug(p, "gateway", &name);
    Some(GatewayRaw { name, host, image, port })
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
    let name = r.name("agent \"alice\" gateway=\"main\" model=\"demo-small\"");
    let gateway = r.str_opt("gateway");
    let model = r.str_opt("model");
    let fallbacks = r.list("fallback");
    let wake = r.str_opt("wake").map(|w| w.value);
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
        let fname = f.args.first().and_then(|a| match &a.value {
            super::raw::RawValue::Str(s) => Some(Spanned::new(s.clone(), a.span)),
            _ => None,
        });
        let Some(fname) = fname else {
            r.problems.push(
                Problem::new("`file` needs a workspace file name", f.name_span, "name missing")
                    .help("write `file \"USER.md\" path=\"users/alice.md\"` or `file \"USER.md\" text=\"…\"`"),
            );
            continue;
        };
        if !WORKSPACE_FILES.contains(&fname.value.as_str()) {
            r.problems.push(
                Problem::new(format!("OpenClaw does not accept a workspace file named {:?}", fname.value), fname.span, "unsupported file")
                    .help(choices_help(&fname.value, &WORKSPACE_FILES)),
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
        hr.finish();
        let Some(every) = every else {
            r.problems.push(
                Problem::new("`heartbeat` needs `every`", h.name_span, "interval missing").help("write `heartbeat every=\"30m\"`"),
            );
            return None;
        };
        match parse_duration(&every.value) {
            Some(seconds) => Some(Heartbeat { every: every.value.clone(), seconds, prompt }),
            None => {
                r.problems.push(
                    Problem::new(format!("invalid duration {:?}", every.value), every.span, "not a duration")
                        .help("a whole number and a unit: \"90s\", \"30m\", \"2h\", \"1d\""),
                );
                None
            }
        }
    });
    r.finish();
    let name = name?;
    check_slug(p, "agent", &name);
    let rest = Agent {
        name: name.clone(),
        gateway: Spanned::new(String::new(), name.span),
        model: Spanned::new(String::new(), name.span),
        fallbacks,
        identity,
        files,
        heartbeat,
        wake,
    };
    Some(AgentRaw { name, gateway, model, rest })
}

/// `soul file="souls/alice.md"` / `soul "inline text"` / `file "USER.md" path=… | text=…`.
fn file_source(n: &RawNode, base: &Path, p: &mut Problems, named: bool) -> Option<FileSource> {
    let mut r = Reader::new(n, p);
    if named {
        let _ = r.arg_str("a file name", "file \"USER.md\" path=\"users/alice.md\"");
    }
    let (path_key, example) = if named { ("path", "path=\"users/alice.md\"") } else { ("file", "file=\"souls/alice.md\"") };
    let path = r.str_opt(if named { "path" } else { "file" });
    let text = r.str_opt("text");
    let inline = if named { None } else { n.args.first() };
    if inline.is_some() {
        let _ = r.arg_str("text", "soul \"You are …\"");
    }
    let span = r.span();
    r.finish();
    let inline_text = inline.and_then(|a| match &a.value {
        super::raw::RawValue::Str(s) => Some(s.clone()),
        _ => None,
    });
    match (path, text.map(|t| t.value).or(inline_text)) {
        (Some(path), None) => {
            let full = base.join(&path.value);
            if !full.is_file() {
                p.push(
                    Problem::new(format!("file not found: {}", path.value), path.span, "no such file")
                        .help("paths are relative to the fleet file's directory"),
                );
                return None;
            }
            Some(FileSource::Path(full))
        }
        (None, Some(text)) => Some(FileSource::Text(text)),
        (Some(path), Some(_)) => {
            p.push(
                Problem::new(format!("give `{path_key}` or text, not both"), path.span, "both given")
                    .help(format!("keep {example} or the text")),
            );
            None
        }
        (None, None) => {
            p.push(
                Problem::new(format!("`{}` needs content", n.name), span, "empty")
                    .help(format!("write {example} or give the text")),
            );
            None
        }
    }
}
