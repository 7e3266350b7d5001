//! The report of one scenario: its JSON file, its chart, and the bilingual summary printed at
//! the end.
//!
//! Files are named `<scenario>-<UTC timestamp>.json` and `.svg` in the report directory, so
//! runs never overwrite each other and sort by time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::chart::{self, TimelineSeries};
use crate::database::Verification;
use crate::memory::MemoryReport;
use crate::psql_copy::PsqlCopyReport;
use crate::statistics::{EndpointReport, LatencyHistogram, LatencySummary, TimelinePoint};

/// Everything a scenario measured and verified.
#[derive(Serialize)]
pub struct ScenarioReport {
    pub scenario: &'static str,
    pub passed: bool,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub command_line: Vec<String>,
    /// The options in force (global and the scenario's), without the token.
    pub settings: serde_json::Value,
    pub engine_url: String,
    pub database_url: String,
    pub data: DataReport,
    #[serde(rename = "engine_throughput", skip_serializing_if = "Option::is_none")]
    pub engine_throughput_opt: Option<Throughput>,
    #[serde(rename = "baseline", skip_serializing_if = "Option::is_none")]
    pub baseline_opt: Option<BaselineReport>,
    /// Engine records/s divided by plain-COPY records/s.
    #[serde(
        rename = "engine_to_baseline_ratio",
        skip_serializing_if = "Option::is_none"
    )]
    pub engine_to_baseline_ratio_opt: Option<f64>,
    /// Per endpoint: statuses and latency percentiles.
    pub endpoints: BTreeMap<String, EndpointReport>,
    /// What only this scenario measures (completion times, fairness, mixed traffic).
    pub details: serde_json::Value,
    #[serde(rename = "engine_memory", skip_serializing_if = "Option::is_none")]
    pub memory_opt: Option<MemoryReport>,
    #[serde(
        rename = "engine_memory_error",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_error_opt: Option<String>,
    pub verification: Verification,
    /// Engine records written (or acknowledged, for `mixed`) per second since the start.
    pub timeline: Vec<TimelinePoint>,
    pub notes: Vec<String>,
    pub summary_en: Vec<String>,
    pub summary_vi: Vec<String>,
    /// Filled by `main` around the scenario: how busy the machine was.
    #[serde(rename = "machine", skip_serializing_if = "Option::is_none")]
    pub machine_opt: Option<MachineReport>,
    /// Each endpoint's latencies of 2xx answers, for the chart (the JSON has their summaries).
    #[serde(skip)]
    pub success_latencies: Vec<(String, LatencyHistogram)>,
}

/// The machine the run shared: the engine, its PostgreSQL and the load test all run on it, and
/// anything else running (a build, a test suite) lowers every figure.
#[derive(Debug, Clone, Serialize)]
pub struct MachineReport {
    pub cores: usize,
    /// `/proc/loadavg` (1, 5 and 15 minutes) just before and just after the scenario.
    pub load_average_before: String,
    pub load_average_after: String,
    /// Whether the cluster's WAL segment files were created before the scenarios
    /// (`--cold-wal` leaves them as found).
    pub wal_segments: String,
}

/// `/proc/loadavg`'s three averages, or a note that it could not be read.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|error| format!("unreadable: {error}"))
}

/// The generated data, made before any timing.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DataReport {
    pub records: u64,
    pub request_bodies: u64,
    pub body_bytes: u64,
    pub generation_seconds: f64,
}

