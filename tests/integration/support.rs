//! A temp world for one test: its own XDG dirs and working directory, and a
//! way to run the real `fleet` binary in it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const FLEET: &str = env!("CARGO_BIN_EXE_fleet");

pub struct World {
    pub dir: tempfile::TempDir,
}

#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(o: Output) -> Self {
        Run::from(o)
    }
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
    #[track_caller]
    pub fn ok(self) -> Self {
        assert_eq!(self.code, 0, "expected success\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    /// The lines that say what went wrong, for the head of a failure message (CI keeps a long
    /// message's head and tail only).
    pub fn failures(&self) -> String {
        let all = self.all();
        let bad: Vec<&str> = all
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("fail") || l.contains("error") || l.contains("skipped") || l.contains("refused")
            })
            .collect();
        format!("exit {}; what went wrong:\n{}\n--- all output:", self.code, bad.join("\n"))
    }
}

/// Downloads and installs (the LiteLLM venv…) are shared by all tests, as they are by all fleets
/// on a machine: `$FLEET_TEST_CACHE`, else `~/.cache`.
pub fn shared_cache() -> PathBuf {
    match std::env::var_os("FLEET_TEST_CACHE") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache"),
    }
}

/// A TCP port nothing listens on right now.
/// A port for a test's proxy, gateway or daemon, free now and outside the kernel's ephemeral range
/// (32768–60999 here): a port from that range, free when picked, can be taken by any outgoing
/// connection's local end while the test's gateway is stopped between two applies — then the next
/// start fails on a busy machine. Ports are handed out 25 apart (OpenClaw binds a few above its
/// own), each block checked free and reserved for the life of the test process by an flock on
/// `$TMPDIR/fleet-test-ports/<port>`: the runner starts one process per test, and two processes
/// picking the same free block before either listens would collide.
pub fn free_port() -> u16 {
    use std::os::fd::AsRawFd;
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    const LOW: u32 = 20_000;
    const HIGH: u32 = 32_000;
    const STEP: u32 = 25;
    let slots = (HIGH - LOW) / STEP;
    let start = std::process::id() % slots;
    let locks = std::env::temp_dir().join("fleet-test-ports");
    std::fs::create_dir_all(&locks).unwrap();
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < slots, "no free test port left between {LOW} and {HIGH}");
        let port = (LOW + ((start + n) % slots) * STEP) as u16;
        let file = std::fs::File::create(locks.join(port.to_string())).unwrap();
        // SAFETY: flock(2) on a file this function just opened; released when the process exits.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            continue; // another test process holds this block
        }
        let block_free = (port..port + 10).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok());
        if block_free {
            HELD.lock().unwrap_or_else(|p| p.into_inner()).push(file);
            return port;
        }
    }
}

