//! Several engine instances on one PostgreSQL (SPEC section 8). Built so far: **liveness**,
//! each instance's lease in `engine_instances`, renewed by a heartbeat and judged by the
//! database's clock, handed back at shutdown ([`heartbeat`]). To come here: tenant ownership
//! leases with epochs checked by the chunk transaction, notifications, handover.
//!
//! Owns: this instance's id and its heartbeat. Never touches: any SQL (in `store::instances`),
//! tenants' work (the actors).

pub mod heartbeat;
