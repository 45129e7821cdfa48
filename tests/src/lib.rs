//! # stockroom-conformance
//!
//! The one behaviour suite every Stockroom adapter runs and passes, case for case.
//!
//! Each case is a public async function over `Arc<dyn Store>`, in a module per capability
//! ([`cases`]), with a doc comment that says what it proves. An adapter runs the whole suite with
//! one line in its own tests:
//!
//! ```text
//! // adapters-foo/tests/conformance.rs
//! async fn fixture() -> stockroom_conformance::Fixture {
//!     stockroom_conformance::Fixture::new(std::sync::Arc::new(FooStore::open_fresh().await))
//! }
//! async fn own_events_fixture() -> stockroom_conformance::Fixture {
//!     // A store configured with `StoreConfig::with_own_events(true)`.
//!     stockroom_conformance::Fixture::new(std::sync::Arc::new(FooStore::open_fresh_with_own_events().await))
//! }
//! stockroom_conformance::suite!(crate::fixture, own_events = crate::own_events_fixture);
//! ```
//!
//! which expands to one `#[tokio::test]` per case, named
//! `conformance::<capability>::<case>`, so `cargo test -p stockroom-foo` lists every rule it
//! checked and a failure names the exact rule. A backend that may be missing on a machine (a
//! database server) returns `Option<Fixture>` instead, and `None` skips the case.
//!
//! The drop sweep of the cancellation cases ([`cancel`]) is public too, so that an adapter's own
//! tests run it with a check that only that backend can make after each drop (its server's
//! locks, another connection's write lock).

#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod application_sql;
pub mod cancel;
pub mod cases;
pub mod entity;
mod fixture;
#[cfg(feature = "metrics")]
pub mod metrics;
mod suite;
pub mod support;

pub use fixture::{run, Fixture};
pub use suite::{BUILT_IN_BATTERIES, CASES, OWN_EVENTS_CASES};

/// The core, for the macros' paths to Stockroom's own entities.
#[doc(hidden)]
pub use stockroom_core as __core;
