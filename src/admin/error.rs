//! The admin API's error body: `{"error": "...", "code": "...", "budget"?: {...}}` with a status
//! code that fits. Texts name what failed and what to do; never a phone number, code, password or
//! session byte (request bodies are never echoed).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

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
}

impl ApiError {
    pub fn new(status: u16, code: &str, error: impl Into<String>) -> Self {
        ApiError {
            status,
            error: error.into(),
            code: code.to_string(),
            budget: None,
        }
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
        ApiError {
            status: e.http_status(),
            error: e.to_string(),
            code: e.code().to_string(),
            budget: e.budget().cloned(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, axum::Json(self)).into_response()
    }
}
