//! From a catalog record to something that can be started: which program (resolved once, from an
//! allowlist), which arguments (the catalog's, verbatim), which environment (built from nothing:
//! a minimal PATH, the server's own home and caches under the data dir, a short list of
//! pass-through settings, and the server's own decrypted credentials under the names its record
//! declares). Nothing a request sends can become a program, an argument or an env name here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::catalog::record::{Transport, hex, slug};
use crate::catalog::{CredentialKind, LaunchKind, LaunchOption, ServerRecord};
use crate::vault::SecretBytes;

use super::RuntimeError;

/// The directories every child's PATH ends with, after the runtimes' own.
const BASE_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// Env names a credential may never set, whatever a record declares: they change how the
/// runtime itself loads code, so a value there would run whatever the sender wants.
const FORBIDDEN_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "IFS",
    "NODE_OPTIONS",
    "NODE_PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PYTHONINSPECT",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "GIT_SSH_COMMAND",
    "DOCKER_HOST",
];
const FORBIDDEN_ENV_PREFIXES: &[&str] = &["LD_", "DYLD_", "NPM_CONFIG_", "UV_", "PIP_", "XDG_", "DYNAMCP_"];

/// Whether `name` may carry a credential into a child's environment.
pub fn env_name_allowed(name: &str) -> bool {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    let upper = name.to_ascii_uppercase();
    valid
        && !FORBIDDEN_ENV.contains(&upper.as_str())
        && !FORBIDDEN_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
}

/// The programs launch specs may name, resolved to absolute paths once, at start-up.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Allowed program name → its absolute path (`None`: allowed but not installed here).
    programs: BTreeMap<String, Option<PathBuf>>,
    allow_remote: bool,
    path: OsString,
    pass_env: Vec<(String, OsString)>,
    root: PathBuf,
    cache: PathBuf,
}

/// What starting one server means.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// A child process speaking MCP on stdio.
    Stdio { program: PathBuf, args: Vec<String> },
    /// A remote server speaking streamable HTTP.
    Remote { url: String },
}

impl Target {
    /// The program's short name or the URL's host, for logs and events.
    pub fn describe(&self) -> String {
        match self {
            Target::Stdio { program, args } => {
                let name = program.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                format!("{name} {}", args.join(" "))
            }
            Target::Remote { url } => url.clone(),
        }
    }
}

