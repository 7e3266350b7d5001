//! Times the parse-and-encode step of `POST /data-scans` (`submission::prepare_scan`: envelope,
//! record rules, COPY encoding, lz4 for staging) on the load test's own records, on one core:
//!
//! ```sh
//! cargo run --release --example prepare_scan -- [records per scan, 10000] [rounds, 30]
//! ```
//!
//! Prints the body size, each round's time and rate (MB/s, records/s), then the fastest and the
//! median round; run it under `perf record` to see where the time goes. Then the memory of one
//! submission, counted by a global allocator that tracks the bytes in use: the peak while it
//! is parsed beyond the body itself, and what it holds after (the encoded, compressed chunks
//! that staging sends), each as a multiple of the body, which is what admission charges from.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use ingest_engine::submission;
use uuid::Uuid;

// The load test's generator itself, so the bodies are the ones the `scans` scenario sends.
#[allow(dead_code)] // the batch helpers are not used here
#[path = "../loadtest/src/data.rs"]
mod data;

/// The system allocator, counting the bytes in use and their peak.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only counters are added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let pointer = unsafe { System.alloc(layout) };
        if !pointer.is_null() {
            let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        pointer
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        unsafe { System.dealloc(pointer, layout) };
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, pointer: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let moved = unsafe { System.realloc(pointer, layout, new_size) };
        if !moved.is_null() {
            if new_size >= layout.size() {
                let grown = new_size - layout.size();
                let now = IN_USE.fetch_add(grown, Ordering::Relaxed) + grown;
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                IN_USE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        moved
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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

    // Memory of one submission, with nothing else alive but the body.
    let before = IN_USE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let scan = submission::prepare_scan(&body, 100_000, 1_000).expect("the body is valid");
    let peak_beyond_body = PEAK.load(Ordering::Relaxed) - before;
    let held_after = IN_USE.load(Ordering::Relaxed) - before;
    let payload_bytes: usize = scan
        .records
        .chunks
        .iter()
        .map(|chunk| chunk.payload.len())
        .sum();
    let megabytes = |bytes: usize| bytes as f64 / 1e6;
    let of_body = |bytes: usize| bytes as f64 / body.len() as f64;
    println!(
        "memory: body {:.1} MB; peak while parsing beyond the body {:.1} MB ({:.2} x body); held after parsing {:.1} MB ({:.2} x body), of which chunk payloads {:.1} MB ({:.2} x body)",
        megabytes(body.len()),
        megabytes(peak_beyond_body),
        of_body(peak_beyond_body),
        megabytes(held_after),
        of_body(held_after),
        megabytes(payload_bytes),
        of_body(payload_bytes),
    );
}
