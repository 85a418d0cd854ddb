//! The fleet file: KDL or TOML → one typed, validated model. No I/O beyond
//! reading the file and checking that files it names exist.

pub mod decode;
mod decode_spend;
pub mod model;
pub mod secret;
pub mod spend_check;
mod toml_surface;
mod validate;

use std::path::{Path, PathBuf};

pub use crate::syntax::diagnostic;
pub use crate::syntax::diagnostic::{SourceFile, SpecError};
use crate::syntax::kdl_surface;
pub use model::*;

use diagnostic::{Problems, Syntax};

pub const FILE_NAMES: [&str; 2] = ["fleet.kdl", "fleet.toml"];

/// Finds the fleet file: a file path as given, or `fleet.kdl` / `fleet.toml` in a directory.
pub fn locate(path: Option<&Path>) -> Result<PathBuf, String> {
    let dir_or_file = match path {
        Some(p) => p.to_path_buf(),
        None => PathBuf::from("."),
    };
    if dir_or_file.is_file() {
        return Ok(dir_or_file);
    }
    if dir_or_file.is_dir() {
        let found: Vec<PathBuf> = FILE_NAMES.iter().map(|n| dir_or_file.join(n)).filter(|p| p.is_file()).collect();
        return match found.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "no fleet.kdl or fleet.toml in {}; pass a path, or create one (see examples/quickstart/fleet.kdl)",
                dir_or_file.display()
            )),
            _ => Err(format!(
                "both fleet.kdl and fleet.toml are in {}; keep one, or pass the file",
                dir_or_file.display()
            )),
        };
    }
    Err(format!("{} does not exist", dir_or_file.display()))
}

/// Reads and validates a fleet file.
pub fn load(path: &Path) -> Result<FleetSpec, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::unreadable(&path.display().to_string(), &e.to_string()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    let base = base.canonicalize().unwrap_or(base);
    let mut spec = parse(SourceFile::new(path.display().to_string(), text), &base)?;
    // Workspace files named by path are read now, so everything downstream works on text alone.
    for agent in &mut spec.agents {
        for src in agent.files.values_mut() {
            if let FileSource::Path(p) = src {
                let text = std::fs::read_to_string(&*p)
                    .map_err(|e| SpecError::unreadable(&p.display().to_string(), &e.to_string()))?;
                *src = FileSource::Text(text);
            }
        }
    }
    Ok(spec)
}

/// Parses fleet file text; `source.name` decides the syntax (`.toml` or KDL).
pub fn parse(source: SourceFile, base: &Path) -> Result<FleetSpec, SpecError> {
    let toml = source.name.ends_with(".toml");
    let mut problems = Problems::new(if toml { Syntax::Toml } else { Syntax::Kdl });
    problems.named_kinds = &decode::NAMED_KINDS;
    let nodes = if toml {
        toml_surface::parse(&source.text, &decode::NAMED_KINDS, &mut problems)
    } else {
        kdl_surface::parse(&source.text, &mut problems)
    };
    if !problems.is_empty() {
        return Err(problems.into_report(&source));
    }
    let first_span = nodes.first().map(|n| n.name_span).unwrap_or_else(|| (0..0).into());
    let decoded = decode::decode(&nodes, base, &mut problems);
    match validate::assemble(decoded, &source, base, first_span, &mut problems) {
        Some(spec) if problems.is_empty() => Ok(spec),
        _ => Err(problems.into_report(&source)),
    }
}

/// Resolves every secret reference the file makes (environment variables set, files readable and
/// not empty): what `plan` and `apply` do before anything else, so a missing key fails at once, at
/// its reference, instead of halfway through an apply. Values are read and dropped, never kept.
pub fn check_secrets(spec: &FleetSpec) -> Result<(), SpecError> {
    let mut problems = Problems::new(if spec.source.name.ends_with(".toml") { Syntax::Toml } else { Syntax::Kdl });
    for (key, r) in spec.secret_refs() {
        if let Err(why) = r.resolve() {
            let help = match &r.value {
                secret::SecretRef::Env(name) => {
                    format!("set {name} in the environment fleet runs in, or reference a file: `file:PATH`")
                }
                secret::SecretRef::File(_) => "create the file (mode 0600) holding only the secret".to_string(),
            };
            problems.push(diagnostic::Problem::new(format!("`{key}`: {why}"), r.span, "referenced here").help(help));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.into_report(&spec.source))
    }
}

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
