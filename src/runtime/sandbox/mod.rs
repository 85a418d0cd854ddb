//! The tool sandboxes of a process gateway (docs/security.md): OpenClaw's podman backend, run
//! rootless by the gateway's own user. No subordinate ids (and no new privileges, so no setuid
//! `newuidmap`): podman maps that one user, root inside a sandbox is the gateway's user outside,
//! and files an agent's tools write into its workspace are the gateway's. fleet gives podman its own
//! containers.conf (runc, cgroupfs, explicit ulimits: what runs on hosts like this one, never the
//! user's global config) and storage.conf (overlay, in the gateway's home), imports each sandbox
//! image into the gateway's own store (its root filesystem, every file root's, `rootfs.rs`), and puts
//! a `podman` that drops OpenClaw's `--userns keep-id` beside the gateway's Node (OpenClaw runs
//! commands with its Node's directory first on their PATH): keep-id needs subordinate ids, and with
//! one id mapped the workspace's owner is kept anyway. Measured with OpenClaw 2026.9.6 and podman
//! 4.3.1 (Debian 12).

mod rootfs;

use std::path::{Path, PathBuf};
use std::process::Command;

use miette::{miette, IntoDiagnostic, WrapErr};
use serde::{Deserialize, Serialize};

use crate::process::confine::{Confinement, Identity};

/// A gateway whose agents' tools run in sandboxes, as this module needs it.
pub struct Boxed<'a> {
    pub gateway: &'a str,
    /// Its home on this machine.
    pub home: &'a Path,
    /// The images its agents' sandboxes run from.
    pub images: &'a [SandboxImage],
}

/// A sandbox image a gateway's agents run their tools from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxImage {
    /// Its `image` in the fleet file.
    pub name: String,
    /// The image tarball fleet built or fetched.
    pub file: PathBuf,
    /// Its sha256 when fetched by URL (checked again before the import; a built one is checked
    /// against its build's `.sha256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// What it is (its sha256, or its recipe's fingerprint): part of its tag.
    pub source: Option<String>,
}

impl SandboxImage {
    /// The name OpenClaw is given (`agents.entries.<id>.sandbox.docker.image`).
    pub fn tag(&self) -> String {
        tag(&self.name, self.source.as_deref())
    }
}

/// `localhost/fleet-sandbox-<image>:<16 hex of what it is>`.
pub fn tag(name: &str, source: Option<&str>) -> String {
    let version = source.map_or("latest".to_string(), |s| s.chars().take(16).collect());
    format!("localhost/{TAG_PREFIX}{name}:{version}")
}

const TAG_PREFIX: &str = "fleet-sandbox-";

/// What a host needs for sandboxes, and how to get it on Debian.
pub const NEEDS: [&str; 3] = ["podman", "runc", "catatonit"];
pub const INSTALL_HINT: &str = "apt-get install podman runc catatonit slirp4netns";

/// Which of `NEEDS` this machine lacks.
pub fn missing_tools() -> Vec<&'static str> {
    NEEDS.into_iter().filter(|t| which(t).is_none()).collect()
}

/// `name` on the PATH, else in the system's own directories (Debian's runc is `/usr/sbin/runc`,
/// outside an ordinary user's PATH).
pub fn which(name: &str) -> Option<PathBuf> {
    const SYSTEM: [&str; 5] = ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"];
    crate::fsutil::which(name).or_else(|| SYSTEM.map(|d| Path::new(d).join(name)).into_iter().find(|p| p.is_file()))
}

/// fleet's files for the gateway's podman, beside its home (`gateways/<gw>/sandbox/`): fleet's,
/// not the gateway's to change.
fn dir(home: &Path) -> PathBuf {
    home.parent().unwrap_or(home).join("sandbox")
}

/// The gateway's Node and fleet's `podman`: OpenClaw puts its Node's directory first on the PATH
/// of everything it runs (then `/usr/bin`), so fleet's `podman` must sit beside that Node.
pub fn bin_dir(home: &Path) -> PathBuf {
    dir(home).join("bin")
}

