//! Secrets are only ever referenced from a fleet file (`env:NAME`, `file:PATH`);
//! a resolved secret lives in a `Secret`, whose Debug never prints it.

use std::fmt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretRef {
    Env(String),
    File(PathBuf),
}

impl SecretRef {
    /// Parses `env:NAME` or `file:PATH` (relative paths against `base`).
    /// Anything else is refused: an inline secret must never be accepted.
    pub fn parse(s: &str, base: &Path) -> Result<Self, &'static str> {
        if let Some(name) = s.strip_prefix("env:") {
            let ok = name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if name.is_empty() {
                Err("`env:` needs a variable name")
            } else if ok {
                Ok(SecretRef::Env(name.to_string()))
            } else {
                Err("a variable name is letters, digits and `_`, not starting with a digit")
            }
        } else if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                Err("`file:` needs a path")
            } else {
                Ok(SecretRef::File(base.join(path)))
            }
        } else {
            Err("inline secret")
        }
    }

    /// Reads the secret now. The error names the reference, never a value.
    pub fn resolve(&self) -> Result<Secret, String> {
        match self {
            SecretRef::Env(name) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(Secret(v)),
                _ => Err(format!("environment variable {name} is not set")),
            },
            SecretRef::File(path) => match std::fs::read_to_string(path) {
                Ok(v) if !v.trim().is_empty() => Ok(Secret(v.trim().to_string())),
                Ok(_) => Err(format!("secret file {} is empty", path.display())),
                Err(e) => Err(format!("cannot read secret file {}: {e}", path.display())),
            },
        }
    }
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(n) => write!(f, "env:{n}"),
            SecretRef::File(p) => write!(f, "file:{}", p.display()),
        }
    }
}

/// A resolved secret. Printing it shows `<redacted>`; use `expose` where the raw value must go.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: String) -> Self {
        Secret(s)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        // Best effort: overwrite the bytes before the allocation is freed.
        // SAFETY: zero bytes are valid UTF-8.
        unsafe { self.0.as_bytes_mut().fill(0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_references_and_refuses_inline_values() {
        let base = Path::new("/fleet");
        assert_eq!(SecretRef::parse("env:OPENAI_API_KEY", base), Ok(SecretRef::Env("OPENAI_API_KEY".into())));
        assert_eq!(SecretRef::parse("file:keys/or", base), Ok(SecretRef::File("/fleet/keys/or".into())));
        assert_eq!(SecretRef::parse("sk-abc123", base), Err("inline secret"));
        assert!(SecretRef::parse("env:", base).is_err());
        assert!(SecretRef::parse("env:1BAD", base).is_err());
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("sk-very-secret".into());
        assert!(!format!("{s:?}").contains("very-secret"));
    }

    #[test]
    fn resolve_errors_name_the_reference_only() {
        let r = SecretRef::Env("FLEET_TEST_SURELY_UNSET_VAR".into());
        assert_eq!(r.resolve().unwrap_err(), "environment variable FLEET_TEST_SURELY_UNSET_VAR is not set");
    }
}
