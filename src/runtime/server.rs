//! One running MCP server: the rmcp client session over a child process (in its own process
//! group, so stopping it stops everything it spawned) or over streamable HTTP, its tools (listed
//! again when it announces `notifications/tools/list_changed`), its stderr turned into redacted
//! `tracing` lines, and its credential files, deleted when it stops.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rmcp::model::{
    CallToolRequestParams, CallToolResult, ClientCapabilities, ClientConfig, Implementation, Tool,
};
use rmcp::service::{Peer, RunningService, ServiceError};
use rmcp::transport::TokioChildProcess;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::io::AsyncBufReadExt;
use tokio::sync::{OwnedSemaphorePermit, watch};

use super::RuntimeError;
use crate::vault::Secret;

/// Replaces a server's own credential values with `[redacted]` in anything it prints or returns,
/// in the forms they travel in: as sent, JSON-escaped (a service-account key inside a JSON
/// answer), percent-encoded, base64, and for multi-line values (PEM keys, JSON files) each long
/// enough line on its own, since stderr and logs arrive a line at a time.
#[derive(Clone, Default)]
pub struct Redactor(Arc<Vec<Secret>>);

/// The reason of a remote start the server refused for want of a sign-in (HTTP 401 or 403 with
/// a bearer challenge).
pub(super) const SIGN_IN_ASKED: &str = "the server asks for a sign-in";

/// Values shorter than this are not looked for: they would blank out ordinary text.
const MIN_SECRET: usize = 4;
/// A line of a multi-line value is looked for on its own from this length on (a PEM body line
/// is 64; `-----END PRIVATE KEY-----` alone is not secret, but harmless to hide).
const MIN_LINE: usize = 12;

impl Redactor {
    pub fn new(values: impl IntoIterator<Item = String>) -> Self {
        use base64::Engine;
        let mut forms: Vec<String> = Vec::new();
        for value in values {
            if value.chars().count() < MIN_SECRET {
                continue;
            }
            if let Ok(quoted) = serde_json::to_string(&value) {
                forms.push(quoted[1..quoted.len() - 1].to_owned());
            }
            forms.push(percent_encode(&value));
            if value.len() >= 8 {
                forms.push(base64::engine::general_purpose::STANDARD.encode(&value));
                forms.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&value));
            }
            if value.contains('\n') {
                forms.extend(
                    value.lines().map(str::trim).filter(|l| l.chars().count() >= MIN_LINE).map(str::to_owned),
                );
            }
            forms.push(value);
        }
        forms.sort();
        forms.dedup();
        // Longest first, so a value that contains another is replaced whole.
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        Self(Arc::new(forms.into_iter().map(Secret::new).collect()))
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.0.iter() {
            if out.contains(secret.expose()) {
                out = out.replace(secret.expose(), "[redacted]");
            }
        }
        out
    }

    /// Every string in `value` (keys included) with the secrets in it redacted.
    pub fn redact_json(&self, value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::String(text) => {
                let clean = self.redact(text);
                if clean != *text {
                    *text = clean;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let entries = std::mem::take(map);
                for (key, mut v) in entries {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&key), v);
                }
            }
            Value::Null | Value::Bool(_) | Value::Number(_) => {}
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Every byte outside the unreserved set as `%XX`, as a URL or form would carry it.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} forms)", self.0.len())
    }
}

/// The last lines a child wrote to stderr (redacted), for error messages; and whether it closed.
#[derive(Clone)]
struct StderrTail {
    lines: Arc<std::sync::Mutex<VecDeque<String>>>,
    closed: watch::Receiver<bool>,
}

const STDERR_TAIL: usize = 8;

