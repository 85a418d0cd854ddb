//! `image "name" { … }`: an OpenClaw base image, built from a recipe or fetched.

use std::collections::BTreeMap;
use std::path::Path;

use super::common::{check_slug, missing_file_help};
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{choices_help, Problem, Problems, Syntax};
use crate::syntax::raw::RawNode;
use crate::syntax::reader::Reader;

pub(super) fn image(n: &RawNode, base: &Path, p: &mut Problems) -> Option<Image> {
    let mut r = Reader::new(n, p);
    let name = r.name("image \"openclaw-base\" { recipe \"recipes/openclaw-base.kdl\" }");
    let recipe = r.str_opt("recipe").map(|s| Spanned::new(base.join(&s.value), s.span));
    let mut urls = BTreeMap::new();
    let url_nodes = r.children("url");
    for u in &url_nodes {
        let mut ur = Reader::new(u, r.problems);
        let url = ur.arg_or("url", "a URL", "url \"https://…/openclaw-base-amd64.tar.gz\" arch=\"amd64\" sha256=\"…\"");
        let arch = ur.str_opt("arch");
        let sha = ur.str_opt("sha256");
        let missing: Vec<&str> = ["arch", "sha256"].into_iter().filter(|k| !ur.attempted(k)).collect();
        ur.finish();
        let (Some(url), Some(arch), Some(sha)) = (url, arch, sha) else {
            if !missing.is_empty() {
                let what = missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ");
                let example = r.syntax().pick(
                    "url \"https://…\" arch=\"amd64\" sha256=\"<64 hex digits>\"",
                    "url = [{ url = \"https://…\", arch = \"amd64\", sha256 = \"<64 hex digits>\" }]",
                );
                r.problems.push(
                    Problem::new(format!("an image `url` needs {what}"), u.name_span, "incomplete")
                        .help(format!("write `{example}`")),
                );
            }
            continue;
        };
        let Some(a) = Arch::parse(&arch.value) else {
            r.problems.push(
                Problem::new(format!("unknown architecture {:?}", arch.value), arch.span, "unknown")
                    .help(choices_help(&arch.value, &Arch::ALL)),
            );
            continue;
        };
        if sha.value.len() != 64 || !sha.value.chars().all(|c| c.is_ascii_hexdigit()) {
            r.problems.push(
                Problem::new("`sha256` must be 64 hex digits", sha.span, "not a sha256")
                    .help("copy it from the image's .sha256 file"),
            );
            continue;
        }
        if urls.insert(a, ImageUrl { url: url.value, sha256: sha.value.to_ascii_lowercase() }).is_some() {
            r.problems.push(
                Problem::new(format!("two URLs for {}", a.as_str()), arch.span, "second URL for this arch")
                    .help("give each architecture one URL"),
            );
        }
    }
    let recipe_attempted = r.attempted("recipe");
    r.finish();
    let name = name?;
    check_slug(p, "image", &name);
    let span = name.span;
    if recipe.is_none() && url_nodes.is_empty() && !recipe_attempted {
        p.push(
            Problem::new(format!("image {:?} has no source", name.value), span, "neither recipe nor url")
                .help(match p.syntax {
                    Syntax::Kdl => "give a `recipe \"recipes/….kdl\"` to build it, or `url … arch=… sha256=…` to fetch it",
                    Syntax::Toml => "give `recipe = \"recipes/….kdl\"` to build it, or `url = [{ url = …, arch = …, sha256 = … }]` to fetch it",
                }),
        );
    }
    if let Some(rec) = &recipe {
        if !rec.value.is_file() {
            let given = rec.value.strip_prefix(base).unwrap_or(&rec.value).display().to_string();
            p.push(
                Problem::new(format!("recipe file not found: {given}"), rec.span, "no such file")
                    .help(missing_file_help(base, &given)),
            );
        }
    }
    Some(Image { name, recipe, urls })
}
