//! Hosts on other machines, against a real incusd in its own network namespace (a "remote host"
//! built on this machine by tests/support/incus.sh; 10.213.x.y addresses inside namespaces the
//! test creates only): enrolment with a trust token on the first apply, nothing needed later, the
//! server certificate pinned, an unreachable host failing only its own step, destroy revoking.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{free_port, World};

const FLEET: &str = "hosts";

/// A remote incusd: its INCUS_DIR and namespace; torn down (daemon, namespace, files) on drop.
struct RemoteIncus {
    dir: PathBuf,
    ns: String,
    net: u8,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/incus.sh")
}

impl RemoteIncus {
    fn up(ns: &str, net: u8) -> Self {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test builds network namespaces: run it as root (CI does)");
        let st = Command::new(script()).arg("install").status().expect("run tests/support/incus.sh");
        assert!(st.success(), "installing Incus failed");
        let r = RemoteIncus { dir: PathBuf::from(format!("/var/lib/fleet-test-remote-{ns}")), ns: ns.into(), net };
        // A leftover of an interrupted run first.
        r.script(&["remote-down", r.dir.to_str().unwrap(), ns, "purge"]);
        r.start();
        r
    }
    fn script(&self, args: &[&str]) -> String {
        let out = Command::new(script()).args(args).output().expect("run tests/support/incus.sh");
        assert!(out.status.success(), "incus.sh {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    fn start(&self) {
        self.script(&["remote-up", self.dir.to_str().unwrap(), &self.ns, &self.net.to_string()]);
    }
    fn stop(&self) {
        self.script(&["remote-down", self.dir.to_str().unwrap()]);
    }
    fn address(&self) -> String {
        format!("https://10.213.{}.2:8443", self.net)
    }
    fn incus(&self, args: &[&str]) -> String {
        let out = Command::new("incus").args(args).env("INCUS_DIR", &self.dir).output().unwrap();
        assert!(out.status.success(), "incus {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
    /// A trust token for one client, as an operator makes it on that host.
    fn token(&self) -> String {
        self.incus(&["config", "trust", "add", "fleet", "-q"])
    }
    /// The fingerprints the host trusts.
    fn trusted(&self) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.incus(&["query", "/1.0/certificates?recursion=1"])).unwrap();
        v.as_array().unwrap().iter().filter_map(|c| c["fingerprint"].as_str().map(str::to_string)).collect()
    }
    /// The daemon's own certificate fingerprint (what fleet pins).
    fn fingerprint(&self) -> String {
        let v: serde_json::Value = serde_json::from_str(&self.incus(&["query", "/1.0"])).unwrap();
        v["environment"]["certificate_fingerprint"].as_str().unwrap().to_string()
    }
    /// A reinstalled host: the same address, a new server certificate.
    fn reinstall_certificate(&self) {
        self.stop();
        for f in ["server.crt", "server.key"] {
            std::fs::remove_file(self.dir.join(f)).unwrap();
        }
        self.start();
    }
}

impl Drop for RemoteIncus {
    fn drop(&mut self) {
        let _ = Command::new(script()).args(["remote-down", self.dir.to_str().unwrap(), &self.ns, "purge"]).status();
    }
}

fn fleet_file(edge: &str, port: u16, response: &str) -> String {
    format!(
        "fleet \"{FLEET}\"\nhost \"local\" runtime=\"process\"\n\
         host \"edge\" runtime=\"incus\" address=\"{edge}\" trust-token=\"env:EDGE_TOKEN\" arch=\"amd64\"\n\
         litellm host=\"local\" port={port}\n\
         provider \"demo\" type=\"mock\" {{ model \"demo-small\" response=\"{response}\"; }}\n"
    )
}

fn recorded(data: &Path, address: &str) -> serde_json::Value {
    let db = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let outputs: String = db
        .query_row("SELECT outputs FROM resources WHERE address = ?1", [address], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{address} is not recorded: {e}"));
    serde_json::from_str(&outputs).unwrap()
}

#[test]
fn a_remote_host_is_enrolled_once_pinned_and_checked_every_run() {
    let edge = RemoteIncus::up("fleetH1", 20);
    let w = World::new();
    let port = free_port();
    w.write("fleet.kdl", &fleet_file(&edge.address(), port, "one"));
    let data = w.data_dir(FLEET);

    // No token yet: the host's step says what to do; the rest of the fleet converges anyway.
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("host.edge") && r.all().contains("EDGE_TOKEN is not set"), "{}", r.failures());
    assert!(recorded(&data, "litellm.proxy")["pid"].is_u64(), "the proxy started anyway: {}", r.all());

    // A token from another server (its fingerprint is not what the address presents): refused.
    let other = {
        use base64::Engine;
        let json = format!(
            r#"{{"client_name":"fleet","fingerprint":"{}","addresses":[],"secret":"s","expires_at":"0001-01-01T00:00:00Z"}}"#,
            "0".repeat(64)
        );
        base64::engine::general_purpose::STANDARD.encode(json)
    };
    let r = crate::support::Run::from_output(w.cmd(&["apply"]).env("EDGE_TOKEN", &other).output().unwrap());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("but the trust token was issued by sha256 0000"), "{}", r.failures());

