//! The tenant-fair, durable ingestion engine: see `ARCHITECTURE.md` for the map.

pub mod actors;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod domain;
pub mod http;
pub mod jobs;
pub mod memory;
pub mod metrics;
pub mod sampler;
pub mod startup;
pub mod store;
pub mod submission;
pub mod telemetry;
pub mod webhooks;
