//! Where a gateway runs. One trait, two real implementations: `process` (the
//! embedded default: a detached local process) and `incus` (a container).

pub mod by_kind;
pub mod confine;
pub mod handle;
pub mod incus;
pub mod incus_cli;
pub mod incus_host;
pub mod incus_trust;
pub mod process;
pub mod sandbox;
pub mod toolchain;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use handle::{ContainerHandle, Handle};
use toolchain::Toolchain;

/// Everything a runtime needs to start one gateway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Launch {
    pub gateway: String,
    /// The gateway's home on this machine (config, state, logs, workspaces).
    pub home: PathBuf,
    pub port: u16,
    /// Where the runtime sends the gateway's stdout and stderr.
    pub log: PathBuf,
    /// Process runtime: the cached Node + openclaw …
    pub toolchain: Option<Toolchain>,
    /// … or an image's, unpacked into this machine's image store (its `/usr/local` is under here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_root: Option<PathBuf>,
    /// Incus runtime: the container, the image alias it starts from, the remote (local daemon when
    /// absent), and host ports the gateway must reach on its own loopback (the LiteLLM proxy).
    #[serde(default)]
    pub container: Option<Container>,
    /// What the gateway may take of its host (`limits` in the fleet file).
    #[serde(default, skip_serializing_if = "crate::fleetfile::Limits::is_none")]
    pub limits: crate::fleetfile::Limits,
    /// Process runtime: the images its agents' tools run from, in podman sandboxes (`sandbox.rs`).
    /// A gateway with any gives up Landlock (podman cannot start inside a Landlock domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sandboxes: Vec<sandbox::SandboxImage>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub remote: Option<String>,
    pub forward: Vec<u16>,
    /// Where a forwarded port's listener is, seen from the container's host (`127.0.0.1` when
    /// absent): the address the proxy or the daemon binds on this machine.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub forward_to: std::collections::BTreeMap<u16, String>,
    /// The Incus client config (INCUS_CONF) that knows `remote`; the caller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incus_config: Option<PathBuf>,
    /// On another host: the address of that host where the gateway's port is published (and
    /// fleet reaches it). Its home is then the container's own `/root`, kept with the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// `listen` was not written out: on a cluster the port is published on the address of the
    /// member the container lands on instead (`listen` is then the host's address).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub listen_on_member: bool,
    /// A cluster member (`m2`) or group (`@gpu`) to place the container on; Incus's own
    /// placement when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

impl Container {
    /// Whether the container runs on another machine (its home there, not on this one).
    pub fn elsewhere(&self) -> bool {
        self.remote.is_some()
    }
}

/// A file fleet places in a gateway's home before it starts (path relative to the home).
#[derive(Debug, Clone)]
pub struct HomeFile {
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

impl Launch {
    pub fn config_file(&self) -> PathBuf {
        self.home.join("openclaw.json")
    }

    /// Whether the gateway's home is on this machine (a process, or a container of the local incusd).
    pub fn home_is_here(&self) -> bool {
        self.container.as_ref().is_none_or(|c| !c.elsewhere())
    }

    /// Whether fleet reaches the gateway over TLS: one on another host is reached across a network
    /// (`wss://`, the certificate fleet minted for it and pinned); one here on its loopback (`ws://`).
    pub fn over_tls(&self) -> bool {
        !self.home_is_here()
    }

    /// `ws` or `wss`, as `over_tls` says.
    pub fn scheme(&self) -> &'static str {
        if self.over_tls() {
            "wss"
        } else {
            "ws"
        }
    }
}

/// `Runtime::logs` for a home on this machine.
pub fn logs_here(l: &Launch) -> String {
    let own = l.home.join("logs/openclaw.log");
    format!(
        "last lines of {}:\n{}\nlast lines of {}:\n{}",
        l.log.display(),
        crate::process::log_tail(&l.log, 15),
        own.display(),
        crate::process::log_tail(&own, 10)
    )
}

/// `place` for a home on this machine.
pub async fn place_in_home_here(l: &Launch, files: &[HomeFile]) -> miette::Result<()> {
    let (home, files) = (l.home.clone(), files.to_vec());
    tokio::task::spawn_blocking(move || place_here(&home, &files))
        .await
        .map_err(|e| miette::miette!("{e}"))?
        .map_err(|e| miette::miette!("cannot write into {}: {e}", l.home.display()))
}

