//! Authentication and authorization of every admin API request.
//!
//! [`authenticate`] (a middleware on `/v1/…` and `/metrics`) turns the bearer token into the
//! [`Caller`], or answers 401 without saying which principals exist. Handlers then call
//! [`Caller::require`] with the privilege and the account's group: a caller without it gets 403
//! naming the missing privilege and the group. A route declares its privilege where it is added
//! ([`Routes::route`]), so [`super::endpoints`] lists every route with it (the RBAC matrix test
//! walks that list); and a handler that answers success without having asked [`Caller`] anything
//! is turned into a 500 (fail closed), so a new route cannot forget its check unnoticed.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::Method;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::MethodFilter;
use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::ApiError;
use super::principals::{Principal, Principals, Privilege};

/// One route of the admin API and the privilege it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub method: Method,
    /// The full path template, such as `/v1/accounts/{id}`.
    pub path: String,
    pub privilege: Privilege,
}

/// A router that records, for every route it adds, the privilege the route asks for.
pub struct Routes<S> {
    router: Router<S>,
    prefix: &'static str,
    endpoints: Vec<Endpoint>,
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// An empty set of routes that will be mounted under `prefix` (`/v1`, or `` for the root).
    pub fn new(prefix: &'static str) -> Self {
        Routes {
            router: Router::new(),
            prefix,
            endpoints: Vec::new(),
        }
    }

    /// Adds `method path`, whose handler checks `privilege` through its [`Caller`].
    pub fn route<H, T>(
        mut self,
        method: Method,
        path: &'static str,
        privilege: Privilege,
        handler: H,
    ) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        // Only the methods of the table below are used; each has a filter.
        let filter = MethodFilter::try_from(method.clone()).unwrap_or(MethodFilter::GET);
        let path = format!("{}{path}", self.prefix);
        self.router = self.router.route(&path, axum::routing::on(filter, handler));
        self.endpoints.push(Endpoint {
            method,
            path,
            privilege,
        });
        self
    }

    /// The routes' declarations.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// The router, with its state.
    pub fn with_state(self, state: S) -> Router {
        self.router.with_state(state)
    }
}

/// Per-principal rate limits on login attempts and replays (a keyed token bucket each: the
/// whole hourly allowance may be used at once, then it refills evenly over the hour).
pub struct Limits {
    logins: Option<DefaultKeyedRateLimiter<String>>,
    replays: Option<DefaultKeyedRateLimiter<String>>,
}

/// What a rate limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// A code request, code or 2FA password sent to Telegram (`POST /v1/logins…`).
    LoginAttempt,
    /// A replay started (`POST /v1/replays`).
    Replay,
}

impl Limits {
    /// Limits of `logins_per_hour` login attempts and `replays_per_hour` replays per principal;
    /// 0 turns a limit off.
    pub fn new(logins_per_hour: u32, replays_per_hour: u32) -> Self {
        let limiter =
            |n: u32| NonZeroU32::new(n).map(|n| governor::RateLimiter::keyed(Quota::per_hour(n)));
        Limits {
            logins: limiter(logins_per_hour),
            replays: limiter(replays_per_hour),
        }
    }

    fn check(&self, what: Limited, principal: &str) -> Result<(), ApiError> {
        let limiter = match what {
            Limited::LoginAttempt => &self.logins,
            Limited::Replay => &self.replays,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&principal.to_string()).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let (what, setting) = match what {
                Limited::LoginAttempt => ("login attempts", "admin.login_attempts_per_hour"),
                Limited::Replay => ("replays", "admin.replays_per_hour"),
            };
            let mut e = ApiError::new(
                429,
                "rate_limited",
                format!(
                    "principal {principal} has used its {what} for now ({setting}); try again in {secs} s"
                ),
            );
            e.retry_after = Some(u32::try_from(secs).unwrap_or(u32::MAX).max(1));
            e
        })
    }
}

/// What the middleware hands every handler: who calls, and the means to check what they may do.
#[derive(Clone)]
pub struct Caller {
    principal: Arc<Principal>,
    limits: Arc<Limits>,
    /// Set once the handler asked about a privilege (see the module doc: fail closed).
    checked: Arc<AtomicBool>,
}

