//! fleet: one declarative file → a running fleet of OpenClaw agents.

pub mod cli;
pub mod engine;
pub mod exec;
pub mod fsutil;
pub mod image;
pub mod layout;
pub mod litellm;
pub mod npm;
pub mod openclaw;
pub mod plan;
pub mod process;
pub mod resource;
pub mod runtime;
pub mod spec;
pub mod state;
