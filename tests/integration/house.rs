//! The rules of the tree (docs/architecture.md), checked on the source itself: which file
//! imports which, read from `crate::…` and `super::…` paths outside test code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") && p.file_name().is_some_and(|n| n != "tests.rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` → ["a", "b"]; `src/a/mod.rs` → ["a"]; `src/lib.rs` → [].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap().with_extension("");
    let mut segs: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    if matches!(segs.last().map(String::as_str), Some("mod" | "lib" | "main")) {
        segs.pop();
    }
    segs
}

/// The file that defines the longest prefix of `path` that is a module.
fn file_of(path: &[String], files: &BTreeMap<Vec<String>, PathBuf>) -> Option<PathBuf> {
    (0..=path.len()).rev().find_map(|n| files.get(&path[..n]).cloned())
}

/// Module paths named after `prefix` (`crate::`, `super::`, a child module's `name::`) in `code`:
/// runs of lowercase segments. A prefix inside a longer path (`a::name::`) does not count.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        let before = code[..i].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let rest = &code[i + prefix.len()..];
        let mut segs = Vec::new();
        for seg in rest.split("::") {
            let ident: String =
                seg.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
            if ident.is_empty()
                || ident.len() != seg.len() && !seg[ident.len()..].starts_with(|c: char| !c.is_alphanumeric())
            {
                break;
            }
            segs.push(&seg[..ident.len()]);
            if ident.len() != seg.len() {
                break;
            }
        }
        out.push(segs);
    }
    out
}

/// File → the files it imports (test code left out).
fn imports() -> BTreeMap<PathBuf, BTreeSet<PathBuf>> {
    let mut all = Vec::new();
    rust_files(&src(), &mut all);
    let files: BTreeMap<Vec<String>, PathBuf> = all.iter().map(|f| (module_of(f), f.clone())).collect();
    let mut out = BTreeMap::new();
    for f in &all {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let module = module_of(f);
        let mut to = BTreeSet::new();
        for p in paths_after(code, "crate::") {
            let path: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            to.extend(file_of(&path, &files));
        }
        // `super` of src/a/b.rs (module a::b) is module a; of src/a/mod.rs (module a), the crate root.
        let parent: Vec<String> = module[..module.len().saturating_sub(1)].to_vec();
        for p in paths_after(code, "super::") {
            let mut path = parent.clone();
            path.extend(p.iter().map(|s| s.to_string()));
            to.extend(file_of(&path, &files));
        }
        // Paths into its own child modules (`process::ProcessRuntime` in runtime/mod.rs).
        let children = files.keys().filter(|m| m.len() == module.len() + 1 && m.starts_with(&module));
        for child in children {
            let name = child.last().unwrap();
            for p in paths_after(code, &format!("{name}::")) {
                let mut path = child.clone();
                path.extend(p.iter().map(|s| s.to_string()));
                to.extend(file_of(&path, &files));
            }
        }
        to.remove(f);
        out.insert(f.clone(), to);
    }
    out
}

fn rel(p: &Path) -> String {
    p.strip_prefix(src()).unwrap().display().to_string()
}

#[test]
fn no_two_source_files_import_each_other() {
    let g = imports();
    let mut pairs = Vec::new();
    for (a, tos) in &g {
        for b in tos {
            if a < b && g.get(b).is_some_and(|t| t.contains(a)) {
                pairs.push(format!("{} <-> {}", rel(a), rel(b)));
            }
        }
    }
    assert!(pairs.is_empty(), "files importing each other:\n{}", pairs.join("\n"));
    assert!(g.len() > 40, "the reader found the tree ({} files)", g.len());
}

#[test]
fn the_core_and_the_helpers_stay_on_their_floors() {
    let g = imports();
    let breaks = |from: &str, forbidden: &[&str]| -> Vec<String> {
        g.iter()
            .filter(|(f, _)| rel(f).starts_with(from))
            .flat_map(|(f, tos)| {
                tos.iter()
                    .filter(|t| forbidden.iter().any(|x| rel(t).starts_with(x)))
                    .map(move |t| format!("{} imports {}", rel(f), rel(t)))
            })
            .collect()
    };
    let mut found = Vec::new();
    found.extend(breaks("plan/", &["exec/", "engine/", "cli/", "litellm/", "openclaw/", "image/", "runtime/"]));
    found.extend(breaks("process/", &["exec/", "state/", "driver.rs", "engine/", "runtime/", "litellm/", "serve/"]));
    found.extend(breaks("fsutil.rs", &["exec/", "state/", "driver.rs", "engine/", "plan/"]));
    found.extend(breaks("resource/", &["exec/", "plan/", "engine/", "driver.rs", "litellm/", "openclaw/"]));
    found.extend(breaks("fleetfile/", &["image/", "resource/", "desired/", "plan/", "exec/", "engine/"]));
    found.extend(breaks("syntax/", &["fleetfile/", "image/"]));
    found.extend(breaks("driver.rs", &["exec/", "plan/", "engine/"]));
    found.extend(breaks(
        "archive/",
        &["exec/", "plan/", "engine/", "desired/", "cli/", "openclaw/", "serve/", "litellm/"],
    ));
    for system in ["litellm/", "openclaw/", "runtime/", "image/"] {
        found.extend(breaks(system, &["exec/", "plan/", "engine/", "desired/", "cli/"]));
    }
    assert!(found.is_empty(), "imports against the floors of docs/architecture.md:\n{}", found.join("\n"));
    // The reader sees real imports: these exist.
    let edge = |a: &str, b: &str| g.iter().any(|(f, tos)| rel(f) == a && tos.iter().any(|t| rel(t) == b));
    assert!(edge("plan/diff.rs", "driver.rs"), "plan/diff.rs uses crate::driver::Drift");
    assert!(edge("runtime/process.rs", "runtime/mod.rs"), "runtime/process.rs uses super::Launch");
    assert!(edge("openclaw/models.rs", "openclaw/client.rs"), "openclaw/models.rs uses super::client");
}

/// A process that outlives fleet is started in one place: `process/` (its own session, its pid file
/// written at the spawn, adopted or stopped by the supervisor). Anything else that detaches a child
/// would escape what the supervisor — and the containment it will apply — knows.
#[test]
fn only_process_starts_detached_processes() {
    let mut all = Vec::new();
    rust_files(&src(), &mut all);
    let mut found = Vec::new();
    for f in all.iter().filter(|f| !rel(f).starts_with("process/")) {
        let text = std::fs::read_to_string(f).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        for needle in ["setsid", "pre_exec(", "process_group("] {
            if code.contains(needle) {
                found.push(format!("{} uses {needle}", rel(f)));
            }
        }
    }
    assert!(found.is_empty(), "detached processes started outside process/:\n{}", found.join("\n"));
    let spawn = std::fs::read_to_string(src().join("process/spawn.rs")).unwrap();
    assert!(spawn.contains("setsid"), "the reader looks where the one detaching spawn is");
}
