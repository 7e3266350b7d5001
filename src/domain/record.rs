//! The processing-activity record (SPEC section 2), parsed at the HTTP edge.
//!
//! A [`ProcessingActivity`] can only be built by [`ProcessingActivity::parse`], which enforces
//! every record rule; the rest of the engine never re-checks them. Strings borrow from the
//! request body when they hold no JSON escapes, so a 100,000-record scan is not copied string by
//! string before it is encoded for staging.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, Visitor};
use serde_json::value::RawValue;

use super::RecordError;

/// One valid processing activity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessingActivity<'a> {
    pub activity_name: Cow<'a, str>,
    pub pdpl_category: PdplCategory,
    pub data_fields: Vec<Cow<'a, str>>,
    pub purpose_opt: Option<Cow<'a, str>>,
    pub legal_basis_opt: Option<Cow<'a, str>>,
    pub retention_period_opt: Option<Cow<'a, str>>,
    pub data_recipients_opt: Option<Vec<Cow<'a, str>>>,
}

/// The three PDPL data categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PdplCategory {
    Sensitive,
    Basic,
    Public,
}

impl PdplCategory {
    pub const ALL: [PdplCategory; 3] = [
        PdplCategory::Sensitive,
        PdplCategory::Basic,
        PdplCategory::Public,
    ];

    /// The exact text of the category in requests, responses and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            PdplCategory::Sensitive => "Category 1: Sensitive Personal Data",
            PdplCategory::Basic => "Category 2: Basic Personal Data",
            PdplCategory::Public => "Category 3: Public Data",
        }
    }

    pub fn as_str_vi(self) -> &'static str {
        match self {
            PdplCategory::Sensitive => "Loại 1: Dữ liệu cá nhân nhạy cảm",
            PdplCategory::Basic => "Loại 2: Dữ liệu cá nhân cơ bản",
            PdplCategory::Public => "Loại 3: Dữ liệu công khai",
        }
    }

    pub fn parse(text: &str) -> Option<PdplCategory> {
        PdplCategory::ALL
            .into_iter()
            .find(|category| category.as_str() == text)
    }
}

pub const ACTIVITY_NAME_MAX_CHARS: usize = 500;
pub const DATA_FIELDS_MAX_ITEMS: usize = 100;
pub const DATA_FIELD_MAX_CHARS: usize = 200;
pub const PURPOSE_MAX_CHARS: usize = 2000;
pub const LEGAL_BASIS_MAX_CHARS: usize = 500;
pub const RETENTION_PERIOD_MAX_CHARS: usize = 100;
pub const DATA_RECIPIENTS_MAX_ITEMS: usize = 100;
pub const DATA_RECIPIENT_MAX_CHARS: usize = 500;

const KNOWN_FIELDS: [&str; 7] = [
    "activity_name",
    "pdpl_category",
    "data_fields",
    "purpose",
    "legal_basis",
    "retention_period",
    "data_recipients",
];

