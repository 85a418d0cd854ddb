//! Decoded nodes → a complete `FleetSpec`: defaults that depend on other nodes,
//! duplicate names, and every cross-reference, each with a span to point at.
//!
//! One mistake should give one diagnostic: a later duplicate is reported once and
//! then left out, and references to nodes that did not decode (already reported)
//! are not reported again.

use std::collections::BTreeMap;
use std::path::Path;

use miette::SourceSpan;

use super::decode::{Decoded, GatewayRaw};
use super::model::*;
use crate::syntax::diagnostic::{choices_help, did_you_mean, Problem, Problems, SourceFile};

/// What holds a port on a host, for the diagnostic of a clash.
struct PortOwner {
    who: String,
    /// Where the port is written; `None` when it is a default.
    span: Option<SourceSpan>,
}

pub fn assemble(
    d: Decoded,
    source: &SourceFile,
    base: &Path,
    first_span: SourceSpan,
    p: &mut Problems,
) -> Option<FleetSpec> {
    let syntax = p.syntax;
    let Decoded {
        fleet_declared,
        fleet,
        images,
        hosts,
        litellm,
        openclaw,
        providers,
        gateways,
        agents,
        mut serve,
        trace,
        moved,
        broken,
        spend_default,
    } = d;
    let is_broken =
        |kind: &str, name: &str| broken.iter().any(|(k, n)| *k == kind && n.as_deref().is_none_or(|n| n == name));
    let any_broken = |kind: &str| broken.iter().any(|(k, _)| *k == kind);

    let image_dup = dupes(p, "image", images.iter().map(|i| &i.name));
    let host_dup = dupes(p, "host", hosts.iter().map(|h| &h.name));
    let provider_dup = dupes(p, "provider", providers.iter().map(|x| &x.name));
    let gateway_dup = dupes(p, "gateway", gateways.iter().map(|g| &g.name));
    let agent_dup = dupes(p, "agent", agents.iter().map(|a| &a.name));
    let images: Vec<Image> = keep_first(images, &image_dup);
    let mut hosts: Vec<Host> = keep_first(hosts, &host_dup);
    let providers: Vec<Provider> = keep_first(providers, &provider_dup);
    let gateways: Vec<GatewayRaw> = keep_first(gateways, &gateway_dup);
    let agents = keep_first(agents, &agent_dup);

    if hosts.is_empty() {
        hosts.push(Host {
            name: Spanned::new(IMPLICIT_HOST.to_string(), first_span),
            runtime: Runtime::Process,
            remote: None,
            address: None,
            trust_token: None,
            incus_config: None,
            arch: Arch::native(),
            arch_declared: false,
        });
    }
    let host_names: Vec<&str> = hosts.iter().map(|h| h.name.value.as_str()).collect();
    let image_names: Vec<&str> = images.iter().map(|i| i.name.value.as_str()).collect();

    // Models: each name offered by exactly one provider.
    let mut offered: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
    for prov in &providers {
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
    let model_names: Vec<&str> = offered.keys().copied().collect();
    let check_model = |p: &mut Problems, m: &Spanned<String>, role: &str| {
        if offered.contains_key(m.value.as_str()) || is_broken("model", &m.value) {
            return;
        }
        let help = if model_names.is_empty() {
            format!(
                "no provider offers any model yet; declare one, e.g. `{}`",
                syntax.pick(
                    &format!("provider \"demo\" type=\"mock\" {{ model \"{}\" }}", m.value),
                    &format!("[provider.demo] type = \"mock\", models = [\"{}\"]", m.value)
                )
            )
        } else {
            choices_help(&m.value, &model_names)
        };
        p.push(
            Problem::new(format!("no provider offers the {role} model {:?}", m.value), m.span, "unknown model")
                .help(help),
        );
    };
    let check_ref = |p: &mut Problems, r: &Spanned<String>, kind: &str, known: &[&str]| {
        if known.contains(&r.value.as_str()) || is_broken(kind, &r.value) {
            return;
        }
        let help =
            if known.is_empty() { format!("the fleet declares no {kind}") } else { choices_help(&r.value, known) };
        p.push(Problem::new(format!("unknown {kind} {:?}", r.value), r.span, format!("no such {kind}")).help(help));
    };
    // The host something runs on: as given, or the only one.
    let resolve_host = |p: &mut Problems,
                        given: Option<Spanned<String>>,
                        attempted: bool,
                        what: &str,
                        span: SourceSpan| match given {
        Some(h) => {
            check_ref(p, &h, "host", &host_names);
            h
        }
        None if hosts.len() == 1 => Spanned::new(hosts[0].name.value.clone(), span),
        None => {
            if !attempted && !any_broken("host") {
                p.push(
                    Problem::new(format!("{what} needs a `host`: the fleet has several"), span, "which host?")
                        .help(format!("add `{}`, one of: {}", syntax.assign("host", "\"…\""), host_names.join(", "))),
                );
            }
            Spanned::new(String::new(), span)
        }
    };

    // `trace { otlp … }`: the daemon exports; without one there is nothing to export from.
    match (&mut serve, trace) {
        (Some((sv, _)), Some((t, _))) => sv.export = Some(t),
        (None, Some((_, span))) => p.push(
            Problem::new("`trace` export needs the daemon: there is no `serve`", span, "nothing to export from").help(
                format!(
                    "declare it: `{}`",
                    syntax.pick("serve { listen \"127.0.0.1:8700\" }", "[serve] listen = \"127.0.0.1:8700\"")
                ),
            ),
        ),
        _ => {}
    }
    let litellm = {
        let raw = litellm;
        let declared = raw.is_some();
        let span = raw.as_ref().map(|l| l.span).unwrap_or(first_span);
        let (callback, start_timeout_s) = match &raw {
            Some(l) => (l.callback.clone(), l.start_timeout_s),
            None => (None, None),
        };
        // With a daemon, the proxy's call events go to its trace ingest unless the file says where.
        let callback = callback
            .or_else(|| serve.as_ref().map(|(sv, _)| Callback { url: format!("{}/v1/trace", sv.url()), token: None }));
        let keys_url_span = raw.as_ref().and_then(|l| l.keys_url_span);
        let (host, host_attempted, port, bind, version, path, keys, master_key, default_model) = match raw {
            Some(l) => {
                (l.host, l.host_attempted, l.port, l.bind, l.version, l.path, l.keys, l.master_key, l.default_model)
            }
            None => (None, false, None, None, None, None, KeyBackend::File, None, None),
        };
        if let Some(dm) = &default_model {
            check_model(p, dm, "default");
        }
        let host = if !declared && hosts.len() > 1 {
            // Nothing in the file to point at but the hosts that make the choice necessary.
            if !any_broken("host") {
                p.push(
                    Problem::new(
                        "the LiteLLM proxy needs a `host`: the fleet has several",
                        hosts[1].name.span,
                        "another host",
                    )
                    .also(hosts[0].name.span, "one host")
                    .help(format!(
                        "say where it runs: `{}`",
                        syntax.pick(
                            &format!("litellm host=\"{}\"", hosts[0].name.value),
                            &format!("[litellm] host = \"{}\"", hosts[0].name.value)
                        )
                    )),
                );
            }
            Spanned::new(String::new(), span)
        } else {
            resolve_host(p, host, host_attempted, "`litellm`", span)
        };
        (
            Litellm {
                host,
                port: port.as_ref().map(|p| p.value).unwrap_or(DEFAULT_LITELLM_PORT),
                bind: bind.unwrap_or_else(|| "127.0.0.1".to_string()),
                version: version.map(|v| v.value).unwrap_or_else(|| DEFAULT_LITELLM_VERSION.to_string()),
                path,
                keys,
                keys_url_span,
                master_key,
                default_model,
                callback,
                start_timeout_s: start_timeout_s.unwrap_or(DEFAULT_PROXY_START_TIMEOUT_S),
            },
            port.map(|p| p.span),
        )
    };
    let (litellm, litellm_port_span) = litellm;
    if let Some(h) = hosts.iter().find(|h| h.name.value == litellm.host.value && h.is_remote()) {
        p.push(
            Problem::new(
                format!("the LiteLLM proxy is placed on host {:?}, another machine", h.name.value),
                litellm.host.span,
                "a remote Incus host",
            )
            .also(h.name.span, "declared with a remote/address here")
            .help("the proxy runs on this machine (its master key never leaves it): give `litellm` a host of this machine"),
        );
    }

    // Gateways: hosts and images first, then ports: the ones written out, then defaults,
    // which skip every port already taken on their host.
    let mut used_ports: BTreeMap<(String, u16), PortOwner> = BTreeMap::new();
    used_ports.insert(
        (litellm.host.value.clone(), litellm.port),
        PortOwner { who: "the LiteLLM proxy".into(), span: litellm_port_span },
    );
    // The daemon runs on this machine: the process hosts' ports are its neighbours.
    if let Some((sv, span)) = &serve {
        for h in hosts.iter().filter(|h| h.runtime == Runtime::Process && h.remote.is_none()) {
            let key = (h.name.value.clone(), sv.port);
            match used_ports.get(&key) {
                Some(owner) => p.push(
                    Problem::new(
                        format!("port {} is already used by {}", sv.port, owner.who),
                        *span,
                        "serve listens there",
                    )
                    .help(format!(
                        "give serve another port: `{}`",
                        syntax.pick("listen \"127.0.0.1:8701\"", "listen = \"127.0.0.1:8701\"")
                    )),
                ),
                None => {
                    used_ports.insert(key, PortOwner { who: "fleet serve".into(), span: Some(*span) });
                }
            }
        }
    }
    let mut placed = Vec::new();
    for GatewayRaw { name, host, host_attempted, image, image_attempted, port, listen, target } in gateways {
        let host = resolve_host(p, host, host_attempted, &format!("gateway {:?}", name.value), name.span);
        if let Some(img) = &image {
            check_ref(p, img, "image", &image_names);
        }
        let runtime = hosts.iter().find(|h| h.name.value == host.value).map(|h| h.runtime);
        if runtime == Some(Runtime::Incus) && image.is_none() && !image_attempted {
            p.push(
                Problem::new(
                    format!("gateway {:?} runs on the incus host {:?} and needs an `image`", name.value, host.value),
                    name.span,
                    "image missing",
                )
                .help(match image_names.as_slice() {
                    [] => format!(
                        "containers start from an image: declare one and add `{}`",
                        syntax.assign("image", "\"openclaw-base\"")
                    ),
                    names => format!(
                        "containers start from an image: add `{}`",
                        syntax.assign("image", &format!("\"{}\"", names[0]))
                    ),
                }),
            );
        }
        let listen_written = listen.is_some();
        let remote_host = hosts.iter().find(|h| h.name.value == host.value && h.is_remote());
        if let Some(t) = target.as_ref().filter(|_| remote_host.is_none()) {
            p.push(
                Problem::new(
                    format!("gateway {:?} has a `target`, but host {:?} is not an Incus cluster fleet reaches", name.value, host.value),
                    t.span,
                    "no cluster here",
                )
                .help("`target` places a container on a member of a cluster host (`host … runtime=\"incus\" address=…` or `remote=…`): drop it, or move the gateway to such a host"),
            );
        }
        let target = target.map(|t| t.value);
        let listen = match remote_host {
            Some(h) => remote_gateway_listen(p, &name, &host, h, listen, &litellm, serve.as_ref().map(|(s, _)| s)),
            None => {
                if let Some(l) = &listen {
                    p.push(
                        Problem::new(
                            format!(
                                "gateway {:?} runs on this machine: `listen` is for gateways on other hosts",
                                name.value
                            ),
                            l.span,
                            "not a remote host",
                        )
                        .help("drop `listen`: fleet reaches a gateway of this machine on 127.0.0.1"),
                    );
                }
                None
            }
        };
        placed.push((name, host, image, port, (listen, listen_written, target)));
    }
    for (name, host, _, port, _) in &placed {
        let Some(port) = port else { continue };
        let key = (host.value.clone(), port.value);
        if let Some(owner) = used_ports.get(&key) {
            let mut problem = Problem::new(
                format!("port {} on host {:?} is already used by {}", port.value, host.value, owner.who),
                port.span,
                "port taken",
            );
            problem = match owner.span {
                Some(s) => problem.also(s, "used here").help("give this gateway another `port`"),
                None => problem.help(format!(
                    "{} uses {} by default: pick another `port`, or set `{}`",
                    owner.who,
                    port.value,
                    syntax.pick("litellm port=…", "[litellm] port = …")
                )),
            };
            p.push(problem);
        } else {
            used_ports.insert(key, PortOwner { who: format!("gateway {:?}", name.value), span: Some(port.span) });
        }
    }
    let mut next_port: BTreeMap<String, u16> = BTreeMap::new();
    let mut gw_out = Vec::new();
    for (name, host, image, port, (listen, listen_written, target)) in placed {
        let port = match port {
            Some(p) => p.value,
            None => {
                let n = next_port.entry(host.value.clone()).or_insert(DEFAULT_GATEWAY_PORT);
                while used_ports.contains_key(&(host.value.clone(), *n)) && *n < u16::MAX - GATEWAY_PORT_STEP {
                    *n += GATEWAY_PORT_STEP;
                }
                let v = *n;
                *n = n.saturating_add(GATEWAY_PORT_STEP);
                used_ports.insert(
                    (host.value.clone(), v),
                    PortOwner { who: format!("gateway {:?}", name.value), span: None },
                );
                v
            }
        };
        gw_out.push(Gateway { name, host, image, port, listen, listen_written, target });
    }
    let gw_names: Vec<&str> = gw_out.iter().map(|g| g.name.value.as_str()).collect();

    let mut agent_out = Vec::new();
    for a in agents {
        let gateway = match a.gateway {
            Some(g) => {
                check_ref(p, &g, "gateway", &gw_names);
                g
            }
            None if gw_out.len() == 1 => Spanned::new(gw_out[0].name.value.clone(), a.name.span),
            None if a.gateway_attempted || any_broken("gateway") => Spanned::new(String::new(), a.name.span),
            // A fleet without gateways only mints keys (for agents that run elsewhere).
            None if gw_out.is_empty() => Spanned::new(String::new(), a.name.span),
            None => {
                p.push(
                    Problem::new(
                        format!("agent {:?} needs a `gateway`: the fleet has several", a.name.value),
                        a.name.span,
                        "which gateway?",
                    )
                    .help(format!(
                        "add `{}`, one of: {}",
                        syntax.assign("gateway", "\"…\""),
                        gw_names.join(", ")
                    )),
                );
                Spanned::new(String::new(), a.name.span)
            }
        };
        let Some(model) = a.model else {
            if !a.model_attempted {
                let offered = if model_names.is_empty() {
                    "no provider offers any yet".to_string()
                } else {
                    format!("offered: {}", model_names.join(", "))
                };
                p.push(
                    Problem::new(format!("agent {:?} needs a `model`", a.name.value), a.name.span, "model missing")
                        .help(format!("add `{}`; {offered}", syntax.assign("model", "\"…\""))),
                );
            }
            continue;
        };
        check_model(p, &model, "primary");
        for f in &a.rest.fallbacks {
            check_model(p, f, "fallback");
        }
        let spend = a.rest.spend.or(spend_default);
        agent_out.push(Agent { gateway, model, spend, ..a.rest });
    }
    for (from, to) in &moved {
        if agent_out.iter().any(|a| a.name.value == from.value) {
            p.push(
                Problem::new(
                    format!("agent {:?} is moved, but still declared", from.value),
                    from.span,
                    "still declared",
                )
                .help(format!("a move renames it: take `agent {:?}` out of the file", from.value)),
            );
            continue;
        }
        if moved.iter().filter(|(_, t)| t.value == to.value).count() > 1 {
            p.push(
                Problem::new(format!("two agents are moved to {:?}", to.value), to.span, "moved twice")
                    .help("keep one"),
            );
            continue;
        }
        let names: Vec<String> = agent_out.iter().map(|a| a.name.value.clone()).collect();
        let Some(a) = agent_out.iter_mut().find(|a| a.name.value == to.value) else {
            let hint = match did_you_mean(&to.value, names.iter().map(String::as_str)) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "declare the agent it becomes".to_string(),
            };
            p.push(
                Problem::new(
                    format!("moved to agent {:?}, which the file does not declare", to.value),
                    to.span,
                    "no such agent",
                )
                .help(hint),
            );
            continue;
        };
        if a.fresh || a.restore.is_some() {
            p.push(
                Problem::new(
                    format!("agent {:?} is moved from {:?} and also says `fresh` or `restore`", to.value, from.value),
                    to.span,
                    "which one?",
                )
                .help("a move brings the old agent's archive; drop `fresh`/`restore` or the `moved` block"),
            );
            continue;
        }
        a.moved_from = Some(from.value.clone());
    }
    if let KeyBackend::Database { .. } = litellm.keys {
        // Budgets and limits live in fleet's key file, which its auth module reads.
        for a in agent_out.iter().filter(|a| !a.spend.is_empty()) {
            let span = a.spend.budget.map(|b| b.span).unwrap_or(a.name.span);
            p.push(
                Problem::new(
                    format!("agent {:?} has a budget or limits, which the database key backend does not enforce", a.name.value),
                    span,
                    "not enforced",
                )
                .help("fleet enforces budgets and limits with its file key backend: drop `keys` from `litellm`, or drop the budget"),
            );
        }
    }
    let (name, parallelism, data_dir) = match fleet {
        Some(f) => f,
        None => {
            if !fleet_declared {
                p.push(
                    Problem::new(
                        "the file declares no `fleet`",
                        first_span,
                        if first_span.is_empty() { "the file is empty" } else { "no `fleet` before this" },
                    )
                    .help(format!(
                        "start the file with `{}`; the name keys the fleet's data directory",
                        syntax.pick("fleet \"my-fleet\"", "[fleet] name = \"my-fleet\"")
                    )),
                );
            }
            return None;
        }
    };
    if !p.is_empty() {
        return None;
    }
    Some(FleetSpec {
        name: name.value,
        source: source.clone(),
        parallelism: parallelism.unwrap_or(8),
        data_dir,
        base_dir: base.to_path_buf(),
        images,
        hosts,
        litellm,
        openclaw: openclaw.unwrap_or(OpenClaw {
            version: DEFAULT_OPENCLAW_VERSION.to_string(),
            node: DEFAULT_NODE_VERSION.to_string(),
        }),
        providers,
        gateways: gw_out,
        agents: agent_out,
        serve: serve.map(|(s, _)| s),
    })
}

