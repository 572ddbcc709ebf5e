//! Signing in to hosted MCP servers: the MCP authorization flow (OAuth 2.1 with PKCE, RFC 9728
//! protected-resource metadata, RFC 8414 authorization-server metadata, RFC 7591 dynamic client
//! registration, RFC 8707 resource indicators), as Linear's, Atlassian's or Sentry's hosted
//! servers expect of a client.
//!
//! 1. [`Runtime::offer_sign_in`] records a sign-in for one server of an agent's session and
//!    returns its `state`: a link carrying it is the capability to start the sign-in (no API key
//!    travels in a browser's address bar).
//! 2. [`Runtime::begin_sign_in`] (the browser opens the link) discovers the server's
//!    authorization server, registers dynamcp as a client with the callback address, and returns
//!    the authorization address to send the browser to, with a PKCE challenge.
//! 3. [`Runtime::finish_sign_in`] (the authorization server sends the browser back) checks the
//!    state, exchanges the code with the PKCE verifier and stores the grant, sealed, as a
//!    credential of the session and server ([`GRANT_KEY`]).
//! 4. Each start of the server sends the access token, refreshed first when it is about to end.
//!
//! What is pending and what is granted live in the vault like any credential, so any replica
//! can finish a sign-in another began, and nothing of it is ever logged or answered. Every
//! address the flow reaches is held to the same rules as the server itself
//! ([`super::remote::RemotePolicy`]); redirects are never followed.

use std::time::Duration;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::launch::Target;
use super::remote::RemotePolicy;
use super::{Runtime, RuntimeError};
use crate::access::Tenant;
use crate::store::SecretKind;
use crate::vault::{Binding, SecretBytes};

/// The credential key a server's grant (tokens) is stored under. Not a valid environment name,
/// so it never collides with a value the user sends, and is never put in a server's environment.
pub const GRANT_KEY: &str = "#oauth";
/// The credential key of a sign-in in progress.
pub const PENDING_KEY: &str = "#oauth-sign-in";
/// How long a sign-in link, and a begun sign-in, stay good.
pub const LINK_LIFETIME_SECS: i64 = 30 * 60;
/// An access token this close to its end is refreshed before a start.
const REFRESH_MARGIN_SECS: i64 = 60;
/// The longest text quoted from a sign-in server's error.
const QUOTE_CHARS: usize = 200;

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error(
        "the sign-in link is not valid: it was used already, replaced by a newer one, or is not one of ours"
    )]
    BadLink,
    #[error("the sign-in link expired; ask for a new one")]
    Expired,
    #[error("server {0:?} is not a hosted server, so it has no sign-in")]
    NotHosted(String),
    #[error(
        "{server:?}'s sign-in server at {issuer} does not let new applications register (no dynamic \
         client registration), so dynamcp cannot sign in to it"
    )]
    NoRegistration { server: String, issuer: String },
    #[error("the sign-in server refused: {0}")]
    Refused(String),
    #[error("the sign-in server at {url} could not be used: {reason}")]
    Unreachable { url: String, reason: String },
}

/// What is stored while a sign-in is under way.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The random part of the state, as its SHA-256 (base64url): the state itself is never stored.
    ticket_hash: String,
    expires_at: i64,
    /// Set once the browser opened the link.
    flow: Option<Flow>,
}

#[derive(Serialize, Deserialize)]
struct Flow {
    verifier: String,
    redirect_uri: String,
    client: Client,
}

/// dynamcp as a registered client of one authorization server.
#[derive(Clone, Serialize, Deserialize)]
struct Client {
    token_endpoint: String,
    client_id: String,
    client_secret: Option<String>,
    /// The MCP server the tokens are for (RFC 8707).
    resource: String,
}

/// What a finished sign-in stores.
#[derive(Serialize, Deserialize)]
struct Grant {
    access_token: String,
    refresh_token: Option<String>,
    expires_at: Option<i64>,
    client: Client,
}