impl<'a> ProcessingActivity<'a> {
    /// Parses the record at `index` of a submission from its raw JSON text.
    pub fn parse(index: usize, raw: &'a RawValue) -> Result<ProcessingActivity<'a>, RecordError> {
        let mut deserializer = serde_json::Deserializer::from_str(raw.get());
        RecordSeed { index }
            .deserialize(&mut deserializer)
            .unwrap_or_else(|error| Err(unreadable(index, &error)))
    }

    /// Applies the record rules to the fields read from the record's JSON object.
    fn from_fields(
        index: usize,
        fields: RawFields<'a>,
    ) -> Result<ProcessingActivity<'a>, RecordError> {
        let activity_name = required(index, "activity_name", fields.activity_name)?;
        let activity_name = text(
            index,
            "activity_name",
            activity_name,
            ACTIVITY_NAME_MAX_CHARS,
        )?;
        if activity_name.trim().is_empty() {
            return Err(RecordError::new(
                index,
                "activity_name",
                "activity_name must not be empty".to_string(),
                "activity_name không được để trống".to_string(),
            ));
        }

        let category_text = required(index, "pdpl_category", fields.pdpl_category)?;
        let category_text = string(index, "pdpl_category", category_text)?;
        let pdpl_category = PdplCategory::parse(&category_text).ok_or_else(|| {
            let choices = PdplCategory::ALL.map(PdplCategory::as_str).join("\", \"");
            RecordError::new(
                index,
                "pdpl_category",
                format!("pdpl_category must be one of \"{choices}\""),
                format!("pdpl_category phải là một trong \"{choices}\""),
            )
        })?;

        let data_fields = required(index, "data_fields", fields.data_fields)?;
        let data_fields = text_list(
            index,
            "data_fields",
            data_fields,
            DATA_FIELDS_MAX_ITEMS,
            DATA_FIELD_MAX_CHARS,
        )?;

        let purpose_opt = optional_text(index, "purpose", fields.purpose, PURPOSE_MAX_CHARS)?;
        let legal_basis_opt = optional_text(
            index,
            "legal_basis",
            fields.legal_basis,
            LEGAL_BASIS_MAX_CHARS,
        )?;
        let retention_period_opt = optional_text(
            index,
            "retention_period",
            fields.retention_period,
            RETENTION_PERIOD_MAX_CHARS,
        )?;
        let data_recipients_opt = match fields.data_recipients {
            None => None,
            Some(raw) => Some(text_list(
                index,
                "data_recipients",
                raw,
                DATA_RECIPIENTS_MAX_ITEMS,
                DATA_RECIPIENT_MAX_CHARS,
            )?),
        };

        Ok(ProcessingActivity {
            activity_name,
            pdpl_category,
            data_fields,
            purpose_opt,
            legal_basis_opt,
            retention_period_opt,
            data_recipients_opt,
        })
    }
}

/// The record's fields as read in the one pass over its JSON, before their rules are checked.
/// `null` reads as absent.
#[derive(Default)]
struct RawFields<'a> {
    activity_name: Option<FieldValue<'a>>,
    pdpl_category: Option<FieldValue<'a>>,
    data_fields: Option<FieldValue<'a>>,
    purpose: Option<FieldValue<'a>>,
    legal_basis: Option<FieldValue<'a>>,
    retention_period: Option<FieldValue<'a>>,
    data_recipients: Option<FieldValue<'a>>,
}

/// A field's JSON value, kept only as far as the record rules need it: strings (borrowed from
/// the body when they hold no escapes), arrays of strings, or "something else".
enum FieldValue<'a> {
    Null,
    Text(Cow<'a, str>),
    /// An array; `None` stands for an item that is not a string.
    List(Vec<Option<Cow<'a, str>>>),
    Other,
}

impl<'de> de::Deserialize<'de> for FieldValue<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FieldValueVisitor)
    }
}

struct FieldValueVisitor;

impl<'de> Visitor<'de> for FieldValueVisitor {
    type Value = FieldValue<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(FieldValue::Text(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(FieldValue::Text(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(FieldValue::Text(Cow::Owned(text)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(FieldValue::Null)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(FieldValue::Null)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(FieldValue::Other)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(FieldValue::Other)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(FieldValue::Other)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(4));
        while let Some(ListItem(text_opt)) = seq.next_element()? {
            items.push(text_opt);
        }
        Ok(FieldValue::List(items))
    }
}

/// An item of an array field: a string, or `None` for any other value, which is skipped
/// without descending into it (so no nesting depth inside a record is an error).
struct ListItem<'a>(Option<Cow<'a, str>>);

impl<'de> de::Deserialize<'de> for ListItem<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ListItemVisitor)
    }
}

struct ListItemVisitor;

