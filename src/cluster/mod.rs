//! Several engine instances on one PostgreSQL (SPEC section 8), with no other coordination
//! service.
//!
//! - [`heartbeat`]: this instance's lease in `engine_instances`, renewed by a heartbeat and
//!   judged by the database's clock, handed back at shutdown.
//! - [`view`]: the live instances and each tenant's preferred owner (rendezvous hashing).
//! - [`ownership`]: the pass that claims, hands over and reports the tenants this instance
//!   owns; the fence in every chunk transaction makes ownership safe whatever its timing.
//! - [`notifications`]: `LISTEN` for tenants with new work or limits, so the owner acts at
//!   once whichever instance took the request.
//!
//! Owns: this instance's id, lease and view of the cluster. Never touches: any SQL (in
//! `store::instances` and `store::ownership`), tenants' work (the actors).

pub mod heartbeat;
pub mod notifications;
pub mod ownership;
pub mod view;
