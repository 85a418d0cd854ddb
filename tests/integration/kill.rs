//! The kill sweep: `fleet apply` (and a removal, and a destroy) SIGKILLed at many points, each
//! followed by the checks a demanding user would make — the next apply converges, the plan is
//! empty, every process of the fleet's data dir is one the state records, no agent is duplicated
//! or woken twice, and destroy leaves nothing running. Points are spread over the run's own
//! progress lines (inside the proxy's and the gateway's start windows too), with delays from a
//! fixed seed: the same points every run.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fleet::process::{stat_fields, STAT_PPID, STAT_SESSION, STAT_STATE};
use serde_json::Value;

use crate::support::{free_port, Run, World};

const FLEET: &str = "sweep";

fn fleet_file(agents: &[&str], proxy: u16, gw: u16) -> String {
    let mut s = format!(
        "fleet \"{FLEET}\" {{ parallelism 8; }}\nhost \"local\" runtime=\"process\"\nlitellm host=\"local\" port={proxy}\n\
         provider \"demo\" type=\"mock\" {{ model \"demo-small\" response=\"Hello from the demo model.\"; }}\n\
         gateway \"gw\" host=\"local\" port={gw}\n"
    );
    for a in agents {
        s.push_str(&format!("agent \"{a}\" gateway=\"gw\" model=\"demo-small\"\n"));
    }
    s
}

/// A tiny seeded generator (the points must be the same every run).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 33) % below
    }
}

/// Runs `fleet ARGS` and SIGKILLs it `delay` after the first output line containing `after` (at
/// once when `after` is empty). Returns whether the run was still going when killed; fails when
/// the line never appeared (a point that would otherwise silently kill nothing).
pub(crate) fn kill_during(w: &World, args: &[&str], after: &str, delay: Duration) -> bool {
    let mut child = w.cmd(args).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let t0 = Instant::now();
    let mut seen = after.is_empty();
    let mut printed = Vec::new();
    while !seen && t0.elapsed() < Duration::from_secs(300) {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                seen = line.contains(after);
                printed.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if !seen {
        let _ = child.kill();
        let _ = child.wait();
        panic!("fleet {args:?} never printed {after:?} (within 300 s); it printed:\n{}", printed.join("\n"));
    }
    std::thread::sleep(delay);
    let killed = child.try_wait().unwrap().is_none();
    let _ = child.kill();
    let _ = child.wait();
    killed
}

/// Every process whose working directory, environment or command line points into `dir`.
fn processes_in(dir: &Path) -> BTreeSet<u32> {
    let needle = dir.display().to_string();
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if pid == std::process::id() {
            continue;
        }
        if stat_fields(pid).is_some_and(|f| f[STAT_STATE] == "Z") {
            continue; // a zombie holds nothing
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok();
        let env =
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()).into_owned();
        let cmd =
            String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).into_owned();
        if cwd.is_some_and(|c| c.starts_with(dir)) || env.contains(&needle) || cmd.contains(&needle) {
            out.insert(pid);
        }
    }
    out
}

/// (parent, session) of a process.
fn parent_and_session(pid: u32) -> Option<(u32, u32)> {
    let f = stat_fields(pid)?;
    Some((f.get(STAT_PPID)?.parse().ok()?, f.get(STAT_SESSION)?.parse().ok()?))
}

/// Whether `pid` is one of `recorded`, in one's session, or descends from one (OpenClaw's spawn
/// broker starts its workers in sessions of their own, as children of the gateway).
fn belongs_to(pid: u32, recorded: &BTreeSet<u32>) -> bool {
    let mut p = pid;
    for _ in 0..32 {
        if recorded.contains(&p) {
            return true;
        }
        match parent_and_session(p) {
            Some((_, sid)) if recorded.contains(&sid) => return true,
            Some((ppid, _)) if ppid > 1 => p = ppid,
            _ => return false,
        }
    }
    false
}

/// The pids the state records for the proxy and the gateway.
fn recorded_pids(data: &Path) -> BTreeSet<u32> {
    let db = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let mut stmt =
        db.prepare("SELECT outputs FROM resources WHERE address IN ('litellm.proxy', 'gateway.gw', 'serve')").unwrap();
    let rows: Vec<String> = stmt.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    rows.iter()
        .filter_map(|o| {
            let v: Value = serde_json::from_str(o).ok()?;
            v["pid"].as_u64().or_else(|| v.pointer("/handle/pid/pid").and_then(Value::as_u64)).map(|p| p as u32)
        })
        .collect()
}