/// A finished sign-in.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub session: Uuid,
    pub server: String,
}

/// A sign-in the user may start: the state its link carries, and until when.
#[derive(Debug, Clone)]
pub struct SignInOffer {
    pub server: String,
    pub state: String,
    pub expires_in_secs: i64,
}

/// The authorization server of one MCP server.
struct AuthServer {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    registration_endpoint: Option<String>,
    scopes: Vec<String>,
    resource: String,
}

impl Runtime {
    /// Opens a sign-in for `server` of agent `agent` (the caller's): the state a link carries.
    /// A newer offer replaces an older one of the same server.
    pub async fn offer_sign_in(
        &self,
        tenant: &Tenant,
        agent: Uuid,
        server: &str,
    ) -> Result<SignInOffer, RuntimeError> {
        let agent = self.agent_with_server(tenant, agent, server).await?;
        self.hosted_url(server)?;
        self.open_sign_in(agent.session_id, server).await
    }

    /// Records a new sign-in for `server` of `session`, replacing any earlier one.
    async fn open_sign_in(&self, session: Uuid, server: &str) -> Result<SignInOffer, RuntimeError> {
        let ticket = random_text();
        let pending = Pending {
            ticket_hash: digest(&ticket),
            expires_at: Utc::now().timestamp() + LINK_LIFETIME_SECS,
            flow: None,
        };
        self.put_sealed(session, server, PENDING_KEY, &pending).await?;
        Ok(SignInOffer {
            server: server.to_owned(),
            state: format!("{}.{server}.{ticket}", session.simple()),
            expires_in_secs: LINK_LIFETIME_SECS,
        })
    }

    /// The browser opened a sign-in link: registers dynamcp with the server's authorization
    /// server for `redirect_uri` and returns where to send the browser.
    pub async fn begin_sign_in(&self, state: &str, redirect_uri: &str) -> Result<String, RuntimeError> {
        let (session, server, ticket) = parse_state(state)?;
        let mut pending = self.pending(session, &server, &ticket).await?;
        let url = self.hosted_url(&server)?;
        let http = Http::new(self.remote_policy())?;
        let found = discover(&http, &url).await?;
        let Some(registration) = &found.registration_endpoint else {
            return Err(SignInError::NoRegistration { server, issuer: found.issuer }.into());
        };
        let client = register(&http, registration, redirect_uri, &found).await?;
        let verifier = random_text();
        // The browser goes there, not dynamcp: held to the same rules all the same.
        http.check(&found.authorization_endpoint)?;
        let mut authorize = reqwest::Url::parse(&found.authorization_endpoint).map_err(|e| {
            SignInError::Unreachable { url: found.authorization_endpoint.clone(), reason: e.to_string() }
        })?;
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("code_challenge", &challenge(&verifier))
            .append_pair("code_challenge_method", "S256")
            .append_pair("state", state)
            .append_pair("resource", &client.resource);
        if !found.scopes.is_empty() {
            authorize.query_pairs_mut().append_pair("scope", &found.scopes.join(" "));
        }
        pending.flow = Some(Flow { verifier, redirect_uri: redirect_uri.to_owned(), client });
        self.put_sealed(session, &server, PENDING_KEY, &pending).await?;
        Ok(authorize.into())
    }

