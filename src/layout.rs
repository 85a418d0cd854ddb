//! Where things live. Pure path arithmetic: nothing here touches the disk.
//!
//! - data (state, homes, configs, keys): `$XDG_DATA_HOME/fleet/<fleet>` (`~/.local/share/fleet/<fleet>`),
//!   overridden by `fleet { data-dir … }`, overridden by `--data-dir`.
//! - downloads and installs shared by all fleets: `$XDG_CACHE_HOME/fleet` (`~/.cache/fleet`).

use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct Layout {
    pub data_dir: PathBuf,
    pub cache_dir: PathBuf,
}

fn xdg(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var) {
        Some(v) if Path::new(&v).is_absolute() => PathBuf::from(v),
        _ => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/")).join(fallback),
    }
}

impl Layout {
    pub fn resolve(fleet_name: &str, from_file: Option<&Path>, from_flag: Option<&Path>) -> Self {
        let data_dir = match (from_flag, from_file) {
            (Some(flag), _) => flag.to_path_buf(),
            (None, Some(file)) => file.to_path_buf(),
            (None, None) => xdg("XDG_DATA_HOME", ".local/share").join("fleet").join(fleet_name),
        };
        Layout { data_dir, cache_dir: xdg("XDG_CACHE_HOME", ".cache").join("fleet") }
    }

    /// The daemon's own files: token, conversations, pid file, log.
    pub fn serve_dir(&self) -> PathBuf {
        self.data_dir.join("serve")
    }
    pub fn serve_token(&self) -> PathBuf {
        self.serve_dir().join("token")
    }
    pub fn conversations_db(&self) -> PathBuf {
        self.serve_dir().join("conversations.db")
    }
    pub fn state_db(&self) -> PathBuf {
        self.data_dir.join("state.db")
    }
    pub fn litellm_dir(&self) -> PathBuf {
        self.data_dir.join("litellm")
    }
    pub fn litellm_config(&self) -> PathBuf {
        self.litellm_dir().join("config.yaml")
    }
    pub fn auth_module(&self) -> PathBuf {
        self.litellm_dir().join("fleet_auth.py")
    }
    pub fn keys_file(&self) -> PathBuf {
        self.litellm_dir().join("keys.json")
    }
    /// The proxy's spend ledger (`fleet_auth.py` appends it, beside the key file).
    pub fn spend_ledger(&self) -> PathBuf {
        self.litellm_dir().join("spend.jsonl")
    }
    pub fn master_key_file(&self) -> PathBuf {
        self.litellm_dir().join("master.key")
    }
    pub fn agent_home(&self, agent: &str) -> PathBuf {
        self.data_dir.join("agents").join(agent)
    }
    /// The agent's trace: hourly buckets, in its home so they travel with it.
    pub fn agent_trace(&self, agent: &str) -> PathBuf {
        self.agent_home(agent).join("trace")
    }
    /// Trace events of no agent of this fleet (a call with the master key, an unknown key).
    pub fn other_trace(&self, agent: Option<&str>) -> PathBuf {
        self.serve_dir().join("trace").join(agent.unwrap_or("-none"))
    }
    pub fn agent_env(&self, agent: &str) -> PathBuf {
        self.agent_home(agent).join("env")
    }
    /// Archived agents: `<agent>-<UTC timestamp>/` each, with its `manifest.json`.
    /// fleet's own Incus client config (INCUS_CONF): the remotes it enrolled, its client certificate.
    pub fn incus_config_dir(&self) -> PathBuf {
        self.data_dir.join("incus")
    }
    pub fn archive_dir(&self) -> PathBuf {
        self.data_dir.join("archive")
    }
    /// An agent's workspace on this machine (its gateway's home holds it).
    pub fn agent_workspace(&self, gateway: &str, agent: &str) -> PathBuf {
        self.gateway_home(gateway).join("workspaces").join(agent)
    }
    /// What OpenClaw keeps of an agent in its gateway's state: sessions and transcripts.
    pub fn agent_gateway_state(&self, gateway: &str, agent: &str) -> PathBuf {
        self.gateway_home(gateway).join("state").join("agents").join(agent)
    }
    pub fn gateway_dir(&self, gateway: &str) -> PathBuf {
        self.data_dir.join("gateways").join(gateway)
    }
    /// The gateway's HOME: openclaw.json, state/, logs/, workspaces/ (mounted at /root in a container).
    pub fn gateway_home(&self, gateway: &str) -> PathBuf {
        self.gateway_dir(gateway).join("home")
    }
    pub fn gateway_token(&self, gateway: &str) -> PathBuf {
        self.gateway_dir(gateway).join("token")
    }
    pub fn gateway_log(&self, gateway: &str) -> PathBuf {
        self.gateway_dir(gateway).join("gateway.log")
    }
    /// A process host's image store: the image's /usr/local unpacked (one per host, so two process
    /// hosts of one fleet never unpack into the same place at once).
    pub fn image_store(&self, host: &str, image: &str) -> PathBuf {
        self.data_dir.join("images").join(host).join(image)
    }
}
