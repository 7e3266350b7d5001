//! Applying a chunk to `processing_activities`, exactly once.
//!
//! A staged chunk is applied by one transaction that deletes it from `staged_chunks`, copies
//! its tuples with binary `COPY`, and advances its scan. If the engine or PostgreSQL dies
//! mid-way, the transaction rolls back and the chunk is still staged; if the transaction
//! committed, the chunk is gone and cannot be applied again. Two engine instances racing for a
//! chunk serialise on its row lock, and the second finds nothing to delete.
//!
//! Durability of that transaction's commit: the chunk's records are already durable (staged, or
//! held by a batch request that waits for the commit), so a staged chunk's transaction needs
//! only to be atomic, and commits without waiting for its WAL flush (`synchronous_commit =
//! off`): if PostgreSQL crashes before the flush, the whole transaction is gone, the chunk is
//! still staged, and the sweep applies it again. Two commits still wait for the flush: a
//! batch's, since its 201 promises the records are committed, and the one that finishes a scan,
//! so a scan reported `completed` stays completed; WAL is flushed in order, so that flush also
//! makes every earlier chunk of the scan durable.
//!
//! The same transaction adds what it copied to the tenant's per-category counts
//! (`activity_counts`, read by the compliance summary), after its scan update: every
//! transaction that takes both locks takes the scan row first, so none waits for another in a
//! cycle.
//!
//! When `COPY` fails with a permanent error, the same transaction is redone with the chunk
//! bisected under savepoints until each refused record is isolated; those records go to
//! `dead_letters` with their error and the others are written.
//!
//! Staged chunks of different tenants may share one transaction
//! ([`WriteConnection::apply_chunks`]): the same statements for each chunk, one `COPY` for
//! all of them. Everything above holds per chunk; if the shared transaction fails, it is
//! rolled back and each chunk is applied in its own.

use std::ops::Range;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Config, Row, Statement, ToStatement, Transaction};
use uuid::Uuid;

use super::copy_encoder::{self, COPY_COLUMNS, COPY_HEADER, COPY_TRAILER};
use super::{connect, staging, StoreError};
use crate::domain::{PdplCategory, ScanStatus, TenantId};

/// What applying a chunk did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOutcome {
    pub written: u64,
    pub dead_lettered: u64,
    /// The chunk was no longer staged: another transaction applied it before.
    pub already_applied: bool,
    /// The final status of the chunk's scan, if this chunk finished it.
    pub finished_scan_opt: Option<ScanStatus>,
    /// The transaction left the wait for its commit's WAL flush on: false when a staged chunk
    /// that does not finish its scan turned it off (see the module documentation); otherwise
    /// the server's own `synchronous_commit` applies.
    pub commit_flushed: bool,
}

/// Who may write a chunk: this instance, as the owner of the chunk's tenant under this epoch
/// (see [`ownership::FENCE`](super::ownership::FENCE)).
#[derive(Debug, Clone)]
pub struct Fence {
    pub instance_id: std::sync::Arc<str>,
    pub epoch: i64,
    /// Leave the (tenant, epoch, instance) trace in `ownership_writes` too (see
    /// [`ownership::FENCE_AND_TRACE`](super::ownership::FENCE_AND_TRACE)).
    pub trace: bool,
}

/// Where a chunk's tuples come from.
#[derive(Debug, Clone)]
pub enum ChunkSource {
    /// A staged chunk, loaded (and deleted) inside the applying transaction.
    Staged { chunk_id: i64 },
    /// Tuples of a synchronous batch, held in memory by the waiting request.
    Inline { payload: Bytes, record_count: i32 },
}

/// A writer's dedicated connection, with the statements every chunk runs prepared once when it
/// opens: a chunk then costs no parse or describe round trip.
pub struct WriteConnection {
    client: Client,
    take_staged: Statement,
    copy: Statement,
    advance_scan: Statement,
    count_activities: Statement,
    fence: Statement,
    fence_and_trace: Statement,
    sync_if_finished: Statement,
    /// Where the chunks of a shared transaction are decompressed, one buffer per chunk, kept
    /// like `tuples_scratch`.
    shared_scratch: Vec<Vec<u8>>,
    /// Where staged chunks are decompressed, kept from chunk to chunk: a fresh buffer per
    /// chunk would be mapped and faulted in page by page each time (see
    /// [`EncodedChunk::staged`](super::staging::EncodedChunk::staged)). Dropped after a chunk
    /// that grew it past [`RETAINED_TUPLES_MAX_BYTES`], so one huge chunk does not stay
    /// resident.
    tuples_scratch: Vec<u8>,
}

