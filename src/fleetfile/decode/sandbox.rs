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

#[cfg(test)]
mod tests {
    use crate::fleetfile::model::*;
    use crate::fleetfile::SourceFile;

    fn parse(name: &str, text: &str) -> FleetSpec {
        let source = SourceFile::new(name, text.to_string());
        crate::fleetfile::parse(source, std::path::Path::new("/nonexistent"))
            .unwrap_or_else(|e| panic!("{:?}", miette::Report::new(e)))
    }

    #[test]
    fn an_agents_own_sandbox_on_an_incus_gateway_is_refused_image_or_not() {
        let sha = "0".repeat(64);
        for own in ["sandbox \"all\"", "sandbox \"all\" image=\"b\""] {
            let text = format!(
                "fleet \"acme\"\nhost \"box\" runtime=\"incus\"\nprovider \"demo\" type=\"mock\" {{ model \"m\"; }}\n\
                 image \"b\" {{ url \"https://example.com/b.tar.gz\" arch=\"amd64\" sha256=\"{sha}\"; }}\n\
                 gateway \"main\" host=\"box\" image=\"b\"\nagent \"alice\" gateway=\"main\" model=\"m\" {{ {own}; }}\n"
            );
            let e = crate::fleetfile::parse(SourceFile::new("fleet.kdl", text), std::path::Path::new("/nonexistent"))
                .expect_err(own);
            let shown = format!("{:?}", miette::Report::new(e));
            assert!(shown.contains("runs in an Incus container"), "{own}: {shown}");
        }
    }

    #[test]
    fn sandboxes_read_the_same_in_kdl_and_toml_and_agents_inherit_what_they_leave_out() {
        let sha = "0".repeat(64);
        let k = parse(
            "fleet.kdl",
            &format!(
                r#"
fleet "acme"
provider "demo" type="mock" {{ model "m"; }}
image "sb" {{ url "https://example.com/sb.tar.gz" arch="amd64" sha256="{sha}"; }}
gateway "main" {{ sandbox "all" image="sb"; }}
agent "alice" model="m"
agent "bob" model="m" {{ sandbox "non-main" workspace="ro"; }}
agent "carol" model="m" {{ sandbox "off"; }}
"#
            ),
        );
        let t = parse(
            "fleet.toml",
            &format!(
                r#"
[fleet]
name = "acme"
[provider.demo]
type = "mock"
models = ["m"]
[image.sb]
url = [{{ url = "https://example.com/sb.tar.gz", arch = "amd64", sha256 = "{sha}" }}]
[gateway.main]
sandbox = {{ mode = "all", image = "sb" }}
[agent.alice]
model = "m"
[agent.bob]
model = "m"
sandbox = {{ mode = "non-main", workspace = "ro" }}
[agent.carol]
model = "m"
sandbox = {{ mode = "off" }}
"#
            ),
        );
        for s in [&k, &t] {
            let of = |n: &str| s.sandbox_of(s.agent(n).unwrap());
            let alice = of("alice").unwrap();
            assert_eq!(
                (alice.mode, alice.image.as_str(), alice.workspace.as_str(), alice.network.as_str()),
                (SandboxMode::All, "sb", "rw", "none")
            );
            let bob = of("bob").unwrap();
            assert_eq!(
                (bob.mode, bob.image.as_str(), bob.workspace.as_str()),
                (SandboxMode::NonMain, "sb", "ro"),
                "the image from the gateway"
            );
            assert_eq!(of("carol"), None, "off: unsandboxed");
        }
    }
}
