//! The audit log's and retention's moving parts (SPEC section 7): the partitions' upkeep
//! ([`upkeep`]), archiving old months to Parquet and dropping them ([`archive`], with the file
//! format in [`parquet_file`]), deleting old finished scans ([`retention`]), and the pass that
//! runs all three ([`maintenance`]: every `audit.maintenance_interval_secs` in the engine, or
//! once from `ingest-engine audit maintain`).
//!
//! Owns: when maintenance runs, the archive files, what each run reports. Never touches: what
//! an entry says or when it is written (`domain::audit` builds entries; each change writes its
//! own, in its transaction, through `store::audit_log`); any SQL (all in `store::audit_log` and
//! `store::retention`); pending or processing scans, staged chunks, activities.

pub mod archive;
pub mod maintenance;
pub mod parquet_file;
pub mod retention;
pub mod upkeep;
