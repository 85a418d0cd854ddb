//! Gateways: each placed on its host (the only one, or the one given), an image where its host
//! runs containers, where fleet reaches one on another machine, and its port: the ones written out
//! first (a clash is reported at both), then defaults, which skip every port already taken on their
//! host (the proxy's, the daemon's, the other gateways').

use std::collections::BTreeMap;

use miette::SourceSpan;

use super::names::Index;
use crate::fleetfile::decode::GatewayRaw;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};

/// What holds a port on a host, for the diagnostic of a clash.
struct PortOwner {
    who: String,
    /// Where the port is written; `None` when it is a default.
    span: Option<SourceSpan>,
}

/// The gateways, placed and with their ports.
pub fn gateways(
    p: &mut Problems,
    idx: &Index,
    gateways: Vec<GatewayRaw>,
    litellm: &Litellm,
    litellm_port_span: Option<SourceSpan>,
    serve: Option<&(Serve, SourceSpan)>,
) -> Vec<Gateway> {
    let syntax = idx.syntax;
    let mut used_ports: BTreeMap<(String, u16), PortOwner> = BTreeMap::new();
    used_ports.insert(
        (litellm.host.value.clone(), litellm.port),
        PortOwner { who: "the LiteLLM proxy".into(), span: litellm_port_span },
    );
    // The daemon runs on this machine: the process hosts' ports are its neighbours.
    if let Some((sv, span)) = serve {
        for h in idx.hosts.iter().filter(|h| h.runtime == Runtime::Process && h.remote.is_none()) {
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
    for GatewayRaw { name, host, host_attempted, image, image_attempted, port, listen, target, limits, sandbox } in
        gateways
    {
        let host = idx.resolve_host(p, host, host_attempted, &format!("gateway {:?}", name.value), name.span);
        if let Some(img) = &image {
            idx.check_ref(p, img, "image", &idx.image_names);
        }
        let runtime = idx.hosts.iter().find(|h| h.name.value == host.value).map(|h| h.runtime);
        if runtime == Some(Runtime::Incus) && image.is_none() && !image_attempted {
            p.push(
                Problem::new(
                    format!("gateway {:?} runs on the incus host {:?} and needs an `image`", name.value, host.value),
                    name.span,
                    "image missing",
                )
                .help(match idx.image_names.as_slice() {
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
        let remote_host = idx.hosts.iter().find(|h| h.name.value == host.value && h.is_remote());
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
            Some(h) => remote_gateway_listen(p, &name, &host, h, listen, litellm, serve.map(|(s, _)| s)),
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
        placed.push((name, host, image, port, (listen, listen_written, target, limits, sandbox)));
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
    for (name, host, image, port, (listen, listen_written, target, limits, sandbox)) in placed {
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
        gw_out.push(Gateway { name, host, image, port, listen, listen_written, target, limits, sandbox });
    }
    gw_out
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