/// Reports every name declared again; returns, per name, whether it is such a repeat.
fn dupes<'a>(p: &mut Problems, kind: &str, names: impl Iterator<Item = &'a Spanned<String>>) -> Vec<bool> {
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
fn keep_first<T>(items: Vec<T>, repeat: &[bool]) -> Vec<T> {
    items.into_iter().zip(repeat).filter(|(_, r)| !**r).map(|(x, _)| x).collect()
}

/// Where fleet reaches a gateway on another machine (its `listen`, else the host part of the
/// host's `address`), and what must hold for it to work there: the proxy (and the daemon, which
/// its trace plugin ships to) listening on an address that host can reach, not on loopback only.
fn remote_gateway_listen(
    p: &mut Problems,
    name: &Spanned<String>,
    host: &Spanned<String>,
    h: &Host,
    listen: Option<Spanned<String>>,
    litellm: &Litellm,
    serve: Option<&Serve>,
) -> Option<String> {
    let loopback = |bind: &str| {
        crate::netaddr::connect_host(bind).parse::<std::net::IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
            || bind == "localhost"
    };
    if loopback(&litellm.bind) {
        p.push(
            Problem::new(
                format!(
                    "gateway {:?} runs on host {:?}, another machine, but the LiteLLM proxy listens on {} only",
                    name.value, h.name.value, litellm.bind
                ),
                host.span,
                "its agents could not reach the proxy",
            )
            .also(h.name.span, "another machine")
            .help("bind the proxy to an address of this machine that the host can reach, e.g. `litellm bind=\"10.0.0.1\"` (a specific address: the proxy is the agents' only way to a model)"),
        );
    }
    if let Some(sv) = serve.filter(|sv| loopback(&sv.bind)) {
        p.push(
            Problem::new(
                format!(
                    "gateway {:?} runs on host {:?}, another machine, but `serve` listens on {} only",
                    name.value,
                    h.name.value,
                    sv.listen()
                ),
                host.span,
                "its trace plugin could not reach the daemon",
            )
            .also(h.name.span, "another machine")
            .help(format!(
                "let the daemon listen on an address of this machine that the host can reach, e.g. `serve {{ listen \"10.0.0.1:{}\" }}`",
                sv.port
            )),
        );
    }
    if let Some(l) = listen {
        return Some(l.value);
    }
    let from_address = h.address.as_ref().and_then(|a| address_ip(&a.value));
    if from_address.is_none() {
        p.push(
            Problem::new(
                format!("fleet cannot tell where to reach gateway {:?} on host {:?}", name.value, h.name.value),
                name.span,
                "no address",
            )
            .also(h.name.span, "its host has no IP `address`")
            .help("add `listen=\"<an IP address of that host>\"` to the gateway: its port is published there (bound to that address only)"),
        );
    }
    from_address
}

/// The IP address in an Incus `address` (`https://10.0.0.2:8443` → `10.0.0.2`); None for a name.
fn address_ip(address: &str) -> Option<String> {
    let rest = address.trim_end_matches('/');
    let rest = rest.strip_prefix("https://").unwrap_or(rest);
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => rest.rsplit_once(':').map(|(h, _)| h).filter(|h| !h.contains(':')).unwrap_or(rest),
    };
    host.parse::<std::net::IpAddr>().ok().map(|ip| ip.to_string())
}
