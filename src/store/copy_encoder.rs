//! PostgreSQL binary `COPY` encoding of processing activities.
//!
//! Records are encoded once, when a submission is accepted, into the tuple bytes of
//! `COPY processing_activities (...) FROM STDIN (FORMAT binary)`. Those bytes are what staging
//! stores and what a writer streams back unchanged between [`COPY_HEADER`] and [`COPY_TRAILER`]:
//! no per-record work remains on the write path. Field layouts follow PostgreSQL's `*send`
//! functions (`uuid_send`, `int4send`, `textsend`, `array_send`, `timestamptz_send`).

use uuid::Uuid;

use crate::domain::{PdplCategory, ProcessingActivity};

/// The target columns, in tuple order.
pub const COPY_COLUMNS: &str =
    "id, tenant_id, scan_id, record_index, activity_name, pdpl_category, \
     data_fields, purpose, legal_basis, retention_period, data_recipients, created_at";

const FIELD_COUNT: i16 = 12;

/// Signature, flags (no OIDs) and an empty header extension.
pub const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// A field count of -1 ends the data.
pub const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// `text`'s type oid, written into each array header.
const TEXT_OID: u32 = 25;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The identity and placement of one record in the activities table.
#[derive(Debug, Clone, Copy)]
pub struct RecordPlacement {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub scan_id_opt: Option<Uuid>,
    pub record_index: i32,
    /// Acceptance time, microseconds since the Unix epoch.
    pub created_at_unix_micros: i64,
}

/// Appends one tuple for `record` to `buffer`.
pub fn encode_record(
    buffer: &mut Vec<u8>,
    placement: &RecordPlacement,
    record: &ProcessingActivity<'_>,
) {
    buffer.extend_from_slice(&FIELD_COUNT.to_be_bytes());
    put_bytes(buffer, placement.id.as_bytes());
    put_bytes(buffer, placement.tenant_id.as_bytes());
    match placement.scan_id_opt {
        Some(scan_id) => put_bytes(buffer, scan_id.as_bytes()),
        None => put_null(buffer),
    }
    put_bytes(buffer, &placement.record_index.to_be_bytes());
    put_bytes(buffer, record.activity_name.as_bytes());
    put_bytes(buffer, record.pdpl_category.as_str().as_bytes());
    put_text_array(buffer, record.data_fields.iter().map(|item| item.as_ref()));
    put_optional_text(buffer, record.purpose_opt.as_deref());
    put_optional_text(buffer, record.legal_basis_opt.as_deref());
    put_optional_text(buffer, record.retention_period_opt.as_deref());
    match &record.data_recipients_opt {
        Some(recipients) => put_text_array(buffer, recipients.iter().map(|item| item.as_ref())),
        None => put_null(buffer),
    }
    let postgres_micros = placement.created_at_unix_micros - POSTGRES_EPOCH_OFFSET_MICROS;
    put_bytes(buffer, &postgres_micros.to_be_bytes());
}

/// An upper bound of a record's encoded size, to size buffers once.
pub fn encoded_size_hint(record: &ProcessingActivity<'_>) -> usize {
    let list = |items: &[std::borrow::Cow<'_, str>]| {
        20 + items.iter().map(|item| 4 + item.len()).sum::<usize>()
    };
    2 + 12 * 4
        + 16 * 3
        + 4
        + record.activity_name.len()
        + record.pdpl_category.as_str().len()
        + list(&record.data_fields)
        + record.purpose_opt.as_ref().map_or(0, |text| text.len())
        + record.legal_basis_opt.as_ref().map_or(0, |text| text.len())
        + record
            .retention_period_opt
            .as_ref()
            .map_or(0, |text| text.len())
        + record.data_recipients_opt.as_deref().map_or(0, list)
        + 8
}

