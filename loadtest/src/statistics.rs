//! What a scenario measures while it runs: latency per endpoint, response statuses, and
//! records completed per second.
//!
//! Latencies go into HDR histograms (microseconds, three significant digits): memory stays
//! fixed however many requests a run makes, and percentiles are exact to 0.1 %. Everything here
//! is shared by many request tasks behind plain `std` mutexes: each lock is held for a few
//! nanoseconds, never across an `.await`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Longest latency a histogram holds (one hour); longer ones are clamped to it.
const HIGHEST_TRACKABLE_MICROS: u64 = 3_600_000_000;

/// How many refused responses an endpoint keeps verbatim, so a report shows why without
/// growing with the number of failures.
const SAMPLE_ERRORS_KEPT: usize = 5;

/// The quantiles drawn on the latency chart, with their labels.
pub const CHART_QUANTILES: &[(f64, &str)] = &[
    (0.50, "p50"),
    (0.75, "p75"),
    (0.90, "p90"),
    (0.95, "p95"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (1.0, "max"),
];

/// Latencies in microseconds.
#[derive(Clone)]
pub struct LatencyHistogram {
    histogram: Histogram<u64>,
}

/// The percentiles a report shows, in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Requests of one endpoint: statuses, latencies, a few refusals.
pub struct EndpointStatistics {
    /// Responses by HTTP status (as text, so JSON keys read naturally).
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no HTTP response at all (refused connection, time-out).
    pub transport_errors: u64,
    /// Every response, whatever its status.
    pub all_latency: LatencyHistogram,
    /// 2xx responses only: the latency a client that succeeded saw.
    pub success_latency: LatencyHistogram,
    pub sample_errors: Vec<String>,
}

/// An endpoint's part of a report.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointReport {
    pub requests: u64,
    pub statuses: BTreeMap<String, u64>,
    pub transport_errors: u64,
    pub latency_success: LatencySummary,
    pub latency_all: LatencySummary,
    pub sample_errors: Vec<String>,
}

/// Statistics of every endpoint a scenario calls, by a display name such as
/// `POST /data-scans`.
#[derive(Default)]
pub struct EndpointsRecorder {
    endpoints: Mutex<BTreeMap<&'static str, EndpointStatistics>>,
}

/// Records completed per whole second since a scenario's start.
pub struct Timeline {
    started: Instant,
    records_per_second: Mutex<Vec<u64>>,
}

/// One second of a timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelinePoint {
    pub second: u64,
    pub records: u64,
}

impl LatencyHistogram {
    pub fn new() -> LatencyHistogram {
        LatencyHistogram {
            histogram: Histogram::new_with_bounds(1, HIGHEST_TRACKABLE_MICROS, 3)
                .expect("the bounds are constant and valid"),
        }
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = (latency.as_micros() as u64).clamp(1, HIGHEST_TRACKABLE_MICROS);
        self.histogram.saturating_record(micros);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// Latency at `quantile` (0.0..=1.0), in milliseconds; 0 when empty.
    pub fn quantile_ms(&self, quantile: f64) -> f64 {
        if self.histogram.is_empty() {
            return 0.0;
        }
        self.histogram.value_at_quantile(quantile) as f64 / 1_000.0
    }

    pub fn summary(&self) -> LatencySummary {
        if self.histogram.is_empty() {
            return LatencySummary {
                count: 0,
                mean_ms: 0.0,
                p50_ms: 0.0,
                p95_ms: 0.0,
                p99_ms: 0.0,
                max_ms: 0.0,
            };
        }
        LatencySummary {
            count: self.histogram.len(),
            mean_ms: round_to_thousandths(self.histogram.mean() / 1_000.0),
            p50_ms: round_to_thousandths(self.quantile_ms(0.50)),
            p95_ms: round_to_thousandths(self.quantile_ms(0.95)),
            p99_ms: round_to_thousandths(self.quantile_ms(0.99)),
            max_ms: round_to_thousandths(self.histogram.max() as f64 / 1_000.0),
        }
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        LatencyHistogram::new()
    }
}

impl EndpointStatistics {
    fn new() -> EndpointStatistics {
        EndpointStatistics {
            statuses: BTreeMap::new(),
            transport_errors: 0,
            all_latency: LatencyHistogram::new(),
            success_latency: LatencyHistogram::new(),
            sample_errors: Vec::new(),
        }
    }

    pub fn report(&self) -> EndpointReport {
        EndpointReport {
            requests: self.statuses.values().sum::<u64>() + self.transport_errors,
            statuses: self.statuses.clone(),
            transport_errors: self.transport_errors,
            latency_success: self.success_latency.summary(),
            latency_all: self.all_latency.summary(),
            sample_errors: self.sample_errors.clone(),
        }
    }
}

impl EndpointsRecorder {
    /// Records a response: its status, its latency, and (for a refusal) the start of its body.
    pub fn record_response(
        &self,
        endpoint: &'static str,
        status: u16,
        latency: Duration,
        refusal_body_opt: Option<&[u8]>,
    ) {
        let mut endpoints = self
            .endpoints
            .lock()
            .expect("no code panics holding this lock");
        let statistics = endpoints
            .entry(endpoint)
            .or_insert_with(EndpointStatistics::new);
        *statistics.statuses.entry(status.to_string()).or_insert(0) += 1;
        statistics.all_latency.record(latency);
        if (200..300).contains(&status) {
            statistics.success_latency.record(latency);
        } else if statistics.sample_errors.len() < SAMPLE_ERRORS_KEPT {
            let body = refusal_body_opt.map(shorten_body).unwrap_or_default();
            statistics.sample_errors.push(format!("{status}: {body}"));
        }
    }

