//! What plan and apply say of tool sandboxes before anything else: a machine without podman (or
//! runc, or catatonit) fails at the sandbox that needs it, with the command that installs them;
//! gateways whose agents' tools run in sandboxes are said to run without Landlock (podman cannot
//! start inside a Landlock domain); and agents that share a gateway without sandboxes are said to
//! share one trust domain (docs/security.md).

use crate::fleetfile::diagnostic::{Problem, Problems, SpecError, Syntax};
use crate::fleetfile::{AgentSandbox, FleetSpec, Gateway, Runtime};

/// The process gateways of `spec` whose agents' tools run in sandboxes, and those agents.
fn sandboxed(spec: &FleetSpec) -> Vec<(&Gateway, Vec<&str>)> {
    spec.gateways
        .iter()
        .filter(|g| spec.runtime_of(g) == Runtime::Process)
        .map(|g| {
            let agents = spec
                .agents
                .iter()
                .filter(|a| a.gateway.value == g.name.value && AgentSandbox::of(g, a).is_some())
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>();
            (g, agents)
        })
        .filter(|(_, agents)| !agents.is_empty())
        .collect()
}

/// What this machine lacks for the sandboxes `spec` declares (slirp4netns for an `outbound` one);
/// nothing is looked for when it declares none (every plan asks).
pub fn missing_tools(spec: &FleetSpec) -> Vec<&'static str> {
    let sandboxes: Vec<AgentSandbox> = spec.agents.iter().filter_map(|a| spec.sandbox_of(a)).collect();
    if sandboxes.is_empty() {
        return Vec::new();
    }
    let mut missing = crate::runtime::sandbox::missing_tools();
    let outbound = sandboxes.iter().any(|s| s.network == "outbound");
    if outbound && crate::runtime::sandbox::which("slirp4netns").is_none() {
        missing.push("slirp4netns");
    }
    missing
}

/// Fails when a sandbox is declared and this machine lacks what runs one (`missing` lists it).
pub fn tools_present(spec: &FleetSpec, missing: &[&str]) -> Result<(), SpecError> {
    if missing.is_empty() {
        return Ok(());
    }
    let mut problems = Problems::new(if spec.source.name.ends_with(".toml") { Syntax::Toml } else { Syntax::Kdl });
    for (g, agents) in sandboxed(spec) {
        let own = spec.agents.iter().filter(|a| agents.contains(&a.name.as_str())).find_map(|a| a.sandbox.as_ref());
        let Some(span) = g.sandbox.as_ref().or(own).map(|s| s.span) else { continue };
        problems.push(
            Problem::new(
                format!(
                    "gateway {}'s agents ({}) run their tools in sandboxes, and this machine has no {}",
                    g.name.value,
                    agents.join(", "),
                    missing.join(", ")
                ),
                span,
                "needs podman",
            )
            .help(format!("install them: `{}`", crate::runtime::sandbox::INSTALL_HINT)),
        );
        break;
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into_report(&spec.source))
    }
}

/// Advice: which gateways give up Landlock for their agents' sandboxes.
pub fn without_landlock(spec: &FleetSpec) -> Option<miette::Report> {
    let gws = sandboxed(spec);
    if gws.is_empty() {
        return None;
    }
    let list = gws.iter().map(|(g, a)| format!("{} ({})", g.name.value, a.join(", "))).collect::<Vec<_>>().join("; ");
    Some(miette::miette!(
        severity = miette::Severity::Advice,
        "tools run in rootless podman sandboxes on gateway(s) {list}: each sees its agent's workspace only, no \
         network; these gateways' own processes run under their own users without Landlock (podman cannot start \
         inside it)"
    ))
}

/// Warning: agents on one process gateway whose tools are not all sandboxed read each other's keys
/// and workspaces (OpenClaw's own model: one gateway, one trust domain).
pub fn shared_trust(spec: &FleetSpec) -> Option<miette::Report> {
    let mut shared = Vec::new();
    for g in spec.gateways.iter().filter(|g| spec.runtime_of(g) == Runtime::Process) {
        let on: Vec<_> = spec.agents.iter().filter(|a| a.gateway.value == g.name.value).collect();
        let open: Vec<&str> = on.iter().filter(|a| AgentSandbox::of(g, a).is_none()).map(|a| a.name.as_str()).collect();
        if on.len() > 1 && !open.is_empty() {
            shared.push(format!("{} on {}", open.join(", "), g.name.value));
        }
    }
    if shared.is_empty() {
        return None;
    }
    Some(miette::miette!(
        severity = miette::Severity::Warning,
        help = "give the gateway `sandbox \"all\" image=\"…\"` (podman; recipes/sandbox.kdl), or put agents that must not see each other on gateways of their own",
        "agents whose tools run unsandboxed beside other agents of their gateway can read those agents' keys and workspaces: {}",
        shared.join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(text: &str) -> FleetSpec {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sandbox.kdl"), "recipe \"sandbox\" {\n    base distribution=\"debian\" suite=\"bookworm\" variant=\"minbase\"\n    source-date-epoch 1\n}\n").unwrap();
        let head = format!(
            "fleet \"f\"\nprovider \"demo\" type=\"mock\" {{ model \"m\"; }}\nimage \"sandbox\" {{ recipe \"{}\"; }}\n",
            dir.path().join("sandbox.kdl").display()
        );
        let source = crate::fleetfile::SourceFile::new("fleet.kdl", format!("{head}{text}"));
        crate::fleetfile::parse(source, dir.path()).unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)))
    }

    #[test]
    fn a_missing_podman_fails_at_the_sandbox_with_the_fix() {
        let s = spec("gateway \"g\" { sandbox \"all\" image=\"sandbox\"; }\nagent \"a\" gateway=\"g\" model=\"m\"\n");
        assert!(tools_present(&s, &[]).is_ok());
        let e = format!("{:?}", miette::Report::new(tools_present(&s, &["podman", "catatonit"]).unwrap_err()));
        assert!(e.contains("no podman, catatonit") && e.contains("apt-get install podman"), "{e}");
    }

    #[test]
    fn agents_sharing_a_gateway_unsandboxed_are_warned_about_and_sandboxed_ones_are_not() {
        let two = "gateway \"g\"\nagent \"a\" gateway=\"g\" model=\"m\"\nagent \"b\" gateway=\"g\" model=\"m\"\n";
        let w = shared_trust(&spec(two)).map(|r| r.to_string()).unwrap_or_default();
        assert!(w.contains("a, b on g"), "{w}");
        assert!(without_landlock(&spec(two)).is_none());
        let boxed = "gateway \"g\" { sandbox \"all\" image=\"sandbox\"; }\nagent \"a\" gateway=\"g\" model=\"m\"\nagent \"b\" gateway=\"g\" model=\"m\"\n";
        assert!(shared_trust(&spec(boxed)).is_none());
        assert!(without_landlock(&spec(boxed)).unwrap().to_string().contains("g (a, b)"));
        // One agent opts out: it is the one said to be exposed.
        let one_out = "gateway \"g\" { sandbox \"all\" image=\"sandbox\"; }\nagent \"a\" gateway=\"g\" model=\"m\" { sandbox \"off\"; }\nagent \"b\" gateway=\"g\" model=\"m\"\n";
        let w = shared_trust(&spec(one_out)).map(|r| r.to_string()).unwrap_or_default();
        assert!(w.contains("a on g") && !w.contains("b on"), "{w}");
        let alone = "gateway \"g\"\nagent \"a\" gateway=\"g\" model=\"m\"\n";
        assert!(shared_trust(&spec(alone)).is_none());
    }
}