/// Processes of the fleet that the state does not record (by session: workers belong to their leader).
fn untracked(data: &Path) -> Vec<String> {
    let recorded = recorded_pids(data);
    processes_in(data)
        .into_iter()
        .filter(|p| !belongs_to(*p, &recorded))
        .map(|p| {
            let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!("pid {p}: {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
        })
        .collect()
}

fn rpc(data: &Path, gw_port: u16, method: &str, params: Value) -> Value {
    let token = std::fs::read_to_string(data.join("gateways/gw/token")).unwrap();
    let url = format!("ws://127.0.0.1:{gw_port}");
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let c = fleet::openclaw::rpc::Client::connect(&url, token.trim()).await.unwrap();
        c.call(method, params, Duration::from_secs(60)).await.unwrap()
    })
}

/// The checks after every point: converged, nothing untracked, no agent twice, no wake twice.
fn assert_settled(w: &World, point: &str, agents: &[&str], gw_port: u16) {
    let data = w.data_dir(FLEET);
    let logs = || {
        let tail = |p: &str| {
            let t = std::fs::read_to_string(data.join(p)).unwrap_or_default();
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        format!("--- proxy.log\n{}\n--- gateway.log\n{}", tail("litellm/proxy.log"), tail("gateways/gw/gateway.log"))
    };
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{point}: the re-apply failed\n{}\n{}\n{}", r.failures(), r.all(), logs());
    let r = w.fleet(&["plan", "--detailed-exitcode"]);
    assert_eq!(r.code, 0, "{point}: one re-apply did not converge\n{}\n{}\n{}", r.failures(), r.all(), logs());
    let stray = untracked(&data);
    assert!(stray.is_empty(), "{point}: processes of the fleet that the state does not record: {stray:?}");
    let listed = rpc(&data, gw_port, "agents.list", serde_json::json!({}));
    let ids: Vec<&str> = listed["agents"].as_array().unwrap().iter().filter_map(|a| a["id"].as_str()).collect();
    let unique: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique.len(), "{point}: an agent is listed twice: {ids:?}");
    for a in agents {
        assert!(unique.contains(a), "{point}: {a} is missing: {ids:?}");
        let h = rpc(
            &data,
            gw_port,
            "chat.history",
            serde_json::json!({"sessionKey": format!("agent:{a}:main"), "agentId": a, "limit": 1000}),
        );
        let wakes = h["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["role"] == "user" && m["idempotencyKey"].as_str().is_some_and(|k| k.starts_with("fleet-")))
            .count();
        assert_eq!(wakes, 1, "{point}: {a} was woken {wakes} times");
    }
}

fn assert_destroyed(w: &World, point: &str) {
    let r = w.fleet(&["destroy"]);
    assert_eq!(r.code, 0, "{point}: destroy failed\n{}", r.all());
    let left = processes_in(&w.data_dir(FLEET));
    assert!(left.is_empty(), "{point}: destroy left processes running: {left:?}");
    // Destroy archived the agents; the next point starts cold.
    w.fleet(&["archive", "purge", "--all"]).ok();
}

/// Where to kill: after the first line containing the text, plus a seeded delay below the bound.
const APPLY_POINTS: [(&str, u64); 17] = [
    ("", 300),
    ("Applying", 0),
    ("Applying", 800),
    ("litellm.config: created", 0),
    ("litellm.proxy: started pid", 0),
    ("litellm.proxy: started pid", 2000),
    ("litellm.proxy: started pid", 5000),
    ("gateway.gw: started", 0),
    ("gateway.gw: started", 3000),
    ("gateway.gw: started", 8000),
    ("key.a1: created", 0),
    ("gateway.gw: created", 0),
    ("gateway.gw: created", 1500),
    ("gateway.gw.models: created", 0),
    ("agent.a2: created", 0),
    ("wake.", 0),
    ("wake.", 2000),
];

/// The sweep's fleet with the daemon declared.
fn with_serve(fleet: String, port: u16) -> String {
    format!("{fleet}serve {{ listen \"127.0.0.1:{port}\"; }}\n")
}

/// Kill -9 inside the daemon's start window, which is short: a restart of the daemon alone is over
/// within 40 ms of its `started pid` line on an idle machine (points 41, 90 and 145 ms after it
/// landed after the run's end), so no point here is a delay into that window. Points: cold
/// applies killed at once and 60–180 ms after they start it (the apply goes on after it), an apply
/// starting the killed daemon again killed at once, and a cold and a re-apply killed at the instant
/// of the spawn (the apply kills itself before any pid file or record names the daemon:
/// `FLEET_DEBUG_KILL_AFTER_SPAWN="fleet serve"`).
/// After each: converged, nothing untracked (the daemon included), every agent answering through
/// the daemon, the exchange in its store.
#[test]
fn an_apply_killed_while_it_starts_the_daemon_converges_and_the_daemon_answers() {
    enum Point {
        /// A cold apply (after a destroy), killed this long after the daemon's `started pid`.
        Cold(u64),
        /// An apply starting the killed daemon again, killed this long after `started pid`.
        Again(u64),
        /// An apply starting the killed daemon again that kills itself right after the spawn.
        AgainAtTheSpawn,
        /// A cold apply (after a destroy) that kills itself right after it spawned the daemon.
        ColdAtTheSpawn,
    }
    let agents = ["a1", "a2"];
    let (w, proxy, gw) = sweep_world(&agents);
    let port = free_port();
    w.write("fleet.kdl", &with_serve(fleet_file(&agents, proxy, gw), port));
    let data = w.data_dir(FLEET);
    let mut rng = Lcg(0x5eed_0005);
    let points = [Point::Cold(0), Point::Again(0), Point::AgainAtTheSpawn, Point::ColdAtTheSpawn, Point::Cold(120)];
    let mut missed = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let mut delay = |bound: u64| Duration::from_millis(if bound == 0 { 0 } else { rng.next(bound) + bound / 2 });
        let point = match p {
            Point::Cold(bound) => {
                if i > 0 {
                    assert_destroyed(&w, "before a cold point");
                }
                let d = delay(*bound);
                let point = format!("cold apply killed {d:?} after the daemon's start");
                if !kill_during(&w, &["apply"], "serve: started pid", d) {
                    missed.push(point.clone());
                }
                point
            }
            Point::Again(bound) => {
                let d = delay(*bound);
                let point = format!("re-apply killed {d:?} after the daemon's start");
                // Nothing but the daemon is left to do: a re-apply may end within milliseconds of
                // "started pid" (the daemon answers in ~60 ms), before the kill lands. A point that
                // found the run over is tried again (up to 3 times), so the kill lands in a live run.
                let landed = (0..3).any(|_| {
                    // SAFETY: kill(2) on the daemon's process group, started by this test's apply.
                    unsafe { libc::kill(-crate::support::serve_pid(&data), libc::SIGKILL) };
                    kill_during(&w, &["apply"], "serve: started pid", d)
                });
                if !landed {
                    missed.push(point.clone());
                }
                point
            }
            Point::AgainAtTheSpawn | Point::ColdAtTheSpawn => {
                let cold = matches!(p, Point::ColdAtTheSpawn);
                if cold {
                    assert_destroyed(&w, "before a cold point");
                } else {
                    // SAFETY: as above.
                    unsafe { libc::kill(-crate::support::serve_pid(&data), libc::SIGKILL) };
                }
                let out = w.cmd(&["apply"]).env("FLEET_DEBUG_KILL_AFTER_SPAWN", "fleet serve").output().unwrap();
                use std::os::unix::process::ExitStatusExt;
                assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the spawn hook did not fire: {out:?}");
                format!("{} killed right after spawning the daemon", if cold { "cold apply" } else { "re-apply" })
            }
        };
        assert_settled(&w, &point, &agents, gw);
        let before = conversation_rows(&data);
        assert_answers(&w, &point, &agents);
        assert_eq!(
            conversation_rows(&data),
            before + 2 * agents.len() as i64,
            "{point}: the daemon keeps each exchange"
        );
    }
    assert_destroyed(&w, "after the daemon sweep");
    assert_every_point_killed("daemon sweep", points.len(), &missed);
}