impl<'de> Visitor<'de> for ListItemVisitor {
    type Value = ListItem<'de>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("any JSON value")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(ListItem(Some(Cow::Borrowed(text))))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(ListItem(Some(Cow::Owned(text.to_owned()))))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(ListItem(Some(Cow::Owned(text))))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(ListItem(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(ListItem(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(ListItem(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(ListItem(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(ListItem(None))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(ListItem(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map
            .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
            .is_some()
        {}
        Ok(ListItem(None))
    }
}

/// Reads the record at `index` of a submission, whatever JSON value it is, in one pass over
/// its text: a valid record, or the record's first problem. The value is always read to its
/// end, so a submission's records can be read one after the other from the same
/// deserializer; only JSON that is not well formed is a `serde` error.
pub struct RecordSeed {
    pub index: usize,
}

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = Result<ProcessingActivity<'de>, RecordError>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

fn not_an_object(index: usize) -> RecordError {
    RecordError::new(
        index,
        "",
        "record must be a JSON object".to_string(),
        "bản ghi phải là một đối tượng JSON".to_string(),
    )
}

/// A record the JSON parser refused on its own (a lone surrogate escape, say) while the body
/// around it is well-formed: the record is invalid, its neighbours are not.
fn unreadable(index: usize, error: &serde_json::Error) -> RecordError {
    let reason =
        super::client_text::shown(&error.to_string(), super::client_text::MESSAGE_MAX_CHARS);
    RecordError::new(
        index,
        "",
        format!("record is not valid JSON text: {reason}"),
        format!("bản ghi không phải văn bản JSON hợp lệ: {reason}"),
    )
}

impl<'de> Visitor<'de> for RecordSeed {
    type Value = Result<ProcessingActivity<'de>, RecordError>;

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a processing activity")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Err(not_an_object(self.index)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let index = self.index;
        let mut fields = RawFields::default();
        let mut seen = [false; KNOWN_FIELDS.len()];
        let mut problem_opt = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            if problem_opt.is_some() {
                // The record is already invalid: read the rest of it without keeping anything.
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let Some(position) = KNOWN_FIELDS.iter().position(|known| *known == key) else {
                let shown = shorten(&key);
                problem_opt = Some(RecordError::new(
                    index,
                    &shown,
                    format!(
                        "unknown field \"{shown}\"; expected one of {}",
                        KNOWN_FIELDS.join(", ")
                    ),
                    format!(
                        "trường không xác định \"{shown}\"; chỉ chấp nhận {}",
                        KNOWN_FIELDS.join(", ")
                    ),
                ));
                map.next_value::<de::IgnoredAny>()?;
                continue;
            };
            if std::mem::replace(&mut seen[position], true) {
                let name = KNOWN_FIELDS[position];
                problem_opt = Some(RecordError::new(
                    index,
                    name,
                    format!("field \"{name}\" appears more than once"),
                    format!("trường \"{name}\" xuất hiện nhiều lần"),
                ));
                map.next_value::<de::IgnoredAny>()?;
                continue;
            }
            let value: FieldValue<'de> = map.next_value()?;
            let value_opt = (!matches!(value, FieldValue::Null)).then_some(value);
            match position {
                0 => fields.activity_name = value_opt,
                1 => fields.pdpl_category = value_opt,
                2 => fields.data_fields = value_opt,
                3 => fields.purpose = value_opt,
                4 => fields.legal_basis = value_opt,
                5 => fields.retention_period = value_opt,
                _ => fields.data_recipients = value_opt,
            }
        }
        Ok(match problem_opt {
            Some(problem) => Err(problem),
            None => ProcessingActivity::from_fields(index, fields),
        })
    }
}

/// An unknown key is echoed in the error, made safe and never at length.
fn shorten(key: &str) -> String {
    super::client_text::shown(key, super::client_text::NAME_MAX_CHARS)
}

fn required<'a>(
    index: usize,
    field: &str,
    value_opt: Option<FieldValue<'a>>,
) -> Result<FieldValue<'a>, RecordError> {
    value_opt.ok_or_else(|| {
        RecordError::new(
            index,
            field,
            format!("{field} is required"),
            format!("trường {field} là bắt buộc"),
        )
    })
}

