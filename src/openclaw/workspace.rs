//! Workspace files: fleet's default templates (rendered with minijinja from the
//! agent and its identity) and the per-agent overrides from the fleet file
//! (taken verbatim). Pure.

use std::collections::BTreeMap;

use minijinja::{context, Environment};

use crate::fleetfile::{Agent, FileSource};

pub const TEMPLATES: [(&str, &str); 5] = [
    ("AGENTS.md", include_str!("templates/AGENTS.md")),
    ("SOUL.md", include_str!("templates/SOUL.md")),
    ("IDENTITY.md", include_str!("templates/IDENTITY.md")),
    ("USER.md", include_str!("templates/USER.md")),
    ("BOOTSTRAP.md", include_str!("templates/BOOTSTRAP.md")),
];

/// Files the agent edits itself: written when missing (or with `--overwrite`), never replaced.
pub const AGENT_OWNED: [&str; 2] = ["USER.md", "MEMORY.md"];
/// Written at the first provisioning only.
pub const FIRST_ONLY: [&str; 1] = ["BOOTSTRAP.md"];

/// Every workspace file for an agent: name → content.
pub fn render(fleet: &str, agent: &Agent) -> BTreeMap<String, String> {
    let mut env = Environment::new();
    env.set_trim_blocks(false);
    let ctx = context! {
        fleet => fleet,
        name => agent.identity.name.clone().unwrap_or_else(|| agent.name.value.clone()),
        id => agent.name.value,
        model => agent.model.value,
        fallbacks => agent.fallbacks.iter().map(|f| f.value.clone()).collect::<Vec<_>>(),
        heartbeat => agent.heartbeat.as_ref().map(|h| h.every.clone()),
        identity => context! {
            name => agent.identity.name,
            role => agent.identity.role,
            emoji => agent.identity.emoji,
            vibe => agent.identity.vibe,
        },
    };
    let mut out = BTreeMap::new();
    for (name, template) in TEMPLATES {
        let text = env.render_str(template, &ctx).expect("fleet's own templates render");
        out.insert(name.to_string(), text);
    }
    for (name, src) in &agent.files {
        if let FileSource::Text(t) = src {
            out.insert(name.clone(), t.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleetfile::{parse, SourceFile};

    #[test]
    fn templates_use_the_identity_and_overrides_win() {
        let spec = parse(
            SourceFile::new(
                "fleet.kdl",
                r#"fleet "f"
provider "d" type="mock" { models "m" "n" }
gateway "g"
agent "alice" model="m" { fallback "n"; identity name="Alice" role="Researcher" emoji="🔬"; heartbeat every="30m" }
agent "bob" model="m" { soul "You are Bob." }
"#
                .into(),
            ),
            std::path::Path::new("/x"),
        )
        .unwrap();
        let alice = render("f", &spec.agents[0]);
        assert!(
            alice["IDENTITY.md"].contains("- Name: Alice\n- Role: Researcher\n- Emoji: 🔬"),
            "{}",
            alice["IDENTITY.md"]
        );
        assert!(alice["AGENTS.md"].contains("fallbacks: `n`") && alice["AGENTS.md"].contains("every 30m"));
        assert!(alice["SOUL.md"].starts_with("# SOUL.md — Alice"));
        let bob = render("f", &spec.agents[1]);
        assert_eq!(bob["SOUL.md"], "You are Bob.");
        assert!(bob["IDENTITY.md"].contains("- Name: bob"));
        assert_eq!(bob.len(), 5);
    }
}
