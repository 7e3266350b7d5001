//! The second baseline: `psql`'s `\copy` of the same generated rows into the same table.
//!
//! This is what a database administrator would run by hand: rows in COPY's text format in
//! files, loaded by `psql -c '\copy … FROM file'`. It runs one `psql` per engine writer, each
//! loading its share of the tenants from its own file, so it uses as many connections as the
//! binary baseline and the engine. The files are written before the clock starts; the clock
//! runs from starting the first `psql` to the exit of the last.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use crate::copy_encoding::COPY_COLUMNS;
use crate::data::{generate_records, ProcessingActivity};
use crate::database::{self, Verification};
use crate::report::Throughput;
use crate::scenarios::{generate_in_parallel, now_unix_micros};
use crate::statistics::round_to_thousandths;

/// What one `\copy` baseline measured.
#[derive(Debug, Clone, Serialize)]
pub struct PsqlCopyReport {
    /// The `psql` that ran (`psql` from `PATH` unless `--psql` names one).
    pub psql: String,
    /// Always "text": `\copy`'s default format, the one people load files with.
    pub copy_format: &'static str,
    /// `psql` processes run at once, each with its own connection and file.
    pub processes: usize,
    pub file_bytes: u64,
    pub file_writing_seconds: f64,
    pub throughput: Throughput,
    pub verification: Verification,
    /// Why a `psql` failed, verbatim (empty when all succeeded).
    pub errors: Vec<String>,
}

/// Loads `tenants` × `records` rows (the streams `0..tenants` of the run's seed, under fresh
/// tenant ids) with `processes` concurrent `psql \copy` commands.
pub async fn measure(
    psql: &str,
    database_url: &str,
    seed: u64,
    tenants: usize,
    records: usize,
    processes: usize,
) -> PsqlCopyReport {
    let processes = processes.clamp(1, tenants.max(1));
    let directory = std::env::temp_dir().join(format!("loadtest-psql-copy-{}", std::process::id()));
    let writing_started = Instant::now();
    let written = tokio::task::spawn_blocking({
        let directory = directory.clone();
        move || write_files(&directory, seed, tenants, records, processes)
    })
    .await
    .expect("writing the files does not panic");
    let file_writing_seconds = round_to_thousandths(writing_started.elapsed().as_secs_f64());
    let (files, expected_rows) = match written {
        Ok(written) => written,
        Err(error) => {
            let _ = std::fs::remove_dir_all(&directory);
            return not_measured(psql, processes, BTreeMap::new(), error);
        }
    };
    let file_bytes = files
        .iter()
        .filter_map(|path| std::fs::metadata(path).ok())
        .map(|metadata| metadata.len())
        .sum();

    let started = Instant::now();
    let runs: Vec<_> = files
        .iter()
        .map(|path| run_psql(psql, database_url, path))
        .collect();
    let outcomes = futures_util::future::join_all(runs).await;
    let elapsed = started.elapsed();
    let _ = std::fs::remove_dir_all(&directory);

    let mut errors = Vec::new();
    let mut records_written = 0u64;
    for outcome in outcomes {
        match outcome {
            Ok(rows) => records_written += rows,
            Err(error) => errors.push(error),
        }
    }
    let mut verification = if errors.is_empty() {
        database::verify(database_url, &expected_rows).await
    } else {
        // A failed `\copy` rolled its file back; which tenants it held is not worth
        // reconstructing: the baseline is reported as failed.
        let mut verification = database::verify(database_url, &BTreeMap::new()).await;
        verification.passed = false;
        verification
    };
    let expected_total: i64 = expected_rows.values().sum();
    if records_written as i64 != expected_total {
        verification.passed = false;
    }
    PsqlCopyReport {
        psql: psql.to_string(),
        copy_format: "text",
        processes,
        file_bytes,
        file_writing_seconds,
        throughput: Throughput {
            records: records_written,
            seconds: round_to_thousandths(elapsed.as_secs_f64()),
            records_per_second: round_to_thousandths(
                records_written as f64 / elapsed.as_secs_f64().max(1e-9),
            ),
            measured: "from starting the first psql to the exit of the last".to_string(),
        },
        verification,
        errors,
    }
}

fn not_measured(
    psql: &str,
    processes: usize,
    expected_rows: BTreeMap<Uuid, i64>,
    error: String,
) -> PsqlCopyReport {
    PsqlCopyReport {
        psql: psql.to_string(),
        copy_format: "text",
        processes,
        file_bytes: 0,
        file_writing_seconds: 0.0,
        throughput: Throughput {
            records: 0,
            seconds: 0.0,
            records_per_second: 0.0,
            measured: "not measured".to_string(),
        },
        verification: Verification::not_passed(&expected_rows, Some(error.clone())),
        errors: vec![error],
    }
}

