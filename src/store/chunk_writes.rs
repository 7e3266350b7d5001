//! Applying a chunk to `processing_activities`, exactly once.
//!
//! A staged chunk is applied by one transaction that deletes it from `staged_chunks`, copies
//! its tuples with binary `COPY`, and advances its scan. If the engine or PostgreSQL dies
//! mid-way, the transaction rolls back and the chunk is still staged; if the transaction
//! committed, the chunk is gone and cannot be applied again. Two engine instances racing for a
//! chunk serialise on its row lock, and the second finds nothing to delete.
//!
//! When `COPY` fails with a permanent error, the same transaction is redone with the chunk
//! bisected under savepoints until each refused record is isolated; those records go to
//! `dead_letters` with their error and the others are written.

use std::ops::Range;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::{Client, Transaction};
use uuid::Uuid;

use super::copy_encoder::{self, COPY_COLUMNS, COPY_HEADER, COPY_TRAILER};
use super::StoreError;
use crate::domain::{ScanStatus, TenantId};

/// What applying a chunk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOutcome {
    pub written: u64,
    pub dead_lettered: u64,
    /// The chunk was no longer staged: another transaction applied it before.
    pub already_applied: bool,
    /// The final status of the chunk's scan, if this chunk finished it.
    pub finished_scan_opt: Option<ScanStatus>,
}

/// Where a chunk's tuples come from.
#[derive(Debug, Clone)]
pub enum ChunkSource {
    /// A staged chunk, loaded (and deleted) inside the applying transaction.
    Staged { chunk_id: i64 },
    /// Tuples of a synchronous batch, held in memory by the waiting request.
    Inline { payload: Bytes, record_count: i32 },
}

