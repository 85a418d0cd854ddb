//! LiteLLM: the proxy config, per-agent virtual keys, and their resource drivers.

pub mod config;
pub mod keyfile;
pub mod keys;
pub mod resources;
