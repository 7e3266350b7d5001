//! The audit log's moving parts (SPEC section 7): the upkeep that keeps its monthly partitions
//! ready ahead of time. (Archiving old months to Parquet and dropping them, and the retention
//! of old scans, are to come here.)
//!
//! Owns: when upkeep runs and what it reports. Never touches: what an entry says or when it is
//! written (`domain::audit` builds entries; each change writes its own, in its transaction,
//! through `store::audit_log`); any SQL (all in `store::audit_log`).

pub mod upkeep;
