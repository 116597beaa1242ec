//! RFC 9457 problem documents: the one shape every error response has.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The media type of a problem document.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
///
/// `type` is a URN (`urn:cohort:problem:<slug>`) that clients may branch on; `title` is fixed per
/// type; `detail` says what was wrong with this request and how to fix it. Internals (paths,
/// SQL, stack traces) never appear here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Problem {
    /// A URN naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary that does not change between occurrences.
    pub title: String,
    /// The HTTP status code, repeated for clients that lose headers.
    pub status: u16,
    /// What was wrong with this request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The request path the problem refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

/// The prefix of every problem `type` URN.
pub const TYPE_PREFIX: &str = "urn:cohort:problem:";

impl Problem {
    /// Builds a problem of kind `urn:cohort:problem:<slug>`.
    pub fn new(slug: &str, title: &str, status: u16, detail: impl Into<String>) -> Self {
        Self {
            kind: format!("{TYPE_PREFIX}{slug}"),
            title: title.to_owned(),
            status,
            detail: Some(detail.into()),
            instance: None,
        }
    }

    /// The slug after the URN prefix, if the type is one of Cohort's.
    pub fn slug(&self) -> Option<&str> {
        self.kind.strip_prefix(TYPE_PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_with_rfc9457_member_names() {
        let p = Problem::new("not-found", "Not found", 404, "no federation \"x\"");
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["type"], "urn:cohort:problem:not-found");
        assert_eq!(v["status"], 404);
        assert!(v.get("instance").is_none());
        assert_eq!(p.slug(), Some("not-found"));
    }
}
