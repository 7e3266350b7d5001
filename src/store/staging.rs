//! Durable staging: a scan is committed here, already encoded, before its 202 is sent.
//!
//! One transaction registers the tenant if it is new, inserts the scan (or finds the scan an
//! idempotency key already names), and inserts its chunks. The chunks then wait in
//! `staged_chunks` until a writer applies them (see `chunk_writes`).

use std::sync::LazyLock;

use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::connections::StatementCache;
use super::queries::{self, ScanRow};
use super::{Pool, StoreError};
use crate::domain::audit::AuditEvent;
use crate::domain::Region;
use crate::domain::{Priority, TenantId};

/// How long an idempotency key names its first scan.
const IDEMPOTENCY_WINDOW: &str = "24 hours";

/// A chunk of encoded tuples ready to be staged or written.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    pub record_count: i32,
    pub payload: Vec<u8>,
}

impl EncodedChunk {
    /// The form staging stores: `tuples` lz4-compressed with their size prepended (lz4_flex's
    /// `compress_prepend_size` layout, which `staged_payload` reads back). Chunks of one scan
    /// repeat much of their text (purposes, recipients, field names), so this cuts what staging
    /// writes, and its WAL, several times, for far less CPU than TOAST's pglz would spend.
    ///
    /// `scratch` is the worst-case output buffer, kept by the caller from chunk to chunk: a
    /// fresh one per chunk would be mapped and faulted in page by page every time (it is above
    /// the allocator's mmap threshold), which cost more than the compression. The stored
    /// payload is copied out at its compressed size.
    pub fn staged(record_count: i32, tuples: &[u8], scratch: &mut Vec<u8>) -> EncodedChunk {
        let bound = SIZE_PREFIX_BYTES + lz4_flex::block::get_maximum_output_size(tuples.len());
        if scratch.len() < bound {
            scratch.resize(bound, 0);
        }
        let size = u32::try_from(tuples.len()).expect("a chunk is far smaller than 4 GiB");
        scratch[..SIZE_PREFIX_BYTES].copy_from_slice(&size.to_le_bytes());
        let compressed = lz4_flex::block::compress_into(tuples, &mut scratch[SIZE_PREFIX_BYTES..])
            .expect("the output buffer has lz4's worst-case size for this input");
        EncodedChunk {
            record_count,
            payload: scratch[..SIZE_PREFIX_BYTES + compressed].to_vec(),
        }
    }
}

/// The uncompressed size in front of a staged payload: a little-endian `u32`.
const SIZE_PREFIX_BYTES: usize = 4;

/// LZ4 never expands data more than about 255 times, so a larger size prefix means corruption
/// (and is not allocated).
const MAX_EXPANSION: usize = 255;

/// The tuples of a payload made by [`EncodedChunk::staged`], decompressed into `scratch`, a
/// buffer the caller keeps from chunk to chunk for the reason given there. `None` if the
/// payload is not what `staged` makes.
pub fn unstaged<'s>(payload: &[u8], scratch: &'s mut Vec<u8>) -> Option<&'s [u8]> {
    let (prefix, compressed) = payload.split_at_checked(SIZE_PREFIX_BYTES)?;
    let size = u32::from_le_bytes(prefix.try_into().ok()?) as usize;
    if size > compressed.len().saturating_mul(MAX_EXPANSION) + SIZE_PREFIX_BYTES {
        return None;
    }
    if scratch.len() < size {
        scratch.resize(size, 0);
    }
    let tuples = &mut scratch[..size];
    let written = lz4_flex::block::decompress_into(compressed, tuples).ok()?;
    (written == size).then_some(&*tuples)
}

/// A staged chunk as actors know it: a reference, never its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkRef {
    pub tenant_id: TenantId,
    pub chunk_id: i64,
    pub scan_id: Uuid,
    pub priority: Priority,
    pub record_count: i32,
}

/// Limits a tenant gets when it is first seen.
#[derive(Debug, Clone, Copy)]
pub struct TenantDefaults {
    pub records_per_second: i64,
    pub burst: i64,
    pub max_backlog_records: i64,
}

