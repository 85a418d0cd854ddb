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

/// The one problem a file has, with its message, the text it points at, and its help.
fn only(e: SpecError, text: &str) -> (String, String, String) {
    let p: Vec<_> = e.problems().collect();
    assert_eq!(p.len(), 1, "expected one problem, got {:?}", p.iter().map(|p| &p.message).collect::<Vec<_>>());
    let at = &text[p[0].span.offset()..p[0].span.offset() + p[0].span.len()];
    (p[0].message.clone(), at.to_string(), p[0].help.clone().unwrap_or_default())
}

const BASE: &str = "fleet \"acme\"\nprovider \"demo\" type=\"mock\" { model \"demo-small\"; model \"demo-large\" }\n";

fn kdl_only(rest: &str) -> (String, String, String) {
    let text = format!("{BASE}{rest}");
    only(kdl(&text).unwrap_err(), &text)
}

#[test]
fn a_wrong_or_misspelt_required_value_is_reported_once() {
    let (m, at, _) = kdl_only("gateway \"main\"\nagent \"alice\" model=42\n");
    assert_eq!((m.as_str(), at.as_str()), ("`model` must be a string, found an integer", "42"));
    let (m, at, help) = kdl_only("gateway \"main\"\nagent \"alice\" modle=\"demo-small\"\n");
    assert_eq!((m.as_str(), at.as_str()), ("unknown property `modle` on `agent`", "modle"));
    assert!(help.starts_with("did you mean `model`?"), "{help}");
    let (m, ..) = kdl_only("gateway \"main\"\nagent \"alice\" model=\"demo-small\" { heartbeat every=30; }\n");
    assert_eq!(m, "`every` must be a string, found an integer");
    let (m, at, help) = kdl_only("gateway \"main\"\nagent \"alice\" model=\"demo-small\" { heartbeat \"30m\"; }\n");
    assert_eq!((m.as_str(), at.as_str()), ("unexpected argument to `heartbeat`", "\"30m\""));
    assert_eq!(help, "name the value: `heartbeat every=\"30m\"`");
    let (m, ..) = kdl_only("litellm { keys \"database\" url=\"postgres://u:pw@db/x\"; }\ngateway \"main\"\n");
    assert_eq!(m, "`url` holds an inline secret");
    let (m, ..) = kdl_only(
        "image \"base\" { url \"https://x/y.tar.gz\" arch=\"amd64\" sha256=\"nope\"; }\nhost \"box\" runtime=\"incus\"\ngateway \"main\" image=\"base\"\n",
    );
    assert_eq!(m, "`sha256` must be 64 hex digits");
}

#[test]
fn a_node_that_did_not_decode_is_not_reported_again_where_it_is_used() {
    let (m, ..) =
        kdl_only("provider \"x\" { model \"x-small\"; }\ngateway \"main\"\nagent \"alice\" model=\"x-small\"\n");
    assert_eq!(m, "provider \"x\" needs a `type`");
    let (m, ..) = kdl_only("gateway host=\"local\"\nagent \"alice\" model=\"demo-small\"\n");
    assert_eq!(m, "`gateway` needs a name");
    let (m, ..) = kdl_only("host \"box\" runtime=\"docker\"\ngateway \"main\" host=\"box\"\n");
    assert_eq!(m, "unknown runtime \"docker\"");
    let text = "fleet\ngateway \"main\"\n";
    assert_eq!(only(kdl(text).unwrap_err(), text).0, "`fleet` needs a name");
    let text = "[fleet]\nnmae = \"acme\"\n";
    assert_eq!(only(toml(text).unwrap_err(), text).0, "unknown property `nmae` on `fleet`");
}

#[test]
fn a_duplicate_is_reported_once_and_then_left_out() {
    let text =
        format!("{BASE}gateway \"main\"\nagent \"alice\" model=\"demo-small\"\nagent \"alice\" model=\"demo-small\"\n");
    assert_eq!(only(kdl(&text).unwrap_err(), &text).0, "duplicate agent \"alice\"");
    let (m, ..) = kdl_only("provider \"demo\" type=\"mock\" { model \"demo-small\"; }\ngateway \"main\"\n");
    assert_eq!(m, "duplicate provider \"demo\"");
    let (m, ..) = kdl_only("gateway \"main\" port=19000\ngateway \"main\" port=19000\n");
    assert_eq!(m, "duplicate gateway \"main\"");
}

