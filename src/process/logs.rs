//! Reading a child's log, and running a command to completion with its output logged.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use miette::{miette, IntoDiagnostic, WrapErr};
use tokio::io::AsyncBufReadExt;

/// The last `lines` lines of a log file (at most 64 KiB read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = std::fs::File::open(path) else { return format!("(no log at {})", path.display()) };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(64 * 1024);
    let _ = f.seek(SeekFrom::Start(from));
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs a command to completion, telling `say` pip/npm-style milestones and keeping
/// all output in `log`; on failure the error carries the tail of stderr.
pub async fn run_logged(
    say: &(dyn Fn(&str) + Sync),
    mut cmd: tokio::process::Command,
    log: &Path,
) -> miette::Result<()> {
    let std_cmd = cmd.as_std();
    let what = std::iter::once(std_cmd.get_program())
        .chain(std_cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .spawn()
        .into_diagnostic()
        .wrap_err_with(|| format!("cannot run {what}"))?;
    let mut out = tokio::io::BufReader::new(child.stdout.take().expect("piped")).lines();
    let err = child.stderr.take().expect("piped");
    let err_task = tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(err).lines();
        let mut all = Vec::new();
        while let Ok(Some(l)) = lines.next_line().await {
            all.push(l);
        }
        all
    });
    let mut logged = Vec::new();
    while let Ok(Some(line)) = out.next_line().await {
        if line.starts_with("Collecting ")
            || line.starts_with("Installing collected")
            || line.starts_with("Successfully")
        {
            let short: String = line.chars().take(100).collect();
            say(&short);
        }
        logged.push(line);
    }
    let status = child.wait().await.into_diagnostic()?;
    let err_lines = err_task.await.unwrap_or_default();
    logged.extend(err_lines.iter().cloned());
    let _ = std::fs::write(log, logged.join("\n"));
    if status.success() {
        Ok(())
    } else {
        let tail = err_lines[err_lines.len().saturating_sub(15)..].join("\n");
        Err(miette!("{what} failed ({status}); full output in {}:\n{tail}", log.display()))
    }
}