/// Largest decompression buffer a writer keeps between chunks; a 1,000-record chunk of the
/// load test's records is about 0.5 MiB.
const RETAINED_TUPLES_MAX_BYTES: usize = 4 << 20;

/// Size of the pieces a chunk is sent to `COPY` in: small enough to come from the allocator's
/// reused memory rather than fresh pages, large enough that each is one `CopyData` message.
const COPY_PIECE_BYTES: usize = 64 << 10;

/// Most tuples one `COPY` statement carries; a larger chunk is copied in several statements
/// of its transaction. PostgreSQL 15's binary `COPY` buffers up to 1,000 tuples before it
/// inserts them (in binary format it counts no bytes towards flushing sooner), each buffered
/// tuple in a slot created for the statement, and each slot's pin of the table's tuple
/// descriptor goes into the statement's resource owner, where every pin of the one descriptor
/// lands in the same hash bucket: buffering n tuples costs time quadratic in n. A 1,000-record
/// chunk copied as two statements of 500 took 14 % less time than as one (300 chunks, six
/// interleaved rounds; docs/PERFORMANCE.md), and as three or four no less than as two.
const COPY_STATEMENT_TUPLES: usize = 500;

const TAKE_STAGED: &str = "DELETE FROM staged_chunks WHERE tenant_id = $1 AND chunk_id = $2 \
     RETURNING scan_id, record_count, payload, payload_encoding";

/// Advances the scan and sets the transaction's `synchronous_commit`: `on` when this chunk
/// finishes the scan, else `off` (PostgreSQL applies the value in force at `COMMIT`). The chunk
/// that finishes the scan also writes its audit entry (`scan_` and the final status, event id
/// `$5`), in the same statement and transaction: exactly one chunk brings a scan's counts to
/// its total, so a finished scan has exactly one entry, and an unfinished one none. For the same
/// reason it is where the scan's webhook deliveries are recorded (the outbox of
/// [`webhooks`](crate::webhooks)): one per endpoint of the tenant whose events include
/// `scan.` and the final status, each with the body every attempt will send.
const ADVANCE_SCAN: &str = "WITH advanced AS (UPDATE scans SET \
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
     RETURNING status, records_total, records_processed, records_failed, created_at, \
        started_at, completed_at), \
     announced AS (INSERT INTO webhook_deliveries \
        (tenant_id, delivery_id, endpoint_id, event, scan_id, payload) \
        SELECT $1, gen_random_uuid(), endpoint.endpoint_id, 'scan.' || advanced.status, $2, \
            jsonb_build_object('type', 'scan.' || advanced.status, 'timestamp', now(), \
                'data', jsonb_build_object('tenant_id', $1, 'scan_id', $2, \
                    'status', advanced.status, \
                    'status_vi', CASE advanced.status WHEN 'completed' THEN 'hoàn thành' \
                        WHEN 'completed_with_errors' THEN 'hoàn thành có lỗi' ELSE 'thất bại' END, \
                    'records_total', advanced.records_total, \
                    'records_processed', advanced.records_processed, \
                    'records_failed', advanced.records_failed, \
                    'created_at', advanced.created_at, 'started_at', advanced.started_at, \
                    'completed_at', advanced.completed_at)) \
        FROM advanced JOIN webhook_endpoints AS endpoint \
            ON endpoint.tenant_id = $1 AND 'scan.' || advanced.status = ANY (endpoint.events) \
        WHERE advanced.status <> 'processing'), \
     audited AS (INSERT INTO audit_log \
        (tenant_id, occurred_at, event_id, actor, action, subject, details, summary, summary_vi) \
        SELECT $1, now(), $5, 'engine', 'scan_' || status, $2::text, \
            jsonb_build_object('records_total', records_total, \
                'records_processed', records_processed, 'records_failed', records_failed), \
            format('scan %s: %s of %s records written, %s failed', \
                replace(status, '_', ' '), records_processed, records_total, records_failed), \
            format('lượt quét %s: đã ghi %s/%s bản ghi, %s bản ghi lỗi', \
                CASE status WHEN 'completed' THEN 'hoàn thành' \
                    WHEN 'completed_with_errors' THEN 'hoàn thành có lỗi' ELSE 'thất bại' END, \
                records_processed, records_total, records_failed) \
        FROM advanced WHERE status <> 'processing') \
     SELECT status, set_config('synchronous_commit', \
        CASE status WHEN 'processing' THEN 'off' ELSE 'on' END, true) AS synchronous_commit \
     FROM advanced";

