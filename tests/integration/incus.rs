//! The Incus runtime against a real incusd (installed and started by tests/support/incus.sh):
//! the openclaw-base image built, served over HTTP, fetched and verified, imported once, a
//! gateway container answering through its proxy device, and a process gateway running the
//! same image from this host's image store. Also: a tampered and an interrupted download are
//! refused and leave nothing behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use axum::Router;

use crate::support::{free_port, shared_cache, World};

/// The incusd the test suite uses (started once, shared by the tests).
fn incus_dir() -> PathBuf {
    let dir =
        PathBuf::from(std::env::var("FLEET_TEST_INCUS_DIR").unwrap_or_else(|_| "/var/lib/fleet-test-incus".into()));
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/incus.sh");
    for args in [vec!["install"], vec!["start", dir.to_str().unwrap()]] {
        let st = std::process::Command::new(&script).args(&args).status().expect("run tests/support/incus.sh");
        assert!(st.success(), "tests/support/incus.sh {args:?} failed: Incus is needed for this test");
    }
    dir
}

/// The openclaw-base image, built (or taken from the build cache) by the real binary, copied into
/// the test's own directory: tests running at once take turns, across test processes (a cache hit
/// rewrites the shared output file in place, which another test may be reading).
pub(crate) fn openclaw_image(w: &World) -> (PathBuf, String) {
    let _turn = crate::support::cross_process_lock("openclaw-base-image");
    let recipe = Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes/openclaw-base.kdl");
    let out = shared_cache().join("fleet-test-images");
    let r =
        w.fleet(&["image", "build", recipe.to_str().unwrap(), "--arch", "amd64", "--out", out.to_str().unwrap()]).ok();
    let sha = r.stdout.lines().find_map(|l| l.strip_prefix("sha256 ")).unwrap().to_string();
    let own = w.root().join("openclaw-base-amd64.tar.gz");
    std::fs::copy(out.join("openclaw-base-amd64.tar.gz"), &own).unwrap();
    (own, sha)
}

