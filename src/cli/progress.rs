//! How apply shows progress: a bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};

use crate::exec::{Reporter, Status, StepOutcome};
use crate::plan::Action;

fn line(o: &StepOutcome) -> String {
    let ms = o.elapsed.as_millis();
    match &o.status {
        Status::Ok => {
            let done = match o.action {
                Action::Create => "created",
                Action::Update => "updated",
                Action::Replace => "replaced",
                Action::Delete => "deleted",
            };
            format!("  {} {}: {done} ({ms} ms)", o.action.symbol(), o.address)
        }
        Status::Failed(e) => format!("  ✗ {}: {} failed: {e}", o.address, o.action.as_str()),
        Status::Skipped(why) => format!("  ! {}: skipped: {why}", o.address),
    }
}

struct Plain;

impl Reporter for Plain {
    fn started(&self, _: &str, _: Action) {}
    fn progress(&self, address: &str, message: &str) {
        println!("  … {address}: {message}");
    }
    fn finished(&self, o: &StepOutcome) {
        println!("{}", line(o));
    }
}

struct Bar(ProgressBar);

impl Reporter for Bar {
    fn started(&self, address: &str, action: Action) {
        self.0.set_message(format!("{} {address}", action.as_str()));
    }
    fn progress(&self, address: &str, message: &str) {
        self.0.set_message(format!("{address}: {message}"));
    }
    fn finished(&self, o: &StepOutcome) {
        self.0.println(line(o));
        self.0.inc(1);
    }
}

pub fn reporter(steps: usize) -> (Arc<dyn Reporter>, Option<ProgressBar>) {
    if std::io::stdout().is_terminal() {
        let pb = ProgressBar::new(steps as u64);
        pb.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {elapsed} {wide_msg}")
                .expect("static template")
                .progress_chars("=> "),
        );
        pb.enable_steady_tick(std::time::Duration::from_millis(120));
        (Arc::new(Bar(pb.clone())), Some(pb))
    } else {
        (Arc::new(Plain), None)
    }
}