/// Applies one chunk of `tenant_id`; see the module documentation.
pub async fn apply_chunk(
    client: &mut Client,
    tenant_id: TenantId,
    source: &ChunkSource,
) -> Result<ChunkOutcome, StoreError> {
    match apply_once(client, tenant_id, source, Mode::Whole).await {
        Err(error) if !error.is_retryable() => {
            tracing::warn!(%tenant_id, %error, "chunk refused; isolating the records at fault");
            apply_once(client, tenant_id, source, Mode::Isolate).await
        }
        outcome => outcome,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whole,
    Isolate,
}

async fn apply_once(
    client: &mut Client,
    tenant_id: TenantId,
    source: &ChunkSource,
    mode: Mode,
) -> Result<ChunkOutcome, StoreError> {
    let mut stages = crate::metrics::StageTimer::chunk();
    let transaction = client.transaction().await?;
    let (scan_id_opt, payload, record_count) = match source {
        ChunkSource::Inline {
            payload,
            record_count,
        } => (None, payload.clone(), *record_count),
        ChunkSource::Staged { chunk_id } => {
            let row_opt = transaction
                .query_opt(
                    "DELETE FROM staged_chunks WHERE tenant_id = $1 AND chunk_id = $2 \
                     RETURNING scan_id, record_count, payload, payload_encoding",
                    &[&tenant_id.0, chunk_id],
                )
                .await?;
            let Some(row) = row_opt else {
                transaction.commit().await?;
                return Ok(ChunkOutcome {
                    already_applied: true,
                    ..ChunkOutcome::default()
                });
            };
            let stored: Vec<u8> = row.get("payload");
            let payload = match row.get::<_, &str>("payload_encoding") {
                "lz4-copy-binary" => {
                    lz4_flex::decompress_size_prepended(&stored).map_err(|error| {
                        StoreError::Corrupt(format!("a staged chunk does not decompress: {error}"))
                    })?
                }
                _ => stored,
            };
            (
                Some(row.get::<_, Uuid>("scan_id")),
                Bytes::from(payload),
                row.get::<_, i32>("record_count"),
            )
        }
    };

    stages.lap("fetch");
    let mut outcome = match mode {
        Mode::Whole => {
            copy_tuples(&transaction, std::slice::from_ref(&payload)).await?;
            ChunkOutcome {
                written: record_count as u64,
                ..ChunkOutcome::default()
            }
        }
        Mode::Isolate => isolate(&transaction, tenant_id, scan_id_opt, &payload).await?,
    };
    stages.lap("copy");
    if let Some(scan_id) = scan_id_opt {
        outcome.finished_scan_opt =
            advance_scan(&transaction, tenant_id, scan_id, &outcome).await?;
    }
    transaction.commit().await?;
    stages.lap("finish");
    Ok(outcome)
}

/// Streams pre-encoded tuples into `processing_activities`.
pub(super) async fn copy_tuples(
    transaction: &Transaction<'_>,
    parts: &[Bytes],
) -> Result<u64, StoreError> {
    let statement =
        format!("COPY processing_activities ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)");
    let sink = transaction.copy_in::<_, Bytes>(&statement).await?;
    futures_util::pin_mut!(sink);
    sink.feed(Bytes::from_static(COPY_HEADER)).await?;
    for part in parts {
        sink.feed(part.clone()).await?;
    }
    sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
    Ok(sink.as_mut().finish().await?)
}

/// Bisects the chunk under savepoints; see the module documentation.
async fn isolate(
    transaction: &Transaction<'_>,
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    payload: &Bytes,
) -> Result<ChunkOutcome, StoreError> {
    let tuples: Vec<Bytes> = copy_encoder::split_tuples(payload)
        .ok_or_else(|| StoreError::Corrupt("a staged chunk is not well-formed COPY tuples".into()))?
        .into_iter()
        .map(|tuple| payload.slice_ref(tuple))
        .collect();
    let mut outcome = ChunkOutcome::default();
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..tuples.len());
    while let Some(range) = pending.pop() {
        transaction.batch_execute("SAVEPOINT isolate").await?;
        match copy_tuples(transaction, &tuples[range.clone()]).await {
            Ok(written) => {
                transaction
                    .batch_execute("RELEASE SAVEPOINT isolate")
                    .await?;
                outcome.written += written;
            }
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => {
                transaction
                    .batch_execute("ROLLBACK TO SAVEPOINT isolate; RELEASE SAVEPOINT isolate")
                    .await?;
                if range.len() == 1 {
                    let tuple = &tuples[range.start];
                    dead_letter(transaction, tenant_id, scan_id_opt, tuple, &error).await?;
                    outcome.dead_lettered += 1;
                } else {
                    let middle = range.start + range.len() / 2;
                    // Later half pushed first so records are tried in order.
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            }
        }
    }
    Ok(outcome)
}

async fn dead_letter(
    transaction: &Transaction<'_>,
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    tuple: &Bytes,
    error: &StoreError,
) -> Result<(), StoreError> {
    let record_index = copy_encoder::tuple_record_index(tuple).unwrap_or(-1);
    let message = error.database_message();
    tracing::warn!(%tenant_id, record_index, error = %message, "record dead-lettered");
    transaction
        .execute(
            "INSERT INTO dead_letters (tenant_id, scan_id, record_index, payload, error) \
             VALUES ($1, $2, $3, $4, $5)",
            &[
                &tenant_id.0,
                &scan_id_opt,
                &record_index,
                &tuple.as_ref(),
                &message,
            ],
        )
        .await?;
    Ok(())
}

/// Counts the chunk into its scan and completes the scan when every record is accounted for;
/// returns the scan's final status if this chunk finished it.
async fn advance_scan(
    transaction: &Transaction<'_>,
    tenant_id: TenantId,
    scan_id: Uuid,
    outcome: &ChunkOutcome,
) -> Result<Option<ScanStatus>, StoreError> {
    let written = outcome.written as i32;
    let failed = outcome.dead_lettered as i32;
    let row_opt = transaction
        .query_opt(
            "UPDATE scans SET \
                records_processed = records_processed + $3, \
                records_failed = records_failed + $4, \
                started_at = coalesce(started_at, now()), \
                status = CASE \
                    WHEN records_processed + records_failed + $3 + $4 < records_total THEN 'processing' \
                    WHEN records_failed + $4 > 0 THEN 'completed_with_errors' \
                    ELSE 'completed' END, \
                completed_at = CASE \
                    WHEN records_processed + records_failed + $3 + $4 < records_total THEN NULL \
                    ELSE now() END \
             WHERE tenant_id = $1 AND scan_id = $2 \
             RETURNING status",
            &[&tenant_id.0, &scan_id, &written, &failed],
        )
        .await?;
    Ok(row_opt
        .and_then(|row| ScanStatus::parse(row.get("status")))
        .filter(|status| *status != ScanStatus::Processing))
}