/// A scan submission after its records were parsed and encoded.
#[derive(Debug)]
pub struct NewScan {
    pub tenant_id: TenantId,
    pub scan_id: Uuid,
    pub priority: Priority,
    pub records_total: i32,
    pub records_failed: i32,
    /// The first per-record errors, as stored JSON.
    pub errors: serde_json::Value,
    pub idempotency_key_opt: Option<String>,
    /// Written with the scan (not for an idempotent repeat, which stages nothing).
    pub accepted_event: AuditEvent,
    pub chunks: Vec<EncodedChunk>,
}

#[derive(Debug)]
pub enum StagedScan {
    /// The scan is committed with these chunks.
    New {
        scan: ScanRow,
        chunks: Vec<ChunkRef>,
    },
    /// The idempotency key already names this scan; nothing new was stored.
    Existing(ScanRow),
    /// Staging it would take the tenant over its backlog limit; nothing was stored.
    OverBacklog {
        backlog_records: i64,
        max_backlog_records: i64,
        retry_after_secs: u64,
    },
}

/// A tenant's write settings, and its region (the `region` label of its metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantLimits {
    pub records_per_second: i64,
    pub burst: i64,
    pub max_backlog_records: i64,
    pub paused: bool,
    pub region: Region,
}

/// Commits `new_scan` and its chunks in one transaction.
///
/// Submissions of one tenant serialise on its `tenants` row (`FOR NO KEY UPDATE`, which does not
/// block the foreign-key checks of writers), so the idempotency check and the backlog limit are
/// exact even when a tenant submits many scans at once.
pub async fn stage_scan(
    pool: &Pool,
    new_scan: &NewScan,
    defaults: TenantDefaults,
) -> Result<StagedScan, StoreError> {
    let mut connection = super::connections::checkout(pool).await?;
    let (client, statements) = connection.split();
    let reused = !statements.is_empty();
    match stage_scan_on(client, statements, new_scan, defaults).await {
        Ok(staged) => Ok(staged),
        Err(error) => {
            statements.clear();
            // A statement this connection prepared earlier that no longer fits the schema (a
            // newer instance's migration changed a table under it) fails the transaction, which
            // rolls back having stored nothing: once more, with the statements prepared afresh.
            if reused && error.is_stale_statement() {
                tracing::info!(%error, "staging statements prepared afresh after a schema change");
                stage_scan_on(client, statements, new_scan, defaults).await
            } else {
                Err(error)
            }
        }
    }
}

/// The idempotency key's scan, and whether the key still names it.
static IDEMPOTENCY_LOOKUP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {columns}, created_at > now() - interval '{IDEMPOTENCY_WINDOW}' AS fresh \
         FROM scans WHERE tenant_id = $1 AND idempotency_key = $2",
        columns = queries::SCAN_COLUMNS
    )
});

static INSERT_SCAN: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO scans (tenant_id, scan_id, status, priority, records_total, records_failed, errors, idempotency_key) \
         VALUES ($1, $2, 'pending', $3, $4, $5, $6, $7) RETURNING {}",
        queries::SCAN_COLUMNS
    )
});

const LOCK_TENANT: &str = "SELECT records_per_second, max_backlog_records FROM tenants WHERE tenant_id = $1 FOR NO KEY UPDATE";

const SUM_BACKLOG: &str =
    "SELECT coalesce(sum(record_count), 0)::bigint FROM staged_chunks WHERE tenant_id = $1";

const INSERT_CHUNKS: &str =
    "INSERT INTO staged_chunks (tenant_id, scan_id, priority, record_count, payload, payload_encoding) \
     SELECT $1, $2, $3, staged.record_count, staged.payload, 'lz4-copy-binary' \
     FROM unnest($4::int4[], $5::bytea[]) WITH ORDINALITY AS staged (record_count, payload, position) \
     ORDER BY staged.position \
     RETURNING chunk_id, record_count";

