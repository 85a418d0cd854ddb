//! `agent "name" gateway=… model=… { … }`: one agent, its files, identity, heartbeat and spend.

use std::collections::BTreeMap;
use std::path::Path;

use super::common::{check_slug, missing_file_help, parse_duration};
use crate::fleetfile::model::*;
use crate::syntax::diagnostic::{did_you_mean, Problem, Problems};
use crate::syntax::raw::{RawNode, RawValue};
use crate::syntax::reader::Reader;

pub struct AgentRaw {
    pub name: Spanned<String>,
    pub gateway: Option<Spanned<String>>,
    /// `gateway` is written but invalid (already reported).
    pub gateway_attempted: bool,
    pub model: Option<Spanned<String>>,
    /// `model` is written but invalid, or misspelt (already reported).
    pub model_attempted: bool,
    pub rest: Agent,
}

pub(super) fn agent(n: &RawNode, base: &Path, p: &mut Problems) -> Option<AgentRaw> {
    let mut r = Reader::new(n, p);
    let syntax = r.syntax();
    let name = r.name("agent \"alice\" gateway=\"main\" model=\"demo-small\"");
    let gateway = r.str_opt("gateway");
    let model = r.str_opt("model");
    let fallbacks = r.list("fallback");
    let wake = r.str_opt("wake").map(|w| w.value);
    let fresh = r.bool_opt("fresh");
    let restore = r.str_opt("restore");
    let wake_restored = r.str_opt("wake-restored").map(|w| w.value);
    if let Some(id) = &restore {
        if crate::archive::agent_of(&id.value).is_none() {
            r.problems.push(
                Problem::new(format!("{:?} is not an archive id", id.value), id.span, "not an archive id")
                    .help("an archive id is the agent's name and its UTC time, e.g. \"alice-20261129T070000Z\"; `fleet archive list` shows them"),
            );
        }
        if let Some(f) = fresh.as_ref().filter(|f| f.value) {
            r.problems.push(
                Problem::new("`fresh` and `restore` exclude each other", f.span, "fresh here")
                    .help("keep `restore` to bring that archive back, or `fresh` to start anew"),
            );
        }
    }
    let mut identity = Identity::default();
    if let Some(i) = r.child("identity") {
        let mut ir = Reader::new(i, r.problems);
        identity.name = ir.str_opt("name").map(|s| s.value);
        identity.role = ir.str_opt("role").map(|s| s.value);
        identity.emoji = ir.str_opt("emoji").map(|s| s.value);
        identity.vibe = ir.str_opt("vibe").map(|s| s.value);
        ir.finish();
    }
    let mut files = BTreeMap::new();
    if let Some(s) = r.child("soul") {
        if let Some(src) = file_source(s, base, r.problems, false) {
            files.insert("SOUL.md".to_string(), src);
        }
    }
    for f in r.children("file") {
        let fname = f.args.first().or_else(|| f.props.iter().find(|p| p.key == "name").map(|p| &p.value)).and_then(
            |a| match &a.value {
                RawValue::Str(s) => Some(Spanned::new(s.clone(), a.span)),
                _ => None,
            },
        );
        let Some(fname) = fname else {
            r.problems.push(Problem::new("`file` needs a workspace file name", f.name_span, "file name missing").help(
                format!(
                    "write `{}`",
                    syntax.pick(
                        "file \"USER.md\" path=\"users/alice.md\"",
                        "file = [{ name = \"USER.md\", path = \"users/alice.md\" }]"
                    )
                ),
            ));
            continue;
        };
        if !WORKSPACE_FILES.contains(&fname.value.as_str()) {
            r.problems.push(
                Problem::new(
                    format!("OpenClaw does not accept a workspace file named {:?}", fname.value),
                    fname.span,
                    "unsupported file",
                )
                .help(match did_you_mean(&fname.value, WORKSPACE_FILES) {
                    Some(s) => format!("did you mean {s:?}? (one of {})", WORKSPACE_FILES.join(", ")),
                    None => format!("use one of {}", WORKSPACE_FILES.join(", ")),
                }),
            );
            continue;
        }
        if let Some(src) = file_source(f, base, r.problems, true) {
            if files.insert(fname.value.clone(), src).is_some() {
                r.problems.push(
                    Problem::new(format!("{} is given twice", fname.value), fname.span, "again here")
                        .help("`soul` is the same file as `file \"SOUL.md\"`; keep one"),
                );
            }
        }
    }
    let heartbeat = r.child("heartbeat").and_then(|h| {
        let mut hr = Reader::new(h, r.problems);
        let every = hr.str_opt("every");
        let prompt = hr.str_opt("prompt").map(|s| s.value);
        let stray_value = hr.positional_means("every");
        let every_attempted = stray_value || hr.attempted("every");
        hr.finish();
        let Some(every) = every else {
            if !every_attempted {
                r.problems.push(
                    Problem::new("`heartbeat` needs `every`", h.name_span, "interval missing").help(format!(
                        "say how often the agent wakes: `{}`",
                        syntax.pick("heartbeat every=\"30m\"", "heartbeat = { every = \"30m\" }")
                    )),
                );
            }
            return None;
        };
        match parse_duration(&every.value) {
            Some(seconds) => Some(Heartbeat { every: every.value.clone(), seconds, prompt }),
            None => {
                r.problems.push(
                    Problem::new(format!("invalid duration {:?}", every.value), every.span, "not a duration")
                        .help("write a whole number and a unit (s, m, h or d), with no space: \"90s\", \"30m\", \"2h\", \"1d\""),
                );
                None
            }
        }
    });
    let spend = crate::fleetfile::decode_spend::spend(&mut r);
    let sandbox = r.child("sandbox").and_then(|s| super::sandbox::sandbox(s, r.problems));
    let gateway_attempted = r.attempted("gateway");
    let model_attempted = r.attempted("model");
    r.finish();
    let name = name?;
    check_slug(p, "agent", &name);
    if name.value == RESERVED_AGENT {
        p.push(
            Problem::new("`main` is OpenClaw's own default agent", name.span, "reserved name")
                .help("every gateway already has an agent called main; give this one another name"),
        );
    }
    let rest = Agent {
        name: name.clone(),
        gateway: Spanned::new(String::new(), name.span),
        model: Spanned::new(String::new(), name.span),
        fallbacks,
        identity,
        files,
        heartbeat,
        wake,
        fresh: fresh.is_some_and(|f| f.value),
        restore,
        wake_restored,
        moved_from: None,
        spend,
        sandbox,
    };
    Some(AgentRaw { name, gateway, gateway_attempted, model, model_attempted, rest })
}