/// Messages in the daemon's conversation store.
fn conversation_rows(data: &Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("serve/conversations.db")).unwrap();
    db.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get(0)).unwrap()
}

fn sweep_world(agents: &[&str]) -> (World, u16, u16) {
    let w = World::new();
    let (proxy, gw) = (free_port(), free_port());
    w.write("fleet.kdl", &fleet_file(agents, proxy, gw));
    (w, proxy, gw)
}

/// Where the destroy sweep kills: the destroy that ends a cold-sweep point (a whole fleet, up and
/// answering) is killed after the first line containing the text, plus a seeded delay below the bound.
const DESTROY_POINTS: [(&str, u64); 5] =
    [("", 300), ("Applying", 0), ("Applying", 700), ("agent.a1: deleted", 0), ("gateway.gw: deleted", 0)];
/// The cold-sweep points whose destroy is killed, one per destroy point (two in the first half, three in
/// the second): each needs a whole fleet to destroy, and the cold sweep builds one per point anyway (a
/// sweep of its own paid five more cold applies, 328 s of the suite's summed time).
const DESTROY_AT: [usize; 5] = [2, 5, 9, 12, 15];

/// The cold sweep's 17 points, split in two tests that the runner can run side by side (one test
/// was the suite's longest, and started alone it set the suite's end): the points before the
/// gateway is up, and from its start on. The delays are drawn for all 17 from one seed first, so
/// each point is the same as when they were one test. Five points end in a killed destroy (the
/// destroy sweep): the next destroy must finish it, leave nothing running, and `plan --json` work.
fn cold_sweep(range: std::ops::Range<usize>) {
    let agents = ["a1", "a2"];
    let (w, _proxy, gw) = sweep_world(&agents);
    let seeded = |seed: u64, points: &[(&str, u64)]| -> Vec<Duration> {
        let mut rng = Lcg(seed);
        points
            .iter()
            .map(|(_, bound)| Duration::from_millis(if *bound == 0 { 0 } else { rng.next(*bound) + bound / 2 }))
            .collect()
    };
    let delays = seeded(0x5eed_0001, &APPLY_POINTS);
    let destroy_delays = seeded(0x5eed_0003, &DESTROY_POINTS);
    let (mut missed, mut missed_destroys, mut destroys) = (Vec::new(), Vec::new(), 0);
    for i in range.clone() {
        let (after, delay) = (APPLY_POINTS[i].0, delays[i]);
        let point = format!("apply killed {delay:?} after {after:?}");
        if !kill_during(&w, &["apply"], after, delay) {
            missed.push(point.clone());
        }
        assert_settled(&w, &point, &agents, gw);
        // One chat turn per point, the agents taking turns (every turn costs the gateway a run).
        assert_answers(&w, &point, &[agents[i % agents.len()]]);
        let Some(d) = DESTROY_AT.iter().position(|&at| at == i) else {
            assert_destroyed(&w, &point);
            continue;
        };
        destroys += 1;
        let (after, delay) = (DESTROY_POINTS[d].0, destroy_delays[d]);
        let point = format!("destroy killed {delay:?} after {after:?}");
        if !kill_during(&w, &["destroy"], after, delay) {
            missed_destroys.push(point.clone());
        }
        assert_destroyed(&w, &point);
        let r: Run = w.fleet(&["plan", "--json"]);
        assert_eq!(r.code, 0, "{point}: {}", r.all());
    }
    assert_every_point_killed("apply sweep", range.len(), &missed);
    assert_every_point_killed("destroy sweep", destroys, &missed_destroys);
}

