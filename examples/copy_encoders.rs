//! Compares the engine's own binary COPY encoder with tokio-postgres's `BinaryCopyInWriter` on
//! the same rows into the same (temporary) table, in one run:
//!
//! ```sh
//! cargo run --release --example copy_encoders -- postgres://postgres@127.0.0.1:5432/test 200000 [chunk]
//! ```
//!
//! With `chunk` (say 1000, the engine's `ingest.chunk_records`) the rows go in one `COPY`
//! statement per chunk, as the engine's writers send them; without it, in one statement.
//! The engine encodes when a submission is accepted and streams the bytes later; both timings
//! are printed (encode, COPY) so the two approaches can be compared stage by stage.

use std::borrow::Cow;
use std::time::Instant;

use bytes::Bytes;
use futures_util::SinkExt;
use ingest_engine::domain::{PdplCategory, ProcessingActivity};
use ingest_engine::store::copy_encoder::{
    self, RecordPlacement, COPY_COLUMNS, COPY_HEADER, COPY_TRAILER,
};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

const TABLE: &str = "CREATE TEMP TABLE processing_activities (
    id uuid NOT NULL, tenant_id uuid NOT NULL, scan_id uuid, record_index integer NOT NULL,
    activity_name text NOT NULL, pdpl_category text NOT NULL, data_fields text[] NOT NULL,
    purpose text, legal_basis text, retention_period text, data_recipients text[],
    created_at timestamptz NOT NULL, PRIMARY KEY (tenant_id, id))";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arguments: Vec<String> = std::env::args().collect();
    let url = arguments
        .get(1)
        .ok_or("usage: copy_encoders <postgres url> [records] [chunk]")?;
    let count: usize = arguments
        .get(2)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(200_000);
    let chunk: usize = arguments
        .get(3)
        .map(|text| text.parse())
        .transpose()?
        .unwrap_or(count)
        .max(1);
    println!("{count} records, one COPY statement per {chunk} records");
    let config: tokio_postgres::Config = url.parse()?;
    let client = ingest_engine::store::connect(&config).await?;
    client.batch_execute(TABLE).await?;

    let names: Vec<String> = (0..count)
        .map(|index| format!("Quản lý hồ sơ nhân sự {index}"))
        .collect();
    let records: Vec<ProcessingActivity> = names
        .iter()
        .map(|name| ProcessingActivity {
            activity_name: Cow::Borrowed(name),
            pdpl_category: PdplCategory::Basic,
            data_fields: vec![
                Cow::Borrowed("họ và tên"),
                Cow::Borrowed("số CCCD"),
                Cow::Borrowed("địa chỉ email"),
            ],
            purpose_opt: Some(Cow::Borrowed("Tính lương và bảo hiểm xã hội")),
            legal_basis_opt: Some(Cow::Borrowed("Hợp đồng lao động")),
            retention_period_opt: Some(Cow::Borrowed("10 năm")),
            data_recipients_opt: Some(vec![Cow::Borrowed("Cơ quan Bảo hiểm xã hội Việt Nam")]),
        })
        .collect();
    let now = chrono::Utc::now();

    for round in 1..=3 {
        client
            .batch_execute("TRUNCATE processing_activities")
            .await?;
        let tenant_id = Uuid::new_v4();
        let encode_started = Instant::now();
        let mut payloads = Vec::with_capacity(count.div_ceil(chunk));
        for (chunk_index, chunk_records) in records.chunks(chunk).enumerate() {
            let mut payload = Vec::new();
            for (offset, record) in chunk_records.iter().enumerate() {
                let placement = RecordPlacement {
                    id: Uuid::now_v7(),
                    tenant_id,
                    scan_id_opt: None,
                    record_index: (chunk_index * chunk + offset) as i32,
                    created_at_unix_micros: now.timestamp_micros(),
                };
                copy_encoder::encode_record(&mut payload, &placement, record);
            }
            payloads.push(payload);
        }
        let encode = encode_started.elapsed();
        let copy_started = Instant::now();
        for payload in payloads {
            let sink = client
                .copy_in::<_, Bytes>(&format!(
                    "COPY processing_activities ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)"
                ))
                .await?;
            futures_util::pin_mut!(sink);
            sink.feed(Bytes::from_static(COPY_HEADER)).await?;
            sink.feed(Bytes::from(payload)).await?;
            sink.feed(Bytes::from_static(COPY_TRAILER)).await?;
            sink.as_mut().finish().await?;
        }
        let copy = copy_started.elapsed();
        report(round, "own encoder", count, encode, copy);

        client
            .batch_execute("TRUNCATE processing_activities")
            .await?;
        let tenant_id = Uuid::new_v4();
        let types = [
            Type::UUID,
            Type::UUID,
            Type::UUID,
            Type::INT4,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT_ARRAY,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT_ARRAY,
            Type::TIMESTAMPTZ,
        ];
        let started = Instant::now();
        for (chunk_index, chunk_records) in records.chunks(chunk).enumerate() {
            let sink = client
                .copy_in(&format!(
                    "COPY processing_activities ({COPY_COLUMNS}) FROM STDIN (FORMAT binary)"
                ))
                .await?;
            let writer = BinaryCopyInWriter::new(sink, &types);
            futures_util::pin_mut!(writer);
            for (offset, record) in chunk_records.iter().enumerate() {
                let id = Uuid::now_v7();
                let scan_id: Option<Uuid> = None;
                let record_index = (chunk_index * chunk + offset) as i32;
                let data_fields: Vec<&str> = record
                    .data_fields
                    .iter()
                    .map(|field| field.as_ref())
                    .collect();
                let recipients: Option<Vec<&str>> = record
                    .data_recipients_opt
                    .as_ref()
                    .map(|items| items.iter().map(|item| item.as_ref()).collect());
                let row: [&(dyn ToSql + Sync); 12] = [
                    &id,
                    &tenant_id,
                    &scan_id,
                    &record_index,
                    &record.activity_name.as_ref(),
                    &record.pdpl_category.as_str(),
                    &data_fields,
                    &record.purpose_opt.as_deref(),
                    &record.legal_basis_opt.as_deref(),
                    &record.retention_period_opt.as_deref(),
                    &recipients,
                    &now,
                ];
                writer.as_mut().write(&row).await?;
            }
            writer.finish().await?;
        }
        report(
            round,
            "BinaryCopyInWriter",
            count,
            std::time::Duration::ZERO,
            started.elapsed(),
        );
    }
    Ok(())
}

fn report(
    round: usize,
    name: &str,
    count: usize,
    encode: std::time::Duration,
    copy: std::time::Duration,
) {
    let total = encode + copy;
    println!(
        "round {round} {name:>18}: encode {:>7.1} ms, copy {:>7.1} ms, total {:>7.1} ms = {:>9.0} records/s",
        encode.as_secs_f64() * 1000.0,
        copy.as_secs_f64() * 1000.0,
        total.as_secs_f64() * 1000.0,
        count as f64 / total.as_secs_f64()
    );
}