#[test]
fn a_fleet_without_gateways_only_mints_keys() {
    let s = kdl(&format!("{BASE}agent \"alice\" model=\"demo-small\"\nagent \"bob\" model=\"demo-small\"\n")).unwrap();
    assert!(s.gateways.is_empty());
    assert!(s.agents.iter().all(|a| a.gateway.value.is_empty()));
}

#[test]
fn default_gateway_ports_skip_ports_taken_explicitly() {
    let s = kdl(&format!("{BASE}gateway \"a\"\ngateway \"b\" port={DEFAULT_GATEWAY_PORT}\n")).unwrap();
    let ports: Vec<u16> = s.gateways.iter().map(|g| g.port).collect();
    assert_eq!(ports, vec![DEFAULT_GATEWAY_PORT + GATEWAY_PORT_STEP, DEFAULT_GATEWAY_PORT]);
    // A clash with LiteLLM's default port has nothing to point at but the gateway's port.
    let e = kdl(&format!("{BASE}gateway \"a\" port=4000\n")).unwrap_err();
    let p: Vec<_> = e.problems().collect();
    assert!(p[0].also.is_empty());
    assert!(p[0].help.as_deref().unwrap_or("").contains("by default"));
}

#[test]
fn help_is_written_in_the_file_s_syntax() {
    let text = "[fleet]\nname = \"acme\"\n[gateway.main]\nport = \"18800\"\n";
    let (_, at, help) = only(toml(text).unwrap_err(), text);
    assert_eq!((at.as_str(), help.as_str()), ("\"18800\"", "drop the quotes: `port = 18800`"));
    let text =
        "[fleet]\nname = \"acme\"\n[provider.demo]\ntype = \"mock\"\nmodels = [\"m\"]\n[gateway.main]\n[agent.alice]\n";
    let (m, at, help) = only(toml(text).unwrap_err(), text);
    assert_eq!((m.as_str(), at.as_str()), ("agent \"alice\" needs a `model`", "alice"));
    assert!(help.starts_with("add `model = \"…\"`"), "{help}");
    let text = "[fleet]\nname = \"acme\"\n[provider.demo]\ntype = \"mock\"\nmodels = [\"m\"]\n[gateway.main]\n[agent.alice]\nmodel = \"m\"\nfallback = \"m\"\n";
    let (m, _, help) = only(toml(text).unwrap_err(), text);
    assert_eq!((m.as_str(), help.as_str()), ("`fallback` is a list, not a single value", "write `fallback = [\"m\"]`"));
}

#[test]
fn kdl_syntax_errors_are_one_problem_at_the_mistake() {
    for (text, message, at) in [
        ("fleet \"acme\"\ngateway \"main\" port=18800x\n", "syntax error: `18800x` is not a valid value", "18800x"),
        (
            "fleet \"acme\" {\n  parallelism 8\n\ngateway \"main\"\n",
            "syntax error: missing `}`: the `fleet \"acme\"` block is not closed",
            "{",
        ),
        ("fleet \"acme\nprovider \"x\" { }\n", "syntax error: unterminated string", "\"acme"),
        ("fleet \"acme\"\n}\n", "syntax error: unexpected `}`: no block is open here", "}"),
        // Valid KDL v1, where a string may span lines; surely a missing quote.
        ("fleet \"acme\"\ngateway \"main\nagent \"alice\"\n", "syntax error: unterminated string", "\"main"),
    ] {
        let (m, a, _) = only(kdl(text).unwrap_err(), text);
        assert_eq!((m.as_str(), a.as_str()), (message, at), "{text}");
    }
}

#[test]
fn toml_syntax_errors_point_at_the_mistake_with_the_fix() {
    let text = "[fleet]\nname = acme\n";
    let (m, at, help) = only(toml(text).unwrap_err(), text);
    assert_eq!(
        (m.as_str(), at.as_str(), help.as_str()),
        ("syntax error: `acme` is not a TOML value", "acme", "text needs double quotes: `name = \"acme\"`")
    );
    let text = "[fleet]\nname = \"a\"\nname = \"b\"\n";
    let e = toml(text).unwrap_err();
    let p: Vec<_> = e.problems().collect();
    assert_eq!(p[0].message, "syntax error: `name` is set twice in `[fleet]`");
    assert_eq!(p[0].also.len(), 1, "points at the first one too");
}

