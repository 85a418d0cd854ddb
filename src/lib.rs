//! fleet: one declarative file → a running fleet of OpenClaw agents.

pub mod spec;
