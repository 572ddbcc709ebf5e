//! Where remote MCP servers may be reached: never dynamcp's own host, a private network or a
//! cloud metadata service (server-side request forgery), unless the operator allows a host by
//! name. Checked on the URL's literal address and again on every address DNS gives at connect
//! time, so a name that later resolves to `127.0.0.1` (DNS rebinding) is refused too. Redirects
//! are followed only within the same origin, so credential headers never travel elsewhere.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// Hosts an operator allowed, by name or address as written in the URL.
#[derive(Debug, Clone, Default)]
pub struct RemotePolicy {
    allowed: Arc<Vec<String>>,
}

impl RemotePolicy {
    pub fn new(allowed: &[String]) -> Self {
        let allowed = allowed
            .iter()
            .map(|h| h.trim().trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        Self { allowed: Arc::new(allowed) }
    }

    /// Whether the operator allowed `host` by name or address.
    pub fn allows(&self, host: &str) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.allowed.contains(&host)
    }

    /// Whether `url` may be connected to at all: an http(s) URL whose host, when it is a
    /// literal address or a well-known internal name, is public or allowed.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url:?} is not an http(s) URL"));
        }
        let host = parsed.host_str().ok_or_else(|| format!("{url:?} names no host"))?;
        if self.allows(host) {
            return Ok(());
        }
        if let Some(why) = internal_name(host) {
            return Err(format!("{host} is {why}"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>()
            && let Some(why) = forbidden(ip)
        {
            return Err(format!("{host} is {why}"));
        }
        Ok(())
    }

    /// A DNS resolver that drops the addresses [`forbidden`] names (unless the host is allowed)
    /// and fails when none is left.
    pub fn resolver(&self) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver { policy: self.clone() })
    }

    /// Follows a redirect only to the same scheme, host and port, at most 3 times.
    pub fn redirects() -> reqwest::redirect::Policy {
        reqwest::redirect::Policy::custom(|attempt| {
            let same_origin = attempt.previous().first().is_some_and(|first| {
                let next = attempt.url();
                first.scheme() == next.scheme()
                    && first.host_str() == next.host_str()
                    && first.port_or_known_default() == next.port_or_known_default()
            });
            if same_origin && attempt.previous().len() <= 3 {
                attempt.follow()
            } else {
                attempt
                    .error("a redirect to another origin (not followed, so no credential header goes there)")
            }
        })
    }
}

/// A literal name that always means an internal service.
fn internal_name(host: &str) -> Option<&'static str> {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return Some("this machine (loopback)");
    }
    if host == "metadata.google.internal" || host == "metadata" || host.ends_with(".internal") {
        return Some("an internal name (cloud metadata or private DNS)");
    }
    None
}

/// Why `ip` may not be reached from here, if it may not: loopback, private, link-local (cloud
/// metadata lives there), unique-local, unspecified, multicast, or shared address space.
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_v4(v4);
            }
            forbidden_v6(v6)
        }
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("this machine (loopback)")
    } else if ip.is_link_local() {
        Some("a link-local address (where cloud metadata services answer)")
    } else if ip.is_private() || (a == 100 && (64..128).contains(&b)) {
        Some("a private network address")
    } else if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() || a == 0 || a >= 240 {
        Some("not a public unicast address")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    if ip.is_loopback() {
        Some("this machine (loopback)")
    } else if ip.is_unspecified() || ip.is_multicast() {
        Some("not a public unicast address")
    } else if first & 0xffc0 == 0xfe80 {
        Some("a link-local address (where cloud metadata services answer)")
    } else if first & 0xfe00 == 0xfc00 {
        Some("a private network address")
    } else {
        None
    }
}

/// See [`RemotePolicy::resolver`].
pub struct GuardedResolver {
    policy: RemotePolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.allows(&host) {
                return Ok(Box::new(found.into_iter()) as reqwest::dns::Addrs);
            }
            let mut refused = None;
            let public: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| match forbidden(addr.ip()) {
                    Some(why) => {
                        refused = Some(why);
                        false
                    }
                    None => true,
                })
                .collect();
            if public.is_empty() {
                let why = refused.unwrap_or("an unknown name");
                let error: Box<dyn std::error::Error + Send + Sync> =
                    format!("{host} resolves to {why}, which remote servers may not reach").into();
                return Err(error);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_refused_unless_allowed() {
        let policy = RemotePolicy::default();
        for url in [
            "http://127.0.0.1:8000/mcp",
            "http://[::1]/mcp",
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/mcp",
            "http://192.168.1.1/mcp",
            "http://172.16.0.1/mcp",
            "http://100.64.0.1/mcp",
            "http://0.0.0.0/mcp",
            "http://[fd00:ec2::254]/mcp",
            "http://[fe80::1]/mcp",
            "http://[::ffff:127.0.0.1]/mcp",
            "http://localhost:9000/mcp",
            "http://api.localhost/mcp",
            "http://metadata.google.internal/computeMetadata/v1/",
            "file:///etc/passwd",
        ] {
            assert!(policy.check_url(url).is_err(), "{url}");
        }
        for url in ["https://mcp.example.com/mcp", "http://93.184.216.34/mcp", "https://[2606:4700::1]/mcp"] {
            assert!(policy.check_url(url).is_ok(), "{url}");
        }
        let allowing = RemotePolicy::new(&["127.0.0.1".to_owned(), "[::1]".to_owned()]);
        assert!(allowing.check_url("http://127.0.0.1:8000/mcp").is_ok());
        assert!(allowing.check_url("http://[::1]:8000/mcp").is_ok());
        assert!(allowing.check_url("http://169.254.169.254/").is_err());
    }
}