#[test]
fn secret_reference_problems_say_what_is_wrong() {
    let e = kdl(&format!("{BASE}litellm master-key=\"env:\"\n")).unwrap_err();
    let p: Vec<_> = e.problems().collect();
    assert_eq!(p[0].label, "`env:` needs a variable name");
    let (m, _, help) = kdl_only("litellm master-key=\"$MASTER\"\ngateway \"main\"\n");
    assert_eq!(m, "`master-key` looks like a shell variable");
    assert!(help.contains("`master-key=\"env:MASTER\"`"), "{help}");
}

#[test]
fn a_missing_file_suggests_a_close_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("souls")).unwrap();
    std::fs::write(dir.path().join("souls/alice.md"), "x").unwrap();
    let text =
        format!("{BASE}gateway \"main\"\nagent \"alice\" model=\"demo-small\" {{ soul file=\"souls/alcie.md\"; }}\n");
    let e = parse(SourceFile::new("fleet.kdl", text.clone()), dir.path()).unwrap_err();
    let (m, _, help) = only(e, &text);
    assert_eq!(m, "file not found: souls/alcie.md");
    assert!(help.starts_with("did you mean \"souls/alice.md\"?"), "{help}");
}

#[test]
fn toml_takes_a_plain_key_backend() {
    let base = "[fleet]\nname = \"acme\"\n[provider.demo]\ntype = \"mock\"\nmodels = [\"m\"]\n[gateway.main]\n";
    let s = toml(&format!("{base}[litellm]\nkeys = \"file\"\n")).unwrap();
    assert_eq!(s.litellm.keys, KeyBackend::File);
    let s = toml(&format!("{base}[litellm]\nkeys = {{ backend = \"database\", url = \"env:DB\" }}\n")).unwrap();
    assert_eq!(s.litellm.keys, KeyBackend::Database { url: secret::SecretRef::Env("DB".into()) });
    let text = format!("{base}[litellm]\nkeys = \"database\"\n");
    let (m, at, help) = only(toml(&text).unwrap_err(), &text);
    assert_eq!((m.as_str(), at.as_str()), ("the database key backend needs a `url`", "keys"));
    assert!(help.contains("keys = { backend = \"database\", url = "), "{help}");
}

#[test]
fn a_process_host_is_this_machine_s_architecture() {
    let other = if Arch::native() == Arch::Amd64 { Arch::Arm64 } else { Arch::Amd64 };
    let (m, at, help) = kdl_only(&format!("host \"local\" arch=\"{}\"\ngateway \"main\"\n", other.as_str()));
    assert_eq!(m, format!("a process host runs on this machine, which is {}", Arch::native().as_str()));
    assert_eq!(at, format!("\"{}\"", other.as_str()));
    assert!(help.starts_with("drop `arch`"), "{help}");
    let native = format!("{BASE}host \"local\" arch=\"{}\"\ngateway \"main\"\n", Arch::native().as_str());
    assert!(kdl(&native).is_ok());
    let incus = format!(
        "{BASE}image \"b\" {{ recipe \"r.kdl\"; }}\nhost \"box\" runtime=\"incus\" arch=\"{}\"\n",
        other.as_str()
    );
    assert!(kdl(&incus).map_err(messages).err().is_none_or(|m| !m.iter().any(|m| m.contains("process host"))));
}

#[test]
fn a_soul_path_that_is_a_directory_or_a_dangling_link_says_so() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("souls")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.md"), dir.path().join("link.md")).unwrap();
    let text = format!("{BASE}gateway \"main\"\nagent \"alice\" model=\"demo-small\" {{ soul file=\"souls\"; }}\n");
    let (m, _, help) = only(parse(SourceFile::new("fleet.kdl", text.clone()), dir.path()).unwrap_err(), &text);
    assert_eq!(m, "souls is a directory, not a file");
    assert!(help.contains("souls/SOUL.md"), "{help}");
    let text = format!("{BASE}gateway \"main\"\nagent \"alice\" model=\"demo-small\" {{ soul file=\"link.md\"; }}\n");
    let (m, _, _) = only(parse(SourceFile::new("fleet.kdl", text.clone()), dir.path()).unwrap_err(), &text);
    assert!(m.starts_with("link.md is a symbolic link to ") && m.ends_with("gone.md, which does not exist"), "{m}");
}

