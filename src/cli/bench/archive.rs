//! `fleet bench archive`: archiving and restoring one agent whose workspace holds `mb` MB, on one
//! filesystem — renames, not copies. The anchor, measured in the same run: copying the same tree
//! (`cp -a`), which is what an archive made of copies would cost at least.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use miette::{miette, IntoDiagnostic};
use rand::RngCore;

use super::kit::pct;
use crate::archive::restore::{restore, Restore};
use crate::archive::{take, About, Footprint};
use crate::layout::Layout;

pub struct ArchiveBench {
    pub mb: usize,
    pub runs: usize,
    pub dir: Option<std::path::PathBuf>,
}

/// An agent as a gateway leaves it: `mb` 1-MB files in its workspace, a session database, a trace
/// bucket, and 100 messages in the daemon's conversations.
fn live_agent(fp: &Footprint, mb: usize) -> miette::Result<()> {
    let mut rng = rand::thread_rng();
    let mut chunk = vec![0u8; 1 << 20];
    std::fs::create_dir_all(fp.workspace.join("memory")).into_diagnostic()?;
    for i in 0..mb {
        rng.fill_bytes(&mut chunk);
        std::fs::write(fp.workspace.join("memory").join(format!("{i:04}.bin")), &chunk).into_diagnostic()?;
    }
    std::fs::write(fp.workspace.join("USER.md"), "# USER\nEdited by the agent.\n").into_diagnostic()?;
    std::fs::create_dir_all(fp.gateway_state.join("agent")).into_diagnostic()?;
    std::fs::write(fp.gateway_state.join("agent/openclaw-agent.sqlite"), &chunk).into_diagnostic()?;
    std::fs::create_dir_all(fp.home.join("trace")).into_diagnostic()?;
    std::fs::write(fp.home.join("trace/20261129T07.db"), &chunk).into_diagnostic()?;
    std::fs::create_dir_all(fp.conversations.parent().expect("in serve/")).into_diagnostic()?;
    let store = crate::serve::store::Store::open(&fp.conversations).map_err(|e| miette!("{e}"))?;
    for i in 0..100 {
        store.add_user(&fp.agent, "main", None, &format!("message {i}")).map_err(|e| miette!("{e}"))?;
    }
    Ok(())
}

pub fn run(b: ArchiveBench) -> miette::Result<ExitCode> {
    let base = b.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&base).into_diagnostic()?;
    let layout = Layout { data_dir: tmp.path().join("data"), cache_dir: tmp.path().join("cache") };
    let fp = Footprint::of(&layout, "gw", "alice");
    let root = layout.archive_dir();
    live_agent(&fp, b.mb)?;
    let (mut arch, mut rest, mut copy) = (Vec::new(), Vec::new(), Vec::new());
    for run in 0..b.runs.max(1) {
        // The anchor: a copy of the workspace, then removed.
        let copy_to = tmp.path().join("copy");
        let t = Instant::now();
        let ok = Command::new("cp").arg("-a").arg(&fp.workspace).arg(&copy_to).status().into_diagnostic()?;
        copy.push(t.elapsed());
        if !ok.success() {
            return Err(miette!("cp -a failed"));
        }
        std::fs::remove_dir_all(&copy_to).into_diagnostic()?;
        let t = Instant::now();
        let id = take::archive(&root, &fp, &About::default(), None, 1_796_022_000 + run as i64)?
            .ok_or_else(|| miette!("nothing was archived"))?;
        arch.push(t.elapsed());
        let t = Instant::now();
        restore(&root, &fp, &Restore::From(id))?;
        rest.push(t.elapsed());
        crate::archive::restore::clear_marker(&fp.home);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (a, r, c) = (pct(&mut arch, 0.5), pct(&mut rest, 0.5), pct(&mut copy, 0.5));
    println!(
        "archive bench: one agent, {} MB workspace ({} files), {} runs, on {}",
        b.mb,
        b.mb + 1,
        b.runs,
        base.display()
    );
    println!("  archive (renames + manifest hashes + 100 messages out): median {:.1} ms", ms(a));
    println!("  restore (renames + 100 messages back):                  median {:.1} ms", ms(r));
    println!("  anchor: cp -a of the workspace:                          median {:.1} ms", ms(c));
    println!("  ratio archive/copy {:.2}, restore/copy {:.3}", ms(a) / ms(c), ms(r) / ms(c));
    Ok(ExitCode::SUCCESS)
}
