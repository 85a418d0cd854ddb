//! Where a gateway runs. One trait, two real implementations: `process` (the
//! embedded default: a detached local process) and `incus` (a container).

pub mod by_kind;
pub mod incus;
pub mod incus_host;
pub mod process;
pub mod toolchain;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub remote: Option<String>,
    pub forward: Vec<u16>,
}

impl Launch {
    pub fn config_file(&self) -> PathBuf {
        self.home.join("openclaw.json")
    }
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    /// Starts the gateway; returns a handle (recorded in state) to find it again.
    async fn start(&self, l: &Launch) -> miette::Result<Value>;
    async fn stop(&self, l: &Launch, handle: &Value) -> miette::Result<()>;
    /// Whether what the handle names still runs.
    async fn running(&self, handle: &Value) -> bool;
    /// Where fleet reaches the gateway's WebSocket (both runtimes: this machine's loopback, where
    /// the incus runtime's proxy device listens).
    fn url(&self, l: &Launch) -> String {
        format!("ws://127.0.0.1:{}", l.port)
    }
    /// How the gateway sees its own home (for workspace paths given over RPC).
    fn home_inside(&self, l: &Launch) -> PathBuf {
        l.home.clone()
    }
}