/// Writes `files` into a home on this machine (only what differs).
fn place_here(home: &std::path::Path, files: &[HomeFile]) -> std::io::Result<()> {
    for f in files {
        let p = home.join(&f.path);
        if std::fs::read(&p).ok().as_deref() != Some(f.content.as_slice()) {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            crate::fsutil::write_atomic(&p, &f.content, f.mode)?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Starts the gateway; returns a handle (recorded in state) to find it again.
    async fn start(&self, l: &Launch) -> miette::Result<Handle>;
    async fn stop(&self, l: &Launch, handle: &Handle) -> miette::Result<()>;
    /// This fleet's processes of the gateway that no handle may name: on the process runtime every
    /// session working inside its home (one spawned by a run killed before it wrote the handle
    /// file, not listening yet); never a process by its name alone.
    async fn strays(&self, _l: &Launch) -> Vec<Handle> {
        Vec::new()
    }
    /// Whether the gateway's port is taken on this machine, and by whom (before a start).
    fn port_taken(&self, l: &Launch) -> Option<String> {
        (l.home_is_here() && crate::process::port_open("127.0.0.1", l.port))
            .then(|| crate::process::port_holder(l.port))
    }
    /// The last lines of the gateway's output and of OpenClaw's own log, for an error.
    async fn logs(&self, l: &Launch) -> String {
        logs_here(l)
    }
    /// Puts `files` into the gateway's home (before `start`).
    async fn place(&self, l: &Launch, files: &[HomeFile]) -> miette::Result<()> {
        place_in_home_here(l, files).await
    }
    /// A file of the gateway's home (path relative to it); None when it is not there, an error when
    /// it cannot be read (never taken for "not there": a caller would write over what it holds).
    async fn read_home(&self, l: &Launch, path: &std::path::Path) -> miette::Result<Option<Vec<u8>>> {
        read_here(&l.home.join(path)).await
    }
    /// Moves a directory of the gateway's home (relative path) to the same place in its directory on
    /// this machine, where an archive takes it from. Nothing to do when the home is here.
    async fn bring_here(&self, _l: &Launch, _path: &std::path::Path) -> miette::Result<()> {
        Ok(())
    }
    /// The inverse of `bring_here`: a directory under the gateway's directory on this machine (an
    /// agent's footprint a restore or a move put there) pushed into the same place of a home on
    /// another host, replacing what is there, then removed here. Nothing to do when the home is here.
    async fn send_there(&self, _l: &Launch, _path: &std::path::Path) -> miette::Result<()> {
        Ok(())
    }
    /// Whether the gateway's home holds `path` (relative to it).
    async fn home_has(&self, l: &Launch, path: &std::path::Path) -> bool {
        tokio::fs::try_exists(l.home.join(path)).await.unwrap_or(false)
    }
    /// Why the gateway's host cannot be asked about it now (another machine that does not answer);
    /// None when it can.
    async fn unreachable(&self, _l: &Launch, _handle: &Handle) -> Option<String> {
        None
    }
    /// Removes what the gateway leaves behind once it is deleted for good (a remote container
    /// holding its home). Nothing on this machine: its home stays, as ever.
    async fn discard(&self, _l: &Launch) -> miette::Result<()> {
        Ok(())
    }
    /// Whether what the handle names still runs.
    async fn running(&self, handle: &Handle) -> bool;
    /// Where fleet reaches the gateway's WebSocket: this machine's loopback (`ws://`; where the
    /// local incus runtime's proxy device listens too), or the address a gateway on another host is
    /// published on (`wss://`).
    fn url(&self, l: &Launch) -> String {
        let host = l.container.as_ref().and_then(|c| c.listen.as_deref()).unwrap_or("127.0.0.1");
        format!("{}://{}", l.scheme(), crate::netaddr::join_host_port(host, l.port))
    }
    /// Where fleet reaches the gateway the handle names (its runtime may publish it elsewhere than
    /// `url` says: a container on a cluster, on the member it landed on).
    fn url_of(&self, l: &Launch, handle: &Handle) -> String {
        match handle.container().and_then(|c| c.listen.as_deref()) {
            Some(ip) => format!("{}://{}", l.scheme(), crate::netaddr::join_host_port(ip, l.port)),
            None => self.url(l),
        }
    }
    /// How the gateway sees its own home (for workspace paths given over RPC).
    fn home_inside(&self, l: &Launch) -> PathBuf {
        l.home.clone()
    }
}

/// A file on this machine; None when it is not there, an error naming it when it cannot be read.
pub async fn read_here(path: &std::path::Path) -> miette::Result<Option<Vec<u8>>> {
    match tokio::fs::read(path).await {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(miette::miette!("cannot read {}: {e}", path.display())),
    }
}