#[test]
fn a_cold_apply_killed_before_its_gateway_is_up_converges_and_a_killed_destroy_is_finished() {
    cold_sweep(0..8);
}

#[test]
fn a_cold_apply_killed_once_its_gateway_started_converges_and_a_killed_destroy_is_finished() {
    cold_sweep(8..APPLY_POINTS.len());
}

/// Each point must have killed a run that was still going: a point that lands after the run's end
/// tests nothing, so it fails the sweep, naming the points to move.
fn assert_every_point_killed(sweep: &str, points: usize, missed: &[String]) {
    assert!(
        missed.is_empty(),
        "{sweep}: {} of {points} points killed a run that had already ended: {missed:?}",
        missed.len()
    );
    eprintln!("{sweep}: {points} points, every one killed a run mid-way, all converged");
}

/// After the re-apply each agent answers a chat turn (through its gateway and the proxy).
fn assert_answers(w: &World, point: &str, agents: &[&str]) {
    for a in agents {
        let r = w.fleet(&["chat", a, "are you there?"]);
        assert_eq!(
            (r.code, r.stdout.trim()),
            (0, "Hello from the demo model."),
            "{point}: {a} does not answer after the re-apply\n{}",
            r.all()
        );
    }
}

/// The narrowest window: fleet dies the instant a long-lived process is spawned, before its pid
/// file or state names it (a proxy then takes seconds to listen, so neither the port nor a record
/// shows it). The next apply must find it by its working directory and command line.
#[test]
fn a_run_killed_right_after_a_spawn_leaves_nothing_the_next_apply_misses() {
    let agents = ["a1", "a2"];
    let (w, _proxy, gw) = sweep_world(&agents);
    for what in ["litellm proxy", "openclaw gateway gw"] {
        let out = w.cmd(&["apply"]).env("FLEET_DEBUG_KILL_AFTER_SPAWN", what).output().unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{what}: the hook did not fire: {out:?}");
        let point = format!("apply killed right after spawning the {what}");
        assert!(!untracked(&w.data_dir(FLEET)).is_empty(), "{point}: the spawned process is not running");
        assert_settled(&w, &point, &agents, gw);
        assert_destroyed(&w, &point);
    }
    // Wider still on a busy machine: fleet dies between the proxy's fork and its exec, and the child
    // (still a copy of fleet, with fleet's command line) holds its exec 4 s
    // (`FLEET_DEBUG_KILL_DURING_SPAWN`). The next run must wait for it to become the proxy and stop
    // it — not start a second proxy beside a process it did not recognise.
    let out = w.cmd(&["apply"]).env("FLEET_DEBUG_KILL_DURING_SPAWN", "litellm proxy").output().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "the mid-spawn hook did not fire: {out:?}");
    let point = "apply killed between the proxy's fork and its exec";
    assert!(!untracked(&w.data_dir(FLEET)).is_empty(), "{point}: the half-spawned process is not there");
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "{point}: the re-apply failed\n{}\n{}", r.failures(), r.all());
    assert!(
        r.stdout.contains("litellm.proxy: stopping the proxy of this fleet that the state does not record"),
        "{point}: the re-apply did not find the half-spawned proxy\n{}",
        r.stdout
    );
    assert_settled(&w, point, &agents, gw);
    assert_destroyed(&w, point);
}

