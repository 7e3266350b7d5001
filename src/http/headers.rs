//! Request headers as the handlers see them, read from their raw bytes.
//!
//! warp's own header filters reject a value that is not visible ASCII; behind `or`, that
//! rejection loses to a neighbouring route's "method not allowed", so `Authorization: Bearer
//! tökén` on `GET /data-scans` was answered 405. Here a header is never a rejection: a handler
//! gets [`HeaderText`] and answers an unusable value itself, with the status that header calls
//! for (401 for `Authorization`, 415 for `Content-Type`).

use std::convert::Infallible;

use warp::http::HeaderMap;
use warp::Filter;

/// One request header's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderText {
    Absent,
    /// Exactly one value, visible ASCII (spaces and tabs allowed).
    One(String),
    /// A value with a byte outside visible ASCII.
    NotAscii,
    /// More than one value where the header allows one.
    Repeated,
}

impl HeaderText {
    /// The value when there is exactly one usable value.
    pub fn value_opt(&self) -> Option<&str> {
        match self {
            HeaderText::One(value) => Some(value),
            _ => None,
        }
    }

    fn of(headers: &HeaderMap, name: &str) -> HeaderText {
        let mut values = headers.get_all(name).iter();
        let Some(first) = values.next() else {
            return HeaderText::Absent;
        };
        if values.next().is_some() {
            return HeaderText::Repeated;
        }
        match first.to_str() {
            Ok(text) => HeaderText::One(text.to_string()),
            Err(_) => HeaderText::NotAscii,
        }
    }
}

/// The header `name` as [`HeaderText`]; never rejects.
pub fn header_text(
    name: &'static str,
) -> impl Filter<Extract = (HeaderText,), Error = Infallible> + Copy {
    warp::header::headers_cloned().map(move |headers: HeaderMap| HeaderText::of(&headers, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use warp::http::HeaderValue;

    #[test]
    fn a_header_is_absent_one_value_not_ascii_or_repeated() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            HeaderText::of(&headers, "authorization"),
            HeaderText::Absent
        );
        headers.insert("authorization", HeaderValue::from_static("Bearer abc"));
        assert_eq!(
            HeaderText::of(&headers, "authorization"),
            HeaderText::One("Bearer abc".into())
        );
        headers.append("authorization", HeaderValue::from_static("Bearer def"));
        assert_eq!(
            HeaderText::of(&headers, "authorization"),
            HeaderText::Repeated
        );
        headers.insert(
            "authorization",
            HeaderValue::from_bytes("Bearer tökén".as_bytes()).unwrap(),
        );
        assert_eq!(
            HeaderText::of(&headers, "authorization"),
            HeaderText::NotAscii
        );
    }
}
