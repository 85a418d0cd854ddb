//! OpenClaw: the managed toolchain (Node + openclaw), the gateway RPC client (`rpc`: the protocol; `dial`: ws:// here, wss:// to a pinned certificate elsewhere; `client`: typed calls),
//! gateways and agents as resources, and the workspace templates.

pub mod agent;
pub mod agents_config;
pub mod client;
pub mod config_drift;
pub mod dial;
pub mod gateway;
pub mod gateway_tls;
pub mod models;
pub mod offline;
pub mod plugin;
pub mod roster;
pub mod rpc;
pub mod toolchain;
pub mod wake;
pub mod workspace;
