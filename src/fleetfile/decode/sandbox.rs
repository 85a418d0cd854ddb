//! `sandbox "all" image="sandbox" workspace="rw" network="none"`: where an agent's tools run, on a
//! gateway (its agents' default) or on an agent.

use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub(super) fn sandbox(n: &RawNode, p: &mut Problems) -> Option<Sandbox> {
    let mut r = Reader::new(n, p);
    let span = r.span();
    let mode = r.arg_or("mode", "a mode", "sandbox \"all\" image=\"sandbox\"");
    let image = r.str_opt("image");
    let workspace = r.str_opt("workspace");
    let network = r.str_opt("network");
    r.finish();
    let mode = mode.and_then(|m| {
        let parsed = SandboxMode::parse(&m.value);
        if parsed.is_none() {
            p.push(
                Problem::new(format!("unknown sandbox mode {:?}", m.value), m.span, "unknown mode")
                    .help(choices_help(&m.value, &SandboxMode::NAMES)),
            );
        }
        parsed
    });
    let mut choice = |v: Option<Spanned<String>>, known: &[&str], what: &str, why: &str| {
        v.and_then(|v| {
            if known.contains(&v.value.as_str()) {
                return Some(v.value);
            }
            p.push(
                Problem::new(format!("unknown sandbox {what} {:?}", v.value), v.span, format!("unknown {what}"))
                    .help(format!("{}{why}", choices_help(&v.value, known))),
            );
            None
        })
    };
    let workspace = choice(workspace, &WORKSPACE_ACCESS, "workspace", "");
    let network = choice(
        network,
        &SANDBOX_NETWORKS,
        "network",
        "\n`none` (the default) or `outbound`: out as the host reaches, never the host's own loopback",
    );
    Some(Sandbox { mode: mode?, image, workspace, network, span })
}
