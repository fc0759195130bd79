//! `/v1/replays`: start, follow, list and cancel replays from `TG_CLEAN` (see
//! [`crate::pipeline::replay`]). Each needs `replay` on the replay's account's group (`*` for a
//! replay of every account); starting one counts against the caller's replay rate limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::authz::{Caller, Limited, Routes};
use super::error::ApiError;
use super::principals::{ALL_GROUPS, Privilege};
use crate::accounts::AccountsControl;
use crate::accounts::registry::valid_account_id;
use crate::pipeline::replay::{ReplayError, ReplayProgress, ReplayRequest, ReplayStart, Replays};

/// `POST /v1/replays`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// RFC 3339, or a duration ago (`90m`, `2h`, `3d`); replay events stored at or after this time.
    #[serde(default)]
    pub since: Option<String>,
    /// Replay from this `TG_CLEAN` sequence.
    #[serde(default)]
    pub from_sequence: Option<u64>,
    /// RFC 3339, or a duration ago; stop before events stored after this time.
    #[serde(default)]
    pub until: Option<String>,
    /// Only this account's events.
    #[serde(default)]
    pub account: Option<String>,
}

impl StartRequest {
    /// The request with its times parsed (against the node's clock now); a 400 naming the field
    /// otherwise.
    pub fn parse(self) -> Result<ReplayRequest, ApiError> {
        let now = jiff::Timestamp::now();
        let time = |field: &str, value: &str| {
            time_bound(value, now)
                .map_err(|e| ApiError::new(400, "bad_request", format!("{field} {e}")))
        };
        let start = match (&self.since, self.from_sequence) {
            (Some(_), Some(_)) => {
                return Err(ApiError::new(
                    400,
                    "bad_request",
                    "since and from_sequence both given; give one of them (or neither, to start at the beginning)",
                ));
            }
            (Some(since), None) => ReplayStart::Since(time("since", since)?),
            (None, Some(n)) => ReplayStart::Sequence(n),
            (None, None) => ReplayStart::Beginning,
        };
        let until = self
            .until
            .as_deref()
            .map(|u| time("until", u))
            .transpose()?;
        Ok(ReplayRequest {
            start,
            until,
            account: self.account,
        })
    }
}

/// Why a `since`/`until` value is not a time.
#[derive(Debug, thiserror::Error)]
#[error(
    "{value:?} is neither an RFC 3339 time such as 2026-11-21T12:00:00Z nor a duration ago such as 90m, 2h or 3d"
)]
pub struct TimeBoundError {
    value: String,
}

/// Reads a replay bound the way operators type them for `journalctl --since` or `kubectl logs
/// --since`: an RFC 3339 time, or a duration (humantime's `90m`, `2h`, `3d`, `1h 30m`) meaning that
/// long before `now`.
pub fn time_bound(value: &str, now: jiff::Timestamp) -> Result<jiff::Timestamp, TimeBoundError> {
    let err = || TimeBoundError {
        value: value.to_string(),
    };
    if let Ok(t) = value.parse::<jiff::Timestamp>() {
        return Ok(t);
    }
    let ago = humantime::parse_duration(value.trim()).map_err(|_| err())?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|_| err())?;
    now.checked_sub(ago).map_err(|_| err())
}

/// `GET /v1/replays`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReplayList {
    pub replays: Vec<ReplayProgress>,
}

impl From<ReplayError> for ApiError {
    fn from(e: ReplayError) -> Self {
        if e.http_status() >= 500 {
            tracing::error!(code = e.code(), error = %e, "replay request failed");
        }
        ApiError::new(e.http_status(), e.code(), e.to_string())
    }
}

/// What the replay routes read: the replays, and the registry (for an account's group).
#[derive(Clone)]
pub struct ReplayApi {
    pub replays: Arc<Replays>,
    pub control: Arc<AccountsControl>,
}

impl ReplayApi {
    /// The group a replay of `account` concerns: the account's, or `*` (node-wide) for a replay
    /// of every account or of an account the registry does not know (any more).
    async fn scope(&self, account: Option<&str>) -> Result<String, ApiError> {
        // Not an account id: node-wide, and the replay's own check refuses it naming the field.
        let group = match account.filter(|a| valid_account_id(a).is_ok()) {
            Some(a) => super::accounts::group_of(&self.control, a).await?,
            None => None,
        };
        Ok(group.unwrap_or_else(|| ALL_GROUPS.to_string()))
    }

    /// Checks that the caller holds `replay` on replay `id`'s scope (on some group when there is
    /// no such replay: it is then not found).
    async fn require(&self, caller: &Caller, id: &str) -> Result<(), ApiError> {
        match self.replays.get(id).await {
            Ok(p) => caller.require(Privilege::Replay, &self.scope(p.account.as_deref()).await?),
            Err(_) => caller.require_somewhere(Privilege::Replay),
        }
    }
}

