//! The vocabulary every layer shares: a resource's `Kind`, its typed `Address`, its
//! canonical inputs and their fingerprint, its dependencies and the files it writes.
//! No I/O; what the fleet wants is computed in `desired/`.

mod address;
mod kind;

use std::collections::BTreeMap;

use miette::{IntoDiagnostic, WrapErr};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use crate::fsutil::sha256_hex;

pub use address::{Address, BadAddress};
pub use kind::Kind;

/// A file a resource writes verbatim. Not part of the recorded inputs (its hash is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOut {
    pub path: std::path::PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, Clone)]
pub struct Resource {
    pub address: Address,
    pub kind: Kind,
    /// Canonical, secret-free description of what is wanted: diffed field by field in a plan.
    /// Written from the kind's inputs type by the desired side, read back through the same type
    /// by its driver (`inputs_as`).
    pub inputs: Value,
    pub fingerprint: String,
    pub deps: Vec<Address>,
    pub files: Vec<FileOut>,
    /// Where it runs, for people (`host edge`): shown in plans, never compared.
    pub place: Option<String>,
}

impl Resource {
    /// `inputs`: the kind's inputs type (`GatewayInputs`, `KeyInputs`, …).
    pub fn new(address: Address, inputs: &impl Serialize, deps: Vec<Address>) -> Self {
        let inputs = serde_json::to_value(inputs).expect("resource inputs serialise to JSON");
        let kind = address.kind();
        let fingerprint = fingerprint(kind, &inputs);
        Resource { address, kind, inputs, fingerprint, deps, files: Vec::new(), place: None }
    }
    pub fn placed(mut self, place: Option<String>) -> Self {
        self.place = place;
        self
    }
    pub fn with_files(mut self, files: Vec<FileOut>) -> Self {
        self.files = files;
        self
    }
    /// The inputs, read back as the kind's inputs type.
    pub fn inputs_as<T: DeserializeOwned>(&self) -> miette::Result<T> {
        read_inputs(&self.inputs, &self.address.to_string())
    }
    /// The dependencies as the state records them.
    pub fn dep_strings(&self) -> Vec<String> {
        self.deps.iter().map(Address::to_string).collect()
    }
    /// Whether this resource depends on `address`.
    pub fn depends_on(&self, address: &str) -> bool {
        self.deps.iter().any(|d| d.to_string() == address)
    }
}

/// Inputs (desired or recorded) as the kind's inputs type; the error names the resource.
pub fn read_inputs<T: DeserializeOwned>(inputs: &Value, address: &str) -> miette::Result<T> {
    serde_json::from_value(inputs.clone()).into_diagnostic().wrap_err_with(|| format!("unreadable inputs of {address}"))
}

/// sha256 over the kind and the canonical JSON of the inputs (object keys sorted).
pub fn fingerprint(kind: Kind, inputs: &Value) -> String {
    let canonical = serde_json::to_string(&serde_json::json!({"kind": kind.as_str(), "inputs": inputs}))
        .expect("JSON values always serialise");
    sha256_hex(canonical.as_bytes())
}

/// The desired resources by address (as text: the order plans are printed in).
pub type Desired = BTreeMap<String, Resource>;

/// Adds a resource to a desired set under its address.
pub fn add(d: &mut Desired, r: Resource) {
    d.insert(r.address.to_string(), r);
}

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