/// Serves the image at /good, and at /cut only its first half before failing the connection.
pub(crate) fn serve(rt: &tokio::runtime::Runtime, file: PathBuf) -> u16 {
    let bytes: Arc<Vec<u8>> = Arc::new(std::fs::read(file).unwrap());
    let app = Router::new()
        .route("/good", get(|State(b): State<Arc<Vec<u8>>>| async move { b.as_ref().clone() }))
        .route(
            "/cut",
            get(|State(b): State<Arc<Vec<u8>>>| async move {
                let half = b[..b.len() / 2].to_vec();
                let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                    vec![Ok(half), Err(std::io::Error::other("connection lost"))];
                axum::http::Response::builder()
                    .header("content-length", b.len().to_string())
                    .body(Body::from_stream(futures_util::stream::iter(chunks)))
                    .unwrap()
            }),
        )
        .with_state(bytes);
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let port = listener.local_addr().unwrap().port();
    rt.spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn fleet_file(name: &str, url: &str, sha: &str, litellm: u16, gw: u16) -> String {
    format!(
        r#"fleet "{name}"
image "openclaw-base" {{
    url "{url}" arch="amd64" sha256="{sha}"
}}
host "box" runtime="incus"
litellm host="box" port={litellm}
provider "demo" type="mock" {{ model "demo-small" response="Hello from the demo model." }}
gateway "main" host="box" image="openclaw-base" port={gw} {{ limits memory="3GiB" cpus=1.5 processes=500; }}
agent "alice" gateway="main" model="demo-small"
"#
    )
}

/// The same fleet plus a process gateway on this machine running the same image (from the
/// process host's image store instead of the cached toolchain), the daemon (the container's trace
/// plugin reaches it through a forwarded port), and mallory beside alice in the container, on the
/// scripted model at port `up` that plays a prompt-injected one (`contain.rs`).
fn fleet_file_with_process(name: &str, url: &str, sha: &str, ports: [u16; 5]) -> String {
    let [litellm, gw, plain, serve, up] = ports;
    fleet_file(name, url, sha, litellm, gw)
        + &format!(
            r#"host "local" runtime="process"
gateway "plain" host="local" image="openclaw-base" port={plain}
agent "bob" gateway="plain" model="demo-small"
serve {{ listen "127.0.0.1:{serve}"; }}
provider "scripted" type="openai-compatible" url="http://127.0.0.1:{up}/v1" {{ model "tool-model"; }}
agent "mallory" gateway="main" model="tool-model"
"#
        )
}

/// `incus query PATH` against the test incusd; None when it fails (no such object).
fn incus_query(dir: &Path, path: &str) -> Option<serde_json::Value> {
    let o = std::process::Command::new("incus").args(["query", path]).env("INCUS_DIR", dir).output().ok()?;
    o.status.success().then(|| serde_json::from_slice(&o.stdout).ok()).flatten()
}

fn alias_exists(dir: &Path, alias: &str) -> bool {
    incus_query(dir, &format!("/1.0/images/aliases/{alias}")).is_some()
}

/// The fleets whose `user.fleet.<name>` mark the image behind `alias` carries.
fn image_marks(dir: &Path, alias: &str) -> Vec<String> {
    let out = std::process::Command::new("incus")
        .args(["query", &format!("/1.0/images/aliases/{alias}")])
        .env("INCUS_DIR", dir)
        .output()
        .unwrap();
    let target =
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["target"].as_str().unwrap().to_string();
    let out = std::process::Command::new("incus")
        .args(["query", &format!("/1.0/images/{target}")])
        .env("INCUS_DIR", dir)
        .output()
        .unwrap();
    let image: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut marks: Vec<String> = image["properties"]
        .as_object()
        .unwrap()
        .keys()
        .filter_map(|k| k.strip_prefix("user.fleet.").map(str::to_string))
        .collect();
    marks.sort();
    marks
}

fn container_exists(dir: &Path, name: &str) -> bool {
    incus_query(dir, &format!("/1.0/instances/{name}")).is_some()
}

fn fetched(w: &World) -> Vec<String> {
    let dir = shared_cache().join("fleet/images/fetched");
    let _ = w;
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "the image here is amd64; Incus cannot run arm64 images on amd64 and vice versa"
)]
fn an_incus_gateway_from_a_fetched_image_answers() {
    let dir = incus_dir();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let w = World::new();
    let (file, sha) = openclaw_image(&w);
    let port = serve(&rt, file);
    let run = |args: &[&str]| {
        let o = w.cmd(args).env("INCUS_DIR", &dir).output().unwrap();
        crate::support::Run::from_output(o)
    };

    // A tampered file (wrong sha256) and an interrupted download: refused, nothing imported, nothing left.
    // (This test owns the fetched-image cache: start it without this image so the download really happens.)
    let _ = std::fs::remove_file(shared_cache().join(format!("fleet/images/fetched/{sha}.tar.gz")));
    let before = fetched(&w);
    let wrong = "0".repeat(64);
    w.write(
        "fleet.kdl",
        &fleet_file("incus-bad", &format!("http://127.0.0.1:{port}/good"), &wrong, free_port(), free_port()),
    );
    let r = run(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains(&format!("sha256 mismatch: expected {wrong}, got {sha}")), "{}", r.stdout);
    assert!(r.stdout.contains("! import.openclaw-base@box: skipped"), "{}", r.stdout);
    w.write(
        "fleet.kdl",
        &fleet_file("incus-bad", &format!("http://127.0.0.1:{port}/cut"), &sha, free_port(), free_port()),
    );
    let r = run(&["apply"]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(r.stdout.contains("interrupted"), "{}", r.stdout);
    assert_eq!(fetched(&w), before, "no partial or rejected file is kept");
    let _ = run(&["destroy"]);

    // The real thing.
    let fleet = "incus-ok";
    let url = format!("http://127.0.0.1:{port}/good");
    let up = crate::support::Upstream::start("redteam_upstream.py");
    let (litellm, serve_port) = (free_port(), free_port());
    w.write(
        "fleet.kdl",
        &fleet_file_with_process(fleet, &url, &sha, [litellm, free_port(), free_port(), serve_port, up.1]),
    );
    let r = run(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    for line in
        ["+ import.openclaw-base@box: created", "+ gateway.main: created", "+ import.openclaw-base@local: created"]
    {
        assert!(r.stdout.contains(line), "{line} missing in\n{}", r.stdout);
    }
    assert!(!r.stdout.contains("openclaw.toolchain"), "a process gateway with an image needs no toolchain");
    // Its container: unprivileged, no nesting, and its limits.
    let config = incus_query(&dir, &format!("/1.0/instances/fleet-{fleet}-main")).unwrap()["config"].clone();
    for (key, value) in [
        ("security.privileged", "false"),
        ("security.nesting", "false"),
        ("limits.memory", "3221225472"),
        ("limits.memory.swap", "false"),
        ("limits.cpu.allowance", "150ms/100ms"),
        ("limits.processes", "500"),
    ] {
        assert_eq!(config[key], value, "{key} in {config}");
    }
    // The process gateway runs the image's own Node, unpacked into this host's image store.
    let store = w.data_dir(fleet).join("images/local/openclaw-base");
    let handle: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(w.data_dir(fleet).join("gateways/plain/gateway.handle")).unwrap(),
    )
    .unwrap();
    let pid = handle["handle"]["pid"]["pid"].as_u64().unwrap();
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert_eq!(exe, store.join("rootfs/usr/local/bin/node"));
    let reply = run(&["chat", "bob", "hi"]);
    assert_eq!(reply.stdout.trim(), "Hello from the demo model.", "{}", reply.all());
    assert!(alias_exists(&dir, "openclaw-base"));
    let reply = run(&["chat", "alice", "hi"]);
    assert_eq!(reply.stdout.trim(), "Hello from the demo model.", "{}", reply.all());
    let log = std::fs::read_to_string(w.data_dir(fleet).join("litellm/proxy.log")).unwrap();
    assert!(log.contains("fleet_auth: accepted key fleet-alice"), "the container's agent used its own key");
    // The container's plugin ships alice's runs to the daemon on this machine.
    let t0 = std::time::Instant::now();
    let traced = loop {
        let t = run(&["trace", "alice", "--json"]);
        let from_gateway = t.stdout.lines().filter(|l| l.contains("\"backend_name\":\"openclaw\"")).count();
        if from_gateway >= 3 || t0.elapsed() > std::time::Duration::from_secs(60) {
            break (from_gateway, t.stdout);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    assert!(traced.0 >= 3, "the plugin in the container shipped nothing: {}", traced.1);

    // Re-apply: nothing imported again, nothing restarted.
    let r = run(&["apply"]);
    assert!(r.stdout.contains("No changes."), "{}", r.all());

    red_team(&w, &run, fleet, (litellm, serve_port));

    // gc: a container labelled for this fleet that the state does not record is collected by id; one
    // labelled for another fleet, and the recorded one, are left alone.
    let incus = |args: &[&str]| {
        let o = std::process::Command::new("incus").args(args).env("INCUS_DIR", &dir).output().unwrap();
        assert!(o.status.success(), "incus {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    incus(&["init", "--empty", "fleet-incus-ok-stray", "-c", "user.fleet.fleet=incus-ok", "-q"]);
    incus(&["init", "--empty", "fleet-someone-else", "-c", "user.fleet.fleet=someone-else", "-q"]);
    let dry = run(&["gc", "--dry-run", "--json"]);
    let dry: serde_json::Value = serde_json::from_str(&dry.stdout).unwrap_or_else(|_| panic!("{}", dry.all()));
    let names: Vec<&str> = dry["orphans"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["kind"] == "instance")
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["fleet-incus-ok-stray"], "{dry}");
    let r = run(&["gc"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!container_exists(&dir, "fleet-incus-ok-stray"), "the stray container is collected");
    assert!(container_exists(&dir, "fleet-someone-else"), "another fleet's container is not touched");
    assert!(container_exists(&dir, "fleet-incus-ok-main"), "the recorded container stays");
    incus(&["delete", "fleet-someone-else"]);
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "gc changed nothing the state records:\n{}", r.all());

    // A second fleet on the same incusd uses the same image: its import marks the shared image,
    // and its destroy leaves the first fleet's image, alias and container working.
    let w2 = World::new();
    let run2 = |args: &[&str]| {
        let o = w2.cmd(args).env("INCUS_DIR", &dir).output().unwrap();
        crate::support::Run::from_output(o)
    };
    w2.write("fleet.kdl", &fleet_file("incus-two", &url, &sha, free_port(), free_port()));
    let r = run2(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(image_marks(&dir, "openclaw-base"), vec!["incus-ok", "incus-two"]);
    let r = run2(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(alias_exists(&dir, "openclaw-base"), "the other fleet still uses the image");
    assert_eq!(image_marks(&dir, "openclaw-base"), vec!["incus-ok"]);
    assert!(!container_exists(&dir, "fleet-incus-two-main"), "the second fleet's container is gone");
    let reply = run(&["chat", "alice", "hi"]);
    assert_eq!(reply.stdout.trim(), "Hello from the demo model.", "{}", reply.all());
    let r = run(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "the first fleet is untouched:\n{}", r.all());

    let r = run(&["destroy"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(!alias_exists(&dir, "openclaw-base"));
    assert!(!store.exists(), "the image store goes with the fleet");
}

/// The red team on Incus (docs/security.md): mallory, in the container with alice, runs the escape
/// attempts of `contain.rs` from inside it, told by the scripted model; the victim is bob on the
/// process gateway `plain`. Each attempt first runs on this machine as fleet's user, unconfined,
/// where it must succeed. Then mallory allocates memory without end: the container's memory limit
/// holds, and alice (same gateway) answers again, at once or after the next apply.
fn red_team(w: &World, run: &dyn Fn(&[&str]) -> crate::support::Run, fleet: &str, ports: (u16, u16)) {
    use base64::Engine;

    use crate::contain::{judge, own_work, script, unconfined, Creds};
    let data = w.data_dir(fleet);
    // The process gateway runs the image's Node and openclaw from this machine's image store.
    let runs_from = data.join("images/local/openclaw-base/rootfs");
    let control = Creds::that_work(&data, "plain");
    // In the container `/root` is its gateway's home (its own trust domain): the attempt on root's
    // home of this machine lists what only this machine's /root holds.
    let attempts = |c: &Creds| {
        script(&data, "plain", &runs_from, ports, c).replace(
            "try \"list root's home\" ls /root\n",
            "try \"list this machine's root's home\" ls /root/.cache/fleet\n",
        )
    };
    let control = unconfined(&attempts(&control), &data, "plain", &runs_from);
    let mut body = attempts(&Creds::found_in(&data, "main"));
    let own_key = fleet::litellm::keys::read_env_key(&data.join("agents/mallory/env")).unwrap();
    let own = own_work("mallory", Some((ports.0, own_key.expose())));
    body.push_str(&own);
    let exec = |script: &str| format!("EXEC {}", base64::engine::general_purpose::STANDARD.encode(script));
    let r = run(&["chat", "mallory", &exec(&body)]);
    assert_eq!(r.code, 0, "{}", r.all());
    judge("incus runtime", "mallory", &control, &r.stdout, &own, &data.join("gateways/main/home/workspaces/mallory"));

    // Memory without end, inside the container (its limit: 3GiB).
    let oom_kills = || {
        let cg = std::fs::read_dir("/sys/fs/cgroup/memory")
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&format!("{fleet}-main"))))
            .unwrap_or_else(|| panic!("no memory cgroup of the container under /sys/fs/cgroup/memory"));
        let text = std::fs::read_to_string(cg.join("memory.oom_control")).unwrap();
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")).unwrap().trim().parse::<u64>().unwrap()
    };
    let before = oom_kills();
    let hog = "node -e 'const a = []; for (;;) a.push(Buffer.alloc(32 << 20, 1))'; echo \"HOG exit $?\"\n";
    let r = run(&["chat", "mallory", &exec(hog)]);
    eprintln!("the memory hog's turn in the container: exit {}; {}", r.code, r.stdout.trim());
    assert!(oom_kills() > before, "the container's memory limit never stopped the hog: {}", r.all());
    let r = run(&["apply"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let reply = run(&["chat", "alice", "hi"]);
    assert_eq!(reply.stdout.trim(), "Hello from the demo model.", "{}", reply.all());
}