#[test]
fn secret_references_are_resolved_for_plan_at_their_span() {
    let text = format!(
        "{BASE}provider \"or\" type=\"openrouter\" api-key=\"env:FLEET_TEST_SURELY_UNSET_KEY\" {{ models \"x/y\"; }}\n"
    );
    let spec = parse(SourceFile::new("fleet.kdl", text.clone()), std::path::Path::new("/x")).unwrap();
    let (m, label, help) = only(super::check_secrets(&spec).unwrap_err(), &text);
    assert_eq!(m, "`api-key`: environment variable FLEET_TEST_SURELY_UNSET_KEY is not set");
    assert_eq!(label, "\"env:FLEET_TEST_SURELY_UNSET_KEY\"");
    assert!(help.contains("set FLEET_TEST_SURELY_UNSET_KEY"), "{help}");
    assert!(super::check_secrets(
        &parse(SourceFile::new("fleet.kdl", BASE.into()), std::path::Path::new("/x")).unwrap()
    )
    .is_ok());
}

#[test]
fn serve_is_optional_defaults_and_reads_the_same_in_toml() {
    assert!(kdl(KDL).unwrap().serve.is_none());
    let s = kdl(&format!("{KDL}serve\n")).unwrap().serve.unwrap();
    assert_eq!((s.listen(), s.reply_timeout_s), ("127.0.0.1:8700".to_string(), 180));
    let k = kdl(&format!("{KDL}serve {{ listen \"0.0.0.0:9000\"; reply-timeout \"90s\" }}\n")).unwrap().serve.unwrap();
    let t =
        toml(&format!("{TOML}\n[serve]\nlisten = \"0.0.0.0:9000\"\nreply-timeout = \"90s\"\n")).unwrap().serve.unwrap();
    assert_eq!(k, t);
    assert_eq!((k.url(), k.reply_timeout_s), ("http://127.0.0.1:9000".to_string(), 90));
}

#[test]
fn serve_mistakes_are_named_at_their_span() {
    let (msg, at, help) = kdl_only("serve { listen \"localhost:8700\" }");
    assert_eq!((msg.as_str(), at.as_str()), ("invalid listen address \"localhost:8700\"", "\"localhost:8700\""));
    assert!(help.contains("127.0.0.1:8700"), "{help}");
    let (msg, at, _) = kdl_only("serve { reply-timeout \"soon\" }");
    assert_eq!((msg.as_str(), at.as_str()), ("invalid duration \"soon\"", "\"soon\""));
    let (msg, at, help) = kdl_only("litellm port=8700\nserve");
    assert_eq!((msg.as_str(), at.as_str()), ("port 8700 is already used by the LiteLLM proxy", "serve"));
    assert!(help.contains("listen"), "{help}");
    let e = kdl(&format!("{KDL}serve\nserve\n")).unwrap_err();
    assert_eq!(messages(e), ["`serve` is declared twice"]);
}

#[test]
fn the_trace_export_reads_the_same_in_kdl_and_toml_and_defaults_the_callback_to_the_daemon() {
    let k = kdl(&format!(
        "{KDL}serve {{ listen \"127.0.0.1:8700\" }}\ntrace {{\n    otlp \"http://127.0.0.1:4318/v1/traces\" headers=\"env:OTLP_HEADERS\"\n    capture-content #true\n}}\n"
    ))
    .unwrap();
    let t = toml(&format!(
        "{TOML}\n[serve]\nlisten = \"127.0.0.1:8700\"\n\n[trace]\notlp = \"http://127.0.0.1:4318/v1/traces\"\nheaders = \"env:OTLP_HEADERS\"\ncapture-content = true\n"
    ))
    .unwrap();
    let ek = k.serve.as_ref().unwrap().export.clone().unwrap();
    assert_eq!(Some(ek.clone()), t.serve.as_ref().unwrap().export.clone());
    assert_eq!((ek.otlp.as_str(), ek.capture_content), ("http://127.0.0.1:4318/v1/traces", true));
    assert_eq!(ek.headers.map(|h| h.to_string()).as_deref(), Some("env:OTLP_HEADERS"));
    let cb = k.litellm.callback.clone().unwrap();
    assert_eq!(cb.url, "http://127.0.0.1:8700/v1/trace");
    assert!(cb.token.is_none(), "a token is minted for it");
}

