//! The regions of Vietnam a tenant belongs to (SPEC section 3), for the operators' regional
//! summary and the `region` label of the ingestion metrics (four values: bounded).

/// A tenant's region; `Unassigned` when it has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Region {
    North,
    Central,
    South,
    Unassigned,
}

impl Region {
    pub const ALL: [Region; 4] = [
        Region::North,
        Region::Central,
        Region::South,
        Region::Unassigned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Region::North => "north",
            Region::Central => "central",
            Region::South => "south",
            Region::Unassigned => "unassigned",
        }
    }

    pub fn as_str_vi(self) -> &'static str {
        match self {
            Region::North => "Miền Bắc",
            Region::Central => "Miền Trung",
            Region::South => "Miền Nam",
            Region::Unassigned => "Chưa phân vùng",
        }
    }

    /// A stored region (`north`, `central`, `south`); anything else, or none, is unassigned.
    pub fn of(stored_opt: Option<&str>) -> Region {
        match stored_opt {
            Some("north") => Region::North,
            Some("central") => Region::Central,
            Some("south") => Region::South,
            _ => Region::Unassigned,
        }
    }
}