#[test]
fn ctrl_c_stops_new_steps_records_the_run_cancelled_and_leaves_nothing_untracked() {
    let agents = ["a1", "a2"];
    let (w, _proxy, gw) = sweep_world(&agents);
    let mut child = w.cmd(&["apply"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut lines = Vec::new();
    while t0.elapsed() < Duration::from_secs(120) {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            let go = line.contains("gateway.gw: started");
            lines.push(line);
            if go {
                break;
            }
        }
    }
    // SAFETY: kill(2) with SIGINT on the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    // Everything fleet printed before it exited: read to the end of its output (the reader may lag the exit).
    let t1 = Instant::now();
    while t1.elapsed() < Duration::from_secs(30) {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => lines.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    let text = lines.join("\n");
    assert_eq!(status.code(), Some(130), "{text}");
    assert!(text.contains("+ gateway.gw: created"), "the running gateway step finished: {text}");
    assert!(text.contains("skipped: cancelled"), "{text}");
    assert!(text.contains("Cancelled:"), "{text}");
    let data = w.data_dir(FLEET);
    let stray = untracked(&data);
    assert!(stray.is_empty(), "processes the state does not record: {stray:?}");
    let state = w.fleet(&["state"]).ok();
    assert!(state.stdout.contains("apply    cancelled"), "{}", state.stdout);
    // The next apply goes on without force-unlock.
    assert_settled(&w, "after Ctrl-C", &agents, gw);
    assert_destroyed(&w, "after Ctrl-C");
}

/// The archive's directory as `fleet archive list` sees it: (id, state, has a manifest).
fn archive_dirs(data: &Path) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = std::fs::read_dir(data.join("archive"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path().join("manifest.json").exists()))
        .collect();
    out.sort();
    out
}

/// Removed agents are archived whole: nothing of them left in place, no unfinished archive, no
/// archive without its manifest.
fn assert_archived_whole(data: &Path, point: &str, gone: &[&str]) {
    let dirs = archive_dirs(data);
    for (name, manifest) in &dirs {
        assert!(!name.contains('.'), "{point}: an unfinished archive or restore is left: {dirs:?}");
        assert!(manifest, "{point}: archive {name} has no manifest");
    }
    for a in gone {
        assert!(
            !data.join("gateways/gw/home/workspaces").join(a).exists(),
            "{point}: {a}'s workspace is still in place"
        );
        assert!(!data.join("agents").join(a).exists(), "{point}: {a}'s home is still in place");
        assert!(dirs.iter().any(|(n, _)| n.starts_with(&format!("{a}-"))), "{point}: no archive of {a}: {dirs:?}");
    }
}

/// The removal sweep and the restore sweep, one the other's setup: each round removes (archives) 2 of the
/// 4 agents, killed at a removal point, and brings them back (a restore), killed at a restore point; after
/// each kill the usual checks and the step's own. (Two sweeps with a setup apply per point each paid 20
/// applies that did nothing but set up; 706 s of the suite's summed time together.)
#[test]
fn removals_and_restores_killed_anywhere_converge_refuse_the_old_keys_and_bring_agents_back_whole() {
    let (all, kept, moved) = (["a1", "a2", "a3", "a4"], ["a1", "a2"], ["a3", "a4"]);
    let (w, proxy, gw) = sweep_world(&all);
    let r = w.fleet(&["apply"]);
    assert_eq!(r.code, 0, "setup: {}", r.all());
    let data = w.data_dir(FLEET);
    let user_md = "# USER\nWritten while a3 was live; must survive every removal and restore.\n";
    std::fs::write(data.join("gateways/gw/home/workspaces/a3/USER.md"), user_md).unwrap();
    let removals: [(&str, u64); 10] = [
        ("", 200),
        ("Applying", 0),
        ("Applying", 600),
        ("agent.a3: deleted", 0),
        ("agent.a4: deleted", 0),
        ("gateway.gw.models", 0),
        ("gateway.gw.models", 800),
        ("key.a3: deleted", 0),
        ("key.a4: deleted", 0),
        ("wake.a3: deleted", 0),
    ];
    let restores: [(&str, u64); 10] = [
        ("", 200),
        ("Applying", 0),
        ("Applying", 500),
        ("key.a3: created", 0),
        ("brought back from archive", 0),
        ("gateway.gw.models: updated", 0),
        ("agent.a3: brought back", 0),
        ("agent.a3: created", 0),
        ("agent.a3: created", 400),
        ("agent.a3: created", 2000),
    ];
    let (mut removal_rng, mut restore_rng) = (Lcg(0x5eed_0002), Lcg(0x5eed_0004));
    let (mut missed_removals, mut missed_restores) = (Vec::new(), Vec::new());
    for ((after, bound), (restore_after, restore_bound)) in removals.into_iter().zip(restores) {
        // The removal.
        let keys: Vec<String> =
            moved.iter().map(|a| crate::support::env_key(&data.join(format!("agents/{a}/env")))).collect();
        w.write("fleet.kdl", &fleet_file(&kept, proxy, gw));
        let delay = Duration::from_millis(if bound == 0 { 0 } else { removal_rng.next(bound) + bound / 2 });
        let point = format!("removal killed {delay:?} after {after:?}");
        if !kill_during(&w, &["apply"], after, delay) {
            missed_removals.push(point.clone());
        }
        assert_settled(&w, &point, &kept, gw);
        for key in keys {
            let (status, _) = crate::proxy::Proxy { url: format!("http://127.0.0.1:{proxy}") }.chat(&key, "demo-small");
            assert!(status == 401 || status == 403, "{point}: a removed agent's key got {status}");
        }
        assert_archived_whole(&data, &point, &moved);
        // The restore.
        w.write("fleet.kdl", &fleet_file(&all, proxy, gw));
        let delay = Duration::from_millis(if restore_bound == 0 {
            0
        } else {
            restore_rng.next(restore_bound) + restore_bound / 2
        });
        let point = format!("restore killed {delay:?} after {restore_after:?}");
        if !kill_during(&w, &["apply"], restore_after, delay) {
            missed_restores.push(point.clone());
        }
        // Woken once: OpenClaw's agents.delete closed the agents' sessions, so each main session now
        // holds this restore's wake alone (once, however often the restore was killed).
        assert_settled(&w, &point, &all, gw);
        let dirs = archive_dirs(&data);
        assert!(dirs.is_empty(), "{point}: the archive was not taken back whole: {dirs:?}");
        let ws = data.join("gateways/gw/home/workspaces/a3");
        assert_eq!(std::fs::read_to_string(ws.join("USER.md")).unwrap(), user_md, "{point}: USER.md");
        for a in moved {
            assert!(
                !data.join(format!("agents/{a}/restored.json")).exists(),
                "{point}: {a}'s restore was not finished by a wake"
            );
            let key = crate::support::env_key(&data.join(format!("agents/{a}/env")));
            let (status, _) = crate::proxy::Proxy { url: format!("http://127.0.0.1:{proxy}") }.chat(&key, "demo-small");
            assert_eq!(status, 200, "{point}: the restored {a}'s new key");
        }
    }
    assert_destroyed(&w, "after the removal and restore sweep");
    assert_every_point_killed("removal sweep", removals.len(), &missed_removals);
    assert_every_point_killed("restore sweep", restores.len(), &missed_restores);
}
