//! Host names as the service sees them: in a `Host` header, a browser's `Origin`, and each
//! `--allowed-hosts` entry (parsed here so the command line can check it).

use std::net::IpAddr;

/// A host and optional port, as in `Host` or an allowed-host entry: lower case, IPv6 without its
/// brackets, no trailing dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        // `user@host` is an authority, but never a Host header or a host name.
        if text.is_empty() || text.contains('@') {
            return None;
        }
        let authority = http::uri::Authority::try_from(text).ok()?;
        let host = authority.host();
        // `http` accepts any text after the last `:` and then has no port: refuse that here.
        let port = match &authority.as_str()[host.len()..] {
            "" => None,
            rest => Some(rest.strip_prefix(':')?.parse::<u16>().ok()?),
        };
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        if host.is_empty() {
            return None;
        }
        Some(Self { host, port })
    }

    pub fn is_ip(&self) -> bool {
        self.host.parse::<IpAddr>().is_ok()
    }

    /// `localhost`, any 127.0.0.0/8 address, `::1` (and `::ffff:127.x.x.x`).
    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self.host.parse::<IpAddr>().is_ok_and(|ip| ip.to_canonical().is_loopback())
    }

    /// Whether `self` (an allowed-host entry) admits `host`: same name, and same port when the
    /// entry names one.
    pub fn admits(&self, host: &Authority) -> bool {
        self.host == host.host && self.port.is_none_or(|port| host.port == Some(port))
    }
}

impl std::fmt::Display for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// Parses one `--allowed-hosts` entry (`name` or `name:port`) into its canonical form; `""`
/// stays `""` (no entry).
pub fn parse_allowed_host(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        return Ok(String::new());
    }
    match Authority::parse(text) {
        Some(authority) if text.trim() != "*" => Ok(authority.to_string()),
        _ => Err(format!(
            "{text:?} is not a host name: give `name` or `name:port` (no scheme, path or wildcard), \
             e.g. dynamcp.example.com"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_host_entries_are_validated_and_canonical() -> Result<(), String> {
        assert_eq!(parse_allowed_host("Dynamcp.Example.com")?, "dynamcp.example.com");
        assert_eq!(parse_allowed_host(" dynamcp.example.com:8443 ")?, "dynamcp.example.com:8443");
        assert_eq!(parse_allowed_host("[::1]:80")?, "[::1]:80");
        assert_eq!(parse_allowed_host("")?, "");
        for bad in ["https://dynamcp.example.com", "dynamcp.example.com/x", "*", "a@b", "host:port"] {
            assert!(parse_allowed_host(bad).is_err(), "{bad}");
        }
        Ok(())
    }
}