#[test]
fn budgets_limits_and_prices_read_the_same_in_kdl_and_toml() {
    let k = kdl(r#"
fleet "acme" {
    budget usd=5 per="day"
    limits rpm=60
}
provider "demo" type="mock" { model "m" input-cost=100 output-cost=150.5; }
agent "alice" model="m" { budget usd=0.01 per="hour"; limits tpm=200000; }
agent "bob" model="m"
"#)
    .unwrap();
    let t = toml(
        r#"
[fleet]
name = "acme"
budget = { usd = 5, per = "day" }
limits = { rpm = 60 }

[provider.demo]
type = "mock"
model = [{ name = "m", input-cost = 100, output-cost = 150.5 }]

[agent.alice]
model = "m"
budget = { usd = 0.01, per = "hour" }
limits = { tpm = 200000 }

[agent.bob]
model = "m"
"#,
    )
    .unwrap();
    for s in [&k, &t] {
        let price = s.providers[0].models[0].price.unwrap();
        assert_eq!((price.input_per_mtok, price.output_per_mtok), (100.0, 150.5));
        let alice = s.agent("alice").unwrap().spend;
        let b = alice.budget.unwrap();
        assert_eq!((b.usd, b.per), (0.01, Window::Hour));
        assert_eq!((alice.rpm, alice.tpm), (Some(60), Some(200000)), "rpm from the fleet's default");
        let bob = s.agent("bob").unwrap().spend;
        assert_eq!(bob.budget.map(|b| (b.usd, b.per)), Some((5.0, Window::Day)));
        assert_eq!((bob.rpm, bob.tpm), (Some(60), None));
    }
}

#[test]
fn a_broken_budget_is_a_diagnostic_each() {
    let e = kdl(r#"
fleet "acme"
provider "demo" type="mock" { model "m" input-cost="0.1"; model "n" output-cost=1; }
agent "a" model="m" { budget usd=5 per="fortnight"; }
agent "b" model="m" { budget per="day"; limits; }
agent "c" model="m" { budget usd=0 per="day"; limits rpm=0; }
"#)
    .unwrap_err();
    let m = messages(e);
    let want = [
        "`input-cost` must be a number, found a string",
        "a price needs both `input-cost` and `output-cost`",
        "unknown budget window \"fortnight\"",
        "`budget` needs `usd`",
        "`limits` sets nothing",
        "a budget of $0 lets no call through",
        "`rpm` is out of range: 0",
    ];
    for w in want {
        assert!(m.iter().any(|x| x == w), "{w:?} not in {m:#?}");
    }
}

#[test]
fn a_budget_on_an_unpriced_model_is_a_warning_naming_the_agents() {
    let s = kdl(r#"
fleet "acme" { budget usd=5 per="day"; }
provider "demo" type="mock" { model "priced" input-cost=1 output-cost=2; model "free"; model "known"; }
agent "a" model="free"
agent "b" model="priced" { fallback "free"; }
agent "c" model="known"
"#)
    .unwrap();
    let w = spend_check::unpriced_budgets(&s, &|_, m| m.name.value == "known").unwrap();
    let m = messages(w);
    assert_eq!(m, ["no price is known for model \"free\", so the budget of a, b can never trigger on its calls"]);
    assert!(spend_check::unpriced_budgets(&s, &|_, _| true).is_none());
}

#[test]
fn a_host_on_another_machine_is_enrolled_by_address_or_named_by_remote() {
    let spec = kdl(r#"
fleet "acme"
host "local" runtime="process"
host "edge" runtime="incus" address="https://10.0.0.2" trust-token="env:EDGE_TOKEN" arch="amd64"
host "site" runtime="incus" remote="site" incus-config="incus-conf"
litellm host="local"
provider "demo" type="mock" { model "m"; }
gateway "main" host="local"
agent "alice" model="m"
"#)
    .unwrap();
    let edge = spec.hosts.iter().find(|h| h.name.value == "edge").unwrap();
    assert!(edge.is_remote() && edge.arch_declared);
    assert_eq!(edge.remote_name(), Some("edge"), "an enrolled host is its own remote");
    assert_eq!(edge.trust_token.as_ref().unwrap().value.to_string(), "env:EDGE_TOKEN");
    let site = spec.hosts.iter().find(|h| h.name.value == "site").unwrap();
    assert_eq!(site.incus_config.as_deref(), Some(Path::new("/nonexistent/incus-conf")));
    assert!(spec.secret_refs().iter().all(|(k, _)| *k != "trust-token"), "needed only until enrolled");
}

#[test]
fn what_cannot_work_on_another_machine_is_refused_at_its_span() {
    let e = kdl(r#"
host "local" runtime="process"
host "edge" runtime="incus" address="https://10.0.0.2:8443" trust-token="env:T"
litellm host="edge"
provider "demo" type="mock" { model "m"; }
image "openclaw-base" recipe="r.kdl"
gateway "g" host="edge" image="openclaw-base"
agent "alice" model="m"
"#)
    .unwrap_err();
    let m = messages(e);
    assert!(m.iter().any(|x| x.contains("LiteLLM proxy is placed on host \"edge\"")), "{m:?}");
    assert!(m.iter().any(|x| x.contains("but the LiteLLM proxy listens on 127.0.0.1 only")), "{m:?}");
    // What a gateway on another machine needs: the proxy and the daemon reachable from there, an
    // address of its host to be reached on; `listen` only there, and an IP address.
    let base = "fleet \"t\"\nhost \"local\" runtime=\"process\"\nimage \"openclaw-base\" { url \"http://x/i.tar.gz\" arch=\"amd64\" sha256=\"0000000000000000000000000000000000000000000000000000000000000000\"; }\nprovider \"demo\" type=\"mock\" { model \"m\"; }\nagent \"alice\" model=\"m\" gateway=\"g\"\n";
    for (bad, want) in [
        (
            "host \"site\" runtime=\"incus\" remote=\"site\"\nlitellm host=\"local\" bind=\"10.0.0.1\"\ngateway \"g\" host=\"site\" image=\"openclaw-base\"",
            "fleet cannot tell where to reach gateway \"g\" on host \"site\"",
        ),
        (
            "host \"edge\" runtime=\"incus\" address=\"https://10.0.0.2\"\nlitellm host=\"local\" bind=\"10.0.0.1\"\nserve { listen \"127.0.0.1:8700\"; }\ngateway \"g\" host=\"edge\" image=\"openclaw-base\"",
            "but `serve` listens on 127.0.0.1:8700 only",
        ),
        ("gateway \"g\" host=\"local\" listen=\"10.0.0.2\"", "`listen` is for gateways on other hosts"),
        (
            "host \"site\" runtime=\"incus\" remote=\"site\"\nlitellm host=\"local\" bind=\"10.0.0.1\"\ngateway \"g\" host=\"site\" image=\"openclaw-base\" listen=\"site.example\"",
            "`listen` must be an IP address",
        ),
    ] {
        let m = messages(kdl(&format!("{base}{bad}\n")).unwrap_err());
        assert!(m.iter().any(|x| x.contains(want)), "{bad}: {m:?}");
    }
    let ok = kdl(&format!(
        "{base}host \"edge\" runtime=\"incus\" address=\"https://10.0.0.2:8443\"\nhost \"site\" runtime=\"incus\" remote=\"site\"\nlitellm host=\"local\" bind=\"10.0.0.1\"\ngateway \"g\" host=\"edge\" image=\"openclaw-base\"\ngateway \"h\" host=\"site\" image=\"openclaw-base\" listen=\"10.0.0.3\"\n"
    ))
    .unwrap();
    assert_eq!(ok.gateways[0].listen.as_deref(), Some("10.0.0.2"), "taken from the host's address");
    assert_eq!(ok.gateways[1].listen.as_deref(), Some("10.0.0.3"));
    // The same as `serve` says it: `listen "IP:PORT"` on the proxy, and on a gateway (its port).
    let ok = kdl(&format!(
        "{base}host \"edge\" runtime=\"incus\" address=\"https://10.0.0.2:8443\"\nlitellm host=\"local\" {{ listen \"10.0.0.1:4100\"; }}\ngateway \"g\" host=\"edge\" image=\"openclaw-base\" {{ listen \"10.0.0.2:18800\"; }}\n"
    ))
    .unwrap();
    assert_eq!((ok.litellm.bind.as_str(), ok.litellm.port), ("10.0.0.1", 4100));
    assert_eq!((ok.gateways[0].listen.as_deref(), ok.gateways[0].port), (Some("10.0.0.2"), 18800));
    assert!(ok.gateways[0].listen_written);
    for (bad, want) in [
        ("litellm host=\"local\" bind=\"10.0.0.1\" listen=\"10.0.0.1:4100\"", "say the same thing twice"),
        ("litellm host=\"local\" listen=\"10.0.0.1\"", "invalid listen address"),
        (
            "litellm host=\"local\" bind=\"10.0.0.1\"\ngateway \"g\" host=\"edge\" image=\"openclaw-base\" port=18801 listen=\"10.0.0.2:18800\"",
            "`listen` says port 18800, `port` says 18801",
        ),
    ] {
        let text = format!("{base}host \"edge\" runtime=\"incus\" address=\"https://10.0.0.2:8443\"\n{bad}\n");
        let m = messages(kdl(&text).unwrap_err());
        assert!(m.iter().any(|x| x.contains(want)), "{bad}: {m:?}");
    }
    for (bad, want) in [
        (r#"host "h" runtime="incus" address="http://10.0.0.2""#, "invalid host address"),
        (r#"host "h" runtime="incus" address="https://10.0.0.2:port""#, "invalid host address"),
        (r#"host "h" runtime="incus" remote="h" address="https://10.0.0.2""#, "either `remote` or `address`"),
        (r#"host "h" runtime="incus" trust-token="env:T""#, "`trust-token` without an `address`"),
        (r#"host "h" runtime="incus" address="https://10.0.0.2" trust-token="abc""#, "inline secret"),
        (r#"host "h" runtime="process" address="https://10.0.0.2""#, "only applies to the incus runtime"),
    ] {
        let text = format!("{bad}\nprovider \"demo\" type=\"mock\" {{ model \"m\"; }}\nagent \"a\" model=\"m\"\n");
        let m = messages(kdl(&text).unwrap_err());
        assert!(m.iter().any(|x| x.contains(want)), "{bad}: {m:?}");
    }
}

#[test]
fn gateway_limits_are_read_with_units_and_checked() {
    use super::decode::gateway::parse_bytes;
    assert_eq!(parse_bytes("2GiB"), Some(2 << 30));
    assert_eq!(parse_bytes("512 MiB"), Some(512 << 20));
    assert_eq!(parse_bytes("1.5GB"), Some(1_500_000_000));
    assert_eq!(parse_bytes("1048576"), Some(1 << 20));
    assert_eq!(parse_bytes("2 gigs"), None);
    assert_eq!(parse_bytes("GiB"), None);
    let ok = kdl(
        "fleet \"a\"\nprovider \"p\" type=\"mock\" { model \"m\"; }\ngateway \"main\" { limits memory=\"1GiB\" cpus=1.5 processes=512; }\nagent \"x\" model=\"m\"\n",
    )
    .unwrap();
    let l = ok.gateways[0].limits;
    assert_eq!((l.memory, l.cpus, l.processes), (Some(1 << 30), Some(1.5), Some(512)));
    let err = messages(kdl(
        "fleet \"a\"\nprovider \"p\" type=\"mock\" { model \"m\"; }\ngateway \"main\" { limits memory=\"512MiB\"; }\nagent \"x\" model=\"m\"\n",
    )
    .unwrap_err())
    .join("\n");
    assert!(err.contains("too little for a gateway"), "{err}");
}