/// The `synchronous_commit` of a transaction that advanced several scans: `on` if any of them
/// (`$1` tenants, `$2` scans, pairwise) is finished, else `off`. Each [`ADVANCE_SCAN`] sets it
/// for its own scan, and the last one would otherwise decide for all.
const SYNC_IF_FINISHED: &str = "SELECT set_config('synchronous_commit', \
        CASE WHEN bool_or(scans.status <> 'processing') THEN 'on' ELSE 'off' END, true) \
        AS synchronous_commit \
     FROM unnest($1::uuid[], $2::uuid[]) AS advanced (tenant_id, scan_id) \
     JOIN scans USING (tenant_id, scan_id)";

/// Adds copied activities to their tenant's per-category counts: `$2` the categories, `$3`
/// how many of each, always in [`PdplCategory::ALL`] order, so concurrent transactions lock a
/// tenant's count rows in the same order.
const COUNT_ACTIVITIES: &str =
    "INSERT INTO activity_counts (tenant_id, pdpl_category, activities) \
     SELECT $1, category, added FROM unnest($2::text[], $3::bigint[]) AS counted (category, added) \
     WHERE added > 0 \
     ON CONFLICT (tenant_id, pdpl_category) \
     DO UPDATE SET activities = activity_counts.activities + excluded.activities";

fn copy_statement() -> String {
    format!("COPY processing_activities ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)")
}

impl WriteConnection {
    /// Connects and prepares the seven statements, in one pipelined round trip.
    pub async fn open(database: &Config) -> Result<WriteConnection, StoreError> {
        let client = connect(database).await?;
        let copy = copy_statement();
        let (
            take_staged,
            copy,
            advance_scan,
            count_activities,
            fence,
            fence_and_trace,
            sync_if_finished,
        ) = tokio::try_join!(
            client.prepare(TAKE_STAGED),
            client.prepare(&copy),
            client.prepare(ADVANCE_SCAN),
            client.prepare(COUNT_ACTIVITIES),
            client.prepare(super::ownership::FENCE),
            client.prepare(super::ownership::FENCE_AND_TRACE),
            client.prepare(SYNC_IF_FINISHED),
        )?;
        Ok(WriteConnection {
            client,
            take_staged,
            copy,
            advance_scan,
            count_activities,
            fence,
            fence_and_trace,
            sync_if_finished,
            shared_scratch: Vec::new(),
            tuples_scratch: Vec::new(),
        })
    }

    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Applies one chunk of `tenant_id`; see the module documentation. With a fence, the
    /// transaction first checks that this instance still owns the tenant under the fence's
    /// epoch, and writes nothing ([`StoreError::Fenced`]) if not; without one (tools and tests
    /// that are the only writer) it does not.
    pub async fn apply_chunk(
        &mut self,
        tenant_id: TenantId,
        source: &ChunkSource,
        fence_opt: Option<&Fence>,
    ) -> Result<ChunkOutcome, StoreError> {
        let outcome = match self
            .apply_once(tenant_id, source, fence_opt, Mode::Whole)
            .await
        {
            Err(error) if !error.is_retryable() && !matches!(error, StoreError::Fenced) => {
                tracing::warn!(%tenant_id, %error, "chunk refused; isolating the records at fault");
                self.apply_once(tenant_id, source, fence_opt, Mode::Isolate)
                    .await
            }
            outcome => outcome,
        };
        if self.tuples_scratch.capacity() > RETAINED_TUPLES_MAX_BYTES {
            self.tuples_scratch = Vec::new();
        }
        outcome
    }

    /// Applies several chunks, each as [`apply_chunk`](Self::apply_chunk) would: staged chunks
    /// of different tenants together in one transaction when there are several (see
    /// [`shared_transaction`](Self::shared_transaction)), else, and whenever that transaction
    /// fails, one transaction per chunk. One outcome per chunk, in order.
    pub async fn apply_chunks(
        &mut self,
        chunks: &[ChunkToApply<'_>],
    ) -> Vec<Result<ChunkOutcome, StoreError>> {
        if let Some(shared) = shareable(chunks) {
            match self.shared_transaction(&shared).await {
                Ok(outcomes) => {
                    self.shared_scratch
                        .retain(|buffer| buffer.capacity() <= RETAINED_TUPLES_MAX_BYTES);
                    return outcomes.into_iter().map(Ok).collect();
                }
                Err(error) => {
                    if !self.client.is_closed() {
                        let _ = self.client.batch_execute("ROLLBACK").await;
                    }
                    metrics::counter!(crate::metrics::SHARED_TRANSACTIONS_REDONE).increment(1);
                    tracing::debug!(%error, chunks = chunks.len(), "shared transaction failed; applying its chunks one at a time");
                }
            }
        }
        let mut outcomes = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            outcomes.push(
                self.apply_chunk(chunk.tenant_id, chunk.source, chunk.fence_opt)
                    .await,
            );
        }
        outcomes
    }