async fn stage_scan_on(
    client: &mut tokio_postgres::Client,
    statements: &mut StatementCache,
    new_scan: &NewScan,
    defaults: TenantDefaults,
) -> Result<StagedScan, StoreError> {
    let transaction = client.transaction().await?;
    let tenant_uuid = new_scan.tenant_id.0;
    // Each group of statements is executed together (one round trip): tokio-postgres sends
    // each statement of joined futures at their first poll, in order, and PostgreSQL runs them
    // in that order. The statements come from the connection's cache; those it lacks are
    // prepared together first (one more round trip). Under a burst every round trip waits for
    // a busy core, so this saves most of a submission's staging time.
    let [ensure, lock, lookup, sum_backlog] = statements
        .prepare(
            &transaction,
            [ENSURE_TENANT, LOCK_TENANT, &IDEMPOTENCY_LOOKUP, SUM_BACKLOG],
        )
        .await?;
    // The tenant registered and locked, its idempotency key looked up, its backlog summed
    // under the lock.
    let no_key: Option<&str> = None;
    let key_opt = new_scan.idempotency_key_opt.as_deref().or(no_key);
    let ensure_parameters: [&(dyn ToSql + Sync); 4] = [
        &tenant_uuid,
        &defaults.records_per_second,
        &defaults.burst,
        &defaults.max_backlog_records,
    ];
    let tenant_parameter: [&(dyn ToSql + Sync); 1] = [&tenant_uuid];
    let lookup_parameters: [&(dyn ToSql + Sync); 2] = [&tenant_uuid, &key_opt];
    let (_, tenant, existing_opt, backlog_row) = try_join_pipelined!(
        ensured = transaction.execute(&ensure, &ensure_parameters),
        tenant = transaction.query_one(&lock, &tenant_parameter),
        existing = transaction.query_opt(&lookup, &lookup_parameters),
        backlog = transaction.query_one(&sum_backlog, &tenant_parameter),
    )?;

    if let (Some(existing), Some(key)) = (existing_opt, &new_scan.idempotency_key_opt) {
        if existing.get::<_, bool>("fresh") {
            transaction.commit().await?;
            return Ok(StagedScan::Existing(ScanRow::from_row(&existing)?));
        }
        // The key's first use is older than the window: it may name a new scan now.
        transaction
            .execute(
                "UPDATE scans SET idempotency_key = NULL WHERE tenant_id = $1 AND idempotency_key = $2",
                &[&tenant_uuid, key],
            )
            .await?;
    }

    let new_records: i64 = new_scan
        .chunks
        .iter()
        .map(|chunk| chunk.record_count as i64)
        .sum();
    let backlog: i64 = backlog_row.get(0);
    let max_backlog: i64 = tenant.get("max_backlog_records");
    if backlog + new_records > max_backlog {
        let records_per_second: i64 = tenant.get("records_per_second");
        let excess = backlog + new_records - max_backlog;
        return Ok(StagedScan::OverBacklog {
            backlog_records: backlog,
            max_backlog_records: max_backlog,
            retry_after_secs: (excess as u64)
                .div_ceil(records_per_second.max(1) as u64)
                .max(1),
        });
    }

    // The chunks go in statements of at most STAGING_STATEMENT_BYTES of payloads each.
    let groups: Vec<(Vec<i32>, Vec<&[u8]>)> = statement_groups(&new_scan.chunks)
        .map(|chunks| {
            chunks
                .iter()
                .map(|chunk| (chunk.record_count, chunk.payload.as_slice()))
                .unzip()
        })
        .collect();
    let [insert_scan, record_audit, insert_chunks, notify] = statements
        .prepare(
            &transaction,
            [
                &INSERT_SCAN,
                super::audit_log::RECORD,
                INSERT_CHUNKS,
                super::ownership::NOTIFY_TENANT,
            ],
        )
        .await?;
    // The scan, its audit entry, its chunks, and the notification that tells the tenant's
    // owner (on whichever instance) of the work at the commit.
    let tenant_text = tenant_uuid.to_string();
    let (scan_row, (), rows, _) = try_join_pipelined!(
        scan = async {
            transaction
                .query_one(
                    &insert_scan,
                    &[
                        &tenant_uuid,
                        &new_scan.scan_id,
                        &new_scan.priority.rank(),
                        &new_scan.records_total,
                        &new_scan.records_failed,
                        &new_scan.errors,
                        &new_scan.idempotency_key_opt,
                    ],
                )
                .await
                .map_err(StoreError::from)
        },
        audited = super::audit_log::record_prepared(
            &transaction,
            &record_audit,
            &new_scan.accepted_event
        ),
        chunk_rows = async {
            let answers =
                futures_util::future::join_all(groups.iter().map(|(record_counts, payloads)| {
                    let (transaction, insert_chunks) = (&transaction, &insert_chunks);
                    async move {
                        transaction
                            .query(
                                insert_chunks,
                                &[
                                    &tenant_uuid,
                                    &new_scan.scan_id,
                                    &new_scan.priority.rank(),
                                    record_counts,
                                    payloads,
                                ],
                            )
                            .await
                    }
                }))
                .await;
            let (mut rows, mut errors) = (Vec::new(), Vec::new());
            for answer in answers {
                match answer {
                    Ok(group_rows) => rows.push(group_rows),
                    Err(error) => errors.push(Some(StoreError::from(error))),
                }
            }
            if errors.is_empty() {
                Ok(rows)
            } else {
                Err(super::pipeline_cause(errors))
            }
        },
        notified = async {
            transaction
                .execute(&notify, &[&tenant_text])
                .await
                .map_err(StoreError::from)
        },
    )?;
    let scan = ScanRow::from_row(&scan_row)?;
    transaction.commit().await?;

    let mut chunks: Vec<ChunkRef> = rows
        .iter()
        .flatten()
        .map(|row| ChunkRef {
            tenant_id: new_scan.tenant_id,
            chunk_id: row.get("chunk_id"),
            scan_id: new_scan.scan_id,
            priority: new_scan.priority,
            record_count: row.get("record_count"),
        })
        .collect();
    chunks.sort_by_key(|chunk| chunk.chunk_id);
    Ok(StagedScan::New { scan, chunks })
}

