//! Which requests the service answers at all, before anyone is authenticated: the `Host` check
//! (DNS rebinding) and the `Origin` check (cross-site requests from browsers) on every route.
//!
//! - **Host.** A page on `http://rebind.attacker.example:8000` whose name the attacker re-points
//!   at 127.0.0.1 is, to the browser, same-origin with itself: it can read our answers. Only the
//!   `Host` header gives it away, so only names this service really has are answered: loopback
//!   names (`localhost`, `127.x.x.x`, `[::1]`, any port) and the configured public names
//!   (`DYNAMCP_ALLOWED_HOSTS`). A service on another address with no names configured answers
//!   any host when it has API keys (which a rebinding page does not have), and IP addresses only
//!   when it runs open: a rebinding attack always needs a DNS name.
//! - **Origin.** A page of another origin can send a POST (a form, or `fetch` in `no-cors` mode)
//!   without reading the answer; against an open service that alone opens sessions or runs
//!   agents. Browsers say who sent a request in `Origin` (and `Sec-Fetch-Site`), so a request that
//!   changes state (anything but GET, HEAD, OPTIONS), and every request to `/mcp` (whose GET
//!   streams carry results too), is refused when its `Origin` is neither the service's own (the
//!   `Host` it was sent to, or `DYNAMCP_PUBLIC_URL`) nor one of `DYNAMCP_CORS_ORIGINS`.
//!   `Origin: null` (sandboxed frames, local files) is refused. Without `Origin`, a browser's
//!   `Sec-Fetch-Site: cross-site` or `same-site` is refused too: another port on localhost is
//!   "same-site" but a different origin, so only `same-origin` and `none` pass. Clients that are
//!   not browsers (curl, MCP clients, servers) send neither header and pass.
//!
//! A CORS `*` lets any origin through only when the service has API keys: open, a wildcard would
//! let every page on the web drive it.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, Uri, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::access::host::Authority;
use crate::access::{Access, Mode};
use crate::state::Limits;

/// A browser origin: scheme, host and the port in effect (the scheme's default when omitted).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// `None` for `null` and anything that is not `scheme://host[:port]`.
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim().trim_end_matches('/');
        let uri = Uri::try_from(text).ok()?;
        if uri.path_and_query().is_some_and(|p| !matches!(p.as_str(), "" | "/")) {
            return None;
        }
        let scheme = uri.scheme_str()?.to_ascii_lowercase();
        let authority = Authority::parse(uri.authority()?.as_str())?;
        let port = authority.port.or(match scheme.as_str() {
            "http" => Some(80),
            "https" => Some(443),
            _ => None,
        });
        Some(Self { scheme, host: authority.host, port })
    }

    /// Whether this origin is the one a browser gives pages loaded from `host` (the `Host` the
    /// request was sent to), over http or https (a TLS proxy in front changes only the scheme).
    fn served_from(&self, host: &Authority) -> bool {
        matches!(self.scheme.as_str(), "http" | "https")
            && self.host == host.host
            && host.port.or(self.port) == self.port
    }
}

/// As browsers serialize it: the scheme's default port is left out.
impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let default = matches!((self.scheme.as_str(), self.port), ("http", Some(80)) | ("https", Some(443)));
        let host = Authority { host: self.host.clone(), port: if default { None } else { self.port } };
        write!(f, "{}://{host}", self.scheme)
    }
}

/// What the host check decided without asking the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostDecision {
    Allow,
    Refuse,
    /// Another address, no names configured, a name: answered only when the service has keys.
    AllowUnlessOpen,
}

/// What the origin check decided without asking the store.
#[derive(Debug, Clone, PartialEq, Eq)]
enum OriginDecision {
    Allow,
    Refuse(String),
    /// A foreign origin, and CORS allows `*`: answered only when the service has keys.
    AllowUnlessOpen(String),
}

/// The settings of the Host and Origin checks, built once from the configuration.
pub struct Guard {
    loopback_only: bool,
    allowed_hosts: Vec<Authority>,
    cors_origins: Vec<Origin>,
    cors_any: bool,
    public_origin: Option<Origin>,
    /// Asked only in the two cases that depend on whether the service runs open; `None`
    /// (handler tests) counts as open.
    access: Option<Arc<Access>>,
}

