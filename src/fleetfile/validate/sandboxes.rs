//! Sandboxes: each names a declared image; every agent whose tools run in one has an image (its own
//! or its gateway's); sandboxes are made by process gateways (an Incus gateway's container is the
//! boundary there: podman does not run inside it).

use super::names::Index;
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{Problem, Problems};

pub fn sandboxes(p: &mut Problems, idx: &Index, gateways: &[Gateway], agents: &[Agent]) {
    let images = &idx.image_names;
    for s in gateways.iter().filter_map(|g| g.sandbox.as_ref()).chain(agents.iter().filter_map(|a| a.sandbox.as_ref()))
    {
        if let Some(img) = &s.image {
            idx.check_ref(p, img, "image", images);
        }
    }
    let runtime_of = |g: &Gateway| idx.hosts.iter().find(|h| h.name.value == g.host.value).map(|h| h.runtime);
    for g in gateways {
        // The agents whose tools the file puts in a sandbox, and the `sandbox` node that says so.
        let sandboxed: Vec<(&Agent, &Sandbox)> = agents
            .iter()
            .filter(|a| a.gateway.value == g.name.value)
            .filter_map(|a| AgentSandbox::declared(g, a).filter(|s| s.mode != SandboxMode::Off).map(|s| (a, s)))
            .collect();
        if runtime_of(g) == Some(Runtime::Incus) {
            let declared = g.sandbox.as_ref().filter(|s| s.mode != SandboxMode::Off);
            if let Some(span) = declared.or(sandboxed.first().map(|(_, s)| *s)).map(|s| s.span) {
                p.push(
                    Problem::new(
                        format!("gateway {:?} runs in an Incus container: fleet sandboxes tools on process gateways only", g.name.value),
                        span,
                        "not on Incus",
                    )
                    .help("an Incus gateway's agents share its container: put agents that must not see each other on different gateways, or move this gateway to a process host"),
                );
            }
            continue;
        }
        for (a, s) in sandboxed.into_iter().filter(|(a, _)| AgentSandbox::image_of(g, a).is_none()) {
            let example = match images.first() {
                Some(i) => format!("add `image=\"{i}\"` to the gateway's or the agent's `sandbox`"),
                None => "declare `image \"sandbox\" { recipe \"recipes/sandbox.kdl\" }` and add `image=\"sandbox\"` to the `sandbox`".to_string(),
            };
            p.push(
                Problem::new(format!("agent {:?}'s sandbox has no image", a.name.value), s.span, "no image")
                    .help(format!("a sandbox runs from an image fleet builds or fetches: {example}")),
            );
        }
    }
}
