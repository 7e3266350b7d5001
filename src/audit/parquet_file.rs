//! One archived month of the audit log as a Parquet file (zstd), with the table's column names
//! and types (`uuid` as 16-byte UUID, `timestamptz` as UTC microseconds, `jsonb` as JSON text,
//! `text` as UTF-8 strings), so pyarrow, DuckDB or Spark read it as they read the table; and the
//! check that reads a file back.
//!
//! Uses the `parquet` crate's own column writers and record reader: its arrow layer is not
//! needed for nine flat columns.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use parquet::basic::{Compression, ZstdLevel};
use parquet::data_type::{
    ByteArray, ByteArrayType, FixedLenByteArray, FixedLenByteArrayType, Int64Type,
};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::SerializedFileWriter;
use parquet::record::{Field, RowAccessor};
use parquet::schema::parser::parse_message_type;
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// The schema: the table's columns, in the table's order.
const SCHEMA: &str = "message audit_log {
    REQUIRED FIXED_LEN_BYTE_ARRAY (16) tenant_id (UUID);
    REQUIRED INT64 occurred_at (TIMESTAMP(MICROS,true));
    REQUIRED FIXED_LEN_BYTE_ARRAY (16) event_id (UUID);
    REQUIRED BYTE_ARRAY actor (STRING);
    REQUIRED BYTE_ARRAY action (STRING);
    REQUIRED BYTE_ARRAY subject (STRING);
    REQUIRED BYTE_ARRAY details (JSON);
    REQUIRED BYTE_ARRAY summary (STRING);
    REQUIRED BYTE_ARRAY summary_vi (STRING);
}";

/// One entry as archived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedEntry {
    pub tenant_id: Uuid,
    /// Microseconds since the Unix epoch, UTC.
    pub occurred_at_micros: i64,
    pub event_id: Uuid,
    pub actor: String,
    pub action: String,
    pub subject: String,
    /// The `jsonb` value as PostgreSQL prints it.
    pub details: String,
    pub summary: String,
    pub summary_vi: String,
}

/// What reading a file back found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSummary {
    pub rows: i64,
    pub first_occurred_at_micros_opt: Option<i64>,
    pub last_occurred_at_micros_opt: Option<i64>,
    pub bytes: i64,
    /// SHA-256 of the whole file, lowercase hex.
    pub sha256: String,
}

/// Writes entries to a new Parquet file, one row group per [`ArchiveWriter::write`] call.
pub struct ArchiveWriter {
    writer: SerializedFileWriter<File>,
}

impl ArchiveWriter {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> anyhow::Result<ArchiveWriter> {
        let schema = Arc::new(parse_message_type(SCHEMA).context("the archive schema")?);
        let properties = Arc::new(
            WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(3)?))
                .set_created_by("ingest-engine audit archive".to_string())
                .build(),
        );
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ArchiveWriter {
            writer: SerializedFileWriter::new(file, schema, properties)?,
        })
    }

    /// Writes `entries` as one row group.
    pub fn write(&mut self, entries: &[ArchivedEntry]) -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let uuids = |pick: fn(&ArchivedEntry) -> Uuid| -> Vec<FixedLenByteArray> {
            entries
                .iter()
                .map(|entry| FixedLenByteArray::from(pick(entry).as_bytes().to_vec()))
                .collect()
        };
        let texts = |pick: fn(&ArchivedEntry) -> &str| -> Vec<ByteArray> {
            entries
                .iter()
                .map(|entry| ByteArray::from(pick(entry).as_bytes().to_vec()))
                .collect()
        };
        let mut row_group = self.writer.next_row_group()?;
        let mut position = 0;
        while let Some(mut column) = row_group.next_column()? {
            match position {
                0 => column.typed::<FixedLenByteArrayType>().write_batch(
                    &uuids(|entry| entry.tenant_id),
                    None,
                    None,
                )?,
                1 => {
                    let times: Vec<i64> = entries
                        .iter()
                        .map(|entry| entry.occurred_at_micros)
                        .collect();
                    column
                        .typed::<Int64Type>()
                        .write_batch(&times, None, None)?
                }
                2 => column.typed::<FixedLenByteArrayType>().write_batch(
                    &uuids(|entry| entry.event_id),
                    None,
                    None,
                )?,
                3 => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.actor),
                    None,
                    None,
                )?,
                4 => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.action),
                    None,
                    None,
                )?,
                5 => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.subject),
                    None,
                    None,
                )?,
                6 => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.details),
                    None,
                    None,
                )?,
                7 => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.summary),
                    None,
                    None,
                )?,
                _ => column.typed::<ByteArrayType>().write_batch(
                    &texts(|entry| &entry.summary_vi),
                    None,
                    None,
                )?,
            };
            column.close()?;
            position += 1;
        }
        row_group.close()?;
        Ok(())
    }

    /// Writes the footer and makes the file durable (fsync).
    pub fn finish(self) -> anyhow::Result<()> {
        let mut file = self.writer.into_inner()?;
        file.flush()?;
        file.sync_all().context("fsync of the archive")?;
        Ok(())
    }
}

