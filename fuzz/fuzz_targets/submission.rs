//! Any bytes as a scan or batch body: parsing and record validation must return a result (a
//! prepared submission or a clear error), never panic or hang; when the one-pass reader takes a
//! body, its answer must be the two-pass reader's; and no message of any answer (a record's
//! error, a parser's complaint) may hold a character PostgreSQL refuses or that hides itself,
//! or be long, whatever the body held.

#![no_main]

use ingest_engine::submission::message_check::first_unsafe_message;
use ingest_engine::submission::reader_comparison::{compare_batch, compare_scan};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    // Reads the body as a scan and as a batch.
    compare_scan(body, 1_000, 100);
    compare_batch(body, 1_000, 100);
    if let Some(message) = first_unsafe_message(body, 1_000, 100) {
        panic!("an answer holds an unsafe message: {message:?}");
    }
});
