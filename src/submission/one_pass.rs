//! The one-pass reader: a submission's records are parsed and encoded as the envelope is read,
//! so each byte of the body is scanned once.
//!
//! It answers only for the common case and returns `None` for anything else (malformed JSON,
//! an unknown, repeated or invalid envelope field, a scan whose `activities` come before its
//! `tenant_id`, no record or too many, no valid record). The caller then reads the body with
//! the two-pass reader, which names the problem; see the parent module.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer as _, MapAccess, SeqAccess, Visitor};
use uuid::Uuid;

use super::{parse_tenant_id, scan_options, EncodedRecords, Limits, PreparedScan, RecordEncoder};
use crate::domain::{RecordSeed, TenantId};

/// Reads a `POST /data-scans` body in one pass, or returns `None`.
pub(super) fn read_scan(text: &str, scan_id: Uuid, limits: Limits) -> Option<PreparedScan> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let envelope = (&mut deserializer)
        .deserialize_map(ScanVisitor { scan_id, limits })
        .ok()?;
    deserializer.end().ok()?;
    let priority = scan_options(
        envelope.priority_opt,
        envelope.idempotency_key_opt.as_deref(),
    )
    .ok()?;
    Some(PreparedScan {
        tenant_id: envelope.tenant_id,
        scan_id,
        priority,
        idempotency_key_opt: envelope.idempotency_key_opt,
        records: envelope.records,
    })
}

/// Reads a `POST /batch/processing-activities` body in one pass, or returns `None`.
pub(super) fn read_batch(
    text: &str,
    tenant_id: TenantId,
    limits: Limits,
) -> Option<EncodedRecords> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let records = (&mut deserializer)
        .deserialize_map(BatchVisitor { tenant_id, limits })
        .ok()?;
    deserializer.end().ok()?;
    Some(records)
}

/// A scan envelope as read, before its options are checked.
struct ScanEnvelope<'de> {
    tenant_id: TenantId,
    priority_opt: Option<&'de str>,
    idempotency_key_opt: Option<String>,
    records: EncodedRecords,
}

/// Any reason to leave the body to the two-pass reader; never shown to anyone.
fn not_this_reader<E: de::Error>() -> E {
    E::custom("left to the two-pass reader")
}

struct ScanVisitor {
    scan_id: Uuid,
    limits: Limits,
}

impl<'de> Visitor<'de> for ScanVisitor {
    type Value = ScanEnvelope<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a data scan")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut tenant_id_opt = None;
        let mut records_opt = None;
        let mut priority_opt: Option<Option<&'de str>> = None;
        let mut idempotency_key_opt: Option<Option<String>> = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            match key {
                "tenant_id" if tenant_id_opt.is_none() => {
                    let text: &'de str = map.next_value()?;
                    tenant_id_opt = Some(parse_tenant_id(text).map_err(|_| not_this_reader())?);
                }
                // The records are encoded with their tenant as they are read, so it must be
                // known by now.
                "activities" if records_opt.is_none() => {
                    let tenant_id = tenant_id_opt.ok_or_else(not_this_reader)?;
                    let encoder = RecordEncoder::new(tenant_id, Some(self.scan_id), self.limits);
                    records_opt = Some(map.next_value_seed(RecordsSeed {
                        encoder,
                        max_records: self.limits.max_records,
                    })?);
                }
                "priority" if priority_opt.is_none() => priority_opt = Some(map.next_value()?),
                "idempotency_key" if idempotency_key_opt.is_none() => {
                    idempotency_key_opt = Some(map.next_value()?)
                }
                _ => return Err(not_this_reader()),
            }
        }
        Ok(ScanEnvelope {
            tenant_id: tenant_id_opt.ok_or_else(not_this_reader)?,
            priority_opt: priority_opt.flatten(),
            idempotency_key_opt: idempotency_key_opt.flatten(),
            records: records_opt.ok_or_else(not_this_reader)?,
        })
    }
}

struct BatchVisitor {
    tenant_id: TenantId,
    limits: Limits,
}

impl<'de> Visitor<'de> for BatchVisitor {
    type Value = EncodedRecords;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a batch")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut records_opt = None;
        while let Some(key) = map.next_key::<&'de str>()? {
            if key != "activities" || records_opt.is_some() {
                return Err(not_this_reader());
            }
            records_opt = Some(map.next_value_seed(RecordsSeed {
                encoder: RecordEncoder::new(self.tenant_id, None, self.limits),
                max_records: self.limits.max_records,
            })?);
        }
        records_opt.ok_or_else(not_this_reader)
    }
}

/// The `activities` array: each record parsed and encoded as it is read.
struct RecordsSeed {
    encoder: RecordEncoder,
    max_records: usize,
}

impl<'de> DeserializeSeed<'de> for RecordsSeed {
    type Value = EncodedRecords;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for RecordsSeed {
    type Value = EncodedRecords;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of processing activities")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let RecordsSeed {
            mut encoder,
            max_records,
        } = self;
        while let Some(parsed) = seq.next_element_seed(RecordSeed {
            index: encoder.next_index(),
        })? {
            if encoder.next_index() == max_records {
                return Err(not_this_reader());
            }
            encoder.add(parsed);
        }
        encoder.finish().map_err(|_| not_this_reader())
    }
}
