//! The admin API's error body: `{"error": "...", "code": "...", "budget"?: {...}, "missing"?:
//! "...", "group"?: "..."}` with a status code that fits (and `Retry-After` on a 429 of a rate
//! limit). Texts name what failed and what to do; never a phone number, code, password or
//! session byte (request bodies are never echoed).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::principals::Privilege;
use crate::accounts::ControlError;
use crate::accounts::budget::BudgetStatus;

/// An error answer of the admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub budget: Option<BudgetStatus>,
    /// On a 403: the privilege the caller lacks.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub missing: Option<Privilege>,
    /// On a 403: the account group it lacks it on (`*`: node-wide; `any`: on every group).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub group: Option<String>,
    /// Seconds until a rate-limited request may be tried again (the `Retry-After` header).
    #[serde(skip)]
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: u16, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            code: code.to_string(),
            budget: None,
            missing: None,
            group: None,
            retry_after: None,
        }
    }

    /// The 403 of a caller without `privilege` on `group`.
    pub fn forbidden(principal: &str, privilege: Privilege, group: &str) -> Self {
        let mut e = ApiError::new(
            403,
            "forbidden",
            format!("principal {principal} lacks the {privilege} privilege on group {group}"),
        );
        e.missing = Some(privilege);
        e.group = Some(group.to_string());
        e
    }

    /// A request body that is not the JSON asked for. serde_json's own message may quote the
    /// offending value (a phone number, a session string), so only its position and category go
    /// out.
    pub fn bad_json(e: &serde_json::Error, expected: &str) -> Self {
        let what = match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                "is not valid JSON"
            }
            serde_json::error::Category::Data => "has a missing field or a value of the wrong type",
            serde_json::error::Category::Io => "could not be read",
        };
        ApiError::new(
            400,
            "bad_request",
            format!(
                "the request body {what} (line {}, column {}); expected {expected}",
                e.line(),
                e.column()
            ),
        )
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        if e.http_status() >= 500 {
            tracing::error!(code = e.code(), error = %e, "admin API request failed");
        }
        let mut api = ApiError::new(e.http_status(), e.code(), e.to_string());
        api.budget = e.budget().cloned();
        api
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        match self.retry_after {
            Some(secs) => (
                status,
                [(axum::http::header::RETRY_AFTER, secs.to_string())],
                axum::Json(self),
            )
                .into_response(),
            None => (status, axum::Json(self)).into_response(),
        }
    }
}