impl StderrTail {
    fn spawn(server: &str, stderr: Option<tokio::process::ChildStderr>, redactor: Redactor) -> Self {
        let lines = Arc::new(std::sync::Mutex::new(VecDeque::new()));
        let (tx, closed) = watch::channel(stderr.is_none());
        if let Some(stderr) = stderr {
            let lines = lines.clone();
            let server = server.to_owned();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    let line = redactor.redact(line.trim_end());
                    if line.is_empty() {
                        continue;
                    }
                    tracing::info!(target: "dynamcp::runtime::stderr", server = %server, "{line}");
                    if let Ok(mut tail) = lines.lock() {
                        if tail.len() == STDERR_TAIL {
                            tail.pop_front();
                        }
                        tail.push_back(line);
                    }
                }
                let _ = tx.send(true);
            });
        }
        Self { lines, closed }
    }

    /// The tail, once the stream closed or `wait` passed.
    async fn settled(&mut self, wait: Duration) -> String {
        let _ = tokio::time::timeout(wait, self.closed.wait_for(|c| *c)).await;
        self.lines.lock().map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | ")).unwrap_or_default()
    }
}

/// dynamcp's side of an MCP session: its identity, and a flag the server raises with
/// `notifications/tools/list_changed` (the runtime then lists the tools again).
#[derive(Clone)]
pub struct Client {
    info: ClientConfig,
    tools_changed: Arc<AtomicBool>,
}

impl ClientHandler for Client {
    fn get_info(&self) -> ClientConfig {
        self.info.clone()
    }

    fn on_tool_list_changed(
        &self,
        _context: rmcp::service::NotificationContext<RoleClient>,
    ) -> impl Future<Output = ()> + Send + '_ {
        self.tools_changed.store(true, Ordering::Release);
        std::future::ready(())
    }
}

/// A started server, shared by the runs and calls that use it.
pub struct Live {
    pub server: String,
    /// Its tools as last listed.
    tools: std::sync::RwLock<Arc<Vec<Tool>>>,
    /// Raised by the server's `tools/list_changed`, lowered when the tools are listed again.
    tools_changed: Arc<AtomicBool>,
    pub pid: Option<u32>,
    pub redactor: Redactor,
    pub started_in: Duration,
    peer: Peer<RoleClient>,
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, Client>>>,
    stderr: Option<StderrTail>,
    files: Vec<PathBuf>,
    /// Tools whose definitions changed since the agent's owner approved them: never called.
    held: std::sync::Mutex<std::collections::BTreeSet<String>>,
    epoch: Instant,
    last_used_ms: AtomicU64,
    in_flight: AtomicUsize,
    _permit: OwnedSemaphorePermit,
}

/// How a tool call ended, short of a result.
#[derive(Debug)]
pub enum CallFailure {
    /// The server is gone (crashed or stopped): the caller should drop it.
    Gone(String),
    Timeout(Duration),
    /// The server answered with a JSON-RPC error.
    Refused(String),
}

fn client() -> Client {
    Client {
        info: ClientConfig::new(
            ClientCapabilities::default(),
            Implementation::new("dynamcp", env!("CARGO_PKG_VERSION")),
        ),
        tools_changed: Arc::new(AtomicBool::new(false)),
    }
}

/// What a start needs besides the target.
pub struct StartParams {
    pub server: String,
    pub redactor: Redactor,
    pub permit: OwnedSemaphorePermit,
    pub timeout: Duration,
}

impl Live {
    /// Spawns `command` (its program, arguments, environment and sandbox already set) as the
    /// leader of a new process group, and initialises an MCP session with it. `files`: the
    /// credential files written for it, deleted when it stops.
    pub async fn start_stdio(
        params: StartParams,
        command: tokio::process::Command,
        files: Vec<PathBuf>,
    ) -> Result<Self, RuntimeError> {
        let started = Instant::now();
        let mut wrapped = process_wrap::tokio::CommandWrap::from(command);
        wrapped.wrap(process_wrap::tokio::ProcessGroup::leader());
        let spawned = TokioChildProcess::builder(wrapped).stderr(Stdio::piped()).spawn();
        let (transport, stderr) = match spawned {
            Ok(ok) => ok,
            Err(e) => {
                remove_files(&files);
                return Err(RuntimeError::StartFailed {
                    server: params.server.clone(),
                    reason: format!("could not spawn it: {e}"),
                });
            }
        };
        let pid = transport.id();
        let mut tail = StderrTail::spawn(&params.server, stderr, params.redactor.clone());
        tracing::info!(server = %params.server, pid, "server process started");
        let fail = |reason: String| RuntimeError::StartFailed { server: params.server.clone(), reason };
        let session = tokio::time::timeout(params.timeout, handshake(transport)).await;
        let group = pid.and_then(|p| i32::try_from(p).ok());
        let (service, tools) = match session {
            Ok(Ok(ok)) => ok,
            Ok(Err(e)) => {
                if let Some(group) = group {
                    kill_group(group);
                }
                remove_files(&files);
                let said = tail.settled(Duration::from_secs(2)).await;
                let said = if said.is_empty() { String::new() } else { format!("; it said: {said}") };
                return Err(fail(format!(
                    "it stopped before answering ({}){said}",
                    params.redactor.redact(&e)
                )));
            }
            Err(_) => {
                if let Some(group) = group {
                    kill_group(group);
                }
                remove_files(&files);
                return Err(RuntimeError::StartTimeout {
                    server: params.server.clone(),
                    secs: params.timeout.as_secs(),
                });
            }
        };
        Ok(Self::new(params, service, tools, pid, Some(tail), files, started))
    }