/// Splits an encoded payload back into its tuples, so a chunk can be bisected to isolate a
/// record the database refuses. Returns `None` if the bytes are not well-formed tuples.
pub fn split_tuples(payload: &[u8]) -> Option<Vec<&[u8]>> {
    let mut tuples = Vec::new();
    let mut position = 0;
    while position < payload.len() {
        let start = position;
        let field_count = i16::from_be_bytes(payload.get(position..position + 2)?.try_into().ok()?);
        position += 2;
        for _ in 0..field_count {
            let length = i32::from_be_bytes(payload.get(position..position + 4)?.try_into().ok()?);
            position += 4;
            if length > 0 {
                position = position.checked_add(length as usize)?;
            }
        }
        if position > payload.len() {
            return None;
        }
        tuples.push(&payload[start..position]);
    }
    Some(tuples)
}

/// Cuts `payload` into runs of at most `per_run` consecutive tuples, given `tuples`, its
/// tuples as [`split_tuples`] returns them: each run is one contiguous slice of `payload`, and
/// the runs concatenated are `payload`.
pub fn tuple_runs<'p>(payload: &'p [u8], tuples: &[&'p [u8]], per_run: usize) -> Vec<&'p [u8]> {
    let offset = |tuple: &[u8]| tuple.as_ptr() as usize - payload.as_ptr() as usize;
    tuples
        .chunks(per_run.max(1))
        .map(|run| {
            let (first, last) = (run[0], run[run.len() - 1]);
            &payload[offset(first)..offset(last) + last.len()]
        })
        .collect()
}

/// The `record_index` field of an encoded tuple (the fourth field).
pub fn tuple_record_index(tuple: &[u8]) -> Option<i32> {
    let mut position = 2;
    for _ in 0..3 {
        let length = i32::from_be_bytes(tuple.get(position..position + 4)?.try_into().ok()?);
        position += 4 + length.max(0) as usize;
    }
    let index_bytes = tuple.get(position + 4..position + 8)?;
    Some(i32::from_be_bytes(index_bytes.try_into().ok()?))
}

/// How many of `tuples` fall in each category, in [`PdplCategory::ALL`] order. Returns `None`
/// if a tuple is not well formed or names no known category.
pub fn category_counts<'t>(
    tuples: impl IntoIterator<Item = &'t [u8]>,
) -> Option<[i64; PdplCategory::ALL.len()]> {
    let mut counts = [0; PdplCategory::ALL.len()];
    for tuple in tuples {
        let category = tuple_category(tuple)?;
        let position = PdplCategory::ALL
            .iter()
            .position(|known| *known == category)?;
        counts[position] += 1;
    }
    Some(counts)
}

/// The `pdpl_category` field of an encoded tuple (the sixth field).
fn tuple_category(tuple: &[u8]) -> Option<PdplCategory> {
    let mut position = 2;
    for _ in 0..5 {
        let length = i32::from_be_bytes(tuple.get(position..position + 4)?.try_into().ok()?);
        position += 4 + length.max(0) as usize;
    }
    let length = i32::from_be_bytes(tuple.get(position..position + 4)?.try_into().ok()?);
    let text = tuple.get(position + 4..position + 4 + usize::try_from(length).ok()?)?;
    PdplCategory::parse(std::str::from_utf8(text).ok()?)
}

fn put_bytes(buffer: &mut Vec<u8>, bytes: &[u8]) {
    buffer.extend_from_slice(&(bytes.len() as i32).to_be_bytes());
    buffer.extend_from_slice(bytes);
}

fn put_null(buffer: &mut Vec<u8>) {
    buffer.extend_from_slice(&(-1i32).to_be_bytes());
}

fn put_optional_text(buffer: &mut Vec<u8>, text_opt: Option<&str>) {
    match text_opt {
        Some(text) => put_bytes(buffer, text.as_bytes()),
        None => put_null(buffer),
    }
}