pub(super) fn routes() -> Routes<ReplayApi> {
    Routes::new("/v1")
        .route(Method::GET, "/replays", Privilege::Replay, list)
        .route(Method::POST, "/replays", Privilege::Replay, start)
        .route(Method::GET, "/replays/{id}", Privilege::Replay, one)
        .route(Method::DELETE, "/replays/{id}", Privilege::Replay, cancel)
}

async fn start(
    State(api): State<ReplayApi>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Result<(StatusCode, Json<ReplayProgress>), ApiError> {
    let request = StartRequest::from_body(&body)?.parse()?;
    // A request refused for its fields does not count against the caller's replay allowance.
    request.validate(jiff::Timestamp::now())?;
    caller.require(
        Privilege::Replay,
        &api.scope(request.account.as_deref()).await?,
    )?;
    caller.spend(Limited::Replay)?;
    let progress = api.replays.start(request, caller.name()).await?;
    Ok((StatusCode::ACCEPTED, Json(progress)))
}

impl StartRequest {
    /// The body of `POST /v1/replays` (empty = from the beginning); errors name the field
    /// (nothing here is secret, unlike the account routes' bodies).
    pub fn from_body(body: &[u8]) -> Result<StartRequest, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(StartRequest::default());
        }
        let refused = |at: String, why: &dyn std::fmt::Display| {
            ApiError::new(
                400,
                "bad_request",
                format!(
                    "{at}{why}; expected {{\"since\"?: RFC 3339 or duration ago, \"from_sequence\"?: N, \"until\"?: RFC 3339 or duration ago, \"account\"?: \"...\"}}"
                ),
            )
        };
        let mut de = serde_json::Deserializer::from_slice(body);
        let request = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let field = e.path().to_string();
            let at = if field == "." {
                String::new()
            } else {
                format!("field {field}: ")
            };
            refused(at, e.inner())
        })?;
        // Refused like every other body: JSON followed by anything but white space.
        de.end().map_err(|e| refused(String::new(), &e))?;
        Ok(request)
    }
}

/// The replays whose scope the caller holds `replay` on (403 for a caller without `replay`
/// anywhere).
async fn list(
    State(api): State<ReplayApi>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<ReplayList>, ApiError> {
    caller.require_somewhere(Privilege::Replay)?;
    let mut replays = Vec::new();
    for p in api.replays.list().await {
        if caller.may(Privilege::Replay, &api.scope(p.account.as_deref()).await?) {
            replays.push(p);
        }
    }
    Ok(Json(ReplayList { replays }))
}

async fn one(
    State(api): State<ReplayApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<Json<ReplayProgress>, ApiError> {
    api.require(&caller, &id).await?;
    Ok(Json(api.replays.get(&id).await?))
}

async fn cancel(
    State(api): State<ReplayApi>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<ReplayProgress>), ApiError> {
    api.require(&caller, &id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(api.replays.cancel(&id, caller.name()).await?),
    ))
}

#[cfg(test)]
mod tests {
    use super::time_bound;

    fn now() -> jiff::Timestamp {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_duration_means_that_long_before_now() {
        for (value, expected) in [
            ("90m", "2026-12-06T10:30:00Z"),
            ("2h", "2026-12-06T10:00:00Z"),
            ("3d", "2026-12-03T12:00:00Z"),
            ("1h30m", "2026-12-06T10:30:00Z"),
            ("1h 30m", "2026-12-06T10:30:00Z"),
            (" 45s ", "2026-12-06T11:59:15Z"),
        ] {
            assert_eq!(
                time_bound(value, now()).unwrap().to_string(),
                expected,
                "{value}"
            );
        }
    }

    #[test]
    fn an_rfc_3339_time_is_taken_as_it_is() {
        for (value, expected) in [
            ("2026-11-21T12:00:00Z", "2026-11-21T12:00:00Z"),
            ("2026-11-21T14:00:00+02:00", "2026-11-21T12:00:00Z"),
        ] {
            assert_eq!(time_bound(value, now()).unwrap().to_string(), expected);
        }
    }

    #[test]
    fn anything_else_is_refused_with_both_forms_named() {
        for value in [
            "yesterday",
            "",
            "-2h",
            "2026-13-01T00:00:00Z",
            "1 fortnight",
            "h",
        ] {
            let e = time_bound(value, now()).unwrap_err().to_string();
            assert!(e.contains("RFC 3339") && e.contains("2h"), "{value}: {e}");
        }
    }
}