    /// Records a request that got no response.
    pub fn record_transport_error(&self, endpoint: &'static str, error: &str) {
        let mut endpoints = self
            .endpoints
            .lock()
            .expect("no code panics holding this lock");
        let statistics = endpoints
            .entry(endpoint)
            .or_insert_with(EndpointStatistics::new);
        statistics.transport_errors += 1;
        if statistics.sample_errors.len() < SAMPLE_ERRORS_KEPT {
            statistics
                .sample_errors
                .push(format!("no response: {error}"));
        }
    }

    pub fn reports(&self) -> BTreeMap<String, EndpointReport> {
        let endpoints = self
            .endpoints
            .lock()
            .expect("no code panics holding this lock");
        endpoints
            .iter()
            .map(|(name, statistics)| (name.to_string(), statistics.report()))
            .collect()
    }

    /// Each endpoint's latency histogram of successful responses, for the chart.
    pub fn success_histograms(&self) -> Vec<(String, LatencyHistogram)> {
        let endpoints = self
            .endpoints
            .lock()
            .expect("no code panics holding this lock");
        endpoints
            .iter()
            .map(|(name, statistics)| (name.to_string(), statistics.success_latency.clone()))
            .collect()
    }
}

impl Timeline {
    pub fn starting_at(started: Instant) -> Timeline {
        Timeline {
            started,
            records_per_second: Mutex::new(Vec::new()),
        }
    }

    /// Counts `records` completed now.
    pub fn add(&self, records: u64) {
        let second = self.started.elapsed().as_secs() as usize;
        let mut buckets = self
            .records_per_second
            .lock()
            .expect("no code panics holding this lock");
        if buckets.len() <= second {
            buckets.resize(second + 1, 0);
        }
        buckets[second] += records;
    }

    pub fn points(&self) -> Vec<TimelinePoint> {
        let buckets = self
            .records_per_second
            .lock()
            .expect("no code panics holding this lock");
        buckets
            .iter()
            .enumerate()
            .map(|(second, records)| TimelinePoint {
                second: second as u64,
                records: *records,
            })
            .collect()
    }
}

/// Summary of a list of durations in seconds (scan completion times).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecondsSummary {
    pub count: usize,
    pub min_seconds: f64,
    pub p50_seconds: f64,
    pub p95_seconds: f64,
    pub p99_seconds: f64,
    pub max_seconds: f64,
}

/// Nearest-rank percentiles of `values`; `None` when empty.
pub fn summarize_seconds(values: &[f64]) -> Option<SecondsSummary> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let nearest_rank = |quantile: f64| {
        let rank = (quantile * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    };
    Some(SecondsSummary {
        count: sorted.len(),
        min_seconds: round_to_thousandths(sorted[0]),
        p50_seconds: round_to_thousandths(nearest_rank(0.50)),
        p95_seconds: round_to_thousandths(nearest_rank(0.95)),
        p99_seconds: round_to_thousandths(nearest_rank(0.99)),
        max_seconds: round_to_thousandths(sorted[sorted.len() - 1]),
    })
}

pub fn round_to_thousandths(value: f64) -> f64 {
    (value * 1_000.0).round() / 1_000.0
}

/// The first 300 characters of a response body, as text.
fn shorten_body(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_one_to_a_thousand_milliseconds() {
        let mut histogram = LatencyHistogram::new();
        for milliseconds in 1..=1_000 {
            histogram.record(Duration::from_millis(milliseconds));
        }
        let summary = histogram.summary();
        assert_eq!(summary.count, 1_000);
        // Three significant digits: each value is within 0.1 % of the exact rank.
        assert!((summary.p50_ms - 500.0).abs() <= 0.5, "{summary:?}");
        assert!((summary.p95_ms - 950.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.p99_ms - 990.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.max_ms - 1_000.0).abs() <= 1.0, "{summary:?}");
        assert!((summary.mean_ms - 500.5).abs() <= 0.5, "{summary:?}");
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        let summary = LatencyHistogram::new().summary();
        assert_eq!(summary.count, 0);
        assert_eq!(summary.max_ms, 0.0);
    }

    #[test]
    fn statuses_are_counted_and_only_successes_enter_the_success_latency() {
        let recorder = EndpointsRecorder::default();
        recorder.record_response("GET /x", 200, Duration::from_millis(2), None);
        recorder.record_response(
            "GET /x",
            404,
            Duration::from_millis(1),
            Some(b"{\"code\":\"not_found\"}"),
        );
        recorder.record_transport_error("GET /x", "connection refused");
        let report = &recorder.reports()["GET /x"];
        assert_eq!(report.requests, 3);
        assert_eq!(report.statuses["200"], 1);
        assert_eq!(report.statuses["404"], 1);
        assert_eq!(report.latency_success.count, 1);
        assert_eq!(report.latency_all.count, 2);
        assert_eq!(report.sample_errors.len(), 2);
        assert!(report.sample_errors[0].starts_with("404: {\"code\""));
    }

    #[test]
    fn seconds_use_nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let summary = summarize_seconds(&values).unwrap();
        assert_eq!(summary.min_seconds, 1.0);
        assert_eq!(summary.p50_seconds, 10.0);
        assert_eq!(summary.p95_seconds, 19.0);
        assert_eq!(summary.max_seconds, 20.0);
        assert!(summarize_seconds(&[]).is_none());
    }
}
