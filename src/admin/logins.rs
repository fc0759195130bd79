//! `/v1/logins`: phone → code → (2FA password), and cancel. Every step needs `login` on the
//! group the account goes to, and counts against the caller's login-attempt rate limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;

use super::authz::{Caller, Limited, Routes};
use super::error::ApiError;
use super::json_body;
use super::principals::{DEFAULT_GROUP, Privilege};
use crate::accounts::AccountsControl;
use crate::accounts::control::LoginView;
use crate::accounts::login::Sensitive;

/// `POST /v1/logins`.
#[derive(Deserialize)]
pub struct PhoneRequest {
    pub phone: String,
    /// The group the account goes to (default: `default`); the caller needs `login` on it.
    #[serde(default)]
    pub group: Option<String>,
}

/// `POST /v1/logins/{id}/code`.
#[derive(Deserialize)]
pub struct CodeRequest {
    pub code: String,
}

/// `POST /v1/logins/{id}/password`.
#[derive(Deserialize)]
pub struct PasswordRequest {
    pub password: String,
}

impl PhoneRequest {
    /// The request in `body`, or a 400 that never quotes the body (it holds a phone number).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(body, r#"{"phone": "+<country><number>", "group"?: "..."}"#)
    }
}

impl CodeRequest {
    /// The request in `body`, or a 400 that never quotes the body (it holds a login code).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(body, r#"{"code": "..."}"#)
    }
}

impl PasswordRequest {
    /// The request in `body`, or a 400 that never quotes the body (it holds a password).
    pub fn from_body(body: &[u8]) -> Result<Self, ApiError> {
        json_body(body, r#"{"password": "..."}"#)
    }
}

pub(super) fn routes() -> Routes<Arc<AccountsControl>> {
    Routes::new("/v1")
        .route(Method::POST, "/logins", Privilege::Login, start)
        .route(Method::DELETE, "/logins/{id}", Privilege::Login, cancel)
        .route(Method::POST, "/logins/{id}/code", Privilege::Login, code)
        .route(
            Method::POST,
            "/logins/{id}/password",
            Privilege::Login,
            password,
        )
}

/// Checks that the caller holds `login` on the group of login `id`; for a login not known (any
/// more), on some group (the step then answers "not found").
async fn require_login(c: &AccountsControl, caller: &Caller, id: &str) -> Result<(), ApiError> {
    caller.require_on(Privilege::Login, c.login_group(id).await.as_deref())
}

async fn start(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<LoginView>), ApiError> {
    let req = PhoneRequest::from_body(&body)?;
    caller.require(
        Privilege::Login,
        req.group.as_deref().unwrap_or(DEFAULT_GROUP),
    )?;
    caller.spend(Limited::LoginAttempt)?;
    let view = c
        .login_start(
            &Sensitive::new(req.phone),
            req.group.as_deref(),
            caller.name(),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn code(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LoginView>, ApiError> {
    require_login(&c, &caller, &id).await?;
    let req = CodeRequest::from_body(&body)?;
    caller.spend(Limited::LoginAttempt)?;
    Ok(Json(
        c.login_code(&id, &Sensitive::new(req.code), caller.name())
            .await?,
    ))
}

async fn password(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LoginView>, ApiError> {
    require_login(&c, &caller, &id).await?;
    let req = PasswordRequest::from_body(&body)?;
    caller.spend(Limited::LoginAttempt)?;
    Ok(Json(
        c.login_password(&id, &Sensitive::new(req.password), caller.name())
            .await?,
    ))
}

async fn cancel(
    State(c): State<Arc<AccountsControl>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_login(&c, &caller, &id).await?;
    if c.login_cancel(&id, caller.name()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::new(
            404,
            "login_not_found",
            format!(
                "login {} is not known (finished, cancelled or expired)",
                id.chars().take(40).collect::<String>()
            ),
        ))
    }
}
