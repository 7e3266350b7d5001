//! Any bytes as a scan or batch body: parsing and record validation must return a result (a
//! prepared submission or a clear error), never panic or hang; and when the one-pass reader
//! takes a body, its answer must be the two-pass reader's.

#![no_main]

use ingest_engine::domain::TenantId;
use ingest_engine::submission::reader_comparison::{compare_batch, compare_scan};
use ingest_engine::submission::{prepare_batch, prepare_scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let _ = prepare_scan(body, 1_000, 100);
    let _ = prepare_batch(body, TenantId(uuid::Uuid::nil()), 1_000, 100);
    compare_scan(body, 1_000, 100);
    compare_batch(body, 1_000, 100);
});
