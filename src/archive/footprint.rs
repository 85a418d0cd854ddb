//! Where an agent lives on this machine: the pieces an archive holds.

use std::path::{Path, PathBuf};

use crate::layout::Layout;

/// An agent's footprint on this machine. Its env file is not part of it: it holds only secrets
/// (the LiteLLM key and the daemon token), revoked with the agent and minted anew on a restore.
#[derive(Debug, Clone)]
pub struct Footprint {
    pub agent: String,
    /// The workspace (USER.md, MEMORY.md, …), in its gateway's home.
    pub workspace: PathBuf,
    /// OpenClaw's own state of the agent in its gateway's home: sessions, transcripts.
    pub gateway_state: PathBuf,
    /// fleet's home of the agent: its trace.
    pub home: PathBuf,
    /// The daemon's conversations (rows of this agent are archived).
    pub conversations: PathBuf,
}

/// The directories an archive holds, by their name inside it.
pub const PIECES: [&str; 3] = ["workspace", "gateway-state", "home"];

impl Footprint {
    pub fn of(layout: &Layout, gateway: &str, agent: &str) -> Self {
        Footprint {
            agent: agent.to_string(),
            workspace: layout.agent_workspace(gateway, agent),
            gateway_state: layout.agent_gateway_state(gateway, agent),
            home: layout.agent_home(agent),
            conversations: layout.conversations_db(),
        }
    }

    /// (name inside the archive, where it lives) for each directory.
    pub fn pieces(&self) -> [(&'static str, &Path); 3] {
        [(PIECES[0], &self.workspace), (PIECES[1], &self.gateway_state), (PIECES[2], &self.home)]
    }

    /// The env file in the agent's home (a secret: never archived).
    pub fn env_file(&self) -> PathBuf {
        self.home.join("env")
    }
}