/// The Node the gateway runs: a hard link to `node` in `bin_dir` (a copy across filesystems).
pub fn node(home: &Path) -> PathBuf {
    bin_dir(home).join("node")
}

fn conf_file(home: &Path) -> PathBuf {
    dir(home).join("containers.conf")
}

fn storage_file(home: &Path) -> PathBuf {
    dir(home).join("storage.conf")
}

/// What the gateway's environment gets for podman.
pub fn env(home: &Path) -> Vec<(String, String)> {
    vec![
        ("CONTAINERS_CONF".into(), conf_file(home).display().to_string()),
        ("CONTAINERS_STORAGE_CONF".into(), storage_file(home).display().to_string()),
    ]
}

/// The store in the gateway's home, on overlay: podman 4.3 falls back to vfs here, which copies the
/// whole image for every sandbox (6.6 s each for fleet's 223 MB image, measured, against 0.06 s on
/// overlay — three agents' first turns at once then outlast OpenClaw's 20 s provisioning window).
fn storage_conf(home: &Path) -> String {
    format!(
        "# Written by fleet for this gateway's tool sandboxes (docs/security.md). Rewritten at every start.\n\
         [storage]\n\
         driver = \"overlay\"\n\
         graphroot = \"{}\"\n",
        home.join(".local/share/containers/storage").display()
    )
}

fn containers_conf(catatonit: &Path) -> String {
    format!(
        "# Written by fleet for this gateway's tool sandboxes (docs/security.md). Rewritten at every start.\n\
         [containers]\n\
         default_ulimits = [\"nofile=1024:1024\", \"nproc=1024:1024\"]\n\
         init_path = \"{}\"\n\
         [engine]\n\
         runtime = \"runc\"\n\
         cgroup_manager = \"cgroupfs\"\n\
         events_logger = \"file\"\n",
        catatonit.display()
    )
}

fn wrapper(podman: &Path) -> String {
    format!(
        "#!/bin/sh\n\
         # Written by fleet (runtime/sandbox.rs). This gateway's user has no subordinate ids: podman maps\n\
         # its one id, as root, into a sandbox. OpenClaw asks for `--userns keep-id` (which needs\n\
         # subordinate ids) and `--user <this uid>:<gid>`: dropped, and root inside, which is this user.\n\
         # OpenClaw probes `podman info --format …` before each sandbox and gives it 5 s: the answer\n\
         # (rootless, local, the version) holds for the gateway's life, so it is kept after the first.\n\
         if [ \"$1\" = info ] && [ \"$2\" = --format ] && [ $# -eq 3 ]; then\n\
         \x20 cache=\"$HOME/.cache/fleet-podman-info/$(printf '%s' \"$3\" | cksum | cut -d' ' -f1)\"\n\
         \x20 if [ -s \"$cache\" ]; then cat \"$cache\"; exit 0; fi\n\
         \x20 out=\"$({podman} \"$@\")\" || exit $?\n\
         \x20 mkdir -p \"${{cache%/*}}\" && printf '%s\\n' \"$out\" > \"$cache.$$\" && mv \"$cache.$$\" \"$cache\"\n\
         \x20 printf '%s\\n' \"$out\"; exit 0\n\
         fi\n\
         me=\"$(id -u)\"; my=\"$(id -g)\"\n\
         next=\n\
         for a do\n\
         \x20 shift\n\
         \x20 case \"$next\" in\n\
         \x20   userns) next=; case \"$a\" in keep-id*) continue ;; esac; set -- \"$@\" --userns \"$a\"; continue ;;\n\
         \x20   user) next=; case \"$a\" in \"$me\"|\"$me:$my\") a=0:0 ;; esac; set -- \"$@\" --user \"$a\"; continue ;;\n\
         \x20 esac\n\
         \x20 case \"$a\" in\n\
         \x20   --userns) next=userns; continue ;;\n\
         \x20   --userns=keep-id*) continue ;;\n\
         \x20   --user|-u) next=user; continue ;;\n\
         \x20   --user=\"$me\"|--user=\"$me:$my\") a=--user=0:0 ;;\n\
         \x20 esac\n\
         \x20 set -- \"$@\" \"$a\"\n\
         done\n\
         exec {podman} \"$@\"\n",
        podman = podman.display()
    )
}