impl Guard {
    pub fn new(limits: &Limits, public_url: &str, access: Option<Arc<Access>>) -> Self {
        Self {
            loopback_only: limits.loopback_only,
            allowed_hosts: limits.allowed_hosts.iter().filter_map(|h| Authority::parse(h)).collect(),
            cors_origins: limits.cors_origins.iter().filter_map(|o| Origin::parse(o)).collect(),
            cors_any: limits.cors_origins.iter().any(|o| o.trim() == "*"),
            // `DYNAMCP_PUBLIC_URL` may carry a path (`https://host/dynamcp`); its origin does not.
            public_origin: Uri::try_from(public_url.trim())
                .ok()
                .and_then(|url| Origin::parse(&format!("{}://{}", url.scheme_str()?, url.authority()?))),
            access,
        }
    }

    fn host_decision(&self, host: Option<&Authority>) -> HostDecision {
        let Some(host) = host else { return HostDecision::Refuse };
        if host.is_loopback() || self.allowed_hosts.iter().any(|allowed| allowed.admits(host)) {
            HostDecision::Allow
        } else if self.loopback_only || !self.allowed_hosts.is_empty() {
            HostDecision::Refuse
        } else if host.is_ip() {
            HostDecision::Allow
        } else {
            HostDecision::AllowUnlessOpen
        }
    }

    /// Whether `headers` (of a `method` request to `path`, sent to `host`) may come from
    /// where the browser says it comes from.
    fn origin_decision(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        host: Option<&Authority>,
    ) -> OriginDecision {
        let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if safe && !is_mcp(path) {
            return OriginDecision::Allow;
        }
        let Some(origin) = headers.get(header::ORIGIN) else {
            return match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
                Some(site @ ("cross-site" | "same-site")) => OriginDecision::Refuse(format!(
                    "cross-origin request refused: the browser marked it `Sec-Fetch-Site: {site}`; \
                     only this service's own pages may send it"
                )),
                _ => OriginDecision::Allow,
            };
        };
        let Some(origin) = origin.to_str().ok().and_then(Origin::parse) else {
            return OriginDecision::Refuse(
                "cross-origin request refused: a page with an opaque origin (`Origin: null`: a \
                 sandboxed frame or a local file) or an unreadable `Origin` may not send it"
                    .to_owned(),
            );
        };
        let own =
            host.is_some_and(|host| origin.served_from(host)) || self.public_origin.as_ref() == Some(&origin);
        if own || self.cors_origins.contains(&origin) {
            return OriginDecision::Allow;
        }
        let refusal = format!(
            "cross-origin request refused: a page from {origin} may not send it; only this service's \
             own pages and the origins in DYNAMCP_CORS_ORIGINS may"
        );
        if self.cors_any { OriginDecision::AllowUnlessOpen(refusal) } else { OriginDecision::Refuse(refusal) }
    }

    /// Whether the service runs open right now (store failures count as open: fail closed).
    async fn runs_open(&self) -> bool {
        match &self.access {
            Some(access) => match access.mode().await {
                Ok(mode) => mode == Mode::Open,
                Err(_) => true,
            },
            None => true,
        }
    }

    async fn check(&self, method: &Method, uri: &Uri, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = request_host(uri, headers);
        let host_ok = match self.host_decision(host.as_ref()) {
            HostDecision::Allow => true,
            HostDecision::Refuse => false,
            HostDecision::AllowUnlessOpen => !self.runs_open().await,
        };
        if !host_ok {
            let message = match &host {
                Some(host) => {
                    tracing::warn!(%host, "refused a request for a host this service does not have (DNS rebinding?)");
                    format!(
                        "this service does not answer to the host {host} (a guard against DNS \
                         rebinding); if it is this service's public name, add it to DYNAMCP_ALLOWED_HOSTS"
                    )
                }
                None => "the request has no usable Host header".to_owned(),
            };
            return Err(ApiError::HostNotAllowed(message));
        }
        let refusal = match self.origin_decision(method, uri.path(), headers, host.as_ref()) {
            OriginDecision::Allow => None,
            OriginDecision::Refuse(message) => Some(message),
            OriginDecision::AllowUnlessOpen(message) => self.runs_open().await.then_some(message),
        };
        match refusal {
            Some(message) => {
                tracing::warn!(%method, path = uri.path(), "refused a cross-origin request");
                Err(ApiError::CrossOrigin(message))
            }
            None => Ok(()),
        }
    }
}

/// Whether `path` is the MCP endpoint, where every method is checked.
fn is_mcp(path: &str) -> bool {
    path == "/mcp" || path.starts_with("/mcp/")
}

/// The host a request was sent to: `Host`, or the URI's authority (HTTP/2 `:authority`).
fn request_host(uri: &Uri, headers: &HeaderMap) -> Option<Authority> {
    match headers.get(header::HOST) {
        Some(host) => host.to_str().ok().and_then(Authority::parse),
        None => uri.authority().and_then(|a| Authority::parse(a.as_str())),
    }
}

