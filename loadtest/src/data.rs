//! Deterministic, realistic processing activities and the request bodies that carry them.
//!
//! Every record is drawn from a small seeded generator, so one `(seed, stream)` pair always
//! yields the same records: the `scans` scenario loads exactly the rows it sent to the engine a
//! second time through plain `COPY`, and a run can be repeated record for record. The text is
//! Vietnamese with its diacritics, because the engine must carry any UTF-8 (multi-byte
//! characters make the bodies larger and the encoding slower than ASCII would).
//!
//! Bodies are serialised here, before any timing starts, so a scenario measures the engine and
//! not the load generator.

use bytes::Bytes;
use serde::Serialize;
use uuid::Uuid;

/// The three PDPL categories, exactly as the API spells them.
pub const CATEGORY_SENSITIVE: &str = "Category 1: Sensitive Personal Data";
pub const CATEGORY_BASIC: &str = "Category 2: Basic Personal Data";
pub const CATEGORY_PUBLIC: &str = "Category 3: Public Data";

/// One processing activity, with the field names of SPEC section 2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessingActivity {
    pub activity_name: String,
    pub pdpl_category: &'static str,
    pub data_fields: Vec<&'static str>,
    #[serde(rename = "purpose", skip_serializing_if = "Option::is_none")]
    pub purpose_opt: Option<&'static str>,
    #[serde(rename = "legal_basis", skip_serializing_if = "Option::is_none")]
    pub legal_basis_opt: Option<&'static str>,
    #[serde(rename = "retention_period", skip_serializing_if = "Option::is_none")]
    pub retention_period_opt: Option<&'static str>,
    #[serde(rename = "data_recipients", skip_serializing_if = "Option::is_none")]
    pub data_recipients_opt: Option<Vec<&'static str>>,
}

/// The body of `POST /data-scans`.
#[derive(Serialize)]
struct ScanRequest<'a> {
    tenant_id: Uuid,
    activities: &'a [ProcessingActivity],
    #[serde(skip_serializing_if = "Option::is_none")]
    idempotency_key: Option<&'a str>,
}

/// The body of `POST /batch/processing-activities` (the tenant travels in the query string).
#[derive(Serialize)]
struct BatchRequest<'a> {
    activities: &'a [ProcessingActivity],
}

