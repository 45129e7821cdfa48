//! Work in progress.
pub use stockroom_core::*;