impl Caller {
    /// The principal's name (every audit record of the request carries it).
    pub fn name(&self) -> &str {
        &self.principal.name
    }

    /// The principal.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// Ok when the caller holds `privilege` on `group`; a 403 naming both otherwise.
    pub fn require(&self, privilege: Privilege, group: &str) -> Result<(), ApiError> {
        if self.may(privilege, group) {
            Ok(())
        } else {
            Err(ApiError::forbidden(self.name(), privilege, group))
        }
    }

    /// Ok when the caller holds `privilege` on some group (for an account or login that does
    /// not exist: the caller then learns it is not found, others get 403).
    pub fn require_somewhere(&self, privilege: Privilege) -> Result<(), ApiError> {
        self.checked.store(true, Ordering::Relaxed);
        if self.principal.may_somewhere(privilege) {
            Ok(())
        } else {
            Err(ApiError::forbidden(self.name(), privilege, "any"))
        }
    }

    /// [`Caller::require`] on the group of what the request acts on, or, when that does not exist
    /// (`None`), [`Caller::require_somewhere`].
    pub fn require_on(&self, privilege: Privilege, group: Option<&str>) -> Result<(), ApiError> {
        match group {
            Some(group) => self.require(privilege, group),
            None => self.require_somewhere(privilege),
        }
    }

    /// Whether the caller holds `privilege` on `group` (for filtering a list).
    pub fn may(&self, privilege: Privilege, group: &str) -> bool {
        self.checked.store(true, Ordering::Relaxed);
        self.principal.may(privilege, group)
    }

    /// Counts one `what` against the caller's rate limit; a 429 with `Retry-After` when spent.
    pub fn spend(&self, what: Limited) -> Result<(), ApiError> {
        self.limits.check(what, self.name())
    }
}

/// The middleware's state: the principals and their limits.
#[derive(Clone)]
pub struct Guard {
    pub principals: Principals,
    pub limits: Arc<Limits>,
}

/// Authenticates the bearer token, hands the handler its [`Caller`], and fails closed when the
/// handler succeeded without checking a privilege.
pub async fn authenticate(
    State(guard): State<Guard>,
    mut request: Request,
    next: Next,
) -> Response {
    let principal = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|token| guard.principals.authenticate(token.trim()));
    let Some(principal) = principal else {
        return ApiError::new(
            401,
            "unauthorized",
            "missing or unknown bearer token: send Authorization: Bearer <your principal's token> \
             (the single-token mode's is in admin.token_file, or <data_dir>/admin.token)",
        )
        .into_response();
    };
    let checked = Arc::new(AtomicBool::new(false));
    request.extensions_mut().insert(Caller {
        principal,
        limits: guard.limits.clone(),
        checked: checked.clone(),
    });
    let path = request.uri().path().to_string();
    let response = next.run(request).await;
    if response.status().is_success() && !checked.load(Ordering::Relaxed) {
        tracing::error!(%path, "an admin API route answered without checking a privilege; refused");
        return ApiError::new(
            500,
            "unchecked_route",
            "this route checks no privilege, so it is refused (a defect: report it)",
        )
        .into_response();
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_attempts_past_the_hourly_allowance_are_refused_per_principal_with_retry_after() {
        let limits = Limits::new(2, 0);
        for _ in 0..2 {
            limits.check(Limited::LoginAttempt, "ops").unwrap();
        }
        let refused = limits.check(Limited::LoginAttempt, "ops").unwrap_err();
        assert_eq!(
            (refused.status, refused.code.as_str()),
            (429, "rate_limited")
        );
        // One attempt back every 30 minutes.
        let wait = refused.retry_after.unwrap();
        assert!((1..=1800).contains(&wait), "{wait}");
        assert!(
            refused.error.contains("admin.login_attempts_per_hour"),
            "{}",
            refused.error
        );
        limits.check(Limited::LoginAttempt, "sales").unwrap();
        for _ in 0..100 {
            limits.check(Limited::Replay, "ops").unwrap();
        }
    }
}