/// `count` records of the stream `stream` under `seed`; the same arguments give the same
/// records on every run and every machine.
pub fn generate_records(seed: u64, stream: u64, count: usize) -> Vec<ProcessingActivity> {
    let mut random = SplitMix64::new(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    (0..count).map(|_| generate_record(&mut random)).collect()
}

/// The serialised body of a scan of `records` for `tenant_id`.
pub fn scan_body(tenant_id: Uuid, records: &[ProcessingActivity]) -> Bytes {
    let request = ScanRequest {
        tenant_id,
        activities: records,
        idempotency_key: None,
    };
    Bytes::from(serde_json::to_vec(&request).expect("plain structs of strings always serialise"))
}

/// The serialised body of a scan that carries `idempotency_key`: sent again after a lost
/// answer, it returns the first scan instead of making a second one (SPEC section 3).
pub fn keyed_scan_body(
    tenant_id: Uuid,
    records: &[ProcessingActivity],
    idempotency_key: &str,
) -> Bytes {
    let request = ScanRequest {
        tenant_id,
        activities: records,
        idempotency_key: Some(idempotency_key),
    };
    Bytes::from(serde_json::to_vec(&request).expect("plain structs of strings always serialise"))
}

/// The serialised body of a batch of `records`.
pub fn batch_body(records: &[ProcessingActivity]) -> Bytes {
    let request = BatchRequest {
        activities: records,
    };
    Bytes::from(serde_json::to_vec(&request).expect("plain structs of strings always serialise"))
}

/// Sebastiano Vigna's SplitMix64: tiny, fast, and stable across versions, which a crate's
/// random generator does not promise; the load test only needs variety, not quality.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut mixed = self.state;
        mixed = (mixed ^ (mixed >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        mixed = (mixed ^ (mixed >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        mixed ^ (mixed >> 31)
    }

    /// A number in `0..bound` (`bound` > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, bound: usize) -> usize {
        (self.next_u64() % bound as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u32) -> bool {
        self.next_u64() % 100 < u64::from(percent)
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

fn generate_record(random: &mut SplitMix64) -> ProcessingActivity {
    let (activity, category, field_pool) = ACTIVITIES[random.below(ACTIVITIES.len())];
    let activity_name = format!("{activity} – {}", random.pick(UNITS));
    let field_count = 2 + random.below(5);
    let data_fields = pick_distinct(random, field_pool, field_count);
    let purpose_opt = random.chance(90).then(|| random.pick(PURPOSES));
    let legal_basis_opt = random.chance(85).then(|| {
        if category == CATEGORY_SENSITIVE {
            random.pick(SENSITIVE_LEGAL_BASES)
        } else {
            random.pick(LEGAL_BASES)
        }
    });
    let retention_period_opt = random.chance(80).then(|| random.pick(RETENTION_PERIODS));
    let data_recipients_opt = random.chance(75).then(|| {
        let recipient_count = random.below(4);
        pick_distinct(random, RECIPIENTS, recipient_count)
    });
    ProcessingActivity {
        activity_name,
        pdpl_category: category,
        data_fields,
        purpose_opt,
        legal_basis_opt,
        retention_period_opt,
        data_recipients_opt,
    }
}

/// Up to `count` distinct items of `pool`, in the pool's order.
fn pick_distinct(
    random: &mut SplitMix64,
    pool: &[&'static str],
    count: usize,
) -> Vec<&'static str> {
    let count = count.min(pool.len());
    let mut chosen = vec![false; pool.len()];
    let mut remaining = count;
    while remaining > 0 {
        let index = random.below(pool.len());
        if !chosen[index] {
            chosen[index] = true;
            remaining -= 1;
        }
    }
    pool.iter()
        .zip(chosen)
        .filter_map(|(item, is_chosen)| is_chosen.then_some(*item))
        .collect()
}

const BASIC_FIELDS: &[&str] = &[
    "họ và tên",
    "ngày tháng năm sinh",
    "giới tính",
    "số CCCD",
    "số điện thoại",
    "địa chỉ email",
    "địa chỉ thường trú",
    "địa chỉ tạm trú",
    "quốc tịch",
    "tình trạng hôn nhân",
    "mã số thuế cá nhân",
    "số sổ bảo hiểm xã hội",
    "chức danh",
    "trình độ học vấn",
    "ảnh chân dung",
];

const SENSITIVE_FIELDS: &[&str] = &[
    "họ và tên",
    "số CCCD",
    "tình trạng sức khỏe",
    "hồ sơ bệnh án",
    "dữ liệu sinh trắc học (vân tay)",
    "dữ liệu nhận dạng khuôn mặt",
    "thông tin tài khoản ngân hàng",
    "lịch sử giao dịch thẻ tín dụng",
    "vị trí địa lý qua thiết bị",
    "tôn giáo",
    "quan điểm chính trị",
    "lý lịch tư pháp",
];

const PUBLIC_FIELDS: &[&str] = &[
    "họ và tên",
    "chức danh",
    "tên đơn vị công tác",
    "số điện thoại cơ quan",
    "địa chỉ email công vụ",
    "ảnh đại diện công khai",
    "bài viết trên mạng xã hội công khai",
];

/// Activity, its category, and the fields such an activity touches.
const ACTIVITIES: &[(&str, &str, &[&str])] = &[
    ("Quản lý hồ sơ nhân sự", CATEGORY_BASIC, BASIC_FIELDS),
    (
        "Tính lương và phúc lợi",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    (
        "Tuyển dụng và phỏng vấn ứng viên",
        CATEGORY_BASIC,
        BASIC_FIELDS,
    ),
    ("Chăm sóc khách hàng", CATEGORY_BASIC, BASIC_FIELDS),
    ("Tiếp thị qua email", CATEGORY_BASIC, BASIC_FIELDS),
    (
        "Chương trình khách hàng thân thiết",
        CATEGORY_BASIC,
        BASIC_FIELDS,
    ),
    (
        "Xác minh danh tính khách hàng (eKYC)",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    (
        "Thẩm định hồ sơ vay vốn",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    (
        "Khám sức khỏe định kỳ cho nhân viên",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    (
        "Giám sát an ninh bằng camera",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    (
        "Chấm công bằng vân tay",
        CATEGORY_SENSITIVE,
        SENSITIVE_FIELDS,
    ),
    ("Giao hàng và vận chuyển", CATEGORY_BASIC, BASIC_FIELDS),
    ("Xử lý khiếu nại và bảo hành", CATEGORY_BASIC, BASIC_FIELDS),
    (
        "Công bố danh bạ lãnh đạo doanh nghiệp",
        CATEGORY_PUBLIC,
        PUBLIC_FIELDS,
    ),
    (
        "Đăng tin tuyển dụng công khai",
        CATEGORY_PUBLIC,
        PUBLIC_FIELDS,
    ),
    (
        "Quan hệ cổ đông và công bố thông tin",
        CATEGORY_PUBLIC,
        PUBLIC_FIELDS,
    ),
];

const UNITS: &[&str] = &[
    "Chi nhánh Hà Nội",
    "Chi nhánh Hải Phòng",
    "Chi nhánh Đà Nẵng",
    "Chi nhánh Huế",
    "Chi nhánh Nha Trang",
    "Chi nhánh Thành phố Hồ Chí Minh",
    "Chi nhánh Cần Thơ",
    "Khối Ngân hàng bán lẻ",
    "Phòng Hành chính – Nhân sự",
    "Phòng Chăm sóc khách hàng",
    "Trung tâm Dữ liệu",
    "Văn phòng đại diện Quảng Ninh",
];

const PURPOSES: &[&str] = &[
    "Thực hiện hợp đồng lao động và chi trả lương, thưởng",
    "Cung cấp và cải thiện chất lượng dịch vụ cho khách hàng",
    "Gửi thông tin khuyến mại khi khách hàng đã đồng ý",
    "Phòng chống rửa tiền và gian lận theo quy định của Ngân hàng Nhà nước",
    "Đánh giá khả năng trả nợ trước khi cấp tín dụng",
    "Bảo đảm an ninh, an toàn tại trụ sở và chi nhánh",
    "Thực hiện nghĩa vụ khai báo thuế và bảo hiểm xã hội",
    "Giao hàng đúng địa chỉ và liên hệ khi cần thiết",
    "Giải quyết khiếu nại, yêu cầu bảo hành của khách hàng",
    "Minh bạch thông tin doanh nghiệp theo quy định về chứng khoán",
    "Theo dõi sức khỏe người lao động theo Luật An toàn, vệ sinh lao động",
];

const LEGAL_BASES: &[&str] = &[
    "Sự đồng ý của chủ thể dữ liệu",
    "Thực hiện hợp đồng với chủ thể dữ liệu",
    "Nghĩa vụ pháp lý theo Bộ luật Lao động 2019",
    "Nghĩa vụ pháp lý theo Luật Quản lý thuế",
    "Lợi ích chính đáng của bên kiểm soát dữ liệu",
];

const SENSITIVE_LEGAL_BASES: &[&str] = &[
    "Sự đồng ý rõ ràng, bằng văn bản của chủ thể dữ liệu",
    "Nghĩa vụ pháp lý theo Luật Phòng, chống rửa tiền 2022",
    "Bảo vệ tính mạng, sức khỏe của chủ thể dữ liệu",
    "Nghĩa vụ pháp lý theo Luật Bảo hiểm xã hội",
];

const RETENTION_PERIODS: &[&str] = &[
    "12 tháng",
    "24 tháng",
    "5 năm",
    "10 năm kể từ ngày chấm dứt hợp đồng",
    "Đến khi chủ thể dữ liệu rút lại sự đồng ý",
    "Theo thời hạn lưu trữ hồ sơ kế toán (10 năm)",
];

const RECIPIENTS: &[&str] = &[
    "Ngân hàng TMCP Ngoại thương Việt Nam",
    "Ngân hàng TMCP Công thương Việt Nam",
    "Bảo hiểm xã hội Việt Nam",
    "Cục Thuế Thành phố Hà Nội",
    "Tổng công ty Bưu điện Việt Nam",
    "Công ty Cổ phần Giao hàng Tiết kiệm",
    "Tập đoàn Công nghiệp – Viễn thông Quân đội (Viettel)",
    "Công ty TNHH Kiểm toán Độc lập Phía Nam",
    "Trung tâm Thông tin tín dụng Quốc gia Việt Nam (CIC)",
    "Bệnh viện Bạch Mai",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_and_stream_give_the_same_records() {
        assert_eq!(generate_records(7, 3, 200), generate_records(7, 3, 200));
        assert_ne!(generate_records(7, 3, 200), generate_records(7, 4, 200));
        assert_ne!(generate_records(7, 3, 200), generate_records(8, 3, 200));
    }

    #[test]
    fn records_follow_the_record_rules() {
        let categories = [CATEGORY_SENSITIVE, CATEGORY_BASIC, CATEGORY_PUBLIC];
        for record in generate_records(1, 0, 2_000) {
            assert!((1..=500).contains(&record.activity_name.chars().count()));
            assert!(categories.contains(&record.pdpl_category));
            assert!(record.data_fields.len() <= 100);
            let mut sorted = record.data_fields.clone();
            sorted.dedup();
            assert_eq!(sorted.len(), record.data_fields.len());
            assert!(record
                .purpose_opt
                .map_or(true, |text| text.chars().count() <= 2_000));
        }
    }

    #[test]
    fn bodies_carry_vietnamese_text_unescaped() {
        let records = generate_records(1, 0, 50);
        let tenant_id = Uuid::nil();
        let body = scan_body(tenant_id, &records);
        let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(parsed["tenant_id"], tenant_id.to_string());
        assert_eq!(parsed["activities"].as_array().unwrap().len(), 50);
        assert!(std::str::from_utf8(&body).unwrap().contains(" – "));
        let batch: serde_json::Value = serde_json::from_slice(&batch_body(&records)).unwrap();
        assert_eq!(batch["activities"], parsed["activities"]);
    }
}