/// Generates each tenant's rows, encodes them as COPY text and writes tenant `i` into file
/// `i % processes`; returns the files and the rows expected per tenant.
#[allow(clippy::type_complexity)]
fn write_files(
    directory: &Path,
    seed: u64,
    tenants: usize,
    records: usize,
    processes: usize,
) -> Result<(Vec<PathBuf>, BTreeMap<Uuid, i64>), String> {
    std::fs::create_dir_all(directory)
        .map_err(|error| format!("cannot create {}: {error}", directory.display()))?;
    let created_at_unix_micros = now_unix_micros();
    let encoded: Vec<(Uuid, String)> = generate_in_parallel(tenants, |tenant_index| {
        let tenant_id = Uuid::new_v4();
        let rows = generate_records(seed, tenant_index as u64, records);
        let text = encode_text(tenant_id, Uuid::new_v4(), &rows, created_at_unix_micros);
        (tenant_id, text)
    });
    let mut files: Vec<String> = vec![String::new(); processes];
    let mut expected_rows = BTreeMap::new();
    for (tenant_index, (tenant_id, text)) in encoded.into_iter().enumerate() {
        files[tenant_index % processes].push_str(&text);
        expected_rows.insert(tenant_id, records as i64);
    }
    let mut paths = Vec::with_capacity(processes);
    for (index, contents) in files.iter().enumerate() {
        let path = directory.join(format!("part-{index}.tsv"));
        std::fs::write(&path, contents)
            .map_err(|error| format!("cannot write {}: {error}", path.display()))?;
        paths.push(path);
    }
    Ok((paths, expected_rows))
}

/// Runs one `psql \copy` and returns the rows it reported.
async fn run_psql(psql: &str, database_url: &str, file: &Path) -> Result<u64, String> {
    // psql's `\copy` takes a quoted file name; the temporary directory's name has no quote.
    let command = format!(
        "\\copy processing_activities ({COPY_COLUMNS}) FROM '{}'",
        file.display()
    );
    let output = tokio::process::Command::new(psql)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-d", database_url, "-c"])
        .arg(&command)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|error| format!("cannot run {psql}: {error}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{psql} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    stdout
        .lines()
        .find_map(|line| line.trim().strip_prefix("COPY ")?.parse::<u64>().ok())
        .ok_or_else(|| format!("{psql} did not report a row count: {}", stdout.trim()))
}

/// COPY text format of one scan's rows, in the columns of [`COPY_COLUMNS`].
pub fn encode_text(
    tenant_id: Uuid,
    scan_id: Uuid,
    records: &[ProcessingActivity],
    created_at_unix_micros: i64,
) -> String {
    let created_at = DateTime::<Utc>::from_timestamp_micros(created_at_unix_micros)
        .unwrap_or_default()
        .format("%Y-%m-%d %H:%M:%S%.6f+00")
        .to_string();
    let mut text = String::with_capacity(records.len() * 400);
    for (record_index, record) in records.iter().enumerate() {
        let _ = write!(
            text,
            "{}\t{tenant_id}\t{scan_id}\t{record_index}\t",
            Uuid::now_v7()
        );
        push_field(&mut text, &record.activity_name);
        text.push('\t');
        push_field(&mut text, record.pdpl_category);
        text.push('\t');
        push_array(&mut text, &record.data_fields);
        for optional in [
            record.purpose_opt,
            record.legal_basis_opt,
            record.retention_period_opt,
        ] {
            text.push('\t');
            match optional {
                Some(value) => push_field(&mut text, value),
                None => text.push_str("\\N"),
            }
        }
        text.push('\t');
        match &record.data_recipients_opt {
            Some(recipients) => push_array(&mut text, recipients),
            None => text.push_str("\\N"),
        }
        text.push('\t');
        text.push_str(&created_at);
        text.push('\n');
    }
    text
}

/// One field with COPY text's escapes.
fn push_field(text: &mut String, value: &str) {
    for character in value.chars() {
        match character {
            '\\' => text.push_str("\\\\"),
            '\t' => text.push_str("\\t"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            other => text.push(other),
        }
    }
}

/// A `text[]` literal (every element quoted), then escaped as one COPY field.
fn push_array(text: &mut String, items: &[&str]) {
    let mut literal = String::from("{");
    for (position, item) in items.iter().enumerate() {
        if position > 0 {
            literal.push(',');
        }
        literal.push('"');
        for character in item.chars() {
            if character == '"' || character == '\\' {
                literal.push('\\');
            }
            literal.push(character);
        }
        literal.push('"');
    }
    literal.push('}');
    push_field(text, &literal);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_characters_are_escaped_for_copy_text_and_array_literals() {
        let mut field = String::new();
        push_field(&mut field, "a\tb\\c\nd");
        assert_eq!(field, "a\\tb\\\\c\\nd");
        let mut array = String::new();
        push_array(&mut array, &["họ tên", "say \"hi\"", "x\\y"]);
        assert_eq!(array, "{\"họ tên\",\"say \\\\\"hi\\\\\"\",\"x\\\\\\\\y\"}");
        let mut empty = String::new();
        push_array(&mut empty, &[]);
        assert_eq!(empty, "{}");
    }

    #[test]
    fn one_line_of_twelve_fields_per_record() {
        let records = generate_records(3, 1, 50);
        let text = encode_text(
            Uuid::new_v4(),
            Uuid::new_v4(),
            &records,
            1_700_000_000_000_000,
        );
        assert_eq!(text.lines().count(), 50);
        assert!(text.lines().all(|line| line.split('\t').count() == 12));
        assert!(text.contains("2023-11-14 22:13:20.000000+00"));
    }
}
