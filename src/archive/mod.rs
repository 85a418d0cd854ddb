//! Archived agents. An agent removed from the fleet file leaves its gateway, and everything of it
//! that lives on this machine — workspace, OpenClaw's sessions and transcripts, its home (trace),
//! its conversations with the daemon — moves (renames, no copies) into
//! `<data dir>/archive/<agent>-<UTC timestamp>/` beside a `manifest.json`. Re-adding the agent
//! moves it back. Every step is a rename or an idempotent write, so an archive or a restore killed
//! at any point is finished by the next run: a `.partial` archive is completed, a `.restoring-<agent>`
//! one is put back; the manifest is written before the archive gets its final name.

pub mod conversations;
mod footprint;
mod id;
pub mod listing;
pub mod manifest;
pub mod purge;
pub mod restore;
pub mod take;
mod tree;

pub use footprint::Footprint;
pub use id::{agent_of, archive_id};
pub use listing::{list, Archive, ArchiveState};
pub use manifest::{About, Manifest};
pub use tree::{move_into, volatile};
