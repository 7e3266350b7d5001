//! Turning a request body into encoded chunks: the parse-and-encode step of both ingest routes.
//!
//! Each record is parsed into a [`ProcessingActivity`] (or a per-record error) and encoded
//! straight into its chunk's COPY tuples; nothing else keeps the records. Two readers do this:
//!
//! - [`one_pass`] reads the body once, encoding each record as soon as it is read. It takes
//!   the common case only: well-formed JSON, the scan's `tenant_id` before its `activities`,
//!   valid envelope fields and at least one valid record.
//! - Anything else is read again by the two-pass reader below, which first borrows each record
//!   as raw JSON (`RawValue`) and then parses it: it decides every whole-submission error, so a
//!   body gets the same answer whichever reader took it, and the one-pass reader never has to
//!   explain a refusal. The common case reads each byte once instead of twice.

mod one_pass;

use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::domain::client_text;
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

impl EncodedRecords {
    /// Bytes of the chunks' payloads (what staging sends, or a batch holds until written).
    pub fn payload_bytes(&self) -> u64 {
        self.chunks
            .iter()
            .map(|chunk| chunk.payload.len() as u64)
            .sum()
    }
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

/// How many records a submission may hold, and how many go in a chunk.
/// The parsing slots of submissions (one per core: parsing is CPU work), and how many
/// submissions wait for one. While any waits, the writers hold back staged chunks, within the
/// [`HoldBudget`](crate::actors::hold_budget::HoldBudget) (see
/// [`WriterPool::write`](crate::actors::writer::WriterPool::write)): a staged chunk's
/// records are already durable, and the cores go first to acknowledging submissions.
pub struct ParsingSlots {
    slots: tokio::sync::Semaphore,
    slot_count: usize,
    waiting: std::sync::atomic::AtomicUsize,
}

impl ParsingSlots {
    pub fn new(slots: usize) -> std::sync::Arc<ParsingSlots> {
        std::sync::Arc::new(ParsingSlots {
            slots: tokio::sync::Semaphore::new(slots.max(1)),
            slot_count: slots.max(1),
            waiting: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// One slot per core of this machine.
    pub fn per_core() -> std::sync::Arc<ParsingSlots> {
        ParsingSlots::new(std::thread::available_parallelism().map_or(1, |cores| cores.get()))
    }

    /// Waits for a slot, counted among the waiting submissions meanwhile (also if the wait is
    /// abandoned). Fails only once the slots are closed.
    pub async fn acquire(
        &self,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, tokio::sync::AcquireError> {
        if let Ok(permit) = self.slots.try_acquire() {
            return Ok(permit);
        }
        struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        self.waiting
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        self.slots.acquire().await
    }

    /// How many submissions are parsed at once at most.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Submissions waiting for a slot now.
    pub fn submissions_waiting(&self) -> usize {
        self.waiting.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    max_records: usize,
    chunk_records: usize,
}

pub fn prepare_scan(
    body: &[u8],
    max_records: usize,
    chunk_records: usize,
) -> Result<PreparedScan, SubmissionError> {
    let text = utf8(body)?;
    let limits = Limits {
        max_records,
        chunk_records,
    };
    let scan_id = Uuid::now_v7();
    match one_pass::read_scan(text, scan_id, limits) {
        Some(prepared) => Ok(prepared),
        None => read_scan_in_two_passes(text, scan_id, limits),
    }
}

fn read_scan_in_two_passes(
    text: &str,
    scan_id: Uuid,
    limits: Limits,
) -> Result<PreparedScan, SubmissionError> {
    let envelope: ScanEnvelope = parse_envelope(text)?;
    let tenant_id = parse_tenant_id(envelope.tenant_id)?;
    let priority = scan_options(envelope.priority, envelope.idempotency_key.as_deref())?;
    let records = encode_records(
        &envelope.activities,
        RecordEncoder::new(tenant_id, Some(scan_id), limits),
        limits,
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
    let text = utf8(body)?;
    let limits = Limits {
        max_records,
        chunk_records,
    };
    match one_pass::read_batch(text, tenant_id, limits) {
        Some(records) => Ok(records),
        None => read_batch_in_two_passes(text, tenant_id, limits),
    }
}

fn read_batch_in_two_passes(
    text: &str,
    tenant_id: TenantId,
    limits: Limits,
) -> Result<EncodedRecords, SubmissionError> {
    let envelope: BatchEnvelope = parse_envelope(text)?;
    encode_records(
        &envelope.activities,
        RecordEncoder::new(tenant_id, None, limits),
        limits,
    )
}

/// Checks a scan's optional `priority` and `idempotency_key`.
fn scan_options(
    priority_opt: Option<&str>,
    idempotency_key_opt: Option<&str>,
) -> Result<Priority, SubmissionError> {
    let priority = match priority_opt {
        None => Priority::Standard,
        Some(text) => Priority::parse(text).ok_or_else(|| SubmissionError::InvalidField {
            field: "priority",
            message: "priority must be one of critical, high, standard, low".into(),
            message_vi: "priority phải là một trong critical, high, standard, low".into(),
        })?,
    };
    if let Some(key) = idempotency_key_opt {
        if key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX_BYTES || key.contains('\0') {
            return Err(SubmissionError::InvalidField {
                field: "idempotency_key",
                message: format!("idempotency_key must be 1 to {IDEMPOTENCY_KEY_MAX_BYTES} bytes without U+0000"),
                message_vi: format!("idempotency_key phải dài từ 1 đến {IDEMPOTENCY_KEY_MAX_BYTES} byte và không chứa U+0000"),
            });
        }
    }
    Ok(priority)
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

/// The body as text, checked to be UTF-8 once, up front, with SIMD (`simdutf8`): serde_json on
/// bytes would check every string and raw record again with the scalar check, which on
/// Vietnamese text (many multi-byte characters) was a fifth of the parse-and-encode time.
fn utf8(body: &[u8]) -> Result<&str, SubmissionError> {
    simdutf8::compat::from_utf8(body).map_err(|error| {
        SubmissionError::Malformed(format!("invalid UTF-8 at byte {}", error.valid_up_to()))
    })
}

/// The parser's complaint, which may quote the body, made safe to echo.
fn malformed(error: &serde_json::Error) -> SubmissionError {
    SubmissionError::Malformed(client_text::shown(
        &error.to_string(),
        client_text::MESSAGE_MAX_CHARS,
    ))
}

/// Parses the body's envelope, borrowing each record as raw JSON text (the two-pass reader).
fn parse_envelope<'a, T: Deserialize<'a>>(text: &'a str) -> Result<T, SubmissionError> {
    serde_json::from_str(text).map_err(|error| malformed(&error))
}

/// Encodes records borrowed as raw JSON (the two-pass reader).
fn encode_records(
    activities: &[&RawValue],
    mut encoder: RecordEncoder,
    limits: Limits,
) -> Result<EncodedRecords, SubmissionError> {
    if activities.is_empty() {
        return Err(SubmissionError::NoRecords);
    }
    if activities.len() > limits.max_records {
        return Err(SubmissionError::TooManyRecords {
            count: activities.len(),
            max: limits.max_records,
        });
    }
    for (index, raw) in activities.iter().enumerate() {
        encoder.add(ProcessingActivity::parse(index, raw));
    }
    encoder.finish()
}

/// Encodes a submission's records, in order, into chunks as they are parsed, and keeps the
/// count and the first errors of the invalid ones.
struct RecordEncoder {
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    chunk_records: usize,
    /// Acceptance time of every record of the submission.
    created_at_unix_micros: i64,
    ids: IdSequence,
    sealer: ChunkSealer,
    /// The tuples of the chunk being filled, and how many records they hold.
    tuples: Vec<u8>,
    chunk_record_count: usize,
    chunks: Vec<EncodedChunk>,
    /// Records added so far, valid or not: the next record's index in its submission.
    records_total: usize,
    records_failed: usize,
    errors: Vec<RecordError>,
}

impl RecordEncoder {
    fn new(tenant_id: TenantId, scan_id_opt: Option<Uuid>, limits: Limits) -> RecordEncoder {
        RecordEncoder {
            tenant_id,
            scan_id_opt,
            chunk_records: limits.chunk_records.max(1),
            created_at_unix_micros: chrono::Utc::now().timestamp_micros(),
            ids: IdSequence::new(),
            sealer: ChunkSealer::for_scan(scan_id_opt.is_some()),
            tuples: match scan_id_opt {
                Some(_) => {
                    SPARE_SCAN_BUFFERS.with_borrow_mut(|spare| std::mem::take(&mut spare.tuples))
                }
                None => Vec::new(),
            },
            chunk_record_count: 0,
            chunks: Vec::new(),
            records_total: 0,
            records_failed: 0,
            errors: Vec::new(),
        }
    }

    /// The index the next record has in its submission.
    fn next_index(&self) -> usize {
        self.records_total
    }

    /// Adds the record at [`RecordEncoder::next_index`], parsed or refused.
    fn add(&mut self, parsed: Result<ProcessingActivity<'_>, RecordError>) {
        let index = self.records_total;
        self.records_total += 1;
        let record = match parsed {
            Ok(record) => record,
            Err(error) => {
                self.records_failed += 1;
                if self.errors.len() < MAX_REPORTED_ERRORS {
                    self.errors.push(error);
                }
                return;
            }
        };
        if self.tuples.is_empty() {
            self.tuples
                .reserve(copy_encoder::encoded_size_hint(&record) * self.chunk_records);
        }
        let placement = RecordPlacement {
            id: self.ids.next_id(),
            tenant_id: self.tenant_id.0,
            scan_id_opt: self.scan_id_opt,
            record_index: index as i32,
            created_at_unix_micros: self.created_at_unix_micros,
        };
        copy_encoder::encode_record(&mut self.tuples, &placement, &record);
        self.chunk_record_count += 1;
        if self.chunk_record_count == self.chunk_records {
            self.chunks
                .push(self.sealer.seal(self.chunk_record_count, &mut self.tuples));
            self.chunk_record_count = 0;
        }
    }

    /// The encoded records, or [`SubmissionError::NothingValid`] if none was valid.
    fn finish(mut self) -> Result<EncodedRecords, SubmissionError> {
        if self.chunk_record_count > 0 {
            self.chunks
                .push(self.sealer.seal(self.chunk_record_count, &mut self.tuples));
        }
        let errors = std::mem::take(&mut self.errors);
        if self.chunks.is_empty() {
            return Err(SubmissionError::NothingValid {
                errors,
                records_failed: self.records_failed,
            });
        }
        Ok(EncodedRecords {
            records_total: self.records_total,
            records_failed: self.records_failed,
            errors,
            chunks: std::mem::take(&mut self.chunks),
        })
    }
}

impl Drop for RecordEncoder {
    /// A scan's tuple and compression buffers go back to the thread's spares for its next scan.
    fn drop(&mut self) {
        if let ChunkSealer::Staged { scratch } = &mut self.sealer {
            let (tuples, scratch) = (std::mem::take(&mut self.tuples), std::mem::take(scratch));
            SPARE_SCAN_BUFFERS.with_borrow_mut(|spare| spare.keep(tuples, scratch));
        }
    }
}

/// Largest tuple or compression buffer a parsing thread keeps for its next scan: a chunk of
/// 5,000 of the load test's records is about 2.7 MB of tuples.
const SPARE_SCAN_BUFFER_MAX_BYTES: usize = 8 << 20;

/// The tuple and compression buffers of the last scan encoded on a thread. Each is a chunk's
/// size (about 0.5 MB for 1,000 records), above the size from which the allocator maps fresh
/// memory (`main.rs`), so a scan that allocated its own would have the kernel map and zero
/// both anew: in a burst of 100 scans of 10,000 records, a third of the request and parsing
/// threads' page faults. A thread keeps them until its next scan or until it ends (tokio ends
/// a blocking thread idle for 10 s), each at most [`SPARE_SCAN_BUFFER_MAX_BYTES`].
#[derive(Default)]
struct SpareScanBuffers {
    tuples: Vec<u8>,
    scratch: Vec<u8>,
}

impl SpareScanBuffers {
    fn keep(&mut self, mut tuples: Vec<u8>, scratch: Vec<u8>) {
        if tuples.capacity() <= SPARE_SCAN_BUFFER_MAX_BYTES {
            tuples.clear();
            self.tuples = tuples;
        }
        if scratch.capacity() <= SPARE_SCAN_BUFFER_MAX_BYTES {
            self.scratch = scratch;
        }
    }
}

thread_local! {
    static SPARE_SCAN_BUFFERS: std::cell::RefCell<SpareScanBuffers> =
        std::cell::RefCell::new(SpareScanBuffers::default());
}

/// The ids of a submission's records: UUIDv7s that share the submission's millisecond and
/// random start and count up from it in their last 62 bits (RFC 9562, 6.2, method 2), so they
/// are distinct and ascending within the submission (the primary key index is appended to in
/// order), without reading the clock and drawing random bits for every record. A new start is
/// drawn if the count would ever run out.
struct IdSequence {
    next: u128,
}

/// The low 62 bits of a UUIDv7 (`rand_b`), below the variant bits.
const RAND_B_MASK: u128 = (1 << 62) - 1;

impl IdSequence {
    fn new() -> IdSequence {
        IdSequence {
            next: Uuid::now_v7().as_u128(),
        }
    }

    fn next_id(&mut self) -> Uuid {
        let id = self.next;
        self.next = if id & RAND_B_MASK == RAND_B_MASK {
            Uuid::now_v7().as_u128()
        } else {
            id + 1
        };
        Uuid::from_u128(id)
    }
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
                scratch: SPARE_SCAN_BUFFERS
                    .with_borrow_mut(|spare| std::mem::take(&mut spare.scratch)),
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

/// The messages of a body's answer checked, for the unit tests and for the fuzz target (built
/// with `--cfg fuzzing`): none may hold a character PostgreSQL refuses or that hides itself,
/// and none may be long, whatever the client sent.
#[cfg(any(test, fuzzing))]
pub mod message_check {
    use super::*;

    /// Longest message, in characters, an answer may hold.
    pub const MESSAGE_MAX_CHARS: usize = 1_000;

    /// Reads `body` as a scan and as a batch; returns the first message of either answer that
    /// is unsafe to store or echo.
    pub fn first_unsafe_message(
        body: &[u8],
        max_records: usize,
        chunk_records: usize,
    ) -> Option<String> {
        let results = [
            prepare_scan(body, max_records, chunk_records).map(|scan| scan.records),
            prepare_batch(body, TenantId(Uuid::nil()), max_records, chunk_records),
        ];
        results
            .into_iter()
            .flat_map(|result| messages(&result))
            .find(|text| {
                client_text::holds_hidden_characters(text)
                    || text.chars().count() > MESSAGE_MAX_CHARS
            })
    }

    fn messages(result: &Result<EncodedRecords, SubmissionError>) -> Vec<String> {
        let record_messages = |errors: &[RecordError]| -> Vec<String> {
            errors
                .iter()
                .flat_map(|error| {
                    [
                        error.field.clone(),
                        error.error.clone(),
                        error.error_vi.clone(),
                    ]
                })
                .collect()
        };
        match result {
            Ok(records) => record_messages(&records.errors),
            Err(SubmissionError::NothingValid { errors, .. }) => record_messages(errors),
            Err(SubmissionError::InvalidField {
                message,
                message_vi,
                ..
            }) => vec![message.clone(), message_vi.clone()],
            Err(other) => vec![other.to_string()],
        }
    }
}

/// The two readers compared on one body: for the unit tests and for the fuzz target (built
/// with `--cfg fuzzing`), which runs them on arbitrary bytes.
#[cfg(any(test, fuzzing))]
pub mod reader_comparison {
    use super::*;
    use crate::store::staging;

    /// Reads a scan body with both readers. Returns whether the one-pass reader took it, and
    /// panics if it then answered differently from the two-pass reader.
    pub fn compare_scan(body: &[u8], max_records: usize, chunk_records: usize) -> bool {
        let scan_id = Uuid::now_v7();
        compare(
            body,
            Limits {
                max_records,
                chunk_records,
            },
            |text, limits| one_pass::read_scan(text, scan_id, limits),
            |text, limits| read_scan_in_two_passes(text, scan_id, limits),
            |scan| {
                let records = records_outline(&scan.records, true);
                format!("{} {records}", scan_outline(scan))
            },
        )
    }

    /// The same for a batch body.
    pub fn compare_batch(body: &[u8], max_records: usize, chunk_records: usize) -> bool {
        let tenant_id = TenantId(Uuid::nil());
        compare(
            body,
            Limits {
                max_records,
                chunk_records,
            },
            |text, limits| one_pass::read_batch(text, tenant_id, limits),
            |text, limits| read_batch_in_two_passes(text, tenant_id, limits),
            |records| records_outline(records, false),
        )
    }

    fn compare<T: std::fmt::Debug>(
        body: &[u8],
        limits: Limits,
        one_pass: impl Fn(&str, Limits) -> Option<T>,
        two_passes: impl Fn(&str, Limits) -> Result<T, SubmissionError>,
        outline: impl Fn(&T) -> String,
    ) -> bool {
        let Ok(text) = utf8(body) else {
            return false;
        };
        let Some(taken) = one_pass(text, limits) else {
            return false;
        };
        let expected = two_passes(text, limits)
            .unwrap_or_else(|error| panic!("only the one-pass reader took {text:?}: {error:?}"));
        assert_eq!(outline(&taken), outline(&expected), "{text}");
        true
    }

    /// Encoded records without what differs from call to call (record and scan ids, acceptance
    /// times): counts, errors, and each chunk's tuples with those fields blanked.
    pub(super) fn records_outline(records: &EncodedRecords, staged: bool) -> String {
        let chunks: Vec<(i32, Vec<Vec<u8>>)> = records
            .chunks
            .iter()
            .map(|chunk| {
                let mut scratch = Vec::new();
                let tuples = if staged {
                    staging::unstaged(&chunk.payload, &mut scratch)
                        .expect("a scan's chunks are compressed for staging")
                } else {
                    &chunk.payload[..]
                };
                let tuples = copy_encoder::split_tuples(tuples)
                    .expect("chunks hold well-formed tuples")
                    .into_iter()
                    .map(|tuple| {
                        let mut tuple = tuple.to_vec();
                        tuple[6..22].fill(0); // the record's id
                        if tuple[42..46] == 16i32.to_be_bytes() {
                            tuple[46..62].fill(0); // its scan's id, made by each call
                        }
                        let length = tuple.len();
                        tuple[length - 8..].fill(0); // its acceptance time
                        tuple
                    })
                    .collect();
                (chunk.record_count, tuples)
            })
            .collect();
        format!(
            "{} {} {:?} {chunks:?}",
            records.records_total, records.records_failed, records.errors
        )
    }

    fn scan_outline(scan: &PreparedScan) -> String {
        format!(
            "{:?} {:?} {:?}",
            scan.tenant_id, scan.priority, scan.idempotency_key_opt
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reader_comparison::{compare_batch, compare_scan};

    const LIMITS: Limits = Limits {
        max_records: 12,
        chunk_records: 2,
    };

    /// What a reader made of a body: the error, or the records as [`records_outline`](reader_comparison::records_outline) shows
    /// them (`staged`: a scan's, whose chunks are compressed).
    fn comparable<T: std::fmt::Debug>(
        result: &Result<T, SubmissionError>,
        records_of: impl Fn(&T) -> &EncodedRecords,
        staged: bool,
    ) -> String {
        match result {
            Err(error) => format!("{error:?}"),
            Ok(value) => reader_comparison::records_outline(records_of(value), staged),
        }
    }

    /// Bodies the one-pass reader takes, and bodies it must leave to the two-pass reader; for
    /// every one, the answer is the two-pass reader's.
    #[test]
    fn both_readers_give_the_same_answer() {
        let tenant = Uuid::new_v4();
        let valid = record("hoạt động");
        let escaped = r#"{"activity_name":"tab\there \u00e9","pdpl_category":"Category 1: Sensitive Personal Data","data_fields":["a\"b"],"purpose":null,"data_recipients":["x",[1,[2]],{"k":[]}]}"#;
        let records_variety = [
            valid.clone(),
            escaped.to_string(),
            r#"{"activity_name":"x","pdpl_category":"Category 3: Public Data","data_fields":[],"extra":1,"more":[[[]]]}"#.to_string(),
            r#"{"activity_name":"x","activity_name":"y","pdpl_category":"Category 3: Public Data","data_fields":[]}"#.to_string(),
            r#"{"activity_name":"a\u0000b","pdpl_category":"Category 3: Public Data","data_fields":[]}"#.to_string(),
            "[[[[1]]],{}]".to_string(),
            "\"just text\"".to_string(),
            "null".to_string(),
            "12.5e3".to_string(),
            "true".to_string(),
            r#"{"activity_name":"x","pdpl_category":"Category 9","data_fields":"no"}"#.to_string(),
        ];
        let many = |count: usize| vec![valid.clone(); count].join(",");
        let scan_bodies = vec![
            format!(r#"{{"tenant_id":"{tenant}","activities":[{}]}}"#, many(5)),
            format!(
                r#"{{"tenant_id":"{tenant}","priority":"high","idempotency_key":"k-1","activities":[{}]}}"#,
                records_variety.join(",")
            ),
            format!(
                r#" {{ "idempotency_key" : null , "tenant_id" : "{tenant}" , "priority" : null , "activities" : [ {} ] }} "#,
                many(12)
            ),
            // Left to the two-pass reader: each of these.
            format!(r#"{{"activities":[{}],"tenant_id":"{tenant}"}}"#, many(3)),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{}]}}"#, many(13)),
            format!(r#"{{"tenant_id":"{tenant}","activities":[]}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[1,2,{{}}]}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}],"priority":"urgent"}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}],"idempotency_key":""}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}],"colour":"red"}}"#),
            format!(r#"{{"tenant_id":"{tenant}","tenant_id":"{tenant}","activities":[{valid}]}}"#),
            format!(r#"{{"tenant\u005fid":"{tenant}","activities":[{valid}]}}"#),
            format!(r#"{{"tenant_id":"not-a-uuid","activities":[{valid}]}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}]}} trailing"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{valid},]}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":[{{"activity_name":"\ud800"}}]}}"#),
            format!(r#"{{"tenant_id":"{tenant}","activities":{valid}}}"#),
            format!(r#"[{valid}]"#),
        ];
        let mut taken_in_one_pass = 0;
        for body in &scan_bodies {
            if compare_scan(body.as_bytes(), LIMITS.max_records, LIMITS.chunk_records) {
                taken_in_one_pass += 1;
            }
            let answer = prepare_scan(body.as_bytes(), LIMITS.max_records, LIMITS.chunk_records);
            let expected = read_scan_in_two_passes(body, Uuid::now_v7(), LIMITS);
            assert_eq!(
                comparable(&answer, |scan| &scan.records, true),
                comparable(&expected, |scan| &scan.records, true),
                "{body}"
            );
        }
        assert_eq!(
            taken_in_one_pass, 3,
            "the first three bodies are the common case"
        );

        let batch_bodies = [
            format!(r#"{{"activities":[{}]}}"#, records_variety.join(",")),
            format!(r#"{{"activities":[{}]}}"#, many(13)),
            format!(r#"{{"activities":[{valid}],"tenant_id":"{tenant}"}}"#),
            r#"{"activities":[]}"#.to_string(),
        ];
        for (position, body) in batch_bodies.iter().enumerate() {
            let taken = compare_batch(body.as_bytes(), 12, 2);
            assert_eq!(taken, position == 0, "{body}");
            let tenant_id = TenantId(Uuid::nil());
            let answer = prepare_batch(body.as_bytes(), tenant_id, 12, 2);
            let expected = read_batch_in_two_passes(body, tenant_id, LIMITS);
            assert_eq!(
                comparable(&answer, |records| records, false),
                comparable(&expected, |records| records, false),
                "{body}"
            );
        }
    }

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
    fn a_scan_encodes_in_the_buffers_the_last_scan_on_its_thread_left() {
        let body = |names: &str| {
            let activities: Vec<String> = (0..30)
                .map(|index| record(&format!("{names} {index}")))
                .collect();
            format!(
                r#"{{"tenant_id":"{}","activities":[{}]}}"#,
                Uuid::new_v4(),
                activities.join(",")
            )
        };
        // Each test runs on its own thread, which starts with no spares.
        let spare_addresses = || {
            SPARE_SCAN_BUFFERS.with_borrow(|spare| (spare.tuples.as_ptr(), spare.scratch.as_ptr()))
        };
        let first = prepare_scan(body("đầu").as_bytes(), 100, 10).unwrap();
        let left = spare_addresses();
        assert!(SPARE_SCAN_BUFFERS
            .with_borrow(|spare| spare.tuples.capacity() > 0 && !spare.scratch.is_empty()));
        let second = prepare_scan(body("sau").as_bytes(), 100, 10).unwrap();
        assert_eq!(
            spare_addresses(),
            left,
            "the second scan used and gave back the same buffers"
        );
        for scan in [&first, &second] {
            let written: usize = scan
                .records
                .chunks
                .iter()
                .map(|chunk| {
                    let mut tuples = Vec::new();
                    let tuples = crate::store::staging::unstaged(&chunk.payload, &mut tuples)
                        .expect("a staged payload decompresses");
                    copy_encoder::split_tuples(tuples)
                        .expect("whole tuples")
                        .len()
                })
                .sum();
            assert_eq!(written, 30);
        }
        // A batch's chunks keep their tuple buffers: it takes no spares.
        let batch = format!(r#"{{"activities":[{}]}}"#, record("lô"));
        prepare_batch(batch.as_bytes(), TenantId(Uuid::new_v4()), 10, 10).unwrap();
        assert_eq!(spare_addresses(), left);
    }

    /// JSON that parsers are known to disagree on (raw controls, bad escapes and surrogates,
    /// odd numbers, deep nesting, near-JSON): whichever reader takes the body, the answer is
    /// the two-pass reader's. serde_json's depth limit (128) is also what keeps the 300-deep
    /// arrays here from overflowing the stack: a parser without one must not read bodies.
    #[test]
    fn both_readers_agree_on_json_edge_cases() {
        let tenant = Uuid::new_v4();
        let valid = record("hoạt động");
        let with_name = |name: &str| {
            format!(
                r#"{{"activity_name":"{name}","pdpl_category":"Category 3: Public Data","data_fields":["a"]}}"#
            )
        };
        let with_rest = |rest: &str| {
            format!(r#"{{"activity_name":"x","pdpl_category":"Category 3: Public Data",{rest}}}"#)
        };
        let deep = format!("{}1{}", "[".repeat(300), "]".repeat(300));
        let records = [
            with_name("raw\u{1}control"),
            with_name("raw\nnewline"),
            with_name("raw\ttab"),
            with_name(r"bad \x escape"),
            with_name(r"bad \u12G4 hex"),
            with_name(r"lone \udc00 low"),
            with_name(r"lone \ud800 high"),
            with_name(r"high then text \ud800abc"),
            with_name(r"pair \ud83d\ude00 ok"),
            with_name(r"escaped \/ slash"),
            with_name("del \u{7f} and nbsp \u{a0}"),
            with_rest(r#""data_fields":["a"],"n":1e400"#),
            with_rest(r#""data_fields":["a"],"n":123456789012345678901234567890"#),
            with_rest(r#""data_fields":["a"],"n":01"#),
            with_rest(r#""data_fields":["a"],"n":-"#),
            with_rest(r#""data_fields":["a"],"n":NaN"#),
            with_rest(r#""data_fields":["a"],"n":.5"#),
            with_rest(r#""data_fields":["a"],"n":1."#),
            with_rest(r#""data_fields":["a"],"n":tru"#),
            with_rest(&format!(r#""data_fields":[{deep}]"#)),
            with_rest(&format!(r#""data_fields":["a"],"n":{deep}"#)),
            with_rest(r#""data_fields":["a",]"#),
            with_rest(r#""data_fields":["a"],"#),
            with_rest(r#""data_fields":["a"] "n":1"#),
            r#"{'activity_name':"x"}"#.to_string(),
            r#"{activity_name:"x"}"#.to_string(),
            "{\"activity_name\":\"x\"\u{0}}".to_string(),
        ];
        for record in &records {
            for body in [
                format!(r#"{{"tenant_id":"{tenant}","activities":[{record}]}}"#),
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid},{record},{valid}]}}"#),
            ] {
                let answer =
                    prepare_scan(body.as_bytes(), LIMITS.max_records, LIMITS.chunk_records);
                let expected = read_scan_in_two_passes(&body, Uuid::now_v7(), LIMITS);
                assert_eq!(
                    comparable(&answer, |scan| &scan.records, true),
                    comparable(&expected, |scan| &scan.records, true),
                    "{body}"
                );
                let batch = format!(r#"{{"activities":[{valid},{record}]}}"#);
                let answer = prepare_batch(
                    batch.as_bytes(),
                    TenantId(tenant),
                    LIMITS.max_records,
                    LIMITS.chunk_records,
                );
                let expected = read_batch_in_two_passes(&batch, TenantId(tenant), LIMITS);
                assert_eq!(
                    comparable(&answer, |records| records, false),
                    comparable(&expected, |records| records, false),
                    "{batch}"
                );
            }
        }
    }

    #[test]
    fn record_ids_are_version_7_distinct_and_ascending_even_where_the_count_runs_out() {
        let mut ids = IdSequence::new();
        let first = ids.next_id();
        let second = ids.next_id();
        assert!(first < second);
        // A start at the very end of the count: the next id comes from a fresh start.
        ids.next = first.as_u128() | RAND_B_MASK;
        let last_of_count = ids.next_id();
        let fresh = ids.next_id();
        for id in [first, second, last_of_count, fresh] {
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
        assert_eq!(second.as_u128() - first.as_u128(), 1);
        assert_ne!(fresh, last_of_count);
        assert_ne!(fresh.as_u128() & RAND_B_MASK, 0, "not a wrapped count");
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

    /// Every message a submission can produce, in whatever way it fails, with client text that
    /// PostgreSQL refuses or that hides itself: no message holds such a character raw, and
    /// none is long, so each can be stored in a scan's error list (jsonb) and echoed.
    #[test]
    fn every_error_message_is_safe_whatever_the_client_sent() {
        let tenant = Uuid::new_v4();
        let huge = "x".repeat(1 << 20);
        // Found by the fuzzer: raw DEL characters, each shown as a six-character escape.
        let deletes = "\u{7f}".repeat(2_000);
        let hostile_texts = [
            deletes.as_str(),
            r"a\u0000b",
            r"a\ud800b",
            r"\u202eabc\u200b\u2066",
            r"\u0007\u001b[31m\u0085",
            huge.as_str(),
        ];
        let valid = record("hợp lệ");
        let mut bodies = Vec::new();
        for text in hostile_texts {
            let with_key = |key: &str| {
                format!(
                    r#"{{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[],"{key}":1}}"#
                )
            };
            bodies.extend([
                // An unknown record field, among valid records.
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid},{}]}}"#, with_key(text)),
                // Nothing valid: the error list is the whole answer.
                format!(r#"{{"tenant_id":"{tenant}","activities":[{}]}}"#, with_key(text)),
                // A record value the parser refuses, or the rules do.
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid},{{"activity_name":"{text}","pdpl_category":"{text}","data_fields":["{text}"]}}]}}"#),
                // serde's own complaints quote the body.
                format!(r#"{{"tenant_id":"{tenant}","activities":"{text}"}}"#),
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}],"{text}":1}}"#),
                format!(r#"{{"tenant_id":"{text}","activities":[{valid}]}}"#),
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}],"priority":"{text}","idempotency_key":"{text}"}}"#),
                format!(r#"{{"tenant_id":"{tenant}","activities":[{valid}]}} "{text}""#),
            ]);
        }
        for body in &bodies {
            let batch_body = body.replacen(&format!(r#""tenant_id":"{tenant}","#), "", 1);
            for body in [body, &batch_body] {
                if let Some(message) = message_check::first_unsafe_message(body.as_bytes(), 12, 2) {
                    let shown_body: String = body.chars().take(120).collect();
                    let shown_message: String = message.chars().take(300).collect();
                    panic!("{shown_message:?} from {shown_body}");
                }
            }
        }
    }
}