impl Launcher {
    /// `runtimes`: allowed program names, plus `remote` for remote URLs. `search_path`: where to
    /// look them up (dynamcp's own PATH). `pass_env`: names copied from dynamcp's environment to
    /// every child (TLS trust, proxies); `root`: the data dir's `runtime/` folder; `cache`: where
    /// package managers cache downloads.
    pub fn new(
        runtimes: &[String],
        search_path: Option<OsString>,
        pass_env: &[String],
        env_lookup: impl Fn(&str) -> Option<OsString>,
        root: PathBuf,
        cache: PathBuf,
    ) -> Self {
        let mut programs = BTreeMap::new();
        let mut allow_remote = false;
        let mut dirs: Vec<PathBuf> = Vec::new();
        for name in runtimes.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            if name == "remote" {
                allow_remote = true;
                continue;
            }
            if name.contains('/') {
                tracing::warn!(runtime = name, "runtimes are program names, not paths: ignored");
                continue;
            }
            let found = search_path.as_ref().and_then(|p| find_program(name, p));
            match &found {
                Some(path) => {
                    if let Some(dir) = path.parent().map(Path::to_path_buf)
                        && !dirs.contains(&dir)
                    {
                        dirs.push(dir);
                    }
                }
                None => tracing::warn!(
                    runtime = name,
                    "runtime not found on PATH: servers that need it cannot start"
                ),
            }
            programs.insert(name.to_owned(), found);
        }
        for base in BASE_PATH {
            let base = PathBuf::from(base);
            if !dirs.contains(&base) {
                dirs.push(base);
            }
        }
        let path = std::env::join_paths(&dirs).unwrap_or_else(|_| OsString::from(BASE_PATH.join(":")));
        let pass_env = pass_env
            .iter()
            .map(|n| n.trim())
            .filter(|n| !n.is_empty())
            .filter_map(|n| env_lookup(n).map(|v| (n.to_owned(), v)))
            .collect();
        Self { programs, allow_remote, path, pass_env, root, cache }
    }

    /// The first launch option of `record` this machine may and can run.
    pub fn target(&self, record: &ServerRecord) -> Result<Target, RuntimeError> {
        let mut reasons = Vec::new();
        for option in record.launch.iter().filter(|l| l.is_runnable()) {
            match self.target_of(option) {
                Ok(target) => return Ok(target),
                Err(reason) => reasons.push(reason),
            }
        }
        Err(RuntimeError::NotLaunchable {
            server: record.id.clone(),
            reason: if reasons.is_empty() {
                "its catalog record has no launch spec".to_owned()
            } else {
                reasons.join("; ")
            },
        })
    }

    fn target_of(&self, option: &LaunchOption) -> Result<Target, String> {
        if option.kind == LaunchKind::Remote {
            let url = option.url.clone().unwrap_or_default();
            if !self.allow_remote {
                return Err("remote servers are not allowed (add `remote` to DYNAMCP_RUNTIMES)".to_owned());
            }
            if option.transport == Transport::Sse {
                return Err(format!("{url} speaks the legacy SSE transport, which dynamcp does not run"));
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(format!("{url:?} is not an http(s) URL"));
            }
            return Ok(Target::Remote { url });
        }
        if option.transport != Transport::Stdio {
            return Err(format!("a {:?} package must speak stdio", option.kind));
        }
        let command = option.command.as_deref().unwrap_or_default();
        match self.programs.get(command) {
            Some(Some(program)) => Ok(Target::Stdio { program: program.clone(), args: option.args.clone() }),
            Some(None) => Err(format!("its runtime `{command}` is not installed on this machine")),
            None => Err(format!("`{command}` is not an allowed runtime (DYNAMCP_RUNTIMES)")),
        }
    }

    /// Whether a stdio server's package was started here before (its download is then cached).
    pub fn is_warm(&self, target: &Target) -> bool {
        self.marker(target).is_some_and(|m| m.exists())
    }

    /// Remembers that `target` started, so the next start gets the short timeout.
    pub fn mark_warm(&self, target: &Target) {
        if let Some(marker) = self.marker(target) {
            let _ = std::fs::create_dir_all(self.cache.join("started"));
            if let Err(e) = std::fs::write(&marker, target.describe()) {
                tracing::debug!(error = %e, "could not record a warm start");
            }
        }
    }

    fn marker(&self, target: &Target) -> Option<PathBuf> {
        match target {
            Target::Stdio { .. } => {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(target.describe().as_bytes());
                Some(self.cache.join("started").join(&hex(&digest)[..32]))
            }
            Target::Remote { .. } => None,
        }
    }

    /// The folder a server of an agent lives in: its HOME, temp dir and credential files.
    pub fn work_dir(&self, agent: uuid::Uuid, server: &str) -> PathBuf {
        self.root.join("agents").join(agent.to_string()).join(slug(server))
    }

    /// The whole environment of a stdio child, and the credential files written for it. Only
    /// `record`'s declared credential names are set, from `values` (already decrypted). `offline`:
    /// the package is cached, so npm and uv use the cache without asking the registry (a warm
    /// `uvx` start takes about half the time).
    pub fn environment(
        &self,
        record: &ServerRecord,
        work: &Path,
        values: &BTreeMap<String, SecretBytes>,
        offline: bool,
    ) -> Result<ChildEnv, RuntimeError> {
        let home = work.join("home");
        let tmp = work.join("tmp");
        let secrets = work.join("secrets");
        let cache = &self.cache;
        for dir in [&home, &tmp, cache] {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::io("prepare the server's folders", e))?;
        }
        let mut vars: Vec<(String, OsString)> = self.pass_env.clone();
        let fixed: [(&str, OsString); 14] = [
            ("PATH", self.path.clone()),
            ("HOME", home.clone().into()),
            ("TMPDIR", tmp.into()),
            ("LANG", "C.UTF-8".into()),
            ("XDG_CACHE_HOME", cache.clone().into()),
            ("XDG_CONFIG_HOME", home.join(".config").into()),
            ("XDG_DATA_HOME", home.join(".local/share").into()),
            ("npm_config_cache", cache.join("npm").into()),
            ("npm_config_update_notifier", "false".into()),
            ("npm_config_fund", "false".into()),
            ("npm_config_audit", "false".into()),
            ("UV_CACHE_DIR", cache.join("uv").into()),
            ("UV_TOOL_DIR", cache.join("uv-tools").into()),
            ("UV_PYTHON_INSTALL_DIR", cache.join("uv-python").into()),
        ];
        vars.retain(|(k, _)| !fixed.iter().any(|(f, _)| f == k));
        vars.extend(fixed.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if offline {
            vars.push(("npm_config_prefer_offline".to_owned(), "true".into()));
            vars.push(("UV_OFFLINE".to_owned(), "1".into()));
        }
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for spec in &record.credentials {
            let Some(value) = values.get(&spec.name) else { continue };
            if !env_name_allowed(&spec.name) {
                skipped.push(spec.name.clone());
                continue;
            }
            let text = match spec.kind {
                CredentialKind::File => {
                    std::fs::create_dir_all(&secrets)
                        .map_err(|e| RuntimeError::io("prepare the secrets folder", e))?;
                    let path = secrets.join(slug(&spec.name));
                    write_private(&path, value.expose())
                        .map_err(|e| RuntimeError::io("write a credential file", e))?;
                    files.push(path.clone());
                    path.into_os_string()
                }
                CredentialKind::Env | CredentialKind::Header => {
                    OsString::from(String::from_utf8_lossy(value.expose()).into_owned())
                }
            };
            vars.retain(|(k, _)| k != &spec.name);
            vars.push((spec.name.clone(), text));
        }
        if !skipped.is_empty() {
            tracing::warn!(server = %record.id, keys = ?skipped, "credential names that would change how programs load were not set");
        }
        Ok(ChildEnv { vars, files })
    }

    /// The headers of a remote server: its declared credentials, by name.
    pub fn headers(
        &self,
        record: &ServerRecord,
        values: &BTreeMap<String, SecretBytes>,
    ) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, RuntimeError> {
        let mut headers = Vec::new();
        for spec in &record.credentials {
            let Some(value) = values.get(&spec.name) else { continue };
            if spec.kind == CredentialKind::File {
                continue;
            }
            let name = http::HeaderName::from_bytes(spec.name.as_bytes()).map_err(|_| {
                RuntimeError::NotLaunchable {
                    server: record.id.clone(),
                    reason: format!("{:?} is not a valid header name", spec.name),
                }
            })?;
            let mut value = http::HeaderValue::from_bytes(value.expose()).map_err(|_| {
                RuntimeError::BadCredential { server: record.id.clone(), key: spec.name.clone() }
            })?;
            value.set_sensitive(true);
            headers.push((name, value));
        }
        Ok(headers)
    }
}