/// Writes podman's config, the wrapper and the gateway's Node (`node`, linked) beside the gateway's
/// home, owned by fleet's user, readable by all. Blocking.
pub fn place(g: &Boxed, node_from: &Path) -> miette::Result<()> {
    let missing = missing_tools();
    if !missing.is_empty() {
        return Err(miette!(
            help = INSTALL_HINT,
            "gateway {}'s agents run their tools in sandboxes, and this machine has no {}",
            g.gateway,
            missing.join(", ")
        ));
    }
    let (podman, catatonit) = (which("podman").expect("checked"), which("catatonit").expect("checked"));
    let bin = bin_dir(g.home);
    std::fs::create_dir_all(&bin).into_diagnostic()?;
    for d in [dir(g.home), bin.clone()] {
        std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o755)).into_diagnostic()?;
    }
    crate::fsutil::write_atomic(&conf_file(g.home), containers_conf(&catatonit).as_bytes(), 0o644).into_diagnostic()?;
    crate::fsutil::write_atomic(&storage_file(g.home), storage_conf(g.home).as_bytes(), 0o644).into_diagnostic()?;
    crate::fsutil::write_atomic(&bin.join("podman"), wrapper(&podman).as_bytes(), 0o755).into_diagnostic()?;
    // The wrapper's kept `podman info` answers start afresh with every start (podman may have changed).
    let _ = std::fs::remove_dir_all(g.home.join(INFO_CACHE));
    link_node(node_from, &node(g.home)).wrap_err_with(|| format!("gateway {}: its Node", g.gateway))
}

/// Where the wrapper keeps `podman info` answers, in the gateway's home.
const INFO_CACHE: &str = ".cache/fleet-podman-info";

/// The probe OpenClaw 2026.9.6 runs before each sandbox (answered once at the gateway's start, so
/// its first turns do not race each other for it; another format is kept at its first answer).
const OPENCLAW_INFO_FORMAT: &str =
    "{{.Host.Security.Rootless}}\t{{.Host.ServiceIsRemote}}\t{{.Host.RemoteSocket.Path}}\t{{.Version.Version}}";

/// `to` as a hard link to `from` (a copy when they are on different filesystems), replaced when it
/// is another file.
fn link_node(from: &Path, to: &Path) -> miette::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
    let src = std::fs::metadata(from).into_diagnostic().wrap_err_with(|| format!("{}", from.display()))?;
    if std::fs::metadata(to).is_ok_and(|m| same(&m, &src) || (m.len() == src.len() && m.mtime() >= src.mtime())) {
        return Ok(());
    }
    let tmp = to.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    if std::fs::hard_link(from, &tmp).is_err() {
        std::fs::copy(from, &tmp).into_diagnostic().wrap_err_with(|| format!("cannot copy {}", from.display()))?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755)).into_diagnostic()?;
    }
    std::fs::rename(&tmp, to).into_diagnostic()
}

/// `podman …` as the gateway's user (`who`; fleet's own when None), in its environment.
fn podman(g: &Boxed, who: &Option<Identity>) -> Command {
    let mut cmd = Command::new(which("podman").unwrap_or_else(|| PathBuf::from("podman")));
    as_gateway(&mut cmd, g, who);
    cmd
}

