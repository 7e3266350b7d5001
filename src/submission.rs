//! Turning a request body into encoded chunks: the parse-and-encode step of both ingest routes.
//!
//! The body is parsed once; each record is borrowed from it as raw JSON, parsed into a
//! [`ProcessingActivity`] (or a per-record error), and encoded straight into its chunk's COPY
//! tuples. Nothing else keeps the records.

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::{Priority, ProcessingActivity, RecordError, TenantId, MAX_REPORTED_ERRORS};
use crate::store::copy_encoder::{self, RecordPlacement};
use crate::store::staging::EncodedChunk;

/// Why a whole submission was refused.
#[derive(Debug, thiserror::Error)]
pub enum SubmissionError {
    #[error("the request body is not valid JSON for this route: {0}")]
    Malformed(String),
    #[error("{field}: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
        message_vi: String,
    },
    #[error("activities must hold at least one record")]
    NoRecords,
    #[error("too many records: {count} (at most {max})")]
    TooManyRecords { count: usize, max: usize },
    #[error("no record is valid")]
    NothingValid {
        errors: Vec<RecordError>,
        records_failed: usize,
    },
}

/// `POST /data-scans` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScanEnvelope<'a> {
    tenant_id: &'a str,
    #[serde(borrow)]
    activities: Vec<&'a RawValue>,
    #[serde(default)]
    priority: Option<&'a str>,
    #[serde(default)]
    idempotency_key: Option<String>,
}

/// `POST /batch/processing-activities` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchEnvelope<'a> {
    #[serde(borrow)]
    activities: Vec<&'a RawValue>,
}

/// Records of one submission, validated and encoded.
#[derive(Debug)]
pub struct EncodedRecords {
    pub records_total: usize,
    pub records_failed: usize,
    /// The first [`MAX_REPORTED_ERRORS`] per-record errors.
    pub errors: Vec<RecordError>,
    pub chunks: Vec<EncodedChunk>,
}

/// A scan ready to be staged.
#[derive(Debug)]
pub struct PreparedScan {
    pub tenant_id: TenantId,
    pub scan_id: Uuid,
    pub priority: Priority,
    pub idempotency_key_opt: Option<String>,
    pub records: EncodedRecords,
}

/// Longest accepted idempotency key, in bytes.
const IDEMPOTENCY_KEY_MAX_BYTES: usize = 255;

pub fn prepare_scan(
    body: &[u8],
    max_records: usize,
    chunk_records: usize,
) -> Result<PreparedScan, SubmissionError> {
    let envelope: ScanEnvelope = parse_envelope(body)?;
    let tenant_id = parse_tenant_id(envelope.tenant_id)?;
    let priority = match envelope.priority {
        None => Priority::Standard,
        Some(text) => Priority::parse(text).ok_or_else(|| SubmissionError::InvalidField {
            field: "priority",
            message: "priority must be one of critical, high, standard, low".into(),
            message_vi: "priority phải là một trong critical, high, standard, low".into(),
        })?,
    };
    if let Some(key) = &envelope.idempotency_key {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES || key.contains('\0') {
            return Err(SubmissionError::InvalidField {
                field: "idempotency_key",
                message: format!("idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_BYTES} bytes without U+0000"),
                message_vi: format!("idempotency_key phải dài từ 1 đến {IDEMPOTENCY_KEY_MAX_BYTES} byte và không chứa U+0000"),
            });
        }
    }
    let scan_id = Uuid::now_v7();
    let records = encode_records(
        &envelope.activities,
        tenant_id,
        Some(scan_id),
        max_records,
        chunk_records,
    )?;
    Ok(PreparedScan {
        tenant_id,
        scan_id,
        priority,
        idempotency_key_opt: envelope.idempotency_key,
        records,
    })
}

