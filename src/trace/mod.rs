//! Every agent's trace: the envelope (v1), hourly bucket stores in each agent's home, the writer
//! that commits batches from many senders together, reads that merge and deduplicate, and the
//! OpenTelemetry export. The daemon (`serve`) receives and serves; this module keeps.

pub mod bucket;
pub mod envelope;
pub mod lifecycle;
pub mod otlp;
pub mod query;
pub mod rejected;
pub mod store;
pub mod summary;
pub mod transcript;
pub mod writer;