/// A one-dimensional `text[]` without nulls; an empty array has zero dimensions.
fn put_text_array<'t>(buffer: &mut Vec<u8>, items: impl ExactSizeIterator<Item = &'t str>) {
    let length_position = buffer.len();
    buffer.extend_from_slice(&0i32.to_be_bytes());
    let body_start = buffer.len();
    let count = items.len() as i32;
    let dimensions: i32 = if count == 0 { 0 } else { 1 };
    buffer.extend_from_slice(&dimensions.to_be_bytes());
    buffer.extend_from_slice(&0i32.to_be_bytes()); // no nulls
    buffer.extend_from_slice(&TEXT_OID.to_be_bytes());
    if count > 0 {
        buffer.extend_from_slice(&count.to_be_bytes());
        buffer.extend_from_slice(&1i32.to_be_bytes()); // lower bound
        for item in items {
            put_bytes(buffer, item.as_bytes());
        }
    }
    let body_length = (buffer.len() - body_start) as i32;
    buffer[length_position..body_start].copy_from_slice(&body_length.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn sample() -> ProcessingActivity<'static> {
        ProcessingActivity {
            activity_name: Cow::Borrowed("Tuyển dụng"),
            pdpl_category: PdplCategory::Sensitive,
            data_fields: vec![Cow::Borrowed("họ tên"), Cow::Borrowed("CCCD")],
            purpose_opt: None,
            legal_basis_opt: Some(Cow::Borrowed("Điều 17")),
            retention_period_opt: None,
            data_recipients_opt: Some(vec![]),
        }
    }

    fn placement(record_index: i32) -> RecordPlacement {
        RecordPlacement {
            id: Uuid::now_v7(),
            tenant_id: Uuid::new_v4(),
            scan_id_opt: None,
            record_index,
            created_at_unix_micros: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn tuples_split_back_with_their_indexes() {
        let mut payload = Vec::new();
        for index in 0..5 {
            encode_record(&mut payload, &placement(index * 7), &sample());
        }
        let tuples = split_tuples(&payload).unwrap();
        assert_eq!(tuples.len(), 5);
        let indexes: Vec<i32> = tuples
            .iter()
            .map(|tuple| tuple_record_index(tuple).unwrap())
            .collect();
        assert_eq!(indexes, vec![0, 7, 14, 21, 28]);
        assert_eq!(tuples.concat(), payload);
    }

    #[test]
    fn tuples_are_cut_into_runs_that_concatenate_to_the_payload() {
        let mut payload = Vec::new();
        for index in 0..7 {
            encode_record(&mut payload, &placement(index), &sample());
        }
        let tuples = split_tuples(&payload).unwrap();
        let runs = tuple_runs(&payload, &tuples, 3);
        let run_lengths: Vec<usize> = runs
            .iter()
            .map(|run| split_tuples(run).unwrap().len())
            .collect();
        assert_eq!(run_lengths, vec![3, 3, 1]);
        assert_eq!(runs.concat(), payload);
        assert_eq!(tuple_runs(&payload, &tuples, 7), vec![&payload[..]]);
        assert_eq!(tuple_runs(&payload, &tuples, 1000), vec![&payload[..]]);
        assert!(tuple_runs(&payload, &[], 3).is_empty());
    }

    #[test]
    fn tuples_are_counted_by_category() {
        let mut payload = Vec::new();
        for (index, category) in [
            PdplCategory::Public,
            PdplCategory::Sensitive,
            PdplCategory::Public,
        ]
        .into_iter()
        .enumerate()
        {
            let record = ProcessingActivity {
                pdpl_category: category,
                ..sample()
            };
            encode_record(&mut payload, &placement(index as i32), &record);
        }
        let tuples = split_tuples(&payload).unwrap();
        assert_eq!(category_counts(tuples.iter().copied()), Some([1, 0, 2]));
        assert_eq!(
            category_counts(tuples[..1].iter().copied()),
            Some([0, 0, 1])
        );
        assert_eq!(category_counts(std::iter::empty()), Some([0, 0, 0]));
        assert_eq!(category_counts([&tuples[0][..40]]), None);
    }

    #[test]
    fn the_size_hint_is_an_upper_bound() {
        let mut payload = Vec::new();
        encode_record(&mut payload, &placement(1), &sample());
        assert!(payload.len() <= encoded_size_hint(&sample()));
    }

    #[test]
    fn truncated_payloads_are_refused() {
        let mut payload = Vec::new();
        encode_record(&mut payload, &placement(1), &sample());
        assert!(split_tuples(&payload[..payload.len() - 3]).is_none());
    }
}
