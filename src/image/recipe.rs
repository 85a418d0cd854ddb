//! Image recipes (`recipes/*.kdl`): a declarative description of an OpenClaw base
//! image, parsed with the same span diagnostics as the fleet file.

use std::path::{Path, PathBuf};

use crate::syntax::diagnostic::{choices_help, Problem, Problems, SourceFile, SpecError, Syntax};
use crate::syntax::kdl_surface;
use crate::syntax::reader::Reader;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Recipe {
    pub name: String,
    pub description: String,
    pub distribution: String,
    pub suite: String,
    pub variant: String,
    pub mirror: String,
    pub packages: Vec<String>,
    /// Node from the npm registry's `node-linux-<arch>`, into /usr/local.
    pub node: Option<String>,
    /// `openclaw@<version>`, installed globally under /usr/local.
    pub openclaw: Option<String>,
    /// Files copied in: (source relative to the recipe's directory, destination in the image, mode).
    pub files: Vec<CopyFile>,
    /// Shell commands run in the image root, in order.
    pub run: Vec<String>,
    /// Extra `properties` for the image's metadata.yaml.
    pub properties: Vec<(String, String)>,
    /// Every timestamp in the image is clamped to this (seconds since the epoch).
    pub source_date_epoch: u64,
    #[serde(skip)]
    pub dir: PathBuf,
    /// The npm lock beside the recipe (`<name>.lock.json`), when `fleet image lock` wrote one.
    #[serde(skip)]
    pub lock: Option<PathBuf>,
}

/// `recipes/openclaw-base.kdl` → `recipes/openclaw-base.lock.json`.
pub fn lock_path(recipe: &Path) -> PathBuf {
    recipe.with_extension("lock.json")
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CopyFile {
    pub from: PathBuf,
    pub to: String,
    pub mode: u32,
}

const TOP: [&str; 1] = ["recipe"];
pub const VARIANTS: [&str; 4] = ["minbase", "essential", "apt", "required"];

pub fn load(path: &Path) -> Result<Recipe, SpecError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| SpecError::unreadable(&path.display().to_string(), &e.to_string()))?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
    let mut r = parse(SourceFile::new(path.display().to_string(), text), &dir)?;
    r.lock = Some(lock_path(path)).filter(|p| p.is_file());
    Ok(r)
}

