//! Desired resources + recorded state + observed drift → a plan. Pure: the
//! same plan is printed by `fleet plan` and executed by `fleet apply`.

mod diff;
pub mod dot;
pub mod order;
pub mod render;
pub mod target;

pub use diff::{diff, Action, Change, FieldChange, Plan};