    /// One transaction for staged chunks of different tenants (so of different scans, each
    /// advancing by its own chunk: progress still moves at most a chunk at a time). It checks
    /// every tenant's fence and takes every chunk with `BEGIN`, copies all their tuples in one
    /// `COPY` statement (so the statement's slots are made once for up to four chunks, see
    /// [`COPY_STATEMENT_TUPLES`]), and advances each scan and count with `COMMIT`. A chunk
    /// already applied elsewhere is reported as such. Any failure, a lost fence included, fails
    /// the whole transaction: the caller rolls it back and applies the chunks one at a time,
    /// where each failure is handled as for a chunk alone. Outcomes are in the order of the
    /// chunks' `position`s.
    async fn shared_transaction(
        &mut self,
        chunks: &[SharedChunk<'_>],
    ) -> Result<Vec<ChunkOutcome>, StoreError> {
        let WriteConnection {
            ref client,
            ref take_staged,
            ref copy,
            ref advance_scan,
            ref count_activities,
            ref fence,
            ref fence_and_trace,
            ref sync_if_finished,
            ref mut shared_scratch,
            ..
        } = *self;
        let mut stages = crate::metrics::StageTimer::chunk();
        let fence_parameters: Vec<Option<(&Statement, &str, i64)>> = chunks
            .iter()
            .map(|chunk| {
                chunk.fence_opt.map(|chunk_fence| {
                    let statement = fence_statement(chunk_fence, fence, fence_and_trace);
                    (statement, &*chunk_fence.instance_id, chunk_fence.epoch)
                })
            })
            .collect();
        let fences = chunks
            .iter()
            .zip(&fence_parameters)
            .map(|(chunk, parameters)| async move {
                let Some((statement, instance_id, epoch)) = parameters else {
                    return Ok(true);
                };
                let row_opt = client
                    .query_opt(*statement, &[&chunk.tenant_id.0, instance_id, epoch])
                    .await?;
                Ok::<_, tokio_postgres::Error>(row_opt.is_some())
            });
        let takes = chunks.iter().map(|chunk| async move {
            client
                .query_opt(take_staged, &[&chunk.tenant_id.0, &chunk.chunk_id])
                .await
        });
        let (begun, owned, taken) = tokio::join!(
            client.batch_execute("BEGIN"),
            futures_util::future::join_all(fences),
            futures_util::future::join_all(takes),
        );
        let (owned, taken) = match (begun, all_ok(owned), all_ok(taken)) {
            (Ok(()), Ok(owned), Ok(taken)) => (owned, taken),
            (begun, owned, taken) => {
                return Err(super::pipeline_cause(
                    [begun.err().map(StoreError::from)]
                        .into_iter()
                        .chain(owned.err().into_iter().flatten())
                        .chain(taken.err().into_iter().flatten()),
                ))
            }
        };
        if owned.contains(&false) {
            return Err(StoreError::Fenced);
        }
        stages.lap("fetch");

        if shared_scratch.len() < chunks.len() {
            shared_scratch.resize_with(chunks.len(), Vec::new);
        }
        let mut written_chunks = Vec::with_capacity(chunks.len());
        let mut outcomes = vec![
            ChunkOutcome {
                already_applied: true,
                ..ChunkOutcome::default()
            };
            chunks.len()
        ];
        for ((chunk, row_opt), scratch) in chunks.iter().zip(&taken).zip(shared_scratch.iter_mut())
        {
            let Some(row) = row_opt else { continue };
            let tuples = staged_tuples(row, scratch)?;
            written_chunks.push(WrittenChunk {
                position: chunk.position,
                tenant_id: chunk.tenant_id.0,
                scan_id: row.get("scan_id"),
                record_count: row.get("record_count"),
                counts: category_counts_of(tuples)?,
                tuples,
            });
        }
        if written_chunks.is_empty() {
            client.batch_execute("COMMIT").await?;
            return Ok(outcomes);
        }
        let parts: Vec<&[u8]> = written_chunks.iter().map(|chunk| chunk.tuples).collect();
        copy_tuples(client, copy, &parts).await?;
        stages.lap("copy");

        let categories = PdplCategory::ALL.map(PdplCategory::as_str);
        let categories = &categories[..];
        let no_failures = 0_i32;
        let event_ids: Vec<Uuid> = written_chunks.iter().map(|_| Uuid::now_v7()).collect();
        let no_failures = &no_failures;
        let advances = written_chunks
            .iter()
            .zip(&event_ids)
            .map(|(chunk, event_id)| async move {
                client
                    .query_opt(
                        advance_scan,
                        &[
                            &chunk.tenant_id,
                            &chunk.scan_id,
                            &chunk.record_count,
                            no_failures,
                            event_id,
                        ],
                    )
                    .await
            });
        let counts: Vec<&[i64]> = written_chunks
            .iter()
            .map(|chunk| &chunk.counts[..])
            .collect();
        let categories = &categories;
        let counted = written_chunks
            .iter()
            .zip(&counts)
            .map(|(chunk, counts)| async move {
                client
                    .execute(count_activities, &[&chunk.tenant_id, categories, counts])
                    .await
            });
        let tenants: Vec<Uuid> = written_chunks.iter().map(|chunk| chunk.tenant_id).collect();
        let scans: Vec<Uuid> = written_chunks.iter().map(|chunk| chunk.scan_id).collect();
        let (advanced, counted, synced, committed) = tokio::join!(
            futures_util::future::join_all(advances),
            futures_util::future::join_all(counted),
            async {
                client
                    .query_one(sync_if_finished, &[&tenants, &scans])
                    .await
            },
            client.batch_execute("COMMIT"),
        );
        let (advanced, synced) = match (all_ok(advanced), all_ok(counted), synced, committed) {
            (Ok(advanced), Ok(_), Ok(synced), Ok(())) => (advanced, synced),
            (advanced, counted, synced, committed) => {
                return Err(super::pipeline_cause(
                    advanced
                        .err()
                        .into_iter()
                        .flatten()
                        .chain(counted.err().into_iter().flatten())
                        .chain([
                            synced.err().map(StoreError::from),
                            committed.err().map(StoreError::from),
                        ]),
                ))
            }
        };
        let commit_flushed = synced.get::<_, Option<&str>>("synchronous_commit") == Some("on");
        for (chunk, row_opt) in written_chunks.iter().zip(advanced) {
            outcomes[chunk.position] = ChunkOutcome {
                written: chunk.record_count as u64,
                commit_flushed,
                finished_scan_opt: row_opt
                    .and_then(|row| ScanStatus::parse(row.get("status")))
                    .filter(|status| *status != ScanStatus::Processing),
                ..ChunkOutcome::default()
            };
        }
        stages.lap("finish");
        Ok(outcomes)
    }

    /// One transaction, opened and closed by hand so that `BEGIN` travels with the chunk's
    /// first statement and `COMMIT` with its last. Any error rolls it back before returning, so
    /// the connection is always left outside a transaction.
    async fn apply_once(
        &mut self,
        tenant_id: TenantId,
        source: &ChunkSource,
        fence_opt: Option<&Fence>,
        mode: Mode,
    ) -> Result<ChunkOutcome, StoreError> {
        let outcome = self.transaction(tenant_id, source, fence_opt, mode).await;
        if outcome.is_err() && !self.client.is_closed() {
            // Outside a transaction (the error came with COMMIT) this only draws a warning.
            let _ = self.client.batch_execute("ROLLBACK").await;
        }
        outcome
    }

    async fn transaction(
        &mut self,
        tenant_id: TenantId,
        source: &ChunkSource,
        fence_opt: Option<&Fence>,
        mode: Mode,
    ) -> Result<ChunkOutcome, StoreError> {
        let client = &self.client;
        let mut stages = crate::metrics::StageTimer::chunk();
        // The fence travels with BEGIN (and the take): no extra round trip.
        let (plain_fence, fence_and_trace) = (&self.fence, &self.fence_and_trace);
        let fenced = async {
            let Some(fence) = fence_opt else {
                return Ok(false);
            };
            let fence_statement = fence_statement(fence, plain_fence, fence_and_trace);
            let instance_id: &str = &fence.instance_id;
            let parameters: [&(dyn ToSql + Sync); 3] = [&tenant_id.0, &instance_id, &fence.epoch];
            Ok::<_, tokio_postgres::Error>(
                client
                    .query_opt(fence_statement, &parameters)
                    .await?
                    .is_none(),
            )
        };
        let staged_row;
        let (scan_id_opt, payload, record_count, commit_flushed): (_, &[u8], _, _) = match source {
            ChunkSource::Inline {
                payload,
                record_count,
            } => {
                let ((), fenced) =
                    try_join_pipelined!(begun = client.batch_execute("BEGIN"), fenced = fenced)?;
                if fenced {
                    return Err(StoreError::Fenced);
                }
                (None, payload, *record_count, true)
            }
            ChunkSource::Staged { chunk_id } => {
                let parameters: [&(dyn ToSql + Sync); 2] = [&tenant_id.0, chunk_id];
                let ((), fenced, row_opt) = try_join_pipelined!(
                    begun = client.batch_execute("BEGIN"),
                    fenced = fenced,
                    taken = client.query_opt(&self.take_staged, &parameters),
                )?;
                if fenced {
                    return Err(StoreError::Fenced);
                }
                let Some(row) = row_opt else {
                    client.batch_execute("COMMIT").await?;
                    return Ok(ChunkOutcome {
                        already_applied: true,
                        ..ChunkOutcome::default()
                    });
                };
                staged_row = row;
                let tuples = staged_tuples(&staged_row, &mut self.tuples_scratch)?;
                (
                    Some(staged_row.get("scan_id")),
                    tuples,
                    staged_row.get("record_count"),
                    false,
                )
            }
        };
        stages.lap("fetch");
        let (mut outcome, counts) = match mode {
            Mode::Whole => {
                let tuples = copy_encoder::split_tuples(payload).ok_or_else(not_well_formed)?;
                let counts = copy_encoder::category_counts(tuples.iter().copied())
                    .ok_or_else(not_well_formed)?;
                for run in copy_encoder::tuple_runs(payload, &tuples, COPY_STATEMENT_TUPLES) {
                    copy_tuples(client, &self.copy, &[run]).await?;
                }
                let outcome = ChunkOutcome {
                    written: record_count as u64,
                    commit_flushed,
                    ..ChunkOutcome::default()
                };
                (outcome, counts)
            }
            Mode::Isolate => {
                let (outcome, counts) =
                    isolate(client, &self.copy, tenant_id, scan_id_opt, payload).await?;
                (
                    ChunkOutcome {
                        commit_flushed,
                        ..outcome
                    },
                    counts,
                )
            }
        };
        stages.lap("copy");
        let categories = PdplCategory::ALL.map(PdplCategory::as_str);
        let (categories, counts) = (&categories[..], &counts[..]);
        let count_parameters: [&(dyn ToSql + Sync); 3] = [&tenant_id.0, &categories, &counts];
        // If a statement fails, PostgreSQL answers the ones behind it with "current transaction
        // is aborted" and the COMMIT with a rollback. All are awaited together (one round trip),
        // then checked in the order they were sent, so the error returned is the first one: the
        // cause, not an echo of it.
        match scan_id_opt {
            Some(scan_id) => {
                let written = outcome.written as i32;
                let failed = outcome.dead_lettered as i32;
                // Used only if this chunk finishes the scan.
                let event_id = Uuid::now_v7();
                let parameters: [&(dyn ToSql + Sync); 5] =
                    [&tenant_id.0, &scan_id, &written, &failed, &event_id];
                let (advanced, counted, committed) = tokio::join!(
                    client.query_opt(&self.advance_scan, &parameters),
                    client.execute(&self.count_activities, &count_parameters),
                    client.batch_execute("COMMIT"),
                );
                let row_opt = advanced?;
                counted?;
                committed?;
                if let Some(row) = row_opt {
                    outcome.commit_flushed = row.get::<_, &str>("synchronous_commit") == "on";
                    outcome.finished_scan_opt = ScanStatus::parse(row.get("status"))
                        .filter(|status| *status != ScanStatus::Processing);
                }
            }
            None => {
                let (counted, committed) = tokio::join!(
                    client.execute(&self.count_activities, &count_parameters),
                    client.batch_execute("COMMIT"),
                );
                counted?;
                committed?;
            }
        }
        stages.lap("finish");
        Ok(outcome)
    }
}

/// The statement that checks `fence`: with the trace while its epoch has none committed yet.
fn fence_statement<'s>(
    fence: &Fence,
    plain: &'s Statement,
    traced: &'s Statement,
) -> &'s Statement {
    if fence.trace {
        traced
    } else {
        plain
    }
}

