//! Resources: every managed thing, with an address, canonical inputs, a
//! fingerprint of those inputs, and dependencies. The desired set is computed
//! from the fleet model alone (no I/O), so plan and apply see the same thing.

mod desired;
mod desired_openclaw;

use std::collections::BTreeMap;

use serde_json::Value;

use crate::fsutil::sha256_hex;

pub use desired::{desired, proxy_base_url};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Secret,
    LitellmConfig,
    LitellmInstall,
    LitellmProxy,
    Key,
    Toolchain,
    Gateway,
    Agent,
    GatewayModels,
    Wake,
    Image,
    Import,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Secret => "secret",
            Kind::LitellmConfig => "litellm.config",
            Kind::LitellmInstall => "litellm.install",
            Kind::LitellmProxy => "litellm.proxy",
            Kind::Key => "key",
            Kind::Toolchain => "openclaw.toolchain",
            Kind::Gateway => "gateway",
            Kind::Agent => "agent",
            Kind::GatewayModels => "gateway.models",
            Kind::Wake => "wake",
            Kind::Image => "image",
            Kind::Import => "import",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        [
            Kind::Secret,
            Kind::LitellmConfig,
            Kind::LitellmInstall,
            Kind::LitellmProxy,
            Kind::Key,
            Kind::Toolchain,
            Kind::Gateway,
            Kind::Agent,
            Kind::GatewayModels,
            Kind::Wake,
            Kind::Image,
            Kind::Import,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A file a resource writes verbatim. Not part of the recorded inputs (its hash is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOut {
    pub path: std::path::PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub address: String,
    pub kind: Kind,
    /// Canonical, secret-free description of what is wanted: diffed field by field in a plan.
    pub inputs: Value,
    pub fingerprint: String,
    pub deps: Vec<String>,
    pub files: Vec<FileOut>,
}

impl Resource {
    pub fn new(address: impl Into<String>, kind: Kind, inputs: Value, deps: Vec<String>) -> Self {
        let fingerprint = fingerprint(kind, &inputs);
        Resource { address: address.into(), kind, inputs, fingerprint, deps, files: Vec::new() }
    }
    pub fn with_files(mut self, files: Vec<FileOut>) -> Self {
        self.files = files;
        self
    }
}

/// sha256 over the kind and the canonical JSON of the inputs (object keys sorted).
pub fn fingerprint(kind: Kind, inputs: &Value) -> String {
    let canonical = serde_json::to_string(&serde_json::json!({"kind": kind.as_str(), "inputs": inputs}))
        .expect("JSON values always serialise");
    sha256_hex(canonical.as_bytes())
}

/// The desired resources by address.
pub type Desired = BTreeMap<String, Resource>;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fingerprint_ignores_key_order_but_not_values() {
        let a = fingerprint(Kind::Key, &json!({"a": 1, "b": [1, 2]}));
        let b = fingerprint(Kind::Key, &serde_json::from_str(r#"{"b":[1,2],"a":1}"#).unwrap());
        let c = fingerprint(Kind::Key, &json!({"a": 1, "b": [2, 1]}));
        let d = fingerprint(Kind::LitellmConfig, &json!({"a": 1, "b": [1, 2]}));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
    }
}
