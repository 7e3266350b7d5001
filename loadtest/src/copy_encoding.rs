//! PostgreSQL binary `COPY` encoding of generated records, for the plain-COPY baseline.
//!
//! The baseline uses the binary format because the engine does: both then send the same bytes
//! per row, and the ratio measures what the engine adds (HTTP, JSON parsing, validation,
//! staging, throttling, chunked transactions), not a difference of wire formats. This is a
//! copy of the engine's `store/copy_encoder.rs` layout rather than a dependency on the engine's
//! library, so the load test builds without the engine's actor and web stack.

use uuid::Uuid;

use crate::data::ProcessingActivity;

/// The target columns, in tuple order (the engine's order).
pub const COPY_COLUMNS: &str =
    "id, tenant_id, scan_id, record_index, activity_name, pdpl_category, \
     data_fields, purpose, legal_basis, retention_period, data_recipients, created_at";

const FIELD_COUNT: i16 = 12;

/// Signature, flags (no OIDs) and an empty header extension.
const COPY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// A field count of -1 ends the data.
const COPY_TRAILER: &[u8] = &[0xff, 0xff];

/// `text`'s type oid, written into each array header.
const TEXT_OID: u32 = 25;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const POSTGRES_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// A complete `COPY ... FROM STDIN (FORMAT binary)` stream of one scan's records: header,
/// one tuple per record (fresh UUIDv7 ids, `record_index` = position), trailer.
pub fn encode_scan(
    tenant_id: Uuid,
    scan_id: Uuid,
    records: &[ProcessingActivity],
    created_at_unix_micros: i64,
) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(COPY_HEADER.len() + records.len() * 600);
    buffer.extend_from_slice(COPY_HEADER);
    for (record_index, record) in records.iter().enumerate() {
        encode_record(
            &mut buffer,
            tenant_id,
            scan_id,
            record_index as i32,
            record,
            created_at_unix_micros,
        );
    }
    buffer.extend_from_slice(COPY_TRAILER);
    buffer
}

fn encode_record(
    buffer: &mut Vec<u8>,
    tenant_id: Uuid,
    scan_id: Uuid,
    record_index: i32,
    record: &ProcessingActivity,
    created_at_unix_micros: i64,
) {
    buffer.extend_from_slice(&FIELD_COUNT.to_be_bytes());
    put_bytes(buffer, Uuid::now_v7().as_bytes());
    put_bytes(buffer, tenant_id.as_bytes());
    put_bytes(buffer, scan_id.as_bytes());
    put_bytes(buffer, &record_index.to_be_bytes());
    put_bytes(buffer, record.activity_name.as_bytes());
    put_bytes(buffer, record.pdpl_category.as_bytes());
    put_text_array(buffer, &record.data_fields);
    put_optional_text(buffer, record.purpose_opt);
    put_optional_text(buffer, record.legal_basis_opt);
    put_optional_text(buffer, record.retention_period_opt);
    match &record.data_recipients_opt {
        Some(recipients) => put_text_array(buffer, recipients),
        None => put_null(buffer),
    }
    let postgres_micros = created_at_unix_micros - POSTGRES_EPOCH_OFFSET_MICROS;
    put_bytes(buffer, &postgres_micros.to_be_bytes());
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
fn put_text_array(buffer: &mut Vec<u8>, items: &[&str]) {
    let length_position = buffer.len();
    buffer.extend_from_slice(&0i32.to_be_bytes());
    let body_start = buffer.len();
    let dimensions: i32 = if items.is_empty() { 0 } else { 1 };
    buffer.extend_from_slice(&dimensions.to_be_bytes());
    buffer.extend_from_slice(&0i32.to_be_bytes()); // no nulls
    buffer.extend_from_slice(&TEXT_OID.to_be_bytes());
    if !items.is_empty() {
        buffer.extend_from_slice(&(items.len() as i32).to_be_bytes());
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
    use crate::data::generate_records;

    /// Walks the stream the way PostgreSQL does and counts the tuples.
    fn count_tuples(stream: &[u8]) -> Option<usize> {
        let mut position = COPY_HEADER.len();
        let mut tuples = 0;
        loop {
            let field_count =
                i16::from_be_bytes(stream.get(position..position + 2)?.try_into().ok()?);
            position += 2;
            if field_count == -1 {
                return (position == stream.len()).then_some(tuples);
            }
            if field_count != FIELD_COUNT {
                return None;
            }
            for _ in 0..field_count {
                let length =
                    i32::from_be_bytes(stream.get(position..position + 4)?.try_into().ok()?);
                position += 4 + length.max(0) as usize;
            }
            tuples += 1;
        }
    }

    #[test]
    fn a_scan_encodes_to_one_tuple_per_record_between_header_and_trailer() {
        let records = generate_records(3, 1, 250);
        let stream = encode_scan(
            Uuid::new_v4(),
            Uuid::new_v4(),
            &records,
            1_700_000_000_000_000,
        );
        assert!(stream.starts_with(COPY_HEADER));
        assert!(stream.ends_with(COPY_TRAILER));
        assert_eq!(count_tuples(&stream), Some(250));
    }
}
