//! Domain types: what a tenant, a scan and a record are, with their rules.
//!
//! **Invariant:** only the constructors here decide whether input is valid; code past the HTTP
//! edge takes these types and never re-checks a rule.

pub mod audit;
pub mod auth;
pub mod client_text;
pub mod record;
pub mod region;
pub mod scan;

pub use record::{PdplCategory, ProcessingActivity, RecordSeed};
pub use region::Region;
pub use scan::{Priority, ScanStatus};

use serde::Serialize;
use uuid::Uuid;

/// Why one record of a submission was refused, in both languages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordError {
    pub index: usize,
    pub field: String,
    pub error: String,
    pub error_vi: String,
}

impl RecordError {
    pub fn new(index: usize, field: &str, error: String, error_vi: String) -> RecordError {
        RecordError {
            index,
            field: field.to_string(),
            error,
            error_vi,
        }
    }
}

/// A tenant's id: any UUID a tenant was registered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(pub Uuid);

impl std::fmt::Display for TenantId {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(formatter)
    }
}

/// Most per-record errors kept with a scan and returned to the submitter.
pub const MAX_REPORTED_ERRORS: usize = 100;