/// A child's environment: every variable it gets, and the credential files to delete when it stops.
pub struct ChildEnv {
    pub vars: Vec<(String, OsString)>,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ChildEnv").field("names", &names).field("files", &self.files.len()).finish()
    }
}

fn find_program(name: &str, search_path: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(search_path).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Writes `bytes` to a new file only its owner can read.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::CredentialSpec;

    fn record(launch: Vec<LaunchOption>, credentials: Vec<CredentialSpec>) -> ServerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "demo", "name": "Demo", "description": "", "tools": [], "launch": launch,
            "credentials": credentials,
        }))
        .unwrap()
    }

    fn npx(args: &[&str]) -> LaunchOption {
        serde_json::from_value(serde_json::json!({
            "kind": "npm", "transport": "stdio", "command": "npx", "args": args,
        }))
        .unwrap()
    }

    fn launcher(dir: &Path, runtimes: &[&str]) -> Launcher {
        // A fake PATH holding an executable `npx` and a non-executable `uvx`.
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(bin.join("npx"), "#!/bin/sh\n").unwrap();
        std::fs::write(bin.join("uvx"), "").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(bin.join("npx"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtimes: Vec<String> = runtimes.iter().map(|s| s.to_string()).collect();
        let lookup = |name: &str| (name == "SSL_CERT_FILE").then(|| OsString::from("/etc/ssl/x.pem"));
        Launcher::new(
            &runtimes,
            Some(bin.into_os_string()),
            &["SSL_CERT_FILE".to_owned(), "UNSET_ONE".to_owned()],
            lookup,
            dir.join("runtime"),
            dir.join("cache"),
        )
    }

    #[test]
    fn only_allowed_installed_runtimes_launch() {
        let dir = tempfile::tempdir().unwrap();
        let l = launcher(dir.path(), &["npx", "uvx", "remote"]);
        let target = l.target(&record(vec![npx(&["-y", "pkg"])], vec![])).unwrap();
        assert_eq!(
            target,
            Target::Stdio { program: dir.path().join("bin/npx"), args: vec!["-y".into(), "pkg".into()] }
        );

        let bash: LaunchOption = serde_json::from_value(serde_json::json!({
            "kind": "command", "transport": "stdio", "command": "bash", "args": ["-c", "echo hi"],
        }))
        .unwrap();
        let err = l.target(&record(vec![bash], vec![])).unwrap_err().to_string();
        assert!(err.contains("`bash` is not an allowed runtime"), "{err}");

        let uvx: LaunchOption = serde_json::from_value(serde_json::json!({
            "kind": "pypi", "transport": "stdio", "command": "uvx", "args": ["x"],
        }))
        .unwrap();
        let err = l.target(&record(vec![uvx], vec![])).unwrap_err().to_string();
        assert!(err.contains("`uvx` is not installed"), "{err}");

        let path_cmd: LaunchOption = serde_json::from_value(serde_json::json!({
            "kind": "command", "transport": "stdio", "command": "/bin/npx", "args": [],
        }))
        .unwrap();
        assert!(l.target(&record(vec![path_cmd], vec![])).is_err());

        let sse: LaunchOption = serde_json::from_value(serde_json::json!({
            "kind": "remote", "transport": "sse", "url": "https://example.test/sse",
        }))
        .unwrap();
        let http: LaunchOption = serde_json::from_value(serde_json::json!({
            "kind": "remote", "transport": "streamable-http", "url": "https://example.test/mcp",
        }))
        .unwrap();
        let target = l.target(&record(vec![sse, http.clone()], vec![])).unwrap();
        assert_eq!(target, Target::Remote { url: "https://example.test/mcp".into() });
        let closed = launcher(dir.path(), &["npx"]);
        assert!(
            closed
                .target(&record(vec![http], vec![]))
                .unwrap_err()
                .to_string()
                .contains("remote servers are not allowed")
        );
    }

    #[test]
    fn environment_is_built_from_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let l = launcher(dir.path(), &["npx"]);
        let creds: Vec<CredentialSpec> = serde_json::from_value(serde_json::json!([
            {"name": "API_TOKEN", "required": true, "secret": true},
            {"name": "SA_JSON", "kind": "file"},
            {"name": "LD_PRELOAD"},
            {"name": "UNSENT"},
        ]))
        .unwrap();
        let rec = record(vec![npx(&["pkg"])], creds);
        let mut values = BTreeMap::new();
        values.insert("API_TOKEN".to_owned(), SecretBytes::new(b"tok-123".to_vec()));
        values.insert("SA_JSON".to_owned(), SecretBytes::new(b"{\"k\":1}".to_vec()));
        values.insert("LD_PRELOAD".to_owned(), SecretBytes::new(b"/tmp/evil.so".to_vec()));
        values.insert("NOT_DECLARED".to_owned(), SecretBytes::new(b"x".to_vec()));
        let work = l.work_dir(uuid::Uuid::nil(), "demo");
        let env = l.environment(&rec, &work, &values, false).unwrap();
        let get =
            |k: &str| env.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned());
        assert_eq!(get("API_TOKEN").as_deref(), Some("tok-123"));
        assert_eq!(get("SSL_CERT_FILE").as_deref(), Some("/etc/ssl/x.pem"));
        assert_eq!(get("UNSET_ONE"), None);
        assert_eq!(get("LD_PRELOAD"), None, "a loader variable is never set from a credential");
        assert_eq!(get("NOT_DECLARED"), None, "only declared names");
        assert_eq!(get("HOME").unwrap(), work.join("home").to_string_lossy());
        let path = get("PATH").unwrap();
        assert!(path.starts_with(&dir.path().join("bin").to_string_lossy().into_owned()), "{path}");
        let file = PathBuf::from(get("SA_JSON").unwrap());
        assert_eq!(std::fs::read(&file).unwrap(), b"{\"k\":1}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(env.files, vec![file]);
        assert!(!format!("{env:?}").contains("tok-123"));
        assert_eq!(get("UV_OFFLINE"), None);
        let warm = l.environment(&rec, &work, &values, true).unwrap();
        assert!(warm.vars.iter().any(|(k, v)| k == "UV_OFFLINE" && v == "1"));
    }

    #[test]
    fn env_names() {
        for ok in ["GITHUB_TOKEN", "api_key", "_X", "A1"] {
            assert!(env_name_allowed(ok), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "A-B",
            "A B",
            "PATH",
            "LD_PRELOAD",
            "ld_library_path",
            "NODE_OPTIONS",
            "npm_config_registry",
            "UV_INDEX_URL",
        ] {
            assert!(!env_name_allowed(bad), "{bad}");
        }
    }
}
