//! Integration tests: the real engine, real HTTP, a real PostgreSQL.

mod admission;
mod archive;
mod audit;
mod batch;
mod cluster;
mod embedded;
mod failures;
mod governance;
mod health;
mod helpers;
mod hostile;
mod observability;
mod openapi;
mod process;
mod reads;
mod recovery;
mod scans;
mod schema;
mod staging;
mod webhooks;