/// Reads every row of `path` back: the file's row count, first and last times, size and
/// checksum. Fails if the file is not a readable archive.
pub fn verify(path: &Path) -> anyhow::Result<FileSummary> {
    let mut summary = FileSummary {
        rows: 0,
        first_occurred_at_micros_opt: None,
        last_occurred_at_micros_opt: None,
        bytes: 0,
        sha256: String::new(),
    };
    for_each_entry(path, |entry| {
        summary.rows += 1;
        let time = entry.occurred_at_micros;
        summary.first_occurred_at_micros_opt = Some(
            summary
                .first_occurred_at_micros_opt
                .map_or(time, |first| first.min(time)),
        );
        summary.last_occurred_at_micros_opt = Some(
            summary
                .last_occurred_at_micros_opt
                .map_or(time, |last| last.max(time)),
        );
        Ok(())
    })?;
    let (bytes, sha256) = checksum(path)?;
    summary.bytes = bytes;
    summary.sha256 = sha256;
    Ok(summary)
}

/// Every entry of `path`, in file order.
pub fn read_all(path: &Path) -> anyhow::Result<Vec<ArchivedEntry>> {
    let mut entries = Vec::new();
    for_each_entry(path, |entry| {
        entries.push(entry);
        Ok(())
    })?;
    Ok(entries)
}

fn for_each_entry(
    path: &Path,
    mut visit: impl FnMut(ArchivedEntry) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let reader =
        SerializedFileReader::new(file).with_context(|| format!("reading {}", path.display()))?;
    let uuid = |field: &Field| -> anyhow::Result<Uuid> {
        match field {
            Field::Bytes(bytes) => Ok(Uuid::from_slice(bytes.data())?),
            other => bail!("a UUID column holds {other:?}"),
        }
    };
    for row in reader.get_row_iter(None)? {
        let row = row?;
        let fields: Vec<&Field> = row.get_column_iter().map(|(_, field)| field).collect();
        if fields.len() != 9 {
            bail!("a row has {} columns, not 9", fields.len());
        }
        visit(ArchivedEntry {
            tenant_id: uuid(fields[0])?,
            occurred_at_micros: row.get_timestamp_micros(1)?,
            event_id: uuid(fields[2])?,
            actor: row.get_string(3)?.clone(),
            action: row.get_string(4)?.clone(),
            subject: row.get_string(5)?.clone(),
            details: row.get_string(6)?.clone(),
            summary: row.get_string(7)?.clone(),
            summary_vi: row.get_string(8)?.clone(),
        })?;
    }
    Ok(())
}

/// The file's size and SHA-256.
pub fn checksum(path: &Path) -> anyhow::Result<(i64, String)> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut bytes = 0i64;
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        bytes += read as i64;
        hasher.update(&buffer[..read]);
    }
    let digest = hasher.finalize();
    Ok((
        bytes,
        digest.iter().map(|byte| format!("{byte:02x}")).collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: i64) -> ArchivedEntry {
        ArchivedEntry {
            tenant_id: Uuid::new_v4(),
            occurred_at_micros: 1_740_000_000_000_000 + index,
            event_id: Uuid::now_v7(),
            actor: "bootstrap".into(),
            action: "limits_changed".into(),
            subject: format!("chủ thể {index}"),
            details: r#"{"after": {"burst": null, "name": "Công ty Hà Nội"}}"#.into(),
            summary: "tenant limits changed".into(),
            summary_vi: "đã thay đổi giới hạn của tổ chức".into(),
        }
    }

    #[test]
    fn an_archive_reads_back_row_by_row() {
        let directory = std::env::temp_dir().join(format!("archive-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&directory).unwrap();
        let path = directory.join("month.parquet");
        let first: Vec<ArchivedEntry> = (0..1_000).map(entry).collect();
        let second: Vec<ArchivedEntry> = (1_000..1_500).map(entry).collect();
        let mut writer = ArchiveWriter::create(&path).unwrap();
        writer.write(&first).unwrap();
        writer.write(&second).unwrap();
        writer.finish().unwrap();
        let read = read_all(&path).unwrap();
        assert_eq!(read, [first, second].concat());
        let summary = verify(&path).unwrap();
        assert_eq!(summary.rows, 1_500);
        assert_eq!(
            summary.first_occurred_at_micros_opt,
            Some(1_740_000_000_000_000)
        );
        assert_eq!(
            summary.last_occurred_at_micros_opt,
            Some(1_740_000_000_001_499)
        );
        assert_eq!(summary.sha256.len(), 64);
        std::fs::write(&path, b"not parquet").unwrap();
        assert!(verify(&path).is_err());
        std::fs::remove_dir_all(&directory).unwrap();
    }
}
