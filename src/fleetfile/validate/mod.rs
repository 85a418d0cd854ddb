//! Decoded nodes → a complete `FleetSpec`: defaults that depend on other nodes,
//! duplicate names, and every cross-reference, each with a span to point at.
//!
//! One mistake should give one diagnostic: a later duplicate is reported once and
//! then left out, and references to nodes that did not decode (already reported)
//! are not reported again.

mod agents;
mod gateways;
mod litellm;
mod names;
mod sandboxes;

use std::path::Path;

use miette::SourceSpan;

use super::decode::{Decoded, GatewayRaw};
use super::model::*;
use crate::syntax::diagnostic::{Problem, Problems, SourceFile};
use names::{dupes, keep_first, Index};

/// The sections in the order their checks need each other: names (duplicates dropped, the implicit
/// host), the proxy, the gateways (their hosts, images and ports beside the proxy's and the
/// daemon's), the agents (their gateways and models), `moved`, then the fleet itself.
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
    let idx = Index::new(p, &hosts, &images, &providers, &broken);

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
    let (litellm, litellm_port_span) = litellm::litellm(p, &idx, litellm, serve.as_ref().map(|(s, _)| s), first_span);
    let gw_out = gateways::gateways(p, &idx, gateways, &litellm, litellm_port_span, serve.as_ref());
    let mut agent_out = agents::agents(p, &idx, agents, &gw_out, spend_default);
    agents::moved(p, &mut agent_out, &moved);
    agents::budgets_need_file_keys(p, &litellm, &agent_out);
    sandboxes::sandboxes(p, &idx, &gw_out, &agent_out);
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
