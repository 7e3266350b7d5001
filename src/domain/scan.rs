//! Scan statuses and submission priorities, with their bilingual labels.

use serde::{Deserialize, Serialize};

/// Where a scan is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanStatus {
    Pending,
    Processing,
    Completed,
    CompletedWithErrors,
    Failed,
}

impl ScanStatus {
    pub const ALL: [ScanStatus; 5] = [
        ScanStatus::Pending,
        ScanStatus::Processing,
        ScanStatus::Completed,
        ScanStatus::CompletedWithErrors,
        ScanStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ScanStatus::Pending => "pending",
            ScanStatus::Processing => "processing",
            ScanStatus::Completed => "completed",
            ScanStatus::CompletedWithErrors => "completed_with_errors",
            ScanStatus::Failed => "failed",
        }
    }

    pub fn as_str_vi(self) -> &'static str {
        match self {
            ScanStatus::Pending => "đang chờ",
            ScanStatus::Processing => "đang xử lý",
            ScanStatus::Completed => "hoàn thành",
            ScanStatus::CompletedWithErrors => "hoàn thành có lỗi",
            ScanStatus::Failed => "thất bại",
        }
    }

    pub fn parse(text: &str) -> Option<ScanStatus> {
        ScanStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
    }
}

/// Submission priority: orders work within and across tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Critical,
    High,
    Standard,
    Low,
}

impl Priority {
    pub const ALL: [Priority; 4] = [
        Priority::Critical,
        Priority::High,
        Priority::Standard,
        Priority::Low,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "critical",
            Priority::High => "high",
            Priority::Standard => "standard",
            Priority::Low => "low",
        }
    }

    /// The stored form: smaller is more urgent.
    pub fn rank(self) -> i16 {
        match self {
            Priority::Critical => 0,
            Priority::High => 1,
            Priority::Standard => 2,
            Priority::Low => 3,
        }
    }

    pub fn from_rank(rank: i16) -> Priority {
        match rank {
            0 => Priority::Critical,
            1 => Priority::High,
            3 => Priority::Low,
            _ => Priority::Standard,
        }
    }

    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL
            .into_iter()
            .find(|priority| priority.as_str() == text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_priorities_round_trip() {
        for status in [
            ScanStatus::Pending,
            ScanStatus::Processing,
            ScanStatus::Completed,
            ScanStatus::CompletedWithErrors,
            ScanStatus::Failed,
        ] {
            assert_eq!(ScanStatus::parse(status.as_str()), Some(status));
        }
        for priority in [
            Priority::Critical,
            Priority::High,
            Priority::Standard,
            Priority::Low,
        ] {
            assert_eq!(Priority::parse(priority.as_str()), Some(priority));
            assert_eq!(Priority::from_rank(priority.rank()), priority);
        }
        assert_eq!(ScanStatus::Completed.as_str_vi(), "hoàn thành");
    }
}