    /// The authorization server sent the browser back with `code`: exchanges it and stores the
    /// grant. The sign-in cannot be finished twice.
    pub async fn finish_sign_in(&self, state: &str, code: &str) -> Result<SignedIn, RuntimeError> {
        let (session, server, ticket) = parse_state(state)?;
        let pending = self.pending(session, &server, &ticket).await?;
        let Some(flow) = pending.flow else { return Err(SignInError::BadLink.into()) };
        // Spent before the exchange: a replayed callback finds nothing to finish.
        let spent = Pending { ticket_hash: String::new(), flow: None, ..pending };
        self.put_sealed(session, &server, PENDING_KEY, &spent).await?;
        let http = Http::new(self.remote_policy())?;
        let answer = token_request(
            &http,
            &flow.client,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &flow.redirect_uri),
                ("code_verifier", &flow.verifier),
            ],
        )
        .await?;
        let grant = grant_from(&answer, flow.client, None)?;
        self.put_sealed(session, &server, GRANT_KEY, &grant).await?;
        tracing::info!(%session, server, "signed in to a hosted server");
        Ok(SignedIn { session, server })
    }

    /// The access token to send `server`, refreshed (and stored again) when it is about to end.
    /// A refresh the authorization server refuses (the user revoked dynamcp's access, or the
    /// refresh token ended) means signing in again.
    pub(super) async fn bearer(
        &self,
        agent: &crate::store::Agent,
        server: &str,
        grant: &SecretBytes,
    ) -> Result<String, RuntimeError> {
        let session = agent.session_id;
        let mut grant: Grant = serde_json::from_slice(grant.expose()).map_err(|_| {
            RuntimeError::BadCredential { server: server.to_owned(), key: GRANT_KEY.to_owned() }
        })?;
        let ending = grant.expires_at.is_some_and(|at| at - REFRESH_MARGIN_SECS <= Utc::now().timestamp());
        if let (true, Some(refresh)) = (ending, grant.refresh_token.clone()) {
            let http = Http::new(self.remote_policy())?;
            let answer = token_request(
                &http,
                &grant.client,
                &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            )
            .await
            .map_err(|e| match e {
                SignInError::Refused(_) => {
                    RuntimeError::SignInNeeded { agent: agent.id, server: server.to_owned() }
                }
                other => other.into(),
            })?;
            grant = grant_from(&answer, grant.client, Some(refresh))?;
            self.put_sealed(session, server, GRANT_KEY, &grant).await?;
            tracing::info!(%session, server, "refreshed a hosted server's access token");
        }
        Ok(grant.access_token)
    }

    /// Sign-ins for the servers of agent `agent` (the caller's) that may sign their users in
    /// through the browser and hold no sign-in yet: hosted, declaring no value to send, and not
    /// known to start without one. One look at the agent and its session's credentials serves
    /// them all.
    pub async fn offer_sign_ins(
        &self,
        tenant: &Tenant,
        agent: Uuid,
    ) -> Result<Vec<SignInOffer>, RuntimeError> {
        let agent = self.agent(tenant, agent).await?;
        let granted: Vec<String> = self
            .store
            .credentials(agent.session_id)
            .await?
            .into_iter()
            .filter(|c| c.key == GRANT_KEY)
            .map(|c| c.server)
            .collect();
        let mut offers = Vec::new();
        for server in Self::servers_of(&agent) {
            let Some(record) = self.catalog.index().get(&server).cloned() else { continue };
            let hosted = matches!(self.launcher.target(&record), Ok(Target::Remote { .. }));
            if !hosted || !record.credentials.is_empty() || granted.contains(&server) {
                continue;
            }
            let known = self.known_verification(&record).await;
            if known.is_some_and(|v| v.verdict == crate::catalog::verified::Verdict::Started) {
                continue;
            }
            offers.push(self.open_sign_in(agent.session_id, &server).await?);
        }
        Ok(offers)
    }

    /// The address of a hosted server.
    fn hosted_url(&self, server: &str) -> Result<String, RuntimeError> {
        let record = self.catalog_record(server)?;
        match self.launcher.target(&record)? {
            Target::Remote { url } => Ok(url),
            _ => Err(SignInError::NotHosted(server.to_owned()).into()),
        }
    }

    fn remote_policy(&self) -> RemotePolicy {
        RemotePolicy::new(&self.settings.remote_allow_hosts)
    }

    async fn pending(&self, session: Uuid, server: &str, ticket: &str) -> Result<Pending, RuntimeError> {
        let stored = self.store.credentials(session).await?;
        let Some(sealed) = stored.iter().find(|c| c.server == server && c.key == PENDING_KEY) else {
            return Err(SignInError::BadLink.into());
        };
        let pending: Pending = serde_json::from_slice(self.vault.open_sealed(sealed)?.expose())
            .map_err(|_| SignInError::BadLink)?;
        if pending.ticket_hash.is_empty() || pending.ticket_hash != digest(ticket) {
            return Err(SignInError::BadLink.into());
        }
        if pending.expires_at < Utc::now().timestamp() {
            return Err(SignInError::Expired.into());
        }
        Ok(pending)
    }

    async fn put_sealed(
        &self,
        session: Uuid,
        server: &str,
        key: &str,
        value: &impl Serialize,
    ) -> Result<(), RuntimeError> {
        let bytes = zeroize::Zeroizing::new(serde_json::to_vec(value).unwrap_or_default());
        let sealed =
            self.vault.seal(Binding { session_id: session, server, key, kind: SecretKind::Env }, &bytes)?;
        self.store.put_credentials(session, &[sealed]).await?;
        Ok(())
    }
}

