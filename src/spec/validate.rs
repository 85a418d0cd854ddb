//! Decoded nodes → a complete `FleetSpec`: defaults that depend on other nodes,
//! duplicate names, and every cross-reference, each with a span to point at.

use std::collections::BTreeMap;
use std::path::Path;

use miette::SourceSpan;

use super::decode::{Decoded, GatewayRaw};
use super::diagnostic::{choices_help, Problem, Problems};
use super::model::*;

pub fn assemble(d: Decoded, base: &Path, first_span: SourceSpan, p: &mut Problems) -> Option<FleetSpec> {
    let Decoded { fleet, images, mut hosts, litellm, providers, gateways, agents } = d;

    dupes(p, "image", images.iter().map(|i| &i.name));
    dupes(p, "host", hosts.iter().map(|h| &h.name));
    dupes(p, "provider", providers.iter().map(|x| &x.name));
    dupes(p, "gateway", gateways.iter().map(|g| &g.name));
    dupes(p, "agent", agents.iter().map(|a| &a.name));

    if hosts.is_empty() {
        hosts.push(Host {
            name: Spanned::new(IMPLICIT_HOST.to_string(), first_span),
            runtime: Runtime::Process,
            remote: None,
            arch: Arch::native(),
        });
    }
    let host_names: Vec<&str> = hosts.iter().map(|h| h.name.value.as_str()).collect();
    let image_names: Vec<&str> = images.iter().map(|i| i.name.value.as_str()).collect();

    // Models: each name offered by exactly one provider.
    let mut offered: BTreeMap<&str, &Spanned<String>> = BTreeMap::new();
    for prov in &providers {
        for m in &prov.models {
            if let Some(first) = offered.insert(m.name.value.as_str(), &m.name) {
                p.push(
                    Problem::new(format!("model {:?} is offered by two providers", m.name.value), m.name.span, "offered again here")
                        .also(first.span, "first offered here")
                        .help("a model name routes to one provider; rename one of them"),
                );
            }
        }
    }
    let model_names: Vec<&str> = offered.keys().copied().collect();
    let check_model = |p: &mut Problems, m: &Spanned<String>, role: &str| {
        if !offered.contains_key(m.value.as_str()) {
            p.push(
                Problem::new(format!("no provider offers the {role} model {:?}", m.value), m.span, "unknown model")
                    .help(choices_help(&m.value, &model_names)),
            );
        }
    };
    let check_ref = |p: &mut Problems, r: &Spanned<String>, kind: &str, known: &[&str]| -> bool {
        if known.contains(&r.value.as_str()) {
            return true;
        }
        p.push(
            Problem::new(format!("unknown {kind} {:?}", r.value), r.span, format!("no such {kind}"))
                .help(choices_help(&r.value, known)),
        );
        false
    };
    let default_host = |p: &mut Problems, given: Option<Spanned<String>>, what: &str, span: SourceSpan| -> Spanned<String> {
        match given {
            Some(h) => {
                check_ref(p, &h, "host", &host_names);
                h
            }
            None if hosts.len() == 1 => Spanned::new(hosts[0].name.value.clone(), span),
            None => {
                p.push(
                    Problem::new(format!("{what} needs a `host`: the fleet has several"), span, "which host?")
                        .help(choices_help("", &host_names)),
                );
                Spanned::new(String::new(), span)
            }
        }
    };

    let litellm = {
        let raw = litellm;
        let span = raw.as_ref().map(|l| l.span).unwrap_or(first_span);
        let (host, port, bind, version, path, keys, master_key, default_model) = match raw {
            Some(l) => (l.host, l.port, l.bind, l.version, l.path, l.keys, l.master_key, l.default_model),
            None => (None, None, None, None, None, KeyBackend::File, None, None),
        };
        if let Some(dm) = &default_model {
            check_model(p, dm, "default");
        }
        Litellm {
            host: default_host(p, host, "`litellm`", span),
            port: port.unwrap_or(DEFAULT_LITELLM_PORT),
            bind: bind.unwrap_or_else(|| "127.0.0.1".to_string()),
            version: version.map(|v| v.value).unwrap_or_else(|| DEFAULT_LITELLM_VERSION.to_string()),
            path,
            keys,
            master_key,
            default_model,
        }
    };

    let mut gw_out = Vec::new();
    let mut next_port: BTreeMap<String, u16> = BTreeMap::new();
    let mut used_ports: BTreeMap<(String, u16), (String, SourceSpan)> = BTreeMap::new();
    used_ports.insert((litellm.host.value.clone(), litellm.port), ("the LiteLLM proxy".into(), litellm.host.span));
    for GatewayRaw { name, host, image, port } in gateways {
        let host = default_host(p, host, &format!("gateway {:?}", name.value), name.span);
        if let Some(img) = &image {
            check_ref(p, img, "image", &image_names);
        }
        let runtime = hosts.iter().find(|h| h.name.value == host.value).map(|h| h.runtime);
        if runtime == Some(Runtime::Incus) && image.is_none() {
            p.push(
                Problem::new(format!("gateway {:?} runs on an incus host and needs an `image`", name.value), name.span, "image missing")
                    .help("containers start from an image: add image=\"openclaw-base\" and declare that image"),
            );
        }
        let port_value = match &port {
            Some(p) => p.value,
            None => {
                let n = next_port.entry(host.value.clone()).or_insert(DEFAULT_GATEWAY_PORT);
                let v = *n;
                *n = n.saturating_add(GATEWAY_PORT_STEP);
                v
            }
        };
        let port_span = port.as_ref().map(|p| p.span).unwrap_or(name.span);
        if let Some((owner, owner_span)) = used_ports.get(&(host.value.clone(), port_value)) {
            p.push(
                Problem::new(format!("port {port_value} on host {:?} is already used by {owner}", host.value), port_span, "port taken")
                    .also(*owner_span, "used here")
                    .help("give this gateway another `port`"),
            );
        } else {
            used_ports.insert((host.value.clone(), port_value), (format!("gateway {:?}", name.value), port_span));
        }
        gw_out.push(Gateway { name, host, image, port: port_value });
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
            None => {
                let why = if gw_out.is_empty() { "the fleet declares no gateway" } else { "the fleet has several" };
                p.push(
                    Problem::new(format!("agent {:?} needs a `gateway`: {why}", a.name.value), a.name.span, "which gateway?")
                        .help(if gw_out.is_empty() {
                            "declare one: `gateway \"main\"`, then agents run in it".to_string()
                        } else {
                            choices_help("", &gw_names)
                        }),
                );
                Spanned::new(String::new(), a.name.span)
            }
        };
        let Some(model) = a.model else {
            p.push(
                Problem::new(format!("agent {:?} needs a `model`", a.name.value), a.name.span, "model missing")
                    .help(format!("add model=\"…\"; offered: {}", if model_names.is_empty() { "none yet — declare a provider".into() } else { model_names.join(", ") })),
            );
            continue;
        };
        check_model(p, &model, "primary");
        for f in &a.rest.fallbacks {
            check_model(p, f, "fallback");
        }
        agent_out.push(Agent { gateway, model, ..a.rest });
    }

    let (name, parallelism, data_dir) = match fleet {
        Some(f) => f,
        None => {
            p.push(
                Problem::new("the file declares no `fleet`", first_span, "expected `fleet \"<name>\"` first")
                    .help("start the file with `fleet \"my-fleet\"`; the name keys the fleet's data directory"),
            );
            return None;
        }
    };
    if !p.is_empty() {
        return None;
    }
    Some(FleetSpec {
        name: name.value,
        parallelism: parallelism.unwrap_or(8),
        data_dir,
        base_dir: base.to_path_buf(),
        images,
        hosts,
        litellm,
        providers,
        gateways: gw_out,
        agents: agent_out,
    })
}

fn dupes<'a>(p: &mut Problems, kind: &str, names: impl Iterator<Item = &'a Spanned<String>>) {
    let mut seen: BTreeMap<&str, SourceSpan> = BTreeMap::new();
    for n in names {
        if let Some(first) = seen.get(n.value.as_str()) {
            p.push(
                Problem::new(format!("duplicate {kind} {:?}", n.value), n.span, "declared again here")
                    .also(*first, "first declared here")
                    .help(format!("{kind} names must be unique; rename or remove one")),
            );
        } else {
            seen.insert(&n.value, n.span);
        }
    }
}
