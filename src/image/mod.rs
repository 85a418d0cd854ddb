//! Images: recipes, reproducible builds, packing as Incus unified images.

pub mod build;
pub mod pack;
pub mod recipe;
pub mod resources;
pub mod store;