/// `session.server.ticket`: the session as 32 hex digits, the ticket base64url (neither holds a
/// dot), the server between them.
fn parse_state(state: &str) -> Result<(Uuid, String, String), SignInError> {
    let (session, rest) = state.split_once('.').ok_or(SignInError::BadLink)?;
    let (server, ticket) = rest.rsplit_once('.').ok_or(SignInError::BadLink)?;
    let session = Uuid::try_parse(session).map_err(|_| SignInError::BadLink)?;
    if server.is_empty() || ticket.len() < 32 {
        return Err(SignInError::BadLink);
    }
    Ok((session, server.to_owned(), ticket.to_owned()))
}

/// 32 random bytes, base64url.
fn random_text() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn digest(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(text.as_bytes()))
}

/// The PKCE S256 challenge of `verifier`.
fn challenge(verifier: &str) -> String {
    digest(verifier)
}

/// An HTTP client held to the remote policy: no internal address, no redirect, short timeouts.
struct Http {
    client: reqwest::Client,
    policy: RemotePolicy,
}

impl Http {
    fn new(policy: RemotePolicy) -> Result<Self, SignInError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(policy.resolver())
            .build()
            .map_err(|e| SignInError::Unreachable { url: String::new(), reason: e.to_string() })?;
        Ok(Self { client, policy })
    }

    /// Codes, verifiers and tokens travel only over TLS, unless the operator allowed the host.
    fn check(&self, url: &str) -> Result<(), SignInError> {
        let refused = |reason: String| SignInError::Unreachable { url: url.to_owned(), reason };
        self.policy.check_url(url).map_err(refused)?;
        let parsed = reqwest::Url::parse(url).map_err(|e| refused(e.to_string()))?;
        if parsed.scheme() != "https" && !parsed.host_str().is_some_and(|h| self.policy.allows(h)) {
            return Err(refused("a sign-in goes over https only".to_owned()));
        }
        Ok(())
    }

    /// A JSON document, or `None` where there is none (any status but success).
    async fn document(&self, url: &str) -> Result<Option<Value>, SignInError> {
        self.check(url)?;
        let response = self
            .client
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| SignInError::Unreachable { url: url.to_owned(), reason: without_url(e) })?;
        if !response.status().is_success() {
            return Ok(None);
        }
        Ok(response.json::<Value>().await.ok().filter(Value::is_object))
    }

    /// The first of `candidates` that is a JSON document.
    async fn first_document(&self, candidates: &[String]) -> Result<Option<Value>, SignInError> {
        for candidate in candidates {
            if let Some(found) = self.document(candidate).await? {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// Sends `request` and reads a JSON answer; an OAuth error answer becomes [`SignInError::Refused`].
    async fn exchange(&self, url: &str, request: reqwest::RequestBuilder) -> Result<Value, SignInError> {
        self.check(url)?;
        let response = request
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| SignInError::Unreachable { url: url.to_owned(), reason: without_url(e) })?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if status.is_success() && body.is_object() {
            return Ok(body);
        }
        // The error code and its description are the protocol's words; nothing else is quoted.
        let code = body.get("error").and_then(Value::as_str).unwrap_or("no error code");
        let described = body.get("error_description").and_then(Value::as_str).unwrap_or_default();
        let said = crate::catalog::text::clip(&format!("{code} {described}"), QUOTE_CHARS);
        Err(SignInError::Refused(format!("{} (HTTP {})", said.trim(), status.as_u16())))
    }
}

fn without_url(e: reqwest::Error) -> String {
    e.without_url().to_string()
}

/// The authorization server of the MCP server at `url`: its protected-resource metadata names
/// it (else the server's own origin is one), and its metadata names the endpoints (else the
/// 2025-03-26 protocol's default paths at that origin).
async fn discover(http: &Http, url: &str) -> Result<AuthServer, SignInError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| SignInError::Unreachable { url: url.to_owned(), reason: e.to_string() })?;
    let origin = parsed.origin().ascii_serialization();
    let path = parsed.path().trim_end_matches('/');
    let resource_metadata = http
        .first_document(&[
            format!("{origin}/.well-known/oauth-protected-resource{path}"),
            format!("{origin}/.well-known/oauth-protected-resource"),
        ])
        .await?;
    let text_list = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect()
    };
    let (issuer, scopes, resource) = match &resource_metadata {
        Some(prm) => (
            text_list(prm.get("authorization_servers")).into_iter().next().unwrap_or_else(|| origin.clone()),
            text_list(prm.get("scopes_supported")),
            prm.get("resource").and_then(Value::as_str).unwrap_or(url).to_owned(),
        ),
        None => (origin.clone(), Vec::new(), url.to_owned()),
    };
    let issuer_url = reqwest::Url::parse(&issuer)
        .map_err(|e| SignInError::Unreachable { url: issuer.clone(), reason: e.to_string() })?;
    let issuer_origin = issuer_url.origin().ascii_serialization();
    let issuer_path = issuer_url.path().trim_end_matches('/');
    let metadata = http
        .first_document(&[
            format!("{issuer_origin}/.well-known/oauth-authorization-server{issuer_path}"),
            format!("{issuer_origin}/.well-known/openid-configuration{issuer_path}"),
            format!("{issuer_origin}{issuer_path}/.well-known/openid-configuration"),
        ])
        .await?;
    let endpoint = |key: &str, default: &str| -> String {
        metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("{issuer_origin}{default}"))
    };
    // Only the resource's own scopes are asked for; without them the authorization server
    // grants its default (its whole list would ask for more than the server needs).
    let registration_endpoint = match &metadata {
        Some(m) => m.get("registration_endpoint").and_then(Value::as_str).map(str::to_owned),
        None => Some(format!("{issuer_origin}/register")),
    };
    Ok(AuthServer {
        issuer,
        authorization_endpoint: endpoint("authorization_endpoint", "/authorize"),
        token_endpoint: endpoint("token_endpoint", "/token"),
        registration_endpoint,
        scopes,
        resource,
    })
}