    // The real token: enrolled, the server's certificate pinned, fleet's own client config.
    let token = edge.token();
    let r = crate::support::Run::from_output(w.cmd(&["apply"]).env("EDGE_TOKEN", &token).output().unwrap());
    assert_eq!(r.code, 0, "{}\n{}", r.failures(), r.all());
    assert!(!r.all().contains(&token), "the token must never be printed");
    let rec = recorded(&data, "host.edge");
    assert_eq!(rec["fingerprint"], edge.fingerprint());
    assert_eq!(rec["architectures"][0], "x86_64");
    let key = data.join("incus/client.key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{}", key.display());
    let ours = edge.trusted();
    assert_eq!(ours.len(), 1, "fleet's client certificate is trusted: {ours:?}");
    let state = std::fs::read(data.join("state.db")).unwrap();
    assert!(!String::from_utf8_lossy(&state).contains(&token), "no token in state");

    // Later runs need no token: a no-op, and the plan is clean.
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}\n{}", r.failures(), r.all());
    assert_eq!(w.fleet(&["plan", "--detailed-exitcode"]).code, 0);

    // The host goes away: plan says so; an apply fails that step, naming the host, and the rest
    // of the change (the proxy's config) still lands.
    edge.stop();
    let plan = w.fleet(&["plan"]);
    assert!(plan.all().contains("host.edge") && plan.all().contains("cannot be reached"), "{}", plan.all());
    w.write("fleet.kdl", &fleet_file(&edge.address(), port, "two"));
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("host.edge") && r.all().contains("cannot be reached at"), "{}", r.failures());
    let config = std::fs::read_to_string(data.join("litellm/config.yaml")).unwrap();
    assert!(config.contains("two"), "the proxy's config changed anyway:\n{config}");
    edge.start();
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{}\n{}", r.failures(), r.all());

    // A reinstalled host (same address, new certificate) is refused, token or not.
    let pinned = edge.fingerprint();
    edge.reinstall_certificate();
    let now = edge.fingerprint();
    assert_ne!(pinned, now);
    let r = crate::support::Run::from_output(w.cmd(&["apply"]).env("EDGE_TOKEN", &token).output().unwrap());
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.all().contains("server certificate changed"), "{}", r.failures());
    assert!(r.all().contains(&pinned) && r.all().contains(&now), "both fingerprints named: {}", r.all());
    assert_eq!(recorded(&data, "host.edge")["fingerprint"], pinned, "the pin stands");

    // The operator's way back: forget the host, enrol it again with a fresh token.
    w.fleet(&["state", "forget", "host.edge"]).ok();
    let fresh = edge.token();
    let r = crate::support::Run::from_output(w.cmd(&["apply"]).env("EDGE_TOKEN", &fresh).output().unwrap());
    assert_eq!(r.code, 0, "{}\n{}", r.failures(), r.all());
    assert_eq!(recorded(&data, "host.edge")["fingerprint"], now);

    // Destroy: fleet's certificate is no longer trusted there, the remote is gone from its config.
    let before = edge.trusted();
    assert!(!before.is_empty());
    w.fleet(&["destroy"]).ok();
    assert!(edge.trusted().is_empty(), "fleet's certificate revoked: {:?}", edge.trusted());
    let remotes = Command::new("incus")
        .args(["remote", "list", "--format", "json"])
        .env("INCUS_CONF", data.join("incus"))
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&remotes.stdout).contains("\"edge\""), "the remote is removed");
}
