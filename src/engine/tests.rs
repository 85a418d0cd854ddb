//! The apply lock is released on every way out of a session.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::driver::{Driver, Outputs, StepCtx};
use crate::exec::{Status, StepOutcome};
use crate::plan::Action;
use crate::resource::{add, Kind, Resource};

struct Quiet;
impl Reporter for Quiet {
    fn started(&self, _: &str, _: Action) {}
    fn finished(&self, _: &StepOutcome) {}
}

/// A driver that fails, or panics, at create.
struct Broken {
    panic: bool,
    ran: AtomicBool,
}

#[async_trait::async_trait]
impl Driver for Broken {
    async fn create(&self, _r: &Resource, _ctx: &StepCtx) -> miette::Result<Outputs> {
        self.ran.store(true, Ordering::SeqCst);
        if self.panic {
            panic!("a driver bug");
        }
        Err(miette!("the real thing said no"))
    }
    async fn update(&self, r: &Resource, _p: &Record, ctx: &StepCtx) -> miette::Result<Outputs> {
        self.create(r, ctx).await
    }
    async fn delete(&self, _p: &Record, _ctx: &StepCtx) -> miette::Result<()> {
        Ok(())
    }
}

fn layout(dir: &std::path::Path) -> Layout {
    Layout::resolve("t", None, Some(&dir.join("data")))
}

fn one_key() -> Desired {
    let mut d = Desired::new();
    add(&mut d, Resource::new(Address::Key("a".into()), &json!({"models": ["m"]}), vec![]));
    d
}

/// The lock is free: another session can take it at once.
fn assert_free(l: &Layout) {
    let again = Session::open(l, "apply");
    assert!(again.is_ok(), "the lock was left held: {:?}", again.err());
}

#[test]
fn a_failed_plan_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let result = (|| -> miette::Result<()> {
        let s = Session::open(&l, "apply")?;
        let opts = Options { replace: vec![Address::Key("nobody".into())], ..Options::default() };
        rt.block_on(s.plan_with(one_key(), Drivers::default(), &opts))?;
        Ok(())
    })();
    assert!(result.unwrap_err().to_string().contains("cannot replace key.nobody"));
    assert_free(&l);
}

#[test]
fn a_failed_step_and_a_panicking_driver_release_the_lock() {
    for panic in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let l = layout(dir.path());
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let broken = Arc::new(Broken { panic, ran: AtomicBool::new(false) });
        let mut drivers = Drivers::default();
        drivers.insert(Kind::Key, broken.clone());
        {
            let s = Session::open(&l, "apply").unwrap();
            let p = rt.block_on(s.plan_with(one_key(), drivers, &Options::default())).unwrap();
            let summary = rt.block_on(s.apply(&p, 2, Arc::new(Quiet))).unwrap();
            assert!(broken.ran.load(Ordering::SeqCst));
            let why = match &summary.outcomes[0].status {
                Status::Failed(e) => e.clone(),
                other => panic!("{other:?}"),
            };
            assert!(why.contains(if panic { "internal error" } else { "said no" }), "{why}");
        }
        assert_free(&l);
    }
}

#[test]
fn a_panic_unwinding_through_a_session_releases_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let l = layout(dir.path());
    let l2 = l.clone();
    let joined = std::thread::spawn(move || {
        let _s = Session::open(&l2, "apply").unwrap();
        panic!("the caller panics while holding the session");
    })
    .join();
    assert!(joined.is_err());
    assert_free(&l);
}

/// The bench's in-process apply returned early with `?` after a failed prepare and left the lock
/// held by a live pid: its own cleanup `destroy` then failed ("another fleet apply is running").
#[test]
fn the_benchs_apply_after_a_failed_plan_leaves_the_lock_free() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("fleet.kdl");
    // A recipe that exists (the fleet file is valid) but does not parse: planning fails.
    std::fs::write(dir.path().join("r.kdl"), "this is { not a recipe").unwrap();
    std::fs::write(
        &file,
        "fleet \"t\"\nimage \"b\" { recipe \"r.kdl\"; }\nprovider \"d\" type=\"mock\" { model \"m\" }\n\
         gateway \"main\" image=\"b\"\nagent \"a\" model=\"m\"\n",
    )
    .unwrap();
    let l = Layout::resolve("t", None, Some(&dir.path().join("data")));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let r = crate::cli::bench::kit::apply_in_process(&rt, &file, &l, Goal::Converge);
    assert!(r.is_err(), "the plan fails on the recipe");
    assert_free(&l);
}