pub fn prepare_batch(
    body: &[u8],
    tenant_id: TenantId,
    max_records: usize,
    chunk_records: usize,
) -> Result<EncodedRecords, SubmissionError> {
    let envelope: BatchEnvelope = parse_envelope(body)?;
    encode_records(
        &envelope.activities,
        tenant_id,
        None,
        max_records,
        chunk_records,
    )
}

pub fn parse_tenant_id(text: &str) -> Result<TenantId, SubmissionError> {
    Uuid::parse_str(text)
        .map(TenantId)
        .map_err(|_| SubmissionError::InvalidField {
            field: "tenant_id",
            message: "tenant_id must be a UUID".into(),
            message_vi: "tenant_id phải là một UUID".into(),
        })
}

/// Parses the body's envelope, borrowing each record as raw JSON text.
///
/// The body is checked to be UTF-8 once, up front, with SIMD (`simdutf8`): serde_json on bytes
/// would check every string and raw record again with the scalar check, which on Vietnamese
/// text (many multi-byte characters) was a fifth of the parse-and-encode time.
fn parse_envelope<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, SubmissionError> {
    let text = simdutf8::compat::from_utf8(body).map_err(|error| {
        SubmissionError::Malformed(format!("invalid UTF-8 at byte {}", error.valid_up_to()))
    })?;
    serde_json::from_str(text).map_err(|error| SubmissionError::Malformed(error.to_string()))
}

fn encode_records(
    activities: &[&RawValue],
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    max_records: usize,
    chunk_records: usize,
) -> Result<EncodedRecords, SubmissionError> {
    if activities.is_empty() {
        return Err(SubmissionError::NoRecords);
    }
    if activities.len() > max_records {
        return Err(SubmissionError::TooManyRecords {
            count: activities.len(),
            max: max_records,
        });
    }
    let chunk_records = chunk_records.max(1);
    let created_at_unix_micros = chrono::Utc::now().timestamp_micros();
    let mut chunks = Vec::with_capacity(activities.len().div_ceil(chunk_records));
    let mut sealer = ChunkSealer::for_scan(scan_id_opt.is_some());
    let mut tuples = Vec::new();
    let mut record_count = 0;
    let mut errors = Vec::new();
    let mut records_failed = 0;
    for (index, raw) in activities.iter().enumerate() {
        match ProcessingActivity::parse(index, raw) {
            Ok(record) => {
                if tuples.is_empty() {
                    tuples.reserve(copy_encoder::encoded_size_hint(&record) * chunk_records);
                }
                let placement = RecordPlacement {
                    id: Uuid::now_v7(),
                    tenant_id: tenant_id.0,
                    scan_id_opt,
                    record_index: index as i32,
                    created_at_unix_micros,
                };
                copy_encoder::encode_record(&mut tuples, &placement, &record);
                record_count += 1;
                if record_count == chunk_records {
                    chunks.push(sealer.seal(record_count, &mut tuples));
                    record_count = 0;
                }
            }
            Err(error) => {
                records_failed += 1;
                if errors.len() < MAX_REPORTED_ERRORS {
                    errors.push(error);
                }
            }
        }
    }
    if record_count > 0 {
        chunks.push(sealer.seal(record_count, &mut tuples));
    }
    if chunks.is_empty() {
        return Err(SubmissionError::NothingValid {
            errors,
            records_failed,
        });
    }
    Ok(EncodedRecords {
        records_total: activities.len(),
        records_failed,
        errors,
        chunks,
    })
}

/// Turns a full chunk's tuples into its [`EncodedChunk`]: compressed for staging (a scan), or
/// kept as they are (a batch, written from memory while its request waits).
enum ChunkSealer {
    /// Holds the compression buffer all chunks of the scan share. The tuple buffer is shared
    /// too: it is cleared, not replaced, after each chunk, so a scan faults in two chunk-sized
    /// buffers instead of two per chunk.
    Staged {
        scratch: Vec<u8>,
    },
    Inline,
}

