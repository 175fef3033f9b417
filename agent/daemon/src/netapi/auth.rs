//! Who may call the network API: the clients pinned in `[[api.clients]]`, their roles,
//! which routes each role reaches, the per-client token bucket, and the [`gate`] every
//! request passes before its handler.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use serde::{Deserialize, Serialize};

use super::tls::{PeerInfo, certificate_spki, sha256_hex};
use crate::api::error_response;
use crate::config::ApiSection;

/// What a client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Quotes, leases, its own jobs, receipts and reports.
    Market,
    /// Attestation, capacity challenges, the liveness probe.
    Checker,
    /// Everything the admin socket serves, plus the market's routes.
    Admin,
}

impl Role {
    /// Parses a configured role (validated by [`ApiSection::validate`]).
    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "market" => Some(Role::Market),
            "checker" => Some(Role::Checker),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }

    /// The role's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Market => "market",
            Role::Checker => "checker",
            Role::Admin => "admin",
        }
    }
}

/// An authenticated client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its configured name.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// The pinned clients, by the SHA-256 of their certificate or of its SPKI.
#[derive(Debug, Default)]
pub struct Clients {
    by_pin: HashMap<String, Caller>,
}

impl Clients {
    /// The clients of `[api]`.
    pub fn from_config(section: &ApiSection) -> Clients {
        let by_pin = section
            .clients
            .iter()
            .filter_map(|client| {
                Some((
                    client.cert_sha256.clone(),
                    Caller {
                        name: client.name.clone(),
                        role: Role::parse(&client.role)?,
                    },
                ))
            })
            .collect();
        Clients { by_pin }
    }

    /// The client on the other end of `peer`: its certificate's SHA-256, else its SPKI's,
    /// must be pinned. `Err` says why not, for the 401 answer.
    pub fn authenticate(&self, peer: &PeerInfo) -> Result<Caller, String> {
        let Some(certificate) = &peer.certificate else {
            return Err("no client certificate: the network API needs mutual TLS".to_owned());
        };
        let certificate_pin = sha256_hex(certificate);
        if let Some(caller) = self.by_pin.get(&certificate_pin) {
            return Ok(caller.clone());
        }
        let spki_pin = certificate_spki(certificate).map(|spki| sha256_hex(&spki));
        if let Some(caller) = spki_pin.as_ref().and_then(|pin| self.by_pin.get(pin)) {
            return Ok(caller.clone());
        }
        Err(format!(
            "client certificate sha256 {certificate_pin} (spki sha256 {}) is not pinned in [[api.clients]]",
            spki_pin.as_deref().unwrap_or("unparsable")
        ))
    }
}

/// Whether `role` may call `method path` on the routes that several roles share (the
/// admin routers it is then forwarded to serve everything else to admins only).
/// `Market` is answered by its own router and never asks.
pub fn checker_may(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        (method.as_str(), segments.as_slice()),
        ("POST", ["", "v1", "attestation"])
            | ("POST", ["", "v1", "challenges"])
            | ("POST", ["", "v1", "challenges", _, "open"])
            | ("POST", ["", "v1", "liveness", "probe"])
            | ("GET", ["", "v1", "openapi.json"])
    )
}

/// One client's bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// A token bucket per client: `rate` tokens a second, at most `burst` saved.
#[derive(Debug)]
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter of `rate` requests a second with bursts of `burst`.
    pub fn new(rate: u32, burst: u32) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `client`'s bucket; `Err` holds the seconds until the next.
    pub fn take(&self, client: &str, now: Instant) -> Result<(), f64> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let bucket = buckets.entry(client.to_owned()).or_insert(Bucket {
            tokens: self.burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.refilled = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err((1.0 - bucket.tokens) / self.rate)
        }
    }
}

/// Whether a `market` client may call `method path`: quotes, leases, its jobs and their
/// logs, receipts, reports, the OpenAPI document.
pub fn market_may(method: &Method, path: &str) -> bool {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    matches!(
        (method.as_str(), segments.as_slice()),
        ("POST", ["", "v1", "quotes"])
            | ("POST", ["", "v1", "leases"])
            | ("GET" | "DELETE", ["", "v1", "jobs", _])
            | ("GET", ["", "v1", "jobs", _, "logs"])
            | ("GET", ["", "v1", "receipts"])
            | ("GET", ["", "v1", "reports"])
            | ("GET", ["", "v1", "openapi.json"])
    )
}

