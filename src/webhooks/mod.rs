//! Scan notifications (SPEC section 9): signed webhooks from a transactional outbox.
//!
//! Owns the delivery worker ([`delivery`]), the Standard Webhooks signature ([`signing`]) and
//! the checks of where a webhook may be sent ([`address`]). The outbox rows themselves are
//! written by the chunk transaction that finishes a scan (`store/chunk_writes.rs`), so this
//! module never decides *whether* a scan is announced, only *how* the announcement travels;
//! its SQL is in `store/webhooks.rs`, its routes in `http/webhooks.rs`. It never touches
//! ingestion: a slow or dead endpoint costs one of this worker's attempt slots, nothing else.

pub mod address;
pub mod delivery;
pub mod signing;