impl DataReport {
    /// Counts the data of another phase of the same scenario too.
    pub fn add(&mut self, other: &DataReport) {
        self.records += other.records;
        self.request_bodies += other.request_bodies;
        self.body_bytes += other.body_bytes;
        self.generation_seconds = crate::statistics::round_to_thousandths(
            self.generation_seconds + other.generation_seconds,
        );
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Throughput {
    pub records: u64,
    pub seconds: f64,
    pub records_per_second: f64,
    /// What the interval is, in words.
    pub measured: String,
}

/// The plain-COPY baseline.
#[derive(Debug, Clone, Serialize)]
pub struct BaselineReport {
    /// Always "binary": the format the engine's writers use.
    pub copy_format: &'static str,
    pub connections: usize,
    pub copy_statements: u64,
    pub failed_copy_statements: u64,
    pub sample_errors: Vec<String>,
    pub throughput: Throughput,
    /// Latency of one COPY statement (one tenant's rows).
    pub copy_latency: LatencySummary,
    pub verification: Verification,
    pub timeline: Vec<TimelinePoint>,
    pub encoding_seconds: f64,
    /// Whether the database was brought to rest before the clock started (`database::settle`).
    pub settled: Settling,
    /// `psql`'s `\copy` of the same rows (text format), right after the binary COPY.
    #[serde(rename = "psql_copy")]
    pub psql_copy_opt: Option<PsqlCopyReport>,
}

/// Whether a baseline's database was brought to rest before its clock started.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Settling {
    /// Nothing was done: nothing ran before the baseline, or `--unsettled-baseline`.
    NotAsked { reason: &'static str },
    /// `VACUUM` and `CHECKPOINT` ran (untimed) in `seconds`.
    #[serde(rename = "settled")]
    Done { seconds: f64 },
    /// They could not run (say, a role without `CHECKPOINT`); the baseline ran unsettled.
    Failed { error: String },
}

/// Where a report went.
pub struct WrittenReport {
    pub json_path: PathBuf,
    pub chart_path_opt: Option<PathBuf>,
    pub chart_error_opt: Option<String>,
}

impl ScenarioReport {
    /// Writes the JSON report and its chart into `directory`.
    pub fn write(&self, directory: &Path) -> Result<WrittenReport, String> {
        std::fs::create_dir_all(directory)
            .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
        let stem = format!(
            "{}-{}",
            self.scenario,
            self.started_at.format("%Y%m%dT%H%M%SZ")
        );
        let json_path = directory.join(format!("{stem}.json"));
        let json = serde_json::to_vec_pretty(self)
            .map_err(|error| format!("cannot serialise the report: {error}"))?;
        std::fs::write(&json_path, json)
            .map_err(|error| format!("cannot write {}: {error}", json_path.display()))?;

        let chart_path = directory.join(format!("{stem}.svg"));
        let mut timelines = vec![TimelineSeries {
            name: "engine (its counter ingest_records_written_total, read every 0.5 s)".to_string(),
            points: &self.timeline,
        }];
        if let Some(baseline) = &self.baseline_opt {
            timelines.push(TimelineSeries {
                name: format!("plain binary COPY, {} connections", baseline.connections),
                points: &baseline.timeline,
            });
        }
        let title = format!(
            "loadtest {} — {}",
            self.scenario,
            self.started_at.format("%Y-%m-%d %H:%M:%S UTC")
        );
        let (chart_path_opt, chart_error_opt) =
            match chart::write_chart(&chart_path, &title, &timelines, &self.success_latencies) {
                Ok(()) => (Some(chart_path), None),
                Err(error) => (None, Some(error)),
            };
        Ok(WrittenReport {
            json_path,
            chart_path_opt,
            chart_error_opt,
        })
    }

    /// The summary lines, English then Vietnamese.
    pub fn print_summary(&self) {
        let verdict_en = if self.passed { "PASSED" } else { "FAILED" };
        let verdict_vi = if self.passed {
            "ĐẠT"
        } else {
            "KHÔNG ĐẠT"
        };
        println!();
        println!("== {} — {verdict_en} / {verdict_vi} ==", self.scenario);
        for line in &self.summary_en {
            println!("  {line}");
        }
        for line in &self.summary_vi {
            println!("  {line}");
        }
    }
}

/// The lines both languages share: verification and memory.
pub fn common_summary_lines(
    verification: &Verification,
    memory_opt: Option<&MemoryReport>,
) -> (Vec<String>, Vec<String>) {
    let mut english = Vec::new();
    let mut vietnamese = Vec::new();
    match &verification.error_opt {
        Some(error) => {
            english.push(format!("Verification could not run: {error}"));
            vietnamese.push(format!("Không thể kiểm tra cơ sở dữ liệu: {error}"));
        }
        None => {
            english.push(format!(
                "Verification {}: {} rows expected, {} found in {} tenants; {} tenants with a wrong count; {} duplicate groups.",
                if verification.passed { "passed" } else { "FAILED" },
                number_en(verification.rows_expected as f64, 0),
                number_en(verification.rows_found as f64, 0),
                verification.tenants_checked,
                verification.mismatched_tenants,
                verification.duplicate_groups,
            ));
            vietnamese.push(format!(
                "Kiểm tra {}: cần {} dòng, tìm thấy {} dòng ở {} tổ chức; {} tổ chức sai số lượng; {} nhóm bản ghi trùng lặp.",
                if verification.passed { "đạt" } else { "KHÔNG ĐẠT" },
                number_vi(verification.rows_expected as f64, 0),
                number_vi(verification.rows_found as f64, 0),
                verification.tenants_checked,
                verification.mismatched_tenants,
                verification.duplicate_groups,
            ));
        }
    }
    if let Some(memory) = memory_opt {
        english.push(format!(
            "Engine memory: RSS {} MiB at the start, peak {} MiB during the run (VmHWM since the engine started {} MiB).",
            number_en(memory.rss_at_start_kib as f64 / 1024.0, 1),
            number_en(memory.peak_rss_sampled_kib as f64 / 1024.0, 1),
            number_en(memory.vm_hwm_kib as f64 / 1024.0, 1),
        ));
        vietnamese.push(format!(
            "Bộ nhớ của engine: RSS {} MiB lúc bắt đầu, cao nhất {} MiB trong lần chạy (VmHWM từ khi engine khởi động {} MiB).",
            number_vi(memory.rss_at_start_kib as f64 / 1024.0, 1),
            number_vi(memory.peak_rss_sampled_kib as f64 / 1024.0, 1),
            number_vi(memory.vm_hwm_kib as f64 / 1024.0, 1),
        ));
    }
    (english, vietnamese)
}

/// `value` with `decimals` decimals, thousands separated by commas: 1,234,567.8.
pub fn number_en(value: f64, decimals: usize) -> String {
    group_digits(value, decimals, ',', '.')
}

/// `value` the Vietnamese way, thousands separated by dots: 1.234.567,8.
pub fn number_vi(value: f64, decimals: usize) -> String {
    group_digits(value, decimals, '.', ',')
}

fn group_digits(value: f64, decimals: usize, thousands: char, decimal_mark: char) -> String {
    let formatted = format!("{:.*}", decimals, value.abs());
    let (integer_part, fraction_part_opt) = match formatted.split_once('.') {
        Some((integer_part, fraction_part)) => (integer_part, Some(fraction_part)),
        None => (formatted.as_str(), None),
    };
    let mut grouped = String::new();
    for (position, digit) in integer_part.chars().enumerate() {
        if position > 0 && (integer_part.len() - position) % 3 == 0 {
            grouped.push(thousands);
        }
        grouped.push(digit);
    }
    if let Some(fraction_part) = fraction_part_opt {
        grouped.push(decimal_mark);
        grouped.push_str(fraction_part);
    }
    if value < 0.0
        && formatted
            .chars()
            .any(|digit| digit.is_ascii_digit() && digit != '0')
    {
        grouped.insert(0, '-');
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped_for_each_language() {
        assert_eq!(number_en(1_234_567.891, 1), "1,234,567.9");
        assert_eq!(number_vi(1_234_567.891, 1), "1.234.567,9");
        assert_eq!(number_en(999.0, 0), "999");
        assert_eq!(number_vi(0.5, 2), "0,50");
        assert_eq!(number_en(-12_345.0, 0), "-12,345");
    }
}
