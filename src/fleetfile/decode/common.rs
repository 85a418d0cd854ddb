//! What the sections share: names (slugs), secret references, file paths, durations, versions.

use std::path::{Path, PathBuf};

use crate::fleetfile::model::*;
use crate::fleetfile::secret::SecretRef;
use crate::syntax::diagnostic::{did_you_mean, Problem, Problems};
use crate::syntax::reader::Reader;

/// Help for a path that does not exist: the closest file in the same directory, if any.
pub(super) fn missing_file_help(base: &Path, given: &str) -> String {
    let rel = Path::new(given);
    let dir = rel.parent().unwrap_or(Path::new(""));
    let file = rel.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let siblings: Vec<String> = std::fs::read_dir(base.join(dir))
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    match did_you_mean(&file, siblings.iter().map(String::as_str)) {
        Some(s) => {
            format!("did you mean \"{}\"? (paths are relative to the fleet file's directory)", dir.join(s).display())
        }
        None => format!("paths are relative to the fleet file's directory ({})", base.display()),
    }
}

/// Names become addresses, ids, aliases and directory names: keep them plain.
pub fn check_slug(p: &mut Problems, what: &str, name: &Spanned<String>) {
    let s = name.value.as_str();
    let ok = !s.is_empty()
        && s.len() <= 63
        && s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !ok {
        let suggestion: String = s
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
            .collect::<String>()
            .trim_matches(|c| c == '-' || c == '_')
            .chars()
            .take(63)
            .collect();
        let help = if !suggestion.is_empty() && suggestion != s {
            format!("try \"{suggestion}\": {what} names are lowercase letters, digits, `-` and `_` (at most 63)")
        } else {
            format!("{what} names are 1–63 lowercase letters, digits, `-` or `_`, starting with a letter or digit")
        };
        p.push(Problem::new(format!("invalid {what} name {s:?}"), name.span, "invalid name").help(help));
    }
}

pub(super) fn expand_home(s: &str) -> PathBuf {
    match s.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map(PathBuf::from).unwrap_or_default().join(rest),
        None => PathBuf::from(s),
    }
}

/// A secret reference; `env_example` names a plausible variable for the help.
pub(super) fn secret(r: &mut Reader, key: &'static str, base: &Path, env_example: &str) -> Option<Spanned<SecretRef>> {
    let v = r.str_opt(key)?;
    let example = r.syntax().assign(key, &format!("\"env:{env_example}\""));
    match SecretRef::parse(&v.value, base) {
        Ok(s) => Some(Spanned::new(s, v.span)),
        Err("inline secret") => {
            let shell_var = v.value.strip_prefix('$').map(|n| n.trim_matches(|c| c == '{' || c == '}'));
            let problem = match shell_var {
                Some(var) if !var.is_empty() && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') => {
                    Problem::new(format!("`{key}` looks like a shell variable"), v.span, "not expanded by fleet").help(
                        format!(
                            "reference the variable with env:, e.g. `{}`",
                            r.syntax().assign(key, &format!("\"env:{var}\""))
                        ),
                    )
                }
                _ => Problem::new(format!("`{key}` holds an inline secret"), v.span, "secret written into the file")
                    .help(format!("never commit a secret; reference it: `{example}` (or \"file:PATH\")")),
            };
            r.problems.push(problem);
            None
        }
        Err(why) => {
            r.problems.push(Problem::new(format!("invalid secret reference in `{key}`"), v.span, why).help(format!(
                "write \"env:NAME\" for an environment variable, e.g. `{example}`,\nor \"file:PATH\" for a file (relative to the fleet file)"
            )));
            None
        }
    }
}

pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    (n > 0).then_some(n * mult)
}

/// Node versions OpenClaw accepts (its `engines`: `>=24.16.0 <25 || >=26.1.0`).
pub fn node_version_ok(v: &str) -> bool {
    let parts: Vec<u64> = v.split('.').map(|x| x.parse().unwrap_or(0)).collect();
    let (major, minor) = (parts.first().copied().unwrap_or(0), parts.get(1).copied().unwrap_or(0));
    parts.len() == 3 && ((major == 24 && minor >= 16) || (major == 26 && minor >= 1) || major > 26)
}