    /// Connects to a remote server over streamable HTTP with `headers`, within `policy`: no
    /// internal address (checked again on every DNS answer), redirects only within the origin.
    /// A failure never quotes what the server answered.
    pub async fn start_remote(
        params: StartParams,
        url: &str,
        headers: Vec<(http::HeaderName, http::HeaderValue)>,
        policy: &super::remote::RemotePolicy,
    ) -> Result<Self, RuntimeError> {
        use rmcp::transport::StreamableHttpClientTransport;
        use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
        let started = Instant::now();
        policy
            .check_url(url)
            .map_err(|reason| RuntimeError::RemoteRefused { server: params.server.clone(), reason })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .redirect(super::remote::RemotePolicy::redirects())
            .dns_resolver(policy.resolver())
            .build()
            .map_err(|e| RuntimeError::StartFailed {
                server: params.server.clone(),
                reason: format!("HTTP client: {e}"),
            })?;
        let config = StreamableHttpClientTransportConfig::with_uri(url.to_owned())
            .custom_headers(headers.into_iter().collect());
        let transport = StreamableHttpClientTransport::with_client(client, config);
        let session = tokio::time::timeout(params.timeout, handshake(transport)).await;
        match session {
            Ok(Ok((service, tools))) => {
                Ok(Self::new(params, service, tools, None, None, Vec::new(), started))
            }
            Ok(Err(e)) => {
                // The error may carry the body of whatever answered: it goes to the debug log,
                // cut short and redacted, never to the caller.
                let detail: String = params.redactor.redact(&e).chars().take(300).collect();
                tracing::debug!(server = %params.server, %detail, "a remote server did not answer as MCP");
                let said = detail.to_lowercase();
                // rmcp says "Auth required" (a 401 with a bearer challenge) or "insufficient scope"
                // (a 403 with one), in the words of its versions.
                let asks = ["auth required", "authorization required", "insufficient scope"];
                let reason = if asks.iter().any(|a| said.contains(a)) {
                    SIGN_IN_ASKED.to_owned()
                } else if detail.contains("resolves to") || detail.contains("another origin") {
                    let why = detail
                        .split(": ")
                        .find(|p| p.contains("resolves to") || p.contains("another origin"));
                    format!(
                        "{url} was refused: {}",
                        why.unwrap_or("an internal address or a redirect elsewhere")
                    )
                } else {
                    format!("{url} did not answer as an MCP server")
                };
                Err(RuntimeError::StartFailed { server: params.server.clone(), reason })
            }
            Err(_) => Err(RuntimeError::StartTimeout {
                server: params.server.clone(),
                secs: params.timeout.as_secs(),
            }),
        }
    }

