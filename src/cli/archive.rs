//! `fleet archive list | show | purge | export`: the agents removal archived.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use miette::{miette, IntoDiagnostic, WrapErr};
use serde_json::json;

use super::loaded::load;
use crate::archive::listing::find;
use crate::archive::purge::{self, Purged};
use crate::archive::{list, Archive, ArchiveState};

#[derive(Subcommand)]
pub enum ArchiveCmd {
    /// Every archive: id, agent, when, size, what it holds
    List {
        path: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// One archive's manifest
    Show { id: String, path: Option<PathBuf> },
    /// Remove archives for good (files, sessions, trace, conversations); prints what it removed
    Purge {
        /// The archive to remove
        #[arg(required_unless_present_any = ["older_than", "all"], conflicts_with_all = ["older_than", "all"])]
        id: Option<String>,
        /// Every archive older than this (30d, 12h)
        #[arg(long, value_name = "DURATION", conflicts_with = "all")]
        older_than: Option<String>,
        /// Every finished archive
        #[arg(long)]
        all: bool,
        /// Say what would go, remove nothing
        #[arg(long)]
        dry_run: bool,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Write an archive to a .tar.zst file (for backups)
    Export {
        id: String,
        out: PathBuf,
        #[arg(long, short = 'f')]
        file: Option<PathBuf>,
    },
}

pub fn run(cmd: ArchiveCmd, data_dir: Option<&Path>) -> miette::Result<ExitCode> {
    match cmd {
        ArchiveCmd::List { path, json } => list_cmd(path.as_deref(), data_dir, json),
        ArchiveCmd::Show { id, path } => show(path.as_deref(), data_dir, &id),
        ArchiveCmd::Purge { id, older_than, all, dry_run, file, json } => {
            let which = match (id, older_than) {
                (Some(id), _) => Which::Id(id),
                (None, Some(d)) => Which::OlderThan(d),
                (None, None) if all => Which::All,
                (None, None) => return Err(miette!("say which archives: ID, --older-than DURATION or --all")),
            };
            purge_cmd(file.as_deref(), data_dir, which, dry_run, json)
        }
        ArchiveCmd::Export { id, out, file } => export(file.as_deref(), data_dir, &id, &out),
    }
}

fn state_word(a: &Archive) -> String {
    match &a.state {
        ArchiveState::Ready => "archived".into(),
        ArchiveState::Partial => "archiving (unfinished: the next apply finishes it)".into(),
        ArchiveState::Restoring(agent) => format!("restoring as {agent} (unfinished: the next apply finishes it)"),
    }
}

fn list_cmd(path: Option<&Path>, data_dir: Option<&Path>, as_json: bool) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let archives = list(&l.layout.archive_dir());
    if as_json {
        let rows: Vec<_> = archives
            .iter()
            .map(|a| {
                let m = a.manifest.as_ref();
                json!({
                    "id": a.id,
                    "agent": a.agent(),
                    "state": state_word(a),
                    "archived_at": m.map(|m| m.archived_at.clone()),
                    "gateway": m.map(|m| m.about.gateway.clone()),
                    "model": m.map(|m| m.about.model.clone()),
                    "files": m.map(|m| m.files.len()),
                    "bytes": m.map(|m| m.bytes()),
                    "conversations": m.map(|m| m.conversations),
                    "path": a.dir,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    if archives.is_empty() {
        println!("no archives in {}", l.layout.archive_dir().display());
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:34} {:12} {:21} {:>6} {:>10} {:>9}  state", "ID", "AGENT", "ARCHIVED", "FILES", "BYTES", "MESSAGES");
    for a in &archives {
        let m = a.manifest.as_ref();
        println!(
            "{:34} {:12} {:21} {:>6} {:>10} {:>9}  {}",
            a.id,
            a.agent(),
            m.map(|m| m.archived_at.as_str()).unwrap_or("-"),
            m.map(|m| m.files.len().to_string()).unwrap_or_else(|| "-".into()),
            m.map(|m| m.bytes().to_string()).unwrap_or_else(|| "-".into()),
            m.map(|m| m.conversations.to_string()).unwrap_or_else(|| "-".into()),
            state_word(a)
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn show(path: Option<&Path>, data_dir: Option<&Path>, id: &str) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let archives = list(&l.layout.archive_dir());
    let a = find(&archives, id)?;
    let m = a.manifest.as_ref().ok_or_else(|| miette!("archive {id} has no manifest yet: {}", state_word(a)))?;
    println!("{}", serde_json::to_string_pretty(m).into_diagnostic()?);
    Ok(ExitCode::SUCCESS)
}

/// Which archives a purge takes.
enum Which {
    Id(String),
    OlderThan(String),
    All,
}

fn purge_cmd(
    path: Option<&Path>,
    data_dir: Option<&Path>,
    which: Which,
    dry_run: bool,
    as_json: bool,
) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    // Under the apply lock: an apply may be restoring or archiving.
    let _session = (!dry_run).then(|| crate::engine::Session::open(&l.layout, "archive purge")).transpose()?;
    let root = l.layout.archive_dir();
    purge::finish_interrupted(&root);
    let archives = list(&root);
    let now = crate::clock::now_ms().div_euclid(1000);
    let chosen: Vec<&Archive> = match &which {
        Which::Id(id) => vec![purge::by_id(&archives, id)?],
        Which::OlderThan(d) => {
            let secs = crate::fleetfile::decode::parse_duration(d)
                .ok_or_else(|| miette!(help = "e.g. 30d, 12h, 90m", "--older-than: {d:?} is not a duration"))?;
            purge::older_than(&archives, now - secs as i64)
        }
        Which::All => purge::older_than(&archives, i64::MAX),
    };
    let mut done: Vec<Purged> = Vec::new();
    for a in chosen {
        done.push(if dry_run { purge::describe(a) } else { purge::purge(&root, a)? });
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&json!({"dry_run": dry_run, "purged": done})).into_diagnostic()?);
        return Ok(ExitCode::SUCCESS);
    }
    let verb = if dry_run { "would remove" } else { "removed" };
    for p in &done {
        println!(
            "{verb} {} (agent {}): {} files, {} bytes, {} messages",
            p.id, p.agent, p.files, p.bytes, p.conversations
        );
    }
    if done.is_empty() {
        println!("nothing to purge");
    }
    Ok(ExitCode::SUCCESS)
}

fn export(path: Option<&Path>, data_dir: Option<&Path>, id: &str, out: &Path) -> miette::Result<ExitCode> {
    let l = load(path, data_dir)?;
    let archives = list(&l.layout.archive_dir());
    let a = find(&archives, id)?;
    if a.state != ArchiveState::Ready {
        return Err(miette!("archive {id} is not finished: {}", state_word(a)));
    }
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new().prefix(".fleet-export-").tempfile_in(dir).into_diagnostic()?;
    {
        let enc = zstd::Encoder::new(tmp.as_file(), 3).into_diagnostic()?.auto_finish();
        let mut tar = tar::Builder::new(enc);
        tar.follow_symlinks(false);
        pack(&mut tar, Path::new(id), &a.dir)
            .into_diagnostic()
            .wrap_err_with(|| format!("cannot pack {}", a.dir.display()))?;
        tar.finish().into_diagnostic()?;
    }
    tmp.as_file().sync_all().into_diagnostic()?;
    tmp.persist(out)
        .map_err(|e| e.error)
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot write {}", out.display()))?;
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!("wrote {} ({bytes} bytes): archive {id}, manifest.json inside", out.display());
    Ok(ExitCode::SUCCESS)
}

/// `root` into the tarball under `name`: what the manifest lists (SQLite's `-shm` files left out,
/// `crate::archive::volatile`), in name order, symlinks as links.
fn pack<W: std::io::Write>(tar: &mut tar::Builder<W>, name: &Path, root: &Path) -> std::io::Result<()> {
    tar.append_dir(name.join(""), root)?; // "<id>/", as tar writes a directory
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut entries = std::fs::read_dir(&dir)?.collect::<Result<Vec<_>, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let inside = name.join(path.strip_prefix(root).expect("under root"));
            if e.file_type()?.is_dir() {
                tar.append_dir(&inside, &path)?;
                stack.push(path);
            } else if !crate::archive::volatile(&path) {
                tar.append_path_with_name(&path, &inside)?;
            }
        }
    }
    Ok(())
}