/// Holds an exclusive lock shared by every test process (the runner starts one per test) until
/// dropped: for work on something all tests share, such as the image build's output file.
pub struct CrossProcessLock(#[allow(dead_code)] std::fs::File);

pub fn cross_process_lock(name: &str) -> CrossProcessLock {
    use std::os::fd::AsRawFd;
    let dir = std::env::temp_dir().join("fleet-test-locks");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::File::create(dir.join(name)).unwrap();
    // SAFETY: flock(2) on a file opened here; blocks until the other holder drops its lock or exits.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock {name}: {}", std::io::Error::last_os_error());
    CrossProcessLock(file)
}

impl Drop for World {
    /// Stops whatever a test left running (proxies) by the pid files fleet wrote.
    /// A gateway's own user (fleet as root: uids from 2,000,000,000 up, one per gateway home) is
    /// this test's alone: whatever still runs as it goes too (its tool sandboxes run in sessions of
    /// their own, outside the gateway's process group).
    fn drop(&mut self) {
        let mut own_users = Vec::new();
        for pid_file in self.pid_files() {
            let v: serde_json::Value =
                std::fs::read_to_string(&pid_file).ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
            // proxy.pid, serve.pid: {"pid": {"pid": N}}; gateway.handle: {"handle": {"pid": {"pid": N}}}.
            if let Some(pid) = v["pid"]["pid"].as_u64().or_else(|| v["handle"]["pid"]["pid"].as_u64()) {
                own_users.extend(uid_of(pid as i32).filter(|u| *u >= 2_000_000_000));
                // SAFETY: plain kill(2) on a process group this test started.
                unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            }
        }
        if own_users.is_empty() {
            return;
        }
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
            if uid_of(pid).is_some_and(|u| own_users.contains(&u)) {
                // SAFETY: plain kill(2) on a process of a user this test's gateway ran as.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// The real uid a process runs as.
fn uid_of(pid: i32) -> Option<u32> {
    fleet::process::Pid::of(pid as u32)?.uid()
}

impl World {
    pub fn new() -> Self {
        let w = World { dir: tempfile::tempdir().expect("temp dir") };
        std::fs::create_dir_all(w.root().join("repo")).unwrap();
        w
    }

    /// The quickstart example, its proxy and gateway on ports of their own so tests run side by side.
    pub fn quickstart() -> Self {
        let w = World::new();
        w.example("quickstart");
        w.edit("fleet.kdl", "port=4000", &format!("port={}", free_port()));
        w.edit("fleet.kdl", "127.0.0.1:8700", &format!("127.0.0.1:{}", free_port()));
        w.edit(
            "fleet.kdl",
            "gateway \"main\" host=\"local\"",
            &format!("gateway \"main\" host=\"local\" port={}", free_port()),
        );
        w
    }

    /// The quickstart without its gateway: the LiteLLM proxy and the agents' keys only (a fleet with
    /// no gateway mints keys for agents that run elsewhere). The spine and proxy tests use it.
    pub fn keys_only() -> Self {
        let w = World::new();
        w.example("quickstart");
        w.edit("fleet.kdl", "port=4000", &format!("port={}", free_port()));
        w.edit("fleet.kdl", "127.0.0.1:8700", &format!("127.0.0.1:{}", free_port()));
        let mut text =
            w.read("fleet.kdl").replace("gateway \"main\" host=\"local\"\n", "").replace(" gateway=\"main\"", "");
        // No daemon either: it routes chat to gateways.
        if let Some(at) = text.find("\n// The resident daemon") {
            text.truncate(at + 1);
        }
        w.write("fleet.kdl", &text);
        w
    }

    /// Every proxy.pid and gateway.handle under this world (processes to reap when the test ends).
    pub fn pid_files(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(self.root(), &mut |p| {
            if p.file_name().is_some_and(|n| n == "proxy.pid" || n == "gateway.handle" || n == "serve.pid") {
                out.push(p.to_path_buf());
            }
        });
        out
    }

    /// The proxy's pid as recorded in its pid file.
    pub fn proxy_pid(&self, fleet: &str) -> u32 {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(self.data_dir(fleet).join("litellm/proxy.pid")).unwrap())
                .unwrap();
        v["pid"]["pid"].as_u64().unwrap() as u32
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// The "repo" the fleet file lives in; commands run here.
    pub fn repo(&self) -> PathBuf {
        self.root().join("repo")
    }

    pub fn xdg_data(&self) -> PathBuf {
        self.root().join("xdg-data")
    }

    pub fn data_dir(&self, fleet: &str) -> PathBuf {
        self.xdg_data().join("fleet").join(fleet)
    }

    pub fn write(&self, rel: &str, content: &str) -> PathBuf {
        let p = self.repo().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        p
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.repo().join(rel)).unwrap()
    }

    /// Copies an example fleet (e.g. `quickstart`) into the repo.
    pub fn example(&self, name: &str) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples").join(name);
        copy_dir(&src, &self.repo());
    }

    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let text = self.read(rel);
        assert!(text.contains(from), "{rel} does not contain {from:?}");
        self.write(rel, &text.replacen(from, to, 1));
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(FLEET);
        c.args(args)
            .current_dir(self.repo())
            .env("XDG_DATA_HOME", self.xdg_data())
            .env("XDG_CACHE_HOME", shared_cache())
            .env("NO_COLOR", "1")
            .env_remove("FLEET_DATA_DIR")
            .env_remove("RUST_LOG");
        c
    }

    pub fn fleet(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("run fleet"))
    }

    /// `fleet plan --detailed-exitcode` says 0 (nothing to do); fails with the plan it printed.
    #[track_caller]
    pub fn assert_converged(&self) {
        let r = self.fleet(&["plan", "--detailed-exitcode"]);
        assert_eq!(r.code, 0, "the plan is not empty\n{}\n{}", r.failures(), r.all());
    }

    /// Every file fleet wrote under a directory, with its bytes. Left out: state.db* (SQLite rewrites
    /// pages) and *.log (the processes fleet runs write those).
    pub fn files(&self, dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(dir, &mut |p| {
            let name = p.file_name().unwrap().to_string_lossy();
            if !name.starts_with("state.db") && !name.ends_with(".log") {
                out.insert(p.to_path_buf(), std::fs::read(p).unwrap());
            }
        });
        out
    }
}