/// `cmd` to run as the gateway's user, in its environment (no new privileges, as the gateway).
fn as_gateway(cmd: &mut Command, g: &Boxed, who: &Option<Identity>) {
    cmd.env_clear()
        .envs(crate::process::passed_env())
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("HOME", g.home)
        .envs(env(g.home))
        .current_dir(g.home);
    let as_user = Confinement { identity: who.clone(), ..Default::default() };
    as_user.install(cmd);
}

fn run(mut cmd: Command, what: &str) -> miette::Result<String> {
    let out = cmd.output().into_diagnostic().wrap_err_with(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
        return Err(miette!("{what} failed ({}): {}", out.status, tail.join("\n")));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Imports each image the gateway's agents use into its own podman store (once: the tag says what
/// it is), after checking its sha256 (the one it was fetched by, or its build's record); asks
/// OpenClaw's `podman info` probe once; removes fleet's images it no longer uses. Blocking (seconds
/// for an image not imported yet).
pub fn import(g: &Boxed, who: &Option<Identity>) -> miette::Result<()> {
    let what = |i: &SandboxImage| format!("gateway {}: sandbox image {}", g.gateway, i.name);
    for i in g.images {
        let mut exists = podman(g, who);
        exists
            .args(["image", "exists", &i.tag()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if exists.status().is_ok_and(|s| s.success()) {
            continue;
        }
        // What it must be: the sha256 it was fetched by, or the one its build recorded beside it.
        let sidecar = || {
            let side = std::fs::read_to_string(format!("{}.sha256", i.file.display())).ok()?;
            side.split_whitespace().next().map(str::to_string)
        };
        let want = i.sha256.clone().or_else(sidecar);
        let Some(want) = want else {
            return Err(miette!("{}: no sha256 to check {} against", what(i), i.file.display()));
        };
        let got = crate::fsutil::sha256_file(&i.file).wrap_err_with(|| what(i))?;
        if got != want {
            return Err(miette!("{}: {} has sha256 {got}, not {want}", what(i), i.file.display()));
        }
        let tmp = g.home.join("tmp").join(format!(".sandbox-{}.tar", i.name));
        std::fs::create_dir_all(g.home.join("tmp")).into_diagnostic()?;
        rootfs::write(&i.file, &tmp).wrap_err_with(|| what(i))?;
        if let Some(id) = who {
            std::os::unix::fs::chown(&tmp, Some(id.uid), Some(id.gid)).into_diagnostic()?;
        }
        let mut cmd = podman(g, who);
        cmd.arg("import").arg(&tmp).arg(i.tag());
        let done = run(cmd, "podman import");
        let _ = std::fs::remove_file(&tmp);
        done.wrap_err_with(|| what(i))?;
    }
    let mut warm = Command::new(bin_dir(g.home).join("podman"));
    warm.args(["info", "--format", OPENCLAW_INFO_FORMAT]);
    as_gateway(&mut warm, g, who);
    run(warm, "podman info").wrap_err_with(|| format!("gateway {}", g.gateway))?;
    let mut list = podman(g, who);
    list.args(["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let wanted: Vec<String> = g.images.iter().map(SandboxImage::tag).collect();
    let listed = run(list, "podman images").wrap_err_with(|| format!("gateway {}", g.gateway))?;
    for old in
        listed.lines().filter(|t| t.starts_with(&format!("localhost/{TAG_PREFIX}")) && !wanted.contains(&t.to_string()))
    {
        let mut rmi = podman(g, who);
        rmi.args(["rmi", "--force", old]);
        let _ = run(rmi, "podman rmi");
    }
    Ok(())
}

/// Removes the gateway's sandbox containers (after the gateway stopped: OpenClaw makes them again
/// on the next turn). Blocking. Nothing to do for a gateway that never had podman's files.
pub fn remove_containers(g: &Boxed, who: &Option<Identity>) -> miette::Result<()> {
    if !conf_file(g.home).is_file() || which("podman").is_none() {
        return Ok(());
    }
    let mut cmd = podman(g, who);
    cmd.args(["rm", "--all", "--force", "--time", "0"]);
    run(cmd, "podman rm").map(|_| ()).wrap_err_with(|| format!("gateway {}: its sandboxes", g.gateway))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_wrapper(args: &[&str]) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let echo = dir.path().join("echo-args");
        std::fs::write(&echo, "#!/bin/sh\nfor a do echo \"$a\"; done\n").unwrap();
        std::fs::set_permissions(&echo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let w = dir.path().join("podman");
        std::fs::write(&w, wrapper(&echo)).unwrap();
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let out = Command::new(&w).args(args).output().unwrap();
        String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
    }

    #[test]
    fn the_wrapper_drops_keep_id_and_nothing_else() {
        let args = ["create", "--userns", "keep-id", "--name", "a b", "--network", "none", "img", "sleep", "infinity"];
        assert_eq!(run_wrapper(&args), ["create", "--name", "a b", "--network", "none", "img", "sleep", "infinity"]);
        assert_eq!(run_wrapper(&["create", "--userns=keep-id:uid=5,gid=5", "x"]), ["create", "x"]);
        assert_eq!(run_wrapper(&["create", "--userns", "host", "x"]), ["create", "--userns", "host", "x"]);
        assert_eq!(
            run_wrapper(&["exec", "-i", "c", "sh", "-c", "echo \"$HOME\""]),
            ["exec", "-i", "c", "sh", "-c", "echo \"$HOME\""]
        );
        let (me, my) = unsafe { (libc::getuid(), libc::getgid()) };
        let own = format!("{me}:{my}");
        assert_eq!(run_wrapper(&["create", "--user", &own, "x"]), ["create", "--user", "0:0", "x"]);
        assert_eq!(run_wrapper(&["exec", "-u", &me.to_string(), "x"]), ["exec", "--user", "0:0", "x"]);
        assert_eq!(run_wrapper(&["create", &format!("--user={own}"), "x"]), ["create", "--user=0:0", "x"]);
        assert_eq!(run_wrapper(&["create", "--user", "1234:1234", "x"]), ["create", "--user", "1234:1234", "x"]);
    }

    #[test]
    fn the_wrapper_answers_the_info_probe_once_and_passes_other_info_calls_on() {
        let dir = tempfile::tempdir().unwrap();
        let fake = dir.path().join("fake-podman");
        let calls = dir.path().join("calls");
        std::fs::write(
            &fake,
            format!("#!/bin/sh\necho x >> {}\nprintf 'true\\tfalse\\t\\t4.3.1\\n'\n", calls.display()),
        )
        .unwrap();
        std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let w = dir.path().join("podman");
        std::fs::write(&w, wrapper(&fake)).unwrap();
        std::fs::set_permissions(&w, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let info = |format: &str| {
            let out = Command::new(&w).args(["info", "--format", format]).env("HOME", dir.path()).output().unwrap();
            assert!(out.status.success());
            String::from_utf8(out.stdout).unwrap()
        };
        let n = || std::fs::read_to_string(&calls).unwrap_or_default().lines().count();
        assert_eq!(info(OPENCLAW_INFO_FORMAT), "true\tfalse\t\t4.3.1\n");
        assert_eq!(info(OPENCLAW_INFO_FORMAT), "true\tfalse\t\t4.3.1\n");
        assert_eq!(n(), 1, "asked podman once");
        info("{{.Version.Version}}");
        assert_eq!(n(), 2, "another format is its own answer");
        let plain = Command::new(&w).arg("info").env("HOME", dir.path()).output().unwrap();
        assert!(plain.status.success());
        assert_eq!(n(), 3, "anything else goes to podman");
    }

    #[test]
    fn the_tag_says_which_image_and_what_it_is() {
        assert_eq!(tag("sandbox", Some("0123456789abcdef0123")), "localhost/fleet-sandbox-sandbox:0123456789abcdef");
        assert_eq!(tag("sb", None), "localhost/fleet-sandbox-sb:latest");
    }
}
