//! What a runtime records to find a gateway again: its process (pid and start time) or its
//! container. Kept in state and in the gateway's handle file in the shape they always had
//! (`{"pid": {"pid": N, "start": T}}`, `{"container": "…", "remote": …}`).

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::process::Pid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Handle {
    /// A detached local process, the leader of its own session.
    Process {
        pid: Pid,
    },
    Container(ContainerHandle),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerHandle {
    pub container: String,
    /// The Incus remote it is on (this machine's incusd when absent).
    pub remote: Option<String>,
    /// The Incus client config that knows `remote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incus_config: Option<PathBuf>,
    /// Where its port is published when that is not the launch's own address (a cluster member's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The cluster member its last start placed it on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
}

impl Handle {
    /// The handle a record's outputs hold (`{"handle": …}`), if any.
    pub fn recorded_in(outputs: &serde_json::Value) -> Option<Handle> {
        serde_json::from_value(outputs.get("handle")?.clone()).ok()
    }

    pub fn pid(&self) -> Option<Pid> {
        match self {
            Handle::Process { pid } => Some(*pid),
            Handle::Container(_) => None,
        }
    }

    pub fn container(&self) -> Option<&ContainerHandle> {
        match self {
            Handle::Container(c) => Some(c),
            Handle::Process { .. } => None,
        }
    }
}

/// "pid 123" or "container fleet-x-main", for messages.
impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Handle::Process { pid } => write!(f, "pid {}", pid.pid),
            Handle::Container(c) => write!(f, "container {}", c.container),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_keep_the_shape_state_has_always_had() {
        let p = Handle::Process { pid: Pid { pid: 12, start: 34 } };
        assert_eq!(serde_json::to_value(&p).unwrap(), serde_json::json!({"pid": {"pid": 12, "start": 34}}));
        let old =
            serde_json::json!({"container": "fleet-q-main", "remote": null, "listen": "10.0.0.2", "member": "m2"});
        let c: Handle = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(c.container().unwrap().member.as_deref(), Some("m2"));
        assert_eq!(serde_json::to_value(&c).unwrap(), old);
        assert_eq!(c.to_string(), "container fleet-q-main");
        assert_eq!(p.to_string(), "pid 12");
        assert!(serde_json::from_value::<Handle>(serde_json::json!(null)).is_err());
    }
}