/// Most payload bytes one statement stages. The client encodes a statement's parameters into
/// one message buffer, and a buffer above the allocator's mmap threshold (256 KiB, `main.rs`)
/// is mapped and zeroed afresh for every message: one statement for all of a 10,000-record
/// scan's chunks (about 0.67 MB) was a quarter of the request threads' page faults in a burst.
/// The statements of a scan are sent together, so more of them cost no round trip.
const STAGING_STATEMENT_BYTES: usize = 240 << 10;

/// `chunks` in order, in groups of at most [`STAGING_STATEMENT_BYTES`] of payloads (a larger
/// chunk alone).
fn statement_groups(chunks: &[EncodedChunk]) -> impl Iterator<Item = &[EncodedChunk]> {
    let mut rest = chunks;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let length = rest
            .iter()
            .take_while(|chunk| {
                bytes += chunk.payload.len();
                bytes <= STAGING_STATEMENT_BYTES
            })
            .count()
            .max(1);
        let (group, remaining) = rest.split_at(length);
        rest = remaining;
        Some(group)
    })
}

/// Registers a tenant (`$1`) seen for the first time with the default limits (`$2` records per
/// second, `$3` burst, `$4` most records waiting).
const ENSURE_TENANT: &str =
    "INSERT INTO tenants (tenant_id, records_per_second, burst, max_backlog_records) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING";

/// Registers a tenant seen for the first time with the default limits.
pub async fn ensure_tenant(
    client: &impl tokio_postgres::GenericClient,
    tenant_id: TenantId,
    defaults: TenantDefaults,
) -> Result<(), StoreError> {
    client
        .execute(
            ENSURE_TENANT,
            &[
                &tenant_id.0,
                &defaults.records_per_second,
                &defaults.burst,
                &defaults.max_backlog_records,
            ],
        )
        .await?;
    Ok(())
}

/// Registers the tenant if new and returns its limits.
pub async fn tenant_limits(
    pool: &Pool,
    tenant_id: TenantId,
    defaults: TenantDefaults,
) -> Result<TenantLimits, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    ensure_tenant(&**connection, tenant_id, defaults).await?;
    let row = connection
        .query_one(
            "SELECT records_per_second, burst, max_backlog_records, paused, region FROM tenants WHERE tenant_id = $1",
            &[&tenant_id.0],
        )
        .await?;
    Ok(TenantLimits {
        records_per_second: row.get("records_per_second"),
        burst: row.get("burst"),
        max_backlog_records: row.get("max_backlog_records"),
        paused: row.get("paused"),
        region: Region::of(row.get("region")),
    })
}