/// A JSON string.
fn string<'a>(
    index: usize,
    field: &str,
    value: FieldValue<'a>,
) -> Result<Cow<'a, str>, RecordError> {
    match value {
        FieldValue::Text(text) => Ok(text),
        _ => Err(RecordError::new(
            index,
            field,
            format!("{field} must be a string"),
            format!("{field} phải là chuỗi ký tự"),
        )),
    }
}

/// A string of at most `max_chars` characters without U+0000 (PostgreSQL cannot store it).
fn text<'a>(
    index: usize,
    field: &str,
    value: FieldValue<'a>,
    max_chars: usize,
) -> Result<Cow<'a, str>, RecordError> {
    let value = string(index, field, value)?;
    check_text(
        index,
        field,
        &value,
        matches!(value, Cow::Borrowed(_)),
        max_chars,
    )?;
    Ok(value)
}

fn check_text(
    index: usize,
    field: &str,
    value: &str,
    unescaped: bool,
    max_chars: usize,
) -> Result<(), RecordError> {
    match text_problem(value, unescaped, max_chars) {
        None => Ok(()),
        Some(problem) => Err(problem.error(index, field, max_chars)),
    }
}

/// Why a string breaks the text rules.
enum TextProblem {
    TooLong,
    Nul,
}

/// `unescaped`: the JSON string held no escape (it was borrowed from the body as written). JSON
/// refuses a raw control character inside a string, so U+0000 can only arrive as the escape
/// `\u0000`, and only strings with an escape need to be scanned for it.
fn text_problem(value: &str, unescaped: bool, max_chars: usize) -> Option<TextProblem> {
    // A UTF-8 string never has more characters than bytes, so most strings skip the count.
    if value.len() > max_chars && value.chars().count() > max_chars {
        return Some(TextProblem::TooLong);
    }
    (!unescaped && value.contains('\0')).then_some(TextProblem::Nul)
}

impl TextProblem {
    fn error(self, index: usize, field: &str, max_chars: usize) -> RecordError {
        match self {
            TextProblem::TooLong => RecordError::new(
                index,
                field,
                format!("{field} must be at most {max_chars} characters"),
                format!("{field} tối đa {max_chars} ký tự"),
            ),
            TextProblem::Nul => RecordError::new(
                index,
                field,
                format!("{field} must not contain the NUL character (U+0000)"),
                format!("{field} không được chứa ký tự NUL (U+0000)"),
            ),
        }
    }
}

fn optional_text<'a>(
    index: usize,
    field: &str,
    value_opt: Option<FieldValue<'a>>,
    max_chars: usize,
) -> Result<Option<Cow<'a, str>>, RecordError> {
    value_opt
        .map(|value| text(index, field, value, max_chars))
        .transpose()
}

