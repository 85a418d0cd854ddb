//! fleet: one declarative file → a running fleet of OpenClaw agents.

pub mod spec;
pub mod fsutil;
pub mod layout;
pub mod state;
pub mod exec;
pub mod litellm;
pub mod plan;
pub mod resource;
pub mod engine;
pub mod cli;