    fn new(
        params: StartParams,
        service: RunningService<RoleClient, Client>,
        tools: Vec<Tool>,
        pid: Option<u32>,
        stderr: Option<StderrTail>,
        files: Vec<PathBuf>,
        started: Instant,
    ) -> Self {
        let epoch = Instant::now();
        metrics::gauge!("dynamcp_mcp_servers_running").increment(1.0);
        metrics::histogram!("dynamcp_mcp_server_start_seconds").record(started.elapsed().as_secs_f64());
        let tools_changed = service.service().tools_changed.clone();
        Self {
            server: params.server,
            tools: std::sync::RwLock::new(Arc::new(tools)),
            tools_changed,
            pid,
            redactor: params.redactor,
            started_in: started.elapsed(),
            peer: service.peer().clone(),
            service: tokio::sync::Mutex::new(Some(service)),
            stderr,
            files,
            held: std::sync::Mutex::new(std::collections::BTreeSet::new()),
            epoch,
            last_used_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            _permit: params.permit,
        }
    }

    /// False once the server's connection closed (it exited or crashed).
    pub fn is_alive(&self) -> bool {
        !self.peer.is_transport_closed()
    }

    /// Whether the server annotates `tool` as destructive (`destructiveHint: true`; the MCP
    /// default for unannotated tools is not taken as a mark).
    pub fn is_destructive(&self, tool: &str) -> bool {
        self.tool(tool).and_then(|t| t.annotations).and_then(|a| a.destructive_hint) == Some(true)
    }

    /// Whether `tool` is held back until its changed definition is approved.
    pub fn is_held(&self, tool: &str) -> bool {
        self.held.lock().map_or(true, |h| h.contains(tool))
    }

    pub fn held(&self) -> Vec<String> {
        self.held.lock().map(|h| h.iter().cloned().collect()).unwrap_or_default()
    }

    pub fn set_held(&self, tools: std::collections::BTreeSet<String>) {
        if let Ok(mut held) = self.held.lock() {
            *held = tools;
        }
    }

    /// Its tools as last listed.
    pub fn tools(&self) -> Arc<Vec<Tool>> {
        self.tools.read().map(|t| t.clone()).unwrap_or_default()
    }

    pub fn tool(&self, name: &str) -> Option<Tool> {
        self.tools().iter().find(|t| t.name == name).cloned()
    }

    /// Whether the server announced that its tools changed since they were last listed.
    pub fn tools_changed(&self) -> bool {
        self.tools_changed.load(Ordering::Acquire)
    }

    /// Lists the tools again (after `tools/list_changed`) and keeps the new list.
    pub async fn relist(&self) -> Result<Arc<Vec<Tool>>, String> {
        self.tools_changed.store(false, Ordering::Release);
        let tools = Arc::new(self.peer.list_all_tools().await.map_err(|e| e.to_string())?);
        if let Ok(mut current) = self.tools.write() {
            *current = tools.clone();
        }
        Ok(tools)
    }

    /// How long nobody has used it; zero while a call is in flight.
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_used_ms.load(Ordering::Acquire));
        self.epoch.elapsed().saturating_sub(last)
    }

    pub fn touch(&self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used_ms.store(now, Ordering::Release);
    }

    /// Calls `tool`; dropping the future cancels the request on the server.
    pub async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        timeout: Duration,
    ) -> Result<CallToolResult, CallFailure> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _done = InFlight(self);
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let started = Instant::now();
        let outcome = tokio::time::timeout(timeout, self.peer.call_tool(params)).await;
        metrics::histogram!("dynamcp_mcp_tool_call_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(Ok(result)) => Ok(result),
            Ok(Err(ServiceError::McpError(e))) => Err(CallFailure::Refused(self.redactor.redact(&e.message))),
            Ok(Err(e @ (ServiceError::TransportClosed | ServiceError::TransportSend(_)))) => {
                Err(CallFailure::Gone(self.gone_reason(&e.to_string()).await))
            }
            Ok(Err(e)) if !self.is_alive() => Err(CallFailure::Gone(self.gone_reason(&e.to_string()).await)),
            Ok(Err(e)) => Err(CallFailure::Refused(self.redactor.redact(&e.to_string()))),
            Err(_) => Err(CallFailure::Timeout(timeout)),
        }
    }

    async fn gone_reason(&self, error: &str) -> String {
        let said = match self.stderr.clone() {
            Some(mut tail) => tail.settled(Duration::from_millis(500)).await,
            None => String::new(),
        };
        let error = self.redactor.redact(error);
        if said.is_empty() { error } else { format!("{error}; it said: {said}") }
    }

    /// Ends the session: closes stdin, waits, then SIGTERM and SIGKILL to the whole process group
    /// (rmcp's shutdown sequence); deletes its credential files.
    pub async fn stop(&self) {
        let service = self.service.lock().await.take();
        if let Some(mut service) = service {
            metrics::gauge!("dynamcp_mcp_servers_running").decrement(1.0);
            match service.close_with_timeout(Duration::from_secs(10)).await {
                Ok(Some(_)) => tracing::info!(server = %self.server, pid = self.pid, "server stopped"),
                Ok(None) => {
                    tracing::warn!(server = %self.server, pid = self.pid, "server did not stop in time")
                }
                Err(e) => tracing::warn!(server = %self.server, error = %e, "server shutdown task failed"),
            }
        }
        // Closing stdin ends the leader; anything it left running in its group goes now.
        if let Some(pgid) = self.pid.and_then(|p| i32::try_from(p).ok()) {
            kill_group(pgid);
        }
        remove_files(&self.files);
    }
}

