//! The file key backend: `keys.json` beside the proxy config, holding only
//! sha256 hashes with alias, models and metadata. fleet's custom_auth module
//! re-reads it when it changes, so minting and revoking need no restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::fsutil::write_atomic;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyEntry {
    pub hash: String,
    pub alias: String,
    pub models: Vec<String>,
    pub metadata: BTreeMap<String, Value>,
}

#[derive(Serialize, Deserialize)]
struct Doc {
    version: u32,
    keys: Vec<KeyEntry>,
}

/// The key file, loaded once and rewritten atomically on each change.
pub struct KeyFile {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, KeyEntry>>,
}

impl KeyFile {
    pub fn load(path: &Path) -> Result<Self, String> {
        let entries = match std::fs::read(path) {
            Ok(bytes) => {
                let doc: Doc = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("key file {} is not valid: {e}", path.display()))?;
                if doc.version != 1 {
                    return Err(format!("key file {} has version {}, expected 1", path.display(), doc.version));
                }
                doc.keys.into_iter().map(|k| (k.alias.clone(), k)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read key file {}: {e}", path.display())),
        };
        Ok(KeyFile { path: path.to_path_buf(), entries: Mutex::new(entries) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every alias the file holds.
    pub fn aliases(&self) -> Vec<String> {
        self.entries.lock().expect("key file lock").keys().cloned().collect()
    }

    pub fn get(&self, alias: &str) -> Option<KeyEntry> {
        self.entries.lock().expect("key file lock").get(alias).cloned()
    }

    /// Adds or replaces the entry for `entry.alias` (one key per alias) and writes the file.
    pub fn upsert(&self, entry: KeyEntry) -> std::io::Result<()> {
        let mut map = self.entries.lock().expect("key file lock");
        if map.get(&entry.alias) == Some(&entry) && self.path.exists() {
            return Ok(());
        }
        map.insert(entry.alias.clone(), entry);
        self.write(&map)
    }

    /// Removes the alias's entry; true if there was one.
    pub fn remove(&self, alias: &str) -> std::io::Result<bool> {
        let mut map = self.entries.lock().expect("key file lock");
        if map.remove(alias).is_none() {
            return Ok(false);
        }
        self.write(&map)?;
        Ok(true)
    }

    fn write(&self, map: &BTreeMap<String, KeyEntry>) -> std::io::Result<()> {
        let doc = Doc { version: 1, keys: map.values().cloned().collect() };
        let mut bytes = serde_json::to_vec_pretty(&doc).expect("key file serialises");
        bytes.push(b'\n');
        write_atomic(&self.path, &bytes, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(alias: &str, hash: char) -> KeyEntry {
        KeyEntry {
            hash: hash.to_string().repeat(64),
            alias: alias.into(),
            models: vec!["m".into()],
            metadata: BTreeMap::from([("agent".into(), Value::from(alias))]),
        }
    }

    #[test]
    fn one_key_per_alias_sorted_and_reloadable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        let kf = KeyFile::load(&path).unwrap();
        kf.upsert(entry("fleet-bob", 'b')).unwrap();
        kf.upsert(entry("fleet-alice", 'a')).unwrap();
        kf.upsert(entry("fleet-alice", 'c')).unwrap();
        let again = KeyFile::load(&path).unwrap();
        assert_eq!(again.get("fleet-alice").unwrap().hash, "c".repeat(64));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.find("fleet-alice").unwrap() < text.find("fleet-bob").unwrap());
        assert!(again.remove("fleet-bob").unwrap());
        assert!(!again.remove("fleet-bob").unwrap());
        assert!(!std::fs::read_to_string(&path).unwrap().contains("fleet-bob"));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_an_empty_set() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        std::fs::write(&path, "{not json").unwrap();
        assert!(KeyFile::load(&path).err().unwrap().contains("not valid"));
    }
}