/// Whether `role` may call `method path`: an admin everything, the others their tables.
pub fn role_may(role: Role, method: &Method, path: &str) -> bool {
    match role {
        Role::Admin => true,
        Role::Checker => checker_may(method, path),
        Role::Market => market_may(method, path),
    }
}

/// The gate every network request passes before its handler: the client must be pinned
/// (401), within its rate (429, with `Retry-After`) and calling a route of its role
/// (403). The handler finds the [`Caller`] in the request's extensions.
pub async fn gate(
    State(net): State<super::NetState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<PeerInfo>>()
        .map(|info| info.0.clone());
    let caller = match peer.as_ref().map(|peer| net.clients.authenticate(peer)) {
        Some(Ok(caller)) => caller,
        Some(Err(reason)) => return unauthorized(reason),
        None => return unauthorized("no TLS peer on this connection".to_owned()),
    };
    if let Err(wait) = net.limiter.take(&caller.name, Instant::now()) {
        let mut response = error_response(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "client {:?} is over its rate (api.rate_per_second); retry in {wait:.3} s",
                caller.name
            ),
        );
        let seconds = wait.ceil().max(1.0) as u64;
        if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    if !role_may(caller.role, request.method(), request.uri().path()) {
        return error_response(
            StatusCode::FORBIDDEN,
            format!(
                "client {:?} (role {}) may not call {} {}",
                caller.name,
                caller.role.as_str(),
                request.method(),
                request.uri().path()
            ),
        );
    }
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
    if let Some(length) = length
        && length > net.max_body_bytes as u64
    {
        return error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body of {length} bytes is larger than api.max_body_bytes ({})",
                net.max_body_bytes
            ),
        );
    }
    request.extensions_mut().insert(caller);
    next.run(request).await
}

fn unauthorized(reason: String) -> Response {
    let mut response = error_response(StatusCode::UNAUTHORIZED, reason);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("MutualTLS"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bucket_allows_the_burst_then_the_rate() {
        let limiter = RateLimiter::new(10, 3);
        let start = Instant::now();
        for _ in 0..3 {
            limiter.take("a", start).unwrap();
        }
        let wait = limiter.take("a", start).unwrap_err();
        assert!((wait - 0.1).abs() < 1e-6, "{wait}");
        limiter.take("b", start).unwrap();
        limiter
            .take("a", start + Duration::from_millis(100))
            .unwrap();
        assert!(
            limiter
                .take("a", start + Duration::from_millis(100))
                .is_err()
        );
    }

    #[test]
    fn checker_routes() {
        assert!(checker_may(&Method::POST, "/v1/attestation"));
        assert!(checker_may(&Method::POST, "/v1/challenges/abc/open"));
        assert!(checker_may(&Method::POST, "/v1/liveness/probe"));
        assert!(!checker_may(&Method::GET, "/v1/attestation"));
        assert!(!checker_may(&Method::POST, "/v1/attestation/enrollment"));
        assert!(!checker_may(&Method::POST, "/v1/quotes"));
        assert!(!checker_may(&Method::GET, "/v1/jobs"));
    }

    #[test]
    fn market_routes() {
        assert!(market_may(&Method::POST, "/v1/quotes"));
        assert!(market_may(&Method::DELETE, "/v1/jobs/j1"));
        assert!(market_may(&Method::GET, "/v1/jobs/j1/logs"));
        assert!(!market_may(&Method::GET, "/v1/jobs"));
        assert!(!market_may(&Method::POST, "/v1/jobs/j1/cancel"));
        assert!(!market_may(&Method::POST, "/v1/attestation"));
        assert!(role_may(Role::Admin, &Method::POST, "/v1/plugins/reload"));
        assert!(!role_may(Role::Checker, &Method::POST, "/v1/leases"));
    }

    #[test]
    fn roles_parse() {
        for role in [Role::Market, Role::Checker, Role::Admin] {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