/// SIGKILL to a server's process group; a group already empty is fine.
pub fn kill_group(pgid: i32) {
    use nix::sys::signal::{Signal, killpg};
    match killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) => tracing::debug!(pgid, "killed what was left of a server's process group"),
        Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(pgid, error = %e, "could not signal a server's process group"),
    }
}

/// Initialises an MCP session over `transport` and lists the server's tools.
async fn handshake<T, E, A>(transport: T) -> Result<(RunningService<RoleClient, Client>, Vec<Tool>), String>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    let service = client().serve(transport).await.map_err(|e| e.to_string())?;
    let tools = service.peer().list_all_tools().await.map_err(|e| e.to_string())?;
    Ok((service, tools))
}

struct InFlight<'a>(&'a Live);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

fn remove_files(files: &[PathBuf]) {
    for file in files {
        if let Err(e) = std::fs::remove_file(file)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(error = %e, "could not delete a credential file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Redactor;

    #[test]
    fn redacts_longest_values_and_ignores_tiny_ones() {
        let r = Redactor::new(["tok-123".to_owned(), "tok-123-extended".to_owned(), "ab".to_owned()]);
        assert_eq!(r.redact("a tok-123-extended b tok-123 c ab"), "a [redacted] b [redacted] c ab");
        assert!(format!("{r:?}").starts_with("Redactor("));
        assert!(!format!("{r:?}").contains("tok"));
    }

    #[test]
    fn encoded_and_multi_line_values_are_redacted_too() {
        let pem = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7\nVJTUt9Us8cKjMzEfYyjiWA4R4/M2bS1GB4t7NXp98C3SC6dVMvDu\n-----END PRIVATE KEY-----\n";
        let quoted = r#"pa"ss\word-42"#;
        let r = Redactor::new([pem.to_owned(), quoted.to_owned()]);
        // As JSON text: escaped quotes, backslashes and newlines.
        let json = serde_json::json!({"key": pem, "note": format!("pw={quoted}")}).to_string();
        let clean = r.redact(&json);
        assert!(
            !clean.contains("MIIEvQ") && !clean.contains("VJTUt9") && !clean.contains("ss\\\\word"),
            "{clean}"
        );
        // Line by line, as stderr arrives.
        for line in pem.lines().filter(|l| l.len() > 40) {
            assert_eq!(r.redact(&format!("debug: {line}")), "debug: [redacted]");
        }
        // Decoded, in a JSON value.
        let mut value = serde_json::json!({"content": [{"type": "text", "text": format!("the key is {pem}")}], quoted: 1});
        r.redact_json(&mut value);
        let text = value.to_string();
        assert!(!text.contains("MIIEvQ") && !text.contains("word-42"), "{text}");
        // Percent-encoded and base64.
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(quoted);
        assert_eq!(r.redact(&format!("q=pa%22ss%5Cword-42 b={b64}")), "q=[redacted] b=[redacted]");
    }
}
