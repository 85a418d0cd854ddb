//! LiteLLM: the proxy config, its install and process, per-agent virtual keys,
//! and their resource drivers.

pub mod config;
pub mod cost_map;
pub mod db_keys;
pub mod install;
pub mod keyfile;
pub mod keys;
pub mod proxy;
pub mod resources;
pub mod spend;
