//! `fleet gc`: inventory → destroy → verify (agent-factory's way against runaway bills). Everything
//! fleet could have created for this fleet — processes working in its data dir, key-file entries,
//! agents in its gateways, agents' footprints, Incus instances labelled `user.fleet.fleet=<name>` —
//! that the state does not record and no archive holds is an orphan: each is destroyed by its id
//! (a footprint is archived, never deleted: `fleet archive purge` is the only deletion of memory),
//! then the inventory is taken again and must find none.

pub mod collect;
pub mod inventory;
pub mod orphans;

pub use inventory::{Inventory, Recorded};
pub use orphans::{orphans, Orphan};