fn text_list<'a>(
    index: usize,
    field: &str,
    value: FieldValue<'a>,
    max_items: usize,
    max_item_chars: usize,
) -> Result<Vec<Cow<'a, str>>, RecordError> {
    let FieldValue::List(items) = value else {
        return Err(RecordError::new(
            index,
            field,
            format!("{field} must be an array of strings"),
            format!("{field} phải là một mảng chuỗi ký tự"),
        ));
    };
    if items.len() > max_items {
        return Err(RecordError::new(
            index,
            field,
            format!("{field} must have at most {max_items} items"),
            format!("{field} tối đa {max_items} phần tử"),
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(position, item)| {
            // The item's name ("data_fields[3]") is only built for an error message.
            let item_field = || format!("{field}[{position}]");
            let Some(value) = item else {
                let item_field = item_field();
                return Err(RecordError::new(
                    index,
                    &item_field,
                    format!("{item_field} must be a string"),
                    format!("{item_field} phải là chuỗi ký tự"),
                ));
            };
            if value.is_empty() {
                let item_field = item_field();
                return Err(RecordError::new(
                    index,
                    &item_field,
                    format!("{item_field} must not be empty"),
                    format!("{item_field} không được để trống"),
                ));
            }
            if let Some(problem) =
                text_problem(&value, matches!(value, Cow::Borrowed(_)), max_item_chars)
            {
                return Err(problem.error(index, &item_field(), max_item_chars));
            }
            Ok(value)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ProcessingActivity<'_>, RecordError> {
        let raw: &RawValue = serde_json::from_str(json).expect("test JSON is well formed");
        ProcessingActivity::parse(3, raw)
    }

    const VALID: &str = r#"{"activity_name":"Quản lý hồ sơ nhân sự","pdpl_category":"Category 2: Basic Personal Data","data_fields":["họ tên","số CCCD"],"purpose":"Trả lương","data_recipients":["Ngân hàng Vietcombank"]}"#;

    #[test]
    fn a_valid_record_borrows_its_text() {
        let record = parse(VALID).unwrap();
        assert_eq!(record.activity_name, "Quản lý hồ sơ nhân sự");
        assert!(matches!(record.activity_name, Cow::Borrowed(_)));
        assert_eq!(record.pdpl_category, PdplCategory::Basic);
        assert_eq!(record.data_fields, vec!["họ tên", "số CCCD"]);
        assert_eq!(record.legal_basis_opt, None);
        assert_eq!(
            record.data_recipients_opt,
            Some(vec![Cow::Borrowed("Ngân hàng Vietcombank")])
        );
    }

    #[test]
    fn escaped_text_is_decoded() {
        let record = parse(
            r#"{"activity_name":"Qu\u1ea3n l\u00fd","pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
        )
        .unwrap();
        assert_eq!(record.activity_name, "Quản lý");
        assert!(record.data_fields.is_empty());
    }

    fn field_of(json: &str) -> String {
        let error = parse(json).unwrap_err();
        assert_eq!(error.index, 3);
        assert!(!error.error.is_empty() && !error.error_vi.is_empty());
        error.field
    }

    #[test]
    fn each_rule_names_its_field() {
        let cases = [
            (
                r#"{"pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (
                r#"{"activity_name":"","pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (
                r#"{"activity_name":"   ","pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (
                r#"{"activity_name":5,"pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (
                r#"{"activity_name":"a\u0000b","pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 4","data_fields":[]}"#,
                "pdpl_category",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data"}"#,
                "data_fields",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":"x"}"#,
                "data_fields",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":["ok",""]}"#,
                "data_fields[1]",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[1]}"#,
                "data_fields[0]",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[],"purpose":["x"]}"#,
                "purpose",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[],"data_recipients":["\u0000"]}"#,
                "data_recipients[0]",
            ),
            (
                r#"{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[],"purpse":"typo"}"#,
                "purpse",
            ),
            (
                r#"{"activity_name":"a","activity_name":"b","pdpl_category":"Category 3: Public Data","data_fields":[]}"#,
                "activity_name",
            ),
            (r#"[1,2]"#, ""),
            (r#""text""#, ""),
        ];
        for (json, field) in cases {
            assert_eq!(field_of(json), field, "{json}");
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let name = "ệ".repeat(500);
        let json = format!(
            r#"{{"activity_name":"{name}","pdpl_category":"Category 3: Public Data","data_fields":[]}}"#
        );
        assert!(parse(&json).is_ok());
        let too_long = "ệ".repeat(501);
        let json = format!(
            r#"{{"activity_name":"{too_long}","pdpl_category":"Category 3: Public Data","data_fields":[]}}"#
        );
        assert_eq!(field_of(&json), "activity_name");
    }

    #[test]
    fn lists_are_bounded() {
        let items = vec!["\"x\""; 101].join(",");
        let json = format!(
            r#"{{"activity_name":"a","pdpl_category":"Category 3: Public Data","data_fields":[{items}]}}"#
        );
        assert_eq!(field_of(&json), "data_fields");
    }
}
