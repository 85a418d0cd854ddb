use super::*;

fn kdl(text: &str) -> Result<FleetSpec, SpecError> {
    parse(SourceFile::new("fleet.kdl", text.to_string()), Path::new("/nonexistent"))
}

fn toml(text: &str) -> Result<FleetSpec, SpecError> {
    parse(SourceFile::new("fleet.toml", text.to_string()), Path::new("/nonexistent"))
}

fn messages(e: SpecError) -> Vec<String> {
    e.problems().map(|p| p.message.clone()).collect()
}

const KDL: &str = r#"
fleet "acme" { parallelism 4 }
provider "demo" type="mock" {
    model "demo-small" response="Hello."
    model "demo-large"
}
gateway "main"
agent "alice" model="demo-small" {
    fallback "demo-large"
    identity role="Researcher" emoji="🔬"
    heartbeat every="30m"
}
agent "bob" gateway="main" model="demo-large"
"#;

const TOML: &str = r#"
[fleet]
name = "acme"
parallelism = 4

[provider.demo]
type = "mock"
model = [{ name = "demo-small", response = "Hello." }, { name = "demo-large" }]

[gateway.main]

[agent.alice]
model = "demo-small"
fallback = ["demo-large"]
identity = { role = "Researcher", emoji = "🔬" }
heartbeat = { every = "30m" }

[agent.bob]
gateway = "main"
model = "demo-large"
"#;

#[test]
fn kdl_and_toml_mean_the_same_fleet() {
    let a = kdl(KDL).unwrap();
    let b = toml(TOML).unwrap();
    for s in [&a, &b] {
        assert_eq!(s.name, "acme");
        assert_eq!(s.parallelism, 4);
        assert_eq!(s.hosts.len(), 1, "implicit local host");
        assert_eq!(s.hosts[0].runtime, Runtime::Process);
        assert_eq!(s.litellm.port, DEFAULT_LITELLM_PORT);
        assert_eq!(s.gateways[0].port, DEFAULT_GATEWAY_PORT);
        assert_eq!(s.agents.len(), 2);
        let alice = s.agent("alice").unwrap();
        assert_eq!(alice.gateway.value, "main");
        assert_eq!(alice.models(), vec!["demo-small", "demo-large"]);
        assert_eq!(alice.identity.role.as_deref(), Some("Researcher"));
        assert_eq!(alice.heartbeat.as_ref().unwrap().seconds, 1800);
        let (prov, m) = s.provider_of("demo-small").unwrap();
        assert_eq!(prov.kind, ProviderKind::Mock);
        assert_eq!(m.response.as_deref(), Some("Hello."));
    }
}

#[test]
fn reports_every_problem_at_once() {
    let e = kdl(r#"
fleet "acme"
provider "demo" type="mock" { model "m" }
gateway "main"
agent "alice" model="nope"
agnet "bob"
"#)
    .unwrap_err();
    let m = messages(e);
    assert!(m.iter().any(|x| x.contains("unknown node `agnet`")), "{m:?}");
    assert!(m.iter().any(|x| x.contains("no provider offers the primary model \"nope\"")), "{m:?}");
}

#[test]
fn refuses_inline_secrets() {
    let e = kdl(r#"
fleet "acme"
provider "oa" type="openai" api-key="sk-live-123" { models "gpt-4o-mini" }
"#)
    .unwrap_err();
    assert_eq!(messages(e), vec!["`api-key` holds an inline secret"]);
}

#[test]
fn gateway_ports_are_assigned_per_host_without_clashes() {
    let s = kdl(r#"
fleet "acme"
gateway "a"
gateway "b"
gateway "c" port=19000
"#)
    .unwrap();
    let ports: Vec<u16> = s.gateways.iter().map(|g| g.port).collect();
    assert_eq!(ports, vec![DEFAULT_GATEWAY_PORT, DEFAULT_GATEWAY_PORT + GATEWAY_PORT_STEP, 19000]);
}

#[test]
fn a_port_clash_points_at_both_owners() {
    let e = kdl("fleet \"acme\"\ngateway \"a\" port=4000\n").unwrap_err();
    let p: Vec<_> = e.problems().collect();
    assert_eq!(p.len(), 1);
    assert!(p[0].message.contains("already used by the LiteLLM proxy"));
}

#[test]
fn durations() {
    assert_eq!(decode::parse_duration("90s"), Some(90));
    assert_eq!(decode::parse_duration("2h"), Some(7200));
    assert_eq!(decode::parse_duration("0m"), None);
    assert_eq!(decode::parse_duration("30"), None);
    assert_eq!(decode::parse_duration("m"), None);
}
