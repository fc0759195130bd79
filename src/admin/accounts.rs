//! `/v1/accounts`: list, import, consent, pause, resume, remove.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::json_body;
use crate::accounts::login::Sensitive;
use crate::accounts::{AccountView, AccountsControl, ImportFormat};

/// `POST /v1/accounts/import`.
#[derive(Deserialize)]
pub struct ImportRequest {
    /// "telethon" or "pyrogram".
    pub format: String,
    /// The session string.
    pub session: String,
    /// Needed when the string does not carry the user id (Telethon).
    #[serde(default)]
    pub account_id: Option<String>,
}

impl ImportRequest {
    /// The request in `body`, or a 400 that never quotes the body (it holds a session string).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(
            body,
            r#"{"format": "telethon" | "pyrogram", "session": "...", "account_id"?: "..."}"#,
        )
    }
}

/// `POST /v1/accounts/{id}/consent`.
#[derive(Deserialize, Serialize)]
pub struct ConsentRequest {
    pub by: String,
    pub scope: String,
}

impl ConsentRequest {
    /// The request in `body`, or a 400 that never quotes the body.
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(body, r#"{"by": "...", "scope": "..."}"#)
    }
}

/// `GET /v1/accounts`.
#[derive(Serialize, Deserialize)]
pub struct AccountList {
    pub accounts: Vec<AccountView>,
}

pub fn routes() -> axum::Router<Arc<AccountsControl>> {
    axum::Router::new()
        .route("/accounts", get(list))
        .route("/accounts/import", post(import))
        .route("/accounts/{id}", get(one).delete(remove))
        .route("/accounts/{id}/consent", post(consent))
        .route("/accounts/{id}/pause", post(pause))
        .route("/accounts/{id}/resume", post(resume))
}

async fn list(State(c): State<Arc<AccountsControl>>) -> Result<Json<AccountList>, ApiError> {
    Ok(Json(AccountList {
        accounts: c.list().await?,
    }))
}

async fn one(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(c.get(&id).await?))
}

async fn import(
    State(c): State<Arc<AccountsControl>>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let req = ImportRequest::from_body(&body)?;
    let format = ImportFormat::parse(&req.format).map_err(ApiError::from)?;
    let session = Sensitive::new(req.session);
    let view = c
        .import(format, &session, req.account_id.as_deref())
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn consent(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AccountView>, ApiError> {
    let req = ConsentRequest::from_body(&body)?;
    Ok(Json(c.consent(&id, &req.by, &req.scope).await?))
}

async fn pause(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(c.pause(&id).await?))
}

async fn resume(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    Ok(Json(c.resume(&id).await?))
}

async fn remove(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    c.remove(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
