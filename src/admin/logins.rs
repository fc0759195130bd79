//! `/v1/logins`: phone → code → (2FA password), and cancel.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, post};
use serde::Deserialize;

use super::error::ApiError;
use super::json_body;
use crate::accounts::AccountsControl;
use crate::accounts::control::LoginView;
use crate::accounts::login::Sensitive;

/// `POST /v1/logins`.
#[derive(Deserialize)]
pub struct PhoneRequest {
    pub phone: String,
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
        json_body(body, r#"{"phone": "+<country><number>"}"#)
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

pub fn routes() -> axum::Router<Arc<AccountsControl>> {
    axum::Router::new()
        .route("/logins", post(start))
        .route("/logins/{id}", delete(cancel))
        .route("/logins/{id}/code", post(code))
        .route("/logins/{id}/password", post(password))
}

async fn start(
    State(c): State<Arc<AccountsControl>>,
    body: Bytes,
) -> Result<(StatusCode, Json<LoginView>), ApiError> {
    let req = PhoneRequest::from_body(&body)?;
    let view = c.login_start(&Sensitive::new(req.phone)).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

async fn code(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LoginView>, ApiError> {
    let req = CodeRequest::from_body(&body)?;
    Ok(Json(c.login_code(&id, &Sensitive::new(req.code)).await?))
}

async fn password(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<LoginView>, ApiError> {
    let req = PasswordRequest::from_body(&body)?;
    Ok(Json(
        c.login_password(&id, &Sensitive::new(req.password)).await?,
    ))
}

async fn cancel(
    State(c): State<Arc<AccountsControl>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if c.login_cancel(&id).await? {
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