pub fn parse(source: SourceFile, dir: &Path) -> Result<Recipe, SpecError> {
    let mut p = Problems::new(Syntax::Kdl);
    let nodes = kdl_surface::parse(&source.text, &mut p);
    if !p.is_empty() {
        return Err(p.into_report(&source));
    }
    let mut recipe = None;
    for n in &nodes {
        if n.name != "recipe" {
            p.push(
                Problem::new(format!("unknown node `{}`", n.name), n.name_span, "unknown node")
                    .help(choices_help(&n.name, &TOP)),
            );
            continue;
        }
        if recipe.is_some() {
            p.push(
                Problem::new("a file holds one recipe", n.name_span, "second recipe")
                    .help("put each recipe in its own file"),
            );
            continue;
        }
        let mut r = Reader::new(n, &mut p);
        let name = r.name("recipe \"openclaw-base\" { … }");
        let description = r.str_opt("description").map(|s| s.value).unwrap_or_default();
        let node = r.str_opt("node");
        let openclaw = r.str_opt("openclaw");
        let packages = r.list("packages");
        let sde = r.int_opt("source-date-epoch", 0, i128::from(u32::MAX)).map(|v| v.value as u64);
        let run: Vec<String> = r
            .children("run")
            .iter()
            .flat_map(|c| c.args.iter())
            .filter_map(|a| match &a.value {
                crate::syntax::raw::RawValue::Str(s) => Some(s.clone()),
                _ => None,
            })
            .collect();
        let base = r.child("base");
        let file_nodes = r.children("file");
        let metadata = r.child("metadata");
        let span = r.span();
        r.finish();
        let (mut distribution, mut suite, mut variant, mut mirror) =
            ("debian".to_string(), None, "minbase".to_string(), "http://deb.debian.org/debian".to_string());
        match base {
            Some(b) => {
                let mut br = Reader::new(b, &mut p);
                if let Some(d) = br.str_opt("distribution") {
                    if d.value != "debian" {
                        br.problems.push(
                            Problem::new(format!("unsupported distribution {:?}", d.value), d.span, "unsupported")
                                .help("images are built from Debian (mmdebstrap)"),
                        );
                    }
                    distribution = d.value;
                }
                suite = br.str_opt("suite");
                if let Some(v) = br.str_opt("variant") {
                    if !VARIANTS.contains(&v.value.as_str()) {
                        br.problems.push(
                            Problem::new(format!("unknown variant {:?}", v.value), v.span, "unknown variant")
                                .help(choices_help(&v.value, &VARIANTS)),
                        );
                    }
                    variant = v.value;
                }
                if let Some(m) = br.str_opt("mirror") {
                    mirror = m.value;
                }
                br.finish();
            }
            None => p.push(
                Problem::new("a recipe needs a `base`", span, "base missing")
                    .help("add `base distribution=\"debian\" suite=\"bookworm\" variant=\"minbase\"`"),
            ),
        }
        let mut files = Vec::new();
        for f in file_nodes {
            let mut fr = Reader::new(f, &mut p);
            let from =
                fr.arg_str("a source path", "file \"images/openclaw-base/init\" to=\"/usr/local/sbin/fleet-init\"");
            let to = fr.str_opt("to");
            let mode = fr.str_opt("mode");
            fr.finish();
            let (Some(from), Some(to)) = (from, to) else {
                if !f.props.iter().any(|p| p.key == "to") {
                    p.push(
                        Problem::new("`file` needs `to`", f.name_span, "destination missing")
                            .help("add to=\"/path/in/the/image\""),
                    );
                }
                continue;
            };
            let src = dir.join(&from.value);
            if !src.is_file() {
                p.push(
                    Problem::new(format!("file not found: {}", from.value), from.span, "no such file")
                        .help("paths are relative to the recipe's directory"),
                );
            }
            if !to.value.starts_with('/') {
                p.push(Problem::new("`to` must be an absolute path in the image", to.span, "not absolute"));
            }
            let mode_value = match &mode {
                None => 0o644,
                Some(m) => match u32::from_str_radix(m.value.trim_start_matches("0o"), 8) {
                    Ok(v) if v <= 0o7777 => v,
                    _ => {
                        p.push(
                            Problem::new(format!("invalid mode {:?}", m.value), m.span, "not an octal mode")
                                .help("e.g. mode=\"0755\""),
                        );
                        0o644
                    }
                },
            };
            files.push(CopyFile { from: src, to: to.value, mode: mode_value });
        }
        let mut properties = Vec::new();
        if let Some(m) = metadata {
            for c in &m.children {
                if let [one] = c.args.as_slice() {
                    if let crate::syntax::raw::RawValue::Str(v) = &one.value {
                        properties.push((c.name.clone(), v.clone()));
                        continue;
                    }
                }
                p.push(
                    Problem::new(format!("metadata `{}` needs one string", c.name), c.name_span, "here")
                        .help("write `os \"debian\"`"),
                );
            }
        }
        if let Some(v) = &node {
            if !crate::fleetfile::decode::node_version_ok(&v.value) {
                p.push(
                    Problem::new(format!("OpenClaw refuses Node {}", v.value), v.span, "refused Node version")
                        .help("OpenClaw needs Node >=24.16.0 <25 or >=26.1.0"),
                );
            }
        }
        if openclaw.is_some() && node.is_none() {
            p.push(Problem::new("openclaw needs `node`", span, "node missing").help("add `node \"24.21.0\"`"));
        }
        let (Some(name), Some(suite)) = (name, suite) else {
            if base.is_some() && !base.is_some_and(|b| b.props.iter().any(|p| p.key == "suite")) {
                p.push(
                    Problem::new("`base` needs a `suite`", base.map(|b| b.name_span).unwrap_or(span), "suite missing")
                        .help("e.g. suite=\"bookworm\""),
                );
            }
            continue;
        };
        recipe = Some(Recipe {
            name: name.value,
            description,
            distribution,
            suite: suite.value,
            variant,
            mirror,
            packages: packages.into_iter().map(|p| p.value).collect(),
            node: node.map(|v| v.value),
            openclaw: openclaw.map(|v| v.value),
            files,
            run,
            properties,
            source_date_epoch: sde.unwrap_or(1_767_225_600),
            dir: dir.to_path_buf(),
            lock: None,
        });
    }
    if recipe.is_none() && p.is_empty() {
        p.push(
            Problem::new("no `recipe` in this file", (0..0).into(), "empty")
                .help("start with `recipe \"name\" { base … }`"),
        );
    }
    match recipe {
        Some(r) if p.is_empty() => Ok(r),
        _ => Err(p.into_report(&source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_recipe_and_points_at_mistakes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hello.txt"), "hi").unwrap();
        let ok = r#"recipe "tiny" {
    base distribution="debian" suite="bookworm" variant="minbase"
    packages "ca-certificates" "tini"
    file "hello.txt" to="/etc/hello.txt" mode="0600"
    run "echo built > /etc/built"
    metadata { os "debian"; release "bookworm" }
}"#;
        let r = parse(SourceFile::new("tiny.kdl", ok.into()), dir.path()).unwrap();
        assert_eq!((r.name.as_str(), r.suite.as_str(), r.variant.as_str()), ("tiny", "bookworm", "minbase"));
        assert_eq!(r.packages, vec!["ca-certificates", "tini"]);
        assert_eq!(r.files[0].mode, 0o600);
        assert_eq!(r.run, vec!["echo built > /etc/built"]);
        assert_eq!(r.properties, vec![("os".into(), "debian".into()), ("release".into(), "bookworm".into())]);

        let bad = ok.replace("minbase", "minbsae").replace("hello.txt\"", "missing.txt\"");
        let e = parse(SourceFile::new("tiny.kdl", bad), dir.path()).unwrap_err();
        let msgs: Vec<String> = e.problems().map(|p| p.message.clone()).collect();
        assert!(msgs.contains(&"unknown variant \"minbsae\"".to_string()), "{msgs:?}");
        assert!(msgs.contains(&"file not found: missing.txt".to_string()), "{msgs:?}");
    }
}