/// Most chunks one shared transaction applies ([`WriteConnection::apply_chunks`]).
pub const SHARED_TRANSACTION_CHUNKS: usize = 4;

/// A chunk for [`WriteConnection::apply_chunks`].
#[derive(Debug, Clone, Copy)]
pub struct ChunkToApply<'a> {
    pub tenant_id: TenantId,
    pub source: &'a ChunkSource,
    pub fence_opt: Option<&'a Fence>,
}

/// A staged chunk of a shared transaction.
struct SharedChunk<'a> {
    /// Its place among the chunks given to [`WriteConnection::apply_chunks`].
    position: usize,
    tenant_id: TenantId,
    chunk_id: i64,
    fence_opt: Option<&'a Fence>,
}

/// `chunks` as a shared transaction's, if they may share one: more than one, at most
/// [`SHARED_TRANSACTION_CHUNKS`], all staged, each of a different tenant. In tenant order: a
/// shared transaction locks its scans' rows, then their tenants' count rows, in the order of its
/// chunks, and two writers' transactions can hold chunks of the same two tenants (a tenant has
/// up to `tenants.max_in_flight_chunks` chunks in flight). In any other order one could lock
/// the first tenant's scan and wait for the second's while the other locked the second and
/// waited for the first: a deadlock, which PostgreSQL breaks only after `deadlock_timeout`
/// (1 s), stalling both writers, and whose victim is then applied a chunk at a time.
fn shareable<'a>(chunks: &[ChunkToApply<'a>]) -> Option<Vec<SharedChunk<'a>>> {
    if !(2..=SHARED_TRANSACTION_CHUNKS).contains(&chunks.len()) {
        return None;
    }
    let mut shared: Vec<SharedChunk<'a>> = Vec::with_capacity(chunks.len());
    for (position, chunk) in chunks.iter().enumerate() {
        let ChunkSource::Staged { chunk_id } = chunk.source else {
            return None;
        };
        if shared
            .iter()
            .any(|other| other.tenant_id == chunk.tenant_id)
        {
            return None;
        }
        shared.push(SharedChunk {
            position,
            tenant_id: chunk.tenant_id,
            chunk_id: *chunk_id,
            fence_opt: chunk.fence_opt,
        });
    }
    shared.sort_by_key(|chunk| chunk.tenant_id);
    Some(shared)
}

