//! Times the parse-and-encode step of `POST /data-scans` (`submission::prepare_scan`: envelope,
//! record rules, COPY encoding, lz4 for staging) on the load test's own records, on one core:
//!
//! ```sh
//! cargo run --release --example prepare_scan -- [records per scan, 10000] [rounds, 30]
//! ```
//!
//! Prints the body size, each round's time and rate (MB/s, records/s), then the fastest and the
//! median round; run it under `perf record` to see where the time goes.

use std::time::Instant;

use ingest_engine::submission;
use uuid::Uuid;

// The load test's generator itself, so the bodies are the ones the `scans` scenario sends.
#[allow(dead_code)] // the batch helpers are not used here
#[path = "../loadtest/src/data.rs"]
mod data;

fn main() {
    let mut arguments = std::env::args().skip(1);
    let records: usize = arguments.next().map_or(10_000, |text| {
        text.parse().expect("records per scan is a number")
    });
    let rounds: usize = arguments
        .next()
        .map_or(30, |text| text.parse().expect("rounds is a number"));
    let body = data::scan_body(Uuid::new_v4(), &data::generate_records(1, 0, records));
    println!("body: {} bytes, {records} records", body.len());
    let mut timings = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let started = Instant::now();
        let scan = submission::prepare_scan(&body, 100_000, 1_000).expect("the body is valid");
        let elapsed = started.elapsed().as_secs_f64();
        assert_eq!(scan.records.records_failed, 0);
        timings.push(elapsed);
        println!(
            "round {round}: {:.2} ms, {:.0} MB/s, {:.0} records/s",
            elapsed * 1e3,
            body.len() as f64 / elapsed / 1e6,
            records as f64 / elapsed
        );
    }
    timings.sort_by(f64::total_cmp);
    // The fastest round is the least disturbed by the rest of a shared machine.
    for (name, elapsed) in [
        ("fastest", timings[0]),
        ("median", timings[timings.len() / 2]),
    ] {
        println!(
            "{name}: {:.2} ms, {:.0} MB/s, {:.0} records/s",
            elapsed * 1e3,
            body.len() as f64 / elapsed / 1e6,
            records as f64 / elapsed
        );
    }
}
