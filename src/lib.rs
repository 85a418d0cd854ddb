//! fleet: one declarative file → a running fleet of OpenClaw agents.
//!
//! Floors, from the bottom: helpers (`clock`, `fsutil`, `netaddr`, `tls`, `process`, `npm`,
//! `layout`) → the fleet file (`syntax`, `fleetfile`) → the vocabulary (`resource`) and
//! `state` → the driver interface (`driver`) → one module per external system (`litellm`,
//! `openclaw`, `runtime`, `image`) and the daemon (`serve`, which talks to gateways and reads
//! state) → `desired` (model → resources) → `plan` and `exec` → `engine` → `cli`. No two files import each other; no floor imports one above it.

pub mod archive;
pub mod cli;
pub mod clock;
pub mod desired;
pub mod driver;
pub mod engine;
pub mod exec;
pub mod fleetfile;
pub mod fsutil;
pub mod gc;
pub mod image;
pub mod layout;
pub mod litellm;
pub mod netaddr;
pub mod npm;
pub mod openclaw;
pub mod plan;
pub mod process;
pub mod resource;
pub mod runtime;
pub mod serve;
pub mod state;
pub mod syntax;
pub mod tls;
pub mod trace;