/// Registers dynamcp as a public client (PKCE, no secret) that comes back to `redirect_uri`;
/// a server that insists on a secret gives one, which is then sent with each token request.
async fn register(
    http: &Http,
    endpoint: &str,
    redirect_uri: &str,
    found: &AuthServer,
) -> Result<Client, SignInError> {
    let body = json!({
        "client_name": "dynamcp",
        "redirect_uris": [redirect_uri],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
    });
    let answer = http.exchange(endpoint, http.client.post(endpoint).json(&body)).await?;
    let client_id = answer
        .get("client_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| SignInError::Refused("the registration answer has no client_id".to_owned()))?;
    Ok(Client {
        token_endpoint: found.token_endpoint.clone(),
        client_id: client_id.to_owned(),
        client_secret: answer.get("client_secret").and_then(Value::as_str).map(str::to_owned),
        resource: found.resource.clone(),
    })
}

/// A token request (`application/x-www-form-urlencoded`) with the client's identity and the
/// resource it is for.
async fn token_request(http: &Http, client: &Client, fields: &[(&str, &str)]) -> Result<Value, SignInError> {
    let mut form =
        reqwest::Url::parse("http://form.invalid/").map_err(|e| SignInError::Refused(e.to_string()))?;
    {
        let mut pairs = form.query_pairs_mut();
        for (k, v) in fields {
            pairs.append_pair(k, v);
        }
        pairs.append_pair("client_id", &client.client_id);
        if let Some(secret) = &client.client_secret {
            pairs.append_pair("client_secret", secret);
        }
        pairs.append_pair("resource", &client.resource);
    }
    let body = form.query().unwrap_or_default().to_owned();
    let request = http
        .client
        .post(&client.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body);
    http.exchange(&client.token_endpoint, request).await
}

/// A token answer as a grant; a refresh that returns no new refresh token keeps `previous`.
fn grant_from(answer: &Value, client: Client, previous: Option<String>) -> Result<Grant, SignInError> {
    let access_token = answer
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SignInError::Refused("the token answer has no access_token".to_owned()))?;
    let expires_at = answer.get("expires_in").and_then(Value::as_i64).map(|s| Utc::now().timestamp() + s);
    Ok(Grant {
        access_token: access_token.to_owned(),
        refresh_token: answer.get("refresh_token").and_then(Value::as_str).map(str::to_owned).or(previous),
        expires_at,
        client,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_names_its_session_server_and_ticket() {
        let session = Uuid::new_v4();
        let ticket = random_text();
        let state = format!("{}.io.github.acme.linear.{ticket}", session.simple());
        let (s, server, t) = parse_state(&state).expect("parsed");
        assert_eq!((s, server.as_str(), t.as_str()), (session, "io.github.acme.linear", ticket.as_str()));
        for bad in [
            "",
            "x.y.z",
            &format!("{}.linear.short", session.simple()),
            &format!("{}..{ticket}", session.simple()),
        ] {
            assert!(parse_state(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_sign_in_goes_over_https_to_public_hosts_only() {
        let http = Http::new(RemotePolicy::default()).expect("client");
        assert!(http.check("https://auth.example.com/token").is_ok());
        for url in
            ["http://auth.example.com/token", "https://127.0.0.1/token", "https://169.254.169.254/token"]
        {
            assert!(http.check(url).is_err(), "{url}");
        }
        let allowed = Http::new(RemotePolicy::new(&["127.0.0.1".to_owned()])).expect("client");
        assert!(allowed.check("http://127.0.0.1:9000/token").is_ok());
    }

    #[test]
    fn the_pkce_challenge_is_the_verifiers_sha256() {
        // RFC 7636, appendix B.
        assert_eq!(
            challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_refresh_without_a_new_refresh_token_keeps_the_old_one() {
        let client = Client {
            token_endpoint: "https://auth.example.com/token".into(),
            client_id: "c".into(),
            client_secret: None,
            resource: "https://mcp.example.com/mcp".into(),
        };
        let grant =
            grant_from(&json!({"access_token": "a2", "expires_in": 3600}), client.clone(), Some("r1".into()))
                .expect("grant");
        assert_eq!((grant.access_token.as_str(), grant.refresh_token.as_deref()), ("a2", Some("r1")));
        assert!(grant.expires_at.is_some_and(|at| at > Utc::now().timestamp() + 3000));
        assert!(grant_from(&json!({"token_type": "Bearer"}), client, None).is_err());
    }
}