pub fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).unwrap();
        }
    }
}

/// The raw key in an env file.
pub fn env_key(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("OPENAI_API_KEY=").map(str::to_string))
        .expect("env file has OPENAI_API_KEY")
}

pub fn sha256(s: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

/// One named phase of a test that shares one applied fleet between several checks: its name and
/// time go to the test's output (shown with a failure), so a failure says which phase it was in.
pub fn phase<T>(name: &str, f: impl FnOnce() -> T) -> T {
    let t0 = std::time::Instant::now();
    eprintln!("--- phase: {name}");
    let out = f();
    eprintln!("--- phase: {name}: ok in {:.1} s", t0.elapsed().as_secs_f64());
    out
}

/// Waits (up to 60 s) until a killed process is gone or a zombie; fails saying what it waited for.
pub fn wait_gone(pid: u32, what: &str) {
    use fleet::process::{stat_fields, STAT_STATE};
    let t0 = std::time::Instant::now();
    while stat_fields(pid).is_some_and(|f| f[STAT_STATE] != "Z") {
        assert!(t0.elapsed() < std::time::Duration::from_secs(60), "{what} (pid {pid}) still runs 60 s after kill -9");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Asks `f` every 250 ms until it gives a value, for at most `within`; None once that has passed.
/// For a wait whose failure message needs more than a name (what was seen instead).
pub fn wait_until<T>(within: std::time::Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let t0 = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// [`wait_until`], failing the test once `within` has passed, saying what it waited for.
#[track_caller]
pub fn wait_for<T>(within: std::time::Duration, what: &str, f: impl FnMut() -> Option<T>) -> T {
    match wait_until(within, f) {
        Some(v) => v,
        None => panic!("waited {} s for {what}", within.as_secs()),
    }
}

/// The daemon's pid as its pid file (`serve/serve.pid` in a fleet's data dir) records it.
pub fn serve_pid(data: &Path) -> i32 {
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("serve/serve.pid")).unwrap()).unwrap();
    v["pid"]["pid"].as_u64().unwrap() as i32
}

/// A scripted OpenAI-compatible upstream from `tests/fixtures/` (the one stand-in: no model can be
/// reached), on a port of its own; stopped when dropped.
pub struct Upstream(std::process::Child, pub u16);

impl Upstream {
    pub fn start(fixture: &str) -> Upstream {
        let port = free_port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture);
        let child = Command::new("python3").arg(script).arg(port.to_string()).spawn().unwrap();
        let t0 = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t0.elapsed() < std::time::Duration::from_secs(10), "the scripted upstream {fixture} did not start");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Upstream(child, port)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
