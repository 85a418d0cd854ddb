//! The trace writer: one thread owns every open bucket database; concurrent batches that arrive
//! while it commits are written together in the next round (group commit), and each sender is
//! answered only once its events are committed (or kept aside). Async callers await `write`.

use std::path::PathBuf;
use std::sync::mpsc;

use tokio::sync::oneshot;

use super::store::{Item, TraceError, Writer, Written};

type Reply = oneshot::Sender<Result<Vec<Written>, TraceError>>;

enum Job {
    Write(Vec<Item>, Reply),
    Seal(Vec<PathBuf>),
}

#[derive(Clone)]
pub struct TraceWriter {
    tx: mpsc::Sender<Job>,
}

/// How many events one round takes at most before it commits.
const ROUND_MAX: usize = 5000;

impl TraceWriter {
    pub fn start(clock: Box<dyn Fn() -> i64 + Send>) -> TraceWriter {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("fleet-trace-writer".into())
            .spawn(move || run(Writer::new(clock), rx))
            .expect("spawn the trace writer");
        TraceWriter { tx }
    }

    /// Writes a batch; resolves once every event is durable (committed or appended and fsync'd).
    pub async fn write(&self, items: Vec<Item>) -> Result<Vec<Written>, TraceError> {
        let (tx, rx) = oneshot::channel();
        let gone = || TraceError { path: "trace writer".into(), why: "stopped".into() };
        self.tx.send(Job::Write(items, tx)).map_err(|_| gone())?;
        rx.await.map_err(|_| gone())?
    }

    /// Seals what is due in these trace directories (in the background).
    pub fn seal(&self, dirs: Vec<PathBuf>) {
        let _ = self.tx.send(Job::Seal(dirs));
    }
}

fn run(mut w: Writer, rx: mpsc::Receiver<Job>) {
    while let Ok(first) = rx.recv() {
        let mut round: Vec<(Vec<Item>, Reply)> = Vec::new();
        let mut seals = Vec::new();
        let mut n = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Write(items, reply) => {
                    n += items.len();
                    round.push((items, reply));
                }
                Job::Seal(dirs) => seals.extend(dirs),
            }
            if n < ROUND_MAX {
                next = rx.try_recv().ok();
            }
        }
        if !round.is_empty() {
            let all: Vec<Item> = round.iter().flat_map(|(items, _)| items.iter().cloned()).collect();
            match w.write(&all) {
                Ok(results) => {
                    let mut rest = results.into_iter();
                    for (items, reply) in round {
                        let _ = reply.send(Ok(rest.by_ref().take(items.len()).collect()));
                    }
                }
                // Some bucket could be kept nowhere: write each batch on its own so only the
                // batches that touch it fail.
                Err(_) => {
                    for (items, reply) in round {
                        let _ = reply.send(w.write(&items));
                    }
                }
            }
        }
        for dir in seals {
            if let Err(e) = w.seal_due(&dir) {
                tracing::warn!("{e}");
            }
        }
    }
}