/// Refuses, with 403, requests for a host this service does not have and browser requests from
/// other origins (see the module docs); lets everything else through.
pub async fn guard(State(guard): State<Arc<Guard>>, request: Request, next: Next) -> Response {
    match guard.check(request.method(), request.uri(), request.headers()).await {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits(loopback_only: bool, allowed_hosts: &[&str], cors_origins: &[&str]) -> Limits {
        Limits {
            body_bytes: 1024,
            request_timeout: Duration::from_secs(1),
            cors_origins: cors_origins.iter().map(|o| (*o).to_owned()).collect(),
            run_timeout: Duration::from_secs(1),
            loopback_only,
            allowed_hosts: allowed_hosts.iter().map(|h| (*h).to_owned()).collect(),
        }
    }

    fn host(text: &str) -> Option<Authority> {
        Authority::parse(text)
    }

    fn headers(pairs: &[(&'static str, &str)]) -> anyhow::Result<HeaderMap> {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse()?);
        }
        Ok(map)
    }

    #[test]
    fn loopback_names_with_any_port_are_loopback_and_nothing_else_is() {
        for name in [
            "localhost",
            "LOCALHOST:8000",
            "localhost.",
            "127.0.0.1",
            "127.0.0.1:8000",
            "127.1.2.3:1",
            "[::1]",
            "[::1]:8000",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(host(name).is_some_and(|h| h.is_loopback()), "{name}");
        }
        for name in [
            "rebind.attacker.example:8000",
            "localhost.attacker.example",
            "127.0.0.1.nip.io",
            "0.0.0.0",
            "10.0.0.1",
            "[::2]",
            "127.1",
            "sub.localhost",
        ] {
            assert!(!host(name).is_some_and(|h| h.is_loopback()), "{name}");
        }
        assert_eq!(host("user@127.0.0.1"), None);
        assert_eq!(host(""), None);
    }

    #[test]
    fn on_loopback_only_loopback_names_and_configured_names_are_answered() {
        let guard = Guard::new(&limits(true, &["dynamcp.example.com", "other.example:8443"], &[]), "", None);
        for ok in ["localhost:8000", "127.0.0.1:1234", "127.9.9.9", "[::1]:8000", "dynamcp.example.com:8000"]
        {
            assert_eq!(guard.host_decision(host(ok).as_ref()), HostDecision::Allow, "{ok}");
        }
        assert_eq!(guard.host_decision(host("other.example:8443").as_ref()), HostDecision::Allow);
        for refused in ["rebind.attacker.example:8000", "other.example:8444", "other.example", "192.168.1.5"]
        {
            assert_eq!(guard.host_decision(host(refused).as_ref()), HostDecision::Refuse, "{refused}");
        }
        assert_eq!(guard.host_decision(None), HostDecision::Refuse, "no Host at all");
    }

    #[test]
    fn on_another_address_names_are_checked_only_when_configured() {
        let guard = Guard::new(&limits(false, &[], &[]), "", None);
        assert_eq!(guard.host_decision(host("203.0.113.7:8000").as_ref()), HostDecision::Allow);
        assert_eq!(guard.host_decision(host("[2001:db8::1]").as_ref()), HostDecision::Allow);
        assert_eq!(guard.host_decision(host("localhost").as_ref()), HostDecision::Allow);
        assert_eq!(
            guard.host_decision(host("rebind.attacker.example").as_ref()),
            HostDecision::AllowUnlessOpen,
            "any name only with keys"
        );
        let guard = Guard::new(&limits(false, &["dynamcp.example.com"], &[]), "", None);
        assert_eq!(guard.host_decision(host("dynamcp.example.com").as_ref()), HostDecision::Allow);
        assert_eq!(
            guard.host_decision(host("127.0.0.1:8000").as_ref()),
            HostDecision::Allow,
            "health checks"
        );
        assert_eq!(guard.host_decision(host("rebind.attacker.example").as_ref()), HostDecision::Refuse);
        assert_eq!(guard.host_decision(host("203.0.113.7").as_ref()), HostDecision::Refuse);
    }

    #[test]
    fn origins_are_compared_by_scheme_host_and_effective_port() {
        let parse = |o: &str| Origin::parse(o);
        assert_eq!(parse("https://App.Example"), parse("https://app.example:443"));
        assert_ne!(parse("http://app.example"), parse("https://app.example"));
        assert_ne!(parse("http://localhost:3000"), parse("http://localhost:8000"));
        assert_eq!(parse("null"), None);
        assert_eq!(parse("http://app.example/path"), None);
        let own = |o: &str, h: &str| parse(o).zip(host(h)).is_some_and(|(o, h)| o.served_from(&h));
        assert!(own("http://127.0.0.1:8000", "127.0.0.1:8000"));
        assert!(own("https://dynamcp.example.com", "dynamcp.example.com"), "behind a TLS proxy");
        assert!(own("http://dynamcp.example.com", "dynamcp.example.com:80"));
        assert!(!own("http://localhost:3000", "localhost:8000"), "another port is another origin");
        assert!(!own("http://localhost:8000", "127.0.0.1:8000"), "another name is another origin");
        assert!(!own("https://dynamcp.example.com", "dynamcp.example.com:80"));
        assert!(!own("chrome-extension://abc", "abc"));
    }

    #[test]
    fn state_changing_requests_must_come_from_this_service_or_a_cors_origin() -> anyhow::Result<()> {
        let guard = Guard::new(
            &limits(true, &[], &["https://app.example"]),
            "https://dynamcp.example.com/base",
            None,
        );
        let at = host("127.0.0.1:8000");
        let decide = |method: Method, path: &str, pairs: &[(&'static str, &str)]| -> anyhow::Result<bool> {
            Ok(guard.origin_decision(&method, path, &headers(pairs)?, at.as_ref()) == OriginDecision::Allow)
        };
        // No browser headers at all: curl, MCP clients, servers.
        assert!(decide(Method::POST, "/api/sessions/create", &[])?);
        assert!(decide(Method::POST, "/api/chat", &[("origin", "http://127.0.0.1:8000")])?);
        assert!(decide(Method::POST, "/api/chat", &[("origin", "https://app.example")])?);
        assert!(
            decide(Method::POST, "/api/chat", &[("origin", "https://dynamcp.example.com")])?,
            "public URL"
        );
        assert!(decide(Method::POST, "/api/chat", &[("sec-fetch-site", "same-origin")])?);
        assert!(decide(Method::POST, "/api/chat", &[("sec-fetch-site", "none")])?);
        // Reading is CORS's business, except on /mcp.
        assert!(decide(Method::GET, "/api/agents", &[("origin", "http://rebind.attacker.example")])?);
        assert!(decide(Method::OPTIONS, "/api/chat", &[("origin", "http://evil.example")])?);
        assert!(decide(Method::OPTIONS, "/mcp", &[("origin", "https://app.example")])?, "a CORS preflight");

        for (method, path, pairs) in [
            (Method::POST, "/api/sessions/create", vec![("origin", "http://evil.example")]),
            (Method::DELETE, "/api/agents/x", vec![("origin", "http://localhost:8000")]),
            (Method::POST, "/api/chat", vec![("origin", "http://localhost:3000")]),
            (Method::POST, "/api/chat", vec![("origin", "null")]),
            (Method::POST, "/api/chat", vec![("origin", "https://app.example.evil.example")]),
            (Method::POST, "/api/chat", vec![("sec-fetch-site", "cross-site")]),
            (Method::POST, "/api/chat", vec![("sec-fetch-site", "same-site")]),
            (Method::GET, "/mcp", vec![("origin", "http://evil.example")]),
            (Method::POST, "/mcp", vec![("origin", "http://evil.example"), ("sec-fetch-site", "cross-site")]),
            (Method::GET, "/mcp", vec![("sec-fetch-site", "cross-site")]),
        ] {
            assert!(!decide(method.clone(), path, &pairs)?, "{method} {path} {pairs:?}");
        }
        // An allowed origin wins over the browser's cross-site mark.
        assert!(decide(
            Method::POST,
            "/api/chat",
            &[("origin", "https://app.example"), ("sec-fetch-site", "cross-site")]
        )?);
        Ok(())
    }

    #[test]
    fn a_cors_wildcard_lets_other_origins_in_only_with_keys() -> anyhow::Result<()> {
        let guard = Guard::new(&limits(true, &[], &["*"]), "", None);
        let decision = guard.origin_decision(
            &Method::POST,
            "/api/chat",
            &headers(&[("origin", "http://evil.example")])?,
            host("127.0.0.1:8000").as_ref(),
        );
        assert!(matches!(decision, OriginDecision::AllowUnlessOpen(_)), "{decision:?}");
        let decision = guard.origin_decision(
            &Method::POST,
            "/api/chat",
            &headers(&[("origin", "null")])?,
            host("127.0.0.1:8000").as_ref(),
        );
        assert!(matches!(decision, OriginDecision::Refuse(_)), "null never: {decision:?}");
        Ok(())
    }
}