/// `soul file="souls/alice.md"` / `soul "inline text"` / `file "USER.md" path=… | text=…`.
pub(super) fn file_source(n: &RawNode, base: &Path, p: &mut Problems, named: bool) -> Option<FileSource> {
    let mut r = Reader::new(n, p);
    let syntax = r.syntax();
    if named {
        let _ = r.arg_or("name", "a file name", "file \"USER.md\" path=\"users/alice.md\"");
    }
    let path_key = if named { "path" } else { "file" };
    let example = syntax.assign(path_key, if named { "\"users/alice.md\"" } else { "\"souls/alice.md\"" });
    let path = r.str_opt(path_key);
    let text = r.str_opt("text");
    let inline = if named { None } else { n.args.first() };
    if inline.is_some() {
        let _ = r.arg_str("text", "soul \"You are …\"");
    }
    let span = r.span();
    let attempted = inline.is_some() || r.attempted(path_key) || r.attempted("text");
    r.finish();
    let inline_text = inline.and_then(|a| match &a.value {
        RawValue::Str(s) => Some(s.clone()),
        _ => None,
    });
    match (path, text.map(|t| t.value).or(inline_text)) {
        (Some(path), None) => {
            let full = base.join(&path.value);
            if !full.is_file() {
                let dangling = full.symlink_metadata().is_ok_and(|m| m.file_type().is_symlink()) && !full.exists();
                let problem = if full.is_dir() {
                    Problem::new(format!("{} is a directory, not a file", path.value), path.span, "a directory")
                        .help(format!("name a file inside it, e.g. `{}/SOUL.md`", path.value.trim_end_matches('/')))
                } else if dangling {
                    let target = std::fs::read_link(&full).map(|t| t.display().to_string()).unwrap_or_default();
                    Problem::new(
                        format!("{} is a symbolic link to {target}, which does not exist", path.value),
                        path.span,
                        "dangling link",
                    )
                    .help("point the link at an existing file, or name the file itself")
                } else {
                    Problem::new(format!("file not found: {}", path.value), path.span, "no such file")
                        .help(missing_file_help(base, &path.value))
                };
                p.push(problem);
                return None;
            }
            Some(FileSource::Path(full))
        }
        (None, Some(text)) => Some(FileSource::Text(text)),
        (Some(path), Some(_)) => {
            p.push(
                Problem::new(format!("give `{path_key}` or text, not both"), path.span, "both given")
                    .help(format!("keep `{example}` or the text")),
            );
            None
        }
        (None, None) if attempted => None,
        (None, None) => {
            p.push(
                Problem::new(format!("`{}` needs content", n.name), span, "empty")
                    .help(format!("write `{example}` or give the text")),
            );
            None
        }
    }
}
