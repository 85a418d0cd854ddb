//! OpenClaw: the managed toolchain (Node + openclaw), the gateway RPC client,
//! gateways and agents as resources, and the workspace templates.

pub mod agent;
pub mod gateway;
pub mod models;
pub mod roster;
pub mod rpc;
pub mod toolchain;
pub mod workspace;