impl ChunkSealer {
    fn for_scan(is_scan: bool) -> ChunkSealer {
        if is_scan {
            ChunkSealer::Staged {
                scratch: Vec::new(),
            }
        } else {
            ChunkSealer::Inline
        }
    }

    /// Seals `tuples` (leaving it empty) as a chunk of `record_count` records.
    fn seal(&mut self, record_count: usize, tuples: &mut Vec<u8>) -> EncodedChunk {
        let record_count = record_count as i32;
        match self {
            ChunkSealer::Staged { scratch } => {
                let chunk = EncodedChunk::staged(record_count, tuples, scratch);
                tuples.clear();
                chunk
            }
            ChunkSealer::Inline => EncodedChunk {
                record_count,
                payload: std::mem::take(tuples),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> String {
        format!(
            r#"{{"activity_name":"{name}","pdpl_category":"Category 2: Basic Personal Data","data_fields":["email"]}}"#
        )
    }

    #[test]
    fn valid_records_are_chunked_and_invalid_ones_reported() {
        let mut activities: Vec<String> = (0..25)
            .map(|index| record(&format!("hoạt động {index}")))
            .collect();
        activities[7] = r#"{"activity_name":"x"}"#.to_string();
        let body = format!(
            r#"{{"tenant_id":"{}","activities":[{}]}}"#,
            Uuid::new_v4(),
            activities.join(",")
        );
        let scan = prepare_scan(body.as_bytes(), 100, 10).unwrap();
        assert_eq!(scan.priority, Priority::Standard);
        assert_eq!(scan.records.records_total, 25);
        assert_eq!(scan.records.records_failed, 1);
        assert_eq!(scan.records.errors[0].index, 7);
        let counts: Vec<i32> = scan
            .records
            .chunks
            .iter()
            .map(|chunk| chunk.record_count)
            .collect();
        assert_eq!(counts, vec![10, 10, 4]);
    }

    #[test]
    fn whole_submission_errors() {
        let tenant = Uuid::new_v4();
        let too_many = format!(
            r#"{{"tenant_id":"{tenant}","activities":[{}]}}"#,
            vec![record("a"); 4].join(",")
        );
        assert!(matches!(
            prepare_scan(too_many.as_bytes(), 3, 10),
            Err(SubmissionError::TooManyRecords { count: 4, max: 3 })
        ));
        let empty = format!(r#"{{"tenant_id":"{tenant}","activities":[]}}"#);
        assert!(matches!(
            prepare_scan(empty.as_bytes(), 3, 10),
            Err(SubmissionError::NoRecords)
        ));
        let invalid = format!(r#"{{"tenant_id":"{tenant}","activities":[{{}}]}}"#);
        assert!(matches!(
            prepare_scan(invalid.as_bytes(), 3, 10),
            Err(SubmissionError::NothingValid {
                records_failed: 1,
                ..
            })
        ));
        let bad_tenant = r#"{"tenant_id":"nope","activities":[]}"#;
        assert!(matches!(
            prepare_scan(bad_tenant.as_bytes(), 3, 10),
            Err(SubmissionError::InvalidField {
                field: "tenant_id",
                ..
            })
        ));
        assert!(matches!(
            prepare_scan(b"{", 3, 10),
            Err(SubmissionError::Malformed(_))
        ));
        assert!(matches!(
            prepare_scan(b"\xff\xfe", 3, 10),
            Err(SubmissionError::Malformed(_))
        ));
        // U+0000 written raw inside a string (not as the escape \u0000) is not JSON: the
        // record rules rely on this to check only escaped strings for it.
        let raw_nul = format!(
            "{{\"tenant_id\":\"{tenant}\",\"activities\":[{}]}}",
            record("a\0b")
        );
        assert!(matches!(
            prepare_scan(raw_nul.as_bytes(), 3, 10),
            Err(SubmissionError::Malformed(_))
        ));
    }
}
