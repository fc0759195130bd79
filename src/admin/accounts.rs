//! `/v1/accounts`: list, import, consent, pause, resume, remove, move to another group. Each
//! handler checks the caller's privilege on the account's group first.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::authz::{Caller, Routes};
use super::error::ApiError;
use super::json_body;
use super::principals::{DEFAULT_GROUP, Privilege};
use crate::accounts::login::Sensitive;
use crate::accounts::{AccountView, AccountsControl, ControlError, ImportFormat};

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
    /// The account's group (default: `default`); the caller needs `login` on it.
    #[serde(default)]
    pub group: Option<String>,
}

impl ImportRequest {
    /// The request in `body`, or a 400 that never quotes the body (it holds a session string).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(
            body,
            r#"{"format": "telethon" | "pyrogram", "session": "...", "account_id"?: "...", "group"?: "..."}"#,
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

pub(super) fn routes() -> Routes<Arc<AccountsControl>> {
    Routes::new("/v1")
        .route(Method::GET, "/accounts", Privilege::View, list)
        .route(Method::POST, "/accounts/import", Privilege::Login, import)
        .route(Method::GET, "/accounts/{id}", Privilege::View, one)
        .route(Method::DELETE, "/accounts/{id}", Privilege::Remove, remove)
        .route(
            Method::POST,
            "/accounts/{id}/consent",
            Privilege::Manage,
            consent,
        )
        .route(
            Method::POST,
            "/accounts/{id}/pause",
            Privilege::Manage,
            pause,
        )
        .route(
            Method::POST,
            "/accounts/{id}/resume",
            Privilege::Manage,
            resume,
        )
        .route(
            Method::POST,
            "/accounts/{id}/group",
            Privilege::Admin,
            set_group,
        )
}

/// The group of account `id` (`default` without a label); `None` when the registry does not
/// know it.
pub(super) async fn group_of(c: &AccountsControl, id: &str) -> Result<Option<String>, ApiError> {
    let record = c
        .registry()
        .get(id)
        .await
        .map_err(|e| ApiError::from(ControlError::from(e)))?;
    Ok(record.map(|r| r.group().to_string()))
}

/// Checks that the caller holds `privilege` on account `id`'s group; for an account the registry
/// does not know, on some group (the action then answers "not found").
async fn require_on(
    c: &AccountsControl,
    caller: &Caller,
    privilege: Privilege,
    id: &str,
) -> Result<(), ApiError> {
    caller.require_on(privilege, group_of(c, id).await?.as_deref())
}

async fn list(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<AccountList>, ApiError> {
    caller.require_somewhere(Privilege::View)?;
    let mut accounts = c.list().await?;
    accounts.retain(|a| caller.may(Privilege::View, &a.group));
    Ok(Json(AccountList { accounts }))
}

async fn one(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    require_on(&c, &caller, Privilege::View, &id).await?;
    Ok(Json(c.get(&id).await?))
}

async fn import(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<AccountView>), ApiError> {
    let req = ImportRequest::from_body(&body)?;
    caller.require(
        Privilege::Login,
        req.group.as_deref().unwrap_or(DEFAULT_GROUP),
    )?;
    let format = ImportFormat::parse(&req.format).map_err(ApiError::from)?;
    let session = Sensitive::new(req.session);
    let view = c
        .import(
            format,
            &session,
            req.account_id.as_deref(),
            req.group.as_deref(),
            caller.name(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn consent(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AccountView>, ApiError> {
    require_on(&c, &caller, Privilege::Manage, &id).await?;
    let req = ConsentRequest::from_body(&body)?;
    Ok(Json(
        c.consent(&id, &req.by, &req.scope, caller.name()).await?,
    ))
}

async fn pause(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    require_on(&c, &caller, Privilege::Manage, &id).await?;
    Ok(Json(c.pause(&id, caller.name()).await?))
}

async fn resume(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<AccountView>, ApiError> {
    require_on(&c, &caller, Privilege::Manage, &id).await?;
    Ok(Json(c.resume(&id, caller.name()).await?))
}

async fn remove(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_on(&c, &caller, Privilege::Remove, &id).await?;
    c.remove(&id, caller.name()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/accounts/{id}/group`.
#[derive(Deserialize, Serialize)]
pub struct GroupRequest {
    pub group: String,
}

/// Moves an account to another group: `admin` on both groups.
async fn set_group(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<AccountView>, ApiError> {
    require_on(&c, &caller, Privilege::Admin, &id).await?;
    let req: GroupRequest = json_body(&body, r#"{"group": "..."}"#)?;
    caller.require(Privilege::Admin, req.group.trim())?;
    Ok(Json(c.set_group(&id, &req.group, caller.name()).await?))
}