/// A chunk a shared transaction took and copies.
struct WrittenChunk<'t> {
    /// Its place among the chunks given to [`WriteConnection::apply_chunks`].
    position: usize,
    tenant_id: Uuid,
    scan_id: Uuid,
    record_count: i32,
    counts: [i64; PdplCategory::ALL.len()],
    tuples: &'t [u8],
}

/// Every answer, or every error (as [`StoreError`]s, for [`super::pipeline_cause`]).
fn all_ok<T>(
    answers: Vec<Result<T, tokio_postgres::Error>>,
) -> Result<Vec<T>, Vec<Option<StoreError>>> {
    if answers.iter().all(Result::is_ok) {
        return Ok(answers.into_iter().flatten().collect());
    }
    Err(answers
        .into_iter()
        .map(|answer| answer.err().map(StoreError::from))
        .collect())
}

/// A staged row's tuples: borrowed from the row, or decompressed into `scratch`.
fn staged_tuples<'r>(row: &'r Row, scratch: &'r mut Vec<u8>) -> Result<&'r [u8], StoreError> {
    let stored: &[u8] = row.get("payload");
    match row.get::<_, &str>("payload_encoding") {
        "lz4-copy-binary" => staging::unstaged(stored, scratch)
            .ok_or_else(|| StoreError::Corrupt("a staged chunk does not decompress".into())),
        _ => Ok(stored),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Whole,
    Isolate,
}

/// Streams pre-encoded tuples into `processing_activities` with `statement`, a prepared or
/// plain `COPY ... FROM STDIN (FORMAT binary)`, in pieces of [`COPY_PIECE_BYTES`] (the
/// connection copies each piece into its send buffer anyway).
async fn copy_tuples<T>(client: &Client, statement: &T, parts: &[&[u8]]) -> Result<u64, StoreError>
where
    T: ?Sized + ToStatement,
{
    let sink = client.copy_in::<_, Bytes>(statement).await?;
    futures_util::pin_mut!(sink);
    let mut piece = Vec::with_capacity(COPY_PIECE_BYTES);
    piece.extend_from_slice(COPY_HEADER);
    for part in parts {
        for slice in part.chunks(COPY_PIECE_BYTES) {
            if piece.len() + slice.len() > COPY_PIECE_BYTES {
                let full = std::mem::replace(&mut piece, Vec::with_capacity(COPY_PIECE_BYTES));
                sink.feed(Bytes::from(full)).await?;
            }
            piece.extend_from_slice(slice);
        }
    }
    piece.extend_from_slice(COPY_TRAILER);
    sink.feed(Bytes::from(piece)).await?;
    Ok(sink.as_mut().finish().await?)
}

/// The category counts of a chunk's tuples.
fn category_counts_of(payload: &[u8]) -> Result<[i64; PdplCategory::ALL.len()], StoreError> {
    copy_encoder::split_tuples(payload)
        .and_then(copy_encoder::category_counts)
        .ok_or_else(not_well_formed)
}

fn not_well_formed() -> StoreError {
    StoreError::Corrupt("a chunk is not well-formed COPY tuples".into())
}

/// Adds a replayed dead letter's tuple to its tenant's category counts, inside the caller's
/// transaction and after its scan update (see the module documentation for the order).
pub(super) async fn count_again(
    transaction: &Transaction<'_>,
    tenant_id: TenantId,
    payload: &[u8],
) -> Result<(), StoreError> {
    let counts = category_counts_of(payload)?;
    let categories = PdplCategory::ALL.map(PdplCategory::as_str);
    transaction
        .execute(
            COUNT_ACTIVITIES,
            &[&tenant_id.0, &&categories[..], &&counts[..]],
        )
        .await?;
    Ok(())
}

/// Copies a dead letter's tuple again, inside the caller's transaction.
pub(super) async fn copy_again(
    transaction: &Transaction<'_>,
    payload: &[u8],
) -> Result<u64, StoreError> {
    copy_tuples(transaction.client(), &copy_statement(), &[payload]).await
}

/// Bisects the chunk under savepoints; see the module documentation. Returns the outcome and
/// the category counts of the records written.
async fn isolate(
    client: &Client,
    copy: &Statement,
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    payload: &[u8],
) -> Result<(ChunkOutcome, [i64; PdplCategory::ALL.len()]), StoreError> {
    let tuples = copy_encoder::split_tuples(payload).ok_or_else(not_well_formed)?;
    let mut outcome = ChunkOutcome::default();
    let mut counts = [0; PdplCategory::ALL.len()];
    let mut pending: Vec<Range<usize>> = Vec::new();
    pending.push(0..tuples.len());
    while let Some(range) = pending.pop() {
        client.batch_execute("SAVEPOINT isolate").await?;
        match copy_tuples(client, copy, &tuples[range.clone()]).await {
            Ok(written) => {
                client.batch_execute("RELEASE SAVEPOINT isolate").await?;
                outcome.written += written;
                let written_counts = copy_encoder::category_counts(tuples[range].iter().copied())
                    .ok_or_else(not_well_formed)?;
                for (total, added) in counts.iter_mut().zip(written_counts) {
                    *total += added;
                }
            }
            Err(error) if error.is_retryable() => return Err(error),
            Err(error) => {
                client
                    .batch_execute("ROLLBACK TO SAVEPOINT isolate; RELEASE SAVEPOINT isolate")
                    .await?;
                if range.len() == 1 {
                    let tuple = tuples[range.start];
                    dead_letter(client, tenant_id, scan_id_opt, tuple, &error).await?;
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
    Ok((outcome, counts))
}

async fn dead_letter(
    client: &Client,
    tenant_id: TenantId,
    scan_id_opt: Option<Uuid>,
    tuple: &[u8],
    error: &StoreError,
) -> Result<(), StoreError> {
    let record_index = copy_encoder::tuple_record_index(tuple).unwrap_or(-1);
    let message = error.database_message();
    tracing::warn!(%tenant_id, record_index, error = %message, "record dead-lettered");
    client
        .execute(
            "INSERT INTO dead_letters (tenant_id, scan_id, record_index, payload, error) \
             VALUES ($1, $2, $3, $4, $5)",
            &[&tenant_id.0, &scan_id_opt, &record_index, &tuple, &message],
        )
        .await?;
    Ok(())
}