/// Records staged and not yet written, over all tenants.
pub async fn total_backlog(pool: &Pool) -> Result<i64, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let row = connection
        .query_one(
            "SELECT coalesce(sum(record_count), 0)::bigint FROM staged_chunks",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// Staged chunks, oldest first: every tenant's when `tenant_opt` is `None`.
pub async fn staged_chunk_refs(
    pool: &Pool,
    tenant_opt: Option<TenantId>,
) -> Result<Vec<ChunkRef>, StoreError> {
    let connection = super::connections::checkout(pool).await?;
    let tenant_uuid_opt = tenant_opt.map(|tenant| tenant.0);
    let rows = connection
        .query(
            "SELECT tenant_id, chunk_id, scan_id, priority, record_count FROM staged_chunks \
             WHERE $1::uuid IS NULL OR tenant_id = $1 ORDER BY chunk_id",
            &[&tenant_uuid_opt],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| ChunkRef {
            tenant_id: TenantId(row.get("tenant_id")),
            chunk_id: row.get("chunk_id"),
            scan_id: row.get("scan_id"),
            priority: Priority::from_rank(row.get("priority")),
            record_count: row.get("record_count"),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_staged_in_order_in_statements_of_bounded_payload() {
        let kib = 1 << 10;
        let chunk = |size: usize| EncodedChunk {
            record_count: size as i32,
            payload: vec![0; size],
        };
        let sizes = [
            100 * kib,
            100 * kib,
            40 * kib,
            1,
            300 * kib,
            67 * kib,
            67 * kib,
        ];
        let chunks: Vec<EncodedChunk> = sizes.iter().map(|size| chunk(*size)).collect();
        let groups: Vec<Vec<i32>> = statement_groups(&chunks)
            .map(|group| group.iter().map(|chunk| chunk.record_count).collect())
            .collect();
        let sizes: Vec<i32> = sizes.iter().map(|size| *size as i32).collect();
        assert_eq!(
            groups,
            vec![
                sizes[0..3].to_vec(),
                sizes[3..4].to_vec(),
                sizes[4..5].to_vec(),
                sizes[5..7].to_vec(),
            ],
            "240 KiB at most, a larger chunk alone, every chunk once and in order"
        );
        assert_eq!(statement_groups(&[]).count(), 0);
    }

    #[test]
    fn staged_payloads_keep_lz4_flex_layout_and_come_back_whole() {
        let tuples: Vec<u8> = (0..50_000u32)
            .flat_map(|n| (n % 251).to_be_bytes())
            .collect();
        let mut scratch = Vec::new();
        let chunk = EncodedChunk::staged(7, &tuples, &mut scratch);
        assert_eq!(chunk.record_count, 7);
        // Payloads staged by earlier releases (compress_prepend_size) read back the same way.
        assert_eq!(chunk.payload, lz4_flex::compress_prepend_size(&tuples));
        assert!(chunk.payload.len() < tuples.len() / 2);
        let mut decompressed = vec![0xAA; tuples.len() * 2];
        assert_eq!(
            unstaged(&chunk.payload, &mut decompressed),
            Some(&tuples[..])
        );
        // A reused, smaller compression buffer gives the same payload.
        let small = EncodedChunk::staged(1, &tuples[..100], &mut scratch);
        assert_eq!(
            small.payload,
            lz4_flex::compress_prepend_size(&tuples[..100])
        );
        let mut fresh = Vec::new();
        assert_eq!(unstaged(&small.payload, &mut fresh), Some(&tuples[..100]));
    }

    #[test]
    fn corrupt_staged_payloads_are_refused_without_allocating_their_claim() {
        let mut scratch = Vec::new();
        assert_eq!(unstaged(b"\x01\x02", &mut scratch), None);
        let claims_four_gib = [0xFF, 0xFF, 0xFF, 0xFF, 0x10, 0x61];
        assert_eq!(unstaged(&claims_four_gib, &mut scratch), None);
        assert!(scratch.capacity() < 1024);
        let mut payload = lz4_flex::compress_prepend_size(b"activities and more activities");
        payload[0] += 1; // one byte more than the data holds
        assert_eq!(unstaged(&payload, &mut scratch), None);
    }
}
