//! From a catalog record to something that can be started: which package or program (checked
//! against its registry's grammar or an allowlist, resolved once), which arguments, which
//! environment (built from nothing: a minimal PATH, the server's own home, a short list of
//! pass-through settings, and the server's own decrypted credentials under the names its record
//! declares). Nothing a request sends can become a program, an argument or an env name here.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::catalog::record::{Transport, slug};
use crate::catalog::requirements::{self, Fill, Provide};
use crate::catalog::{CredentialKind, CredentialSpec, LaunchKind, LaunchOption, ServerRecord};
use crate::vault::SecretBytes;

use super::RuntimeError;
use super::packages::{self, Installers, PackageRef};
use super::sandbox;

/// The directories every child's PATH ends with, after the runtimes' own.
const BASE_PATH: &[&str] = &["/usr/local/bin", "/usr/bin", "/bin"];

/// Env names a credential may never set, whatever a record declares: they change how a runtime
/// loads code, where it sends traffic or whom it trusts, so a value there would run whatever
/// the sender wants or read what the server sends.
const FORBIDDEN_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "TMPDIR",
    "TMP",
    "TEMP",
    "SHELL",
    "ENV",
    "BASH_ENV",
    "IFS",
    "PS4",
    "BROWSER",
    "EDITOR",
    "VISUAL",
    "PAGER",
    "PERL5OPT",
    "PERL5LIB",
    "RUBYOPT",
    "RUBYLIB",
    "JAVA_TOOL_OPTIONS",
    "_JAVA_OPTIONS",
    "JDK_JAVA_OPTIONS",
    "CLASSPATH",
    "DOCKER_HOST",
    "DOCKER_CONFIG",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "OPENSSL_CONF",
    "OPENSSL_ENGINES",
    "GCONV_PATH",
    "LOCPATH",
    "HOSTALIASES",
    "RES_OPTIONS",
    "LOCALDOMAIN",
    "MALLOC_CHECK_",
];
/// Whole families of such names.
const FORBIDDEN_ENV_PREFIXES: &[&str] = &[
    "LD_",
    "DYLD_",
    "NODE_",
    "NPM_CONFIG_",
    "UV_",
    "PIP_",
    "PYTHON",
    "XDG_",
    "DYNAMCP_",
    "GIT_",
    "BUN_",
    "DENO_",
    "GLIBC_",
    "JAVA_",
    "GEM_",
    "BUNDLE_",
    "CARGO_",
    "RUSTUP_",
    "GOFLAGS",
];
/// Proxies in every spelling (`HTTPS_PROXY`, `all_proxy`…) route the server's traffic.
const FORBIDDEN_ENV_SUFFIXES: &[&str] = &["_PROXY"];
/// Harmless names inside a forbidden family.
const ALLOWED_IN_FAMILY: &[&str] = &["NODE_ENV"];

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
        && (ALLOWED_IN_FAMILY.contains(&upper.as_str())
            || (!FORBIDDEN_ENV.contains(&upper.as_str())
                && !FORBIDDEN_ENV_PREFIXES.iter().any(|p| upper.starts_with(p))
                && !FORBIDDEN_ENV_SUFFIXES.iter().any(|s| upper.ends_with(s))))
}

/// The programs launch specs may name, resolved to absolute paths once, at start-up.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// Allowed program name → its absolute path (`None`: allowed but not installed here).
    programs: BTreeMap<String, Option<PathBuf>>,
    allow_remote: bool,
    /// `node`, which runs npm packages' entry points.
    node: Option<PathBuf>,
    installers: Installers,
    path: OsString,
    pass_env: Vec<(String, OsString)>,
    root: PathBuf,
    /// [`Self::runtime_roots`] for running servers, found once: every start binds them.
    run_roots: Vec<PathBuf>,
}

/// What starting one server means.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// An npm or PyPI package, installed in the package store and run from its entry point.
    Package { package: PackageRef, args: Vec<String> },
    /// Another allowed program (docker, or an operator's own command) speaking MCP on stdio.
    Command { program: PathBuf, args: Vec<String>, kind: LaunchKind },
    /// A remote server speaking streamable HTTP.
    Remote { url: String },
}

impl Target {
    /// The package, the program's short name or the URL, for logs and events.
    pub fn describe(&self) -> String {
        match self {
            Target::Package { package, args } => {
                let mut text = package.describe(None);
                for arg in args {
                    text.push(' ');
                    text.push_str(arg);
                }
                text
            }
            Target::Command { program, args, .. } => {
                let name = program.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                format!("{name} {}", args.join(" "))
            }
            Target::Remote { url } => url.clone(),
        }
    }
}

impl Launcher {
    /// `runtimes`: allowed program names (`npx` allows npm packages, `uvx` PyPI packages),
    /// plus `remote` for remote URLs. `search_path`: where to look them up (dynamcp's own PATH;
    /// pyenv-style shims are skipped for the real programs behind them). `pass_env`: names
    /// copied from dynamcp's environment to every child (TLS trust, proxies); `root`: the data
    /// dir's `runtime/` folder.
    pub fn new(
        runtimes: &[String],
        search_path: Option<OsString>,
        pass_env: &[String],
        env_lookup: impl Fn(&str) -> Option<OsString>,
        root: PathBuf,
    ) -> Self {
        let mut programs = BTreeMap::new();
        let mut allow_remote = false;
        let mut dirs: Vec<PathBuf> = Vec::new();
        let find = |name: &str| search_path.as_ref().and_then(|p| find_program(name, p));
        let mut installers = Installers::default();
        let mut node = None;
        for name in runtimes.iter().map(|r| r.trim()).filter(|r| !r.is_empty()) {
            if name == "remote" {
                allow_remote = true;
                continue;
            }
            if name.contains('/') {
                tracing::warn!(runtime = name, "runtimes are program names, not paths: ignored");
                continue;
            }
            let found = match name {
                // npx itself never runs: npm installs, node runs the entry point.
                "npx" => {
                    installers.npm = find("npm");
                    node = find("node");
                    installers.npm.as_ref().and(node.clone())
                }
                "uvx" => {
                    installers.uv = find("uv");
                    installers.uv.clone()
                }
                _ => find(name),
            };
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
        let mut launcher =
            Self { programs, allow_remote, node, installers, path, pass_env, root, run_roots: Vec::new() };
        launcher.run_roots = launcher.runtime_roots(false);
        launcher
    }

    /// The launch kinds this machine can run: allowed and installed.
    pub fn kinds(&self) -> Vec<LaunchKind> {
        let installed = |name: &str| self.programs.get(name).is_some_and(Option::is_some);
        let mut kinds = Vec::new();
        if installed("npx") {
            kinds.push(LaunchKind::Npm);
        }
        if installed("uvx") {
            kinds.push(LaunchKind::Pypi);
        }
        if installed("docker") {
            kinds.push(LaunchKind::Docker);
        }
        if self.allow_remote {
            kinds.push(LaunchKind::Remote);
        }
        kinds
    }

    pub fn installers(&self) -> &Installers {
        &self.installers
    }

    /// The pass-through settings and a PATH: what a package install gets.
    pub fn install_env(&self) -> Vec<(String, OsString)> {
        let mut env = self.pass_env.clone();
        env.retain(|(k, _)| k != "PATH");
        env.push(("PATH".to_owned(), self.path.clone()));
        env.push(("LANG".to_owned(), "C.UTF-8".into()));
        env
    }

    /// [`Self::runtime_roots`] for running servers, as found at start.
    pub fn run_roots(&self) -> &[PathBuf] {
        &self.run_roots
    }

    /// Host paths outside `/usr` that sandboxed servers need to read: `node`'s prefix when it
    /// is installed elsewhere, and the CA files the pass-through settings name. `installing`
    /// adds npm's and uv's prefixes.
    pub fn runtime_roots(&self, installing: bool) -> Vec<PathBuf> {
        let mut roots = Vec::new();
        let installers = [&self.installers.npm, &self.installers.uv];
        let programs = self.node.iter().chain(installers.into_iter().filter(|_| installing).flatten());
        for program in programs {
            if let Some(prefix) = prefix_outside_usr(program) {
                push_new(&mut roots, prefix);
            }
        }
        for (_, value) in &self.pass_env {
            let path = PathBuf::from(value);
            if path.is_absolute() && !path.starts_with("/etc") && !path.starts_with("/usr") && bindable(&path)
            {
                push_new(&mut roots, path);
            }
        }
        roots
    }

    /// The first launch option of `record` this machine may and can run.
    pub fn target(&self, record: &ServerRecord) -> Result<Target, RuntimeError> {
        let mut reasons = Vec::new();
        let mut options: Vec<&LaunchOption> = record.launch.iter().filter(|l| l.is_runnable()).collect();
        // The most certain first (a published package before a guessed name), catalog order among equals.
        options.sort_by_key(|l| std::cmp::Reverse(l.launchability()));
        for option in options {
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
        let program = match self.programs.get(command) {
            Some(Some(program)) => program.clone(),
            Some(None) => return Err(format!("its runtime `{command}` is not installed on this machine")),
            None => return Err(format!("`{command}` is not an allowed runtime (DYNAMCP_RUNTIMES)")),
        };
        match command {
            "npx" => {
                packages::parse_npx(&option.args).map(|(package, args)| Target::Package { package, args })
            }
            "uvx" => {
                packages::parse_uvx(&option.args).map(|(package, args)| Target::Package { package, args })
            }
            "docker" => {
                check_docker_args(&option.args)?;
                Ok(Target::Command { program, args: option.args.clone(), kind: option.kind })
            }
            _ => Ok(Target::Command { program, args: option.args.clone(), kind: option.kind }),
        }
    }

    /// `node`, to start npm entry points outside the sandbox's PATH lookup (`None`: not here).
    pub fn node(&self) -> Option<&Path> {
        self.node.as_deref()
    }

    /// The folder a server of an agent lives in: its HOME and its credential files.
    pub fn work_dir(&self, agent: uuid::Uuid, server: &str) -> PathBuf {
        self.root.join("agents").join(agent.to_string()).join(slug(server))
    }

    /// The whole environment of a stdio child, and the credential files written for it. Only
    /// `record`'s declared credential names are set, from `values` (already decrypted).
    /// `sandboxed`: paths are those the child sees inside the sandbox (its home at
    /// [`sandbox::HOME`], its files under [`sandbox::SECRETS`]).
    pub fn environment(
        &self,
        record: &ServerRecord,
        work: &Path,
        values: &BTreeMap<String, SecretBytes>,
        sandboxed: bool,
    ) -> Result<ChildEnv, RuntimeError> {
        let host_home = work.join("home");
        let host_secrets = work.join("secrets");
        std::fs::create_dir_all(&host_home)
            .map_err(|e| RuntimeError::io("prepare the server's folders", e))?;
        let (home, tmp, secrets, path) = if sandboxed {
            let mut dirs: Vec<PathBuf> =
                self.node.iter().filter_map(|n| n.parent().map(Path::to_path_buf)).collect();
            dirs.extend(BASE_PATH.iter().map(PathBuf::from));
            dirs.dedup();
            let path = std::env::join_paths(&dirs).unwrap_or_else(|_| OsString::from(BASE_PATH.join(":")));
            (PathBuf::from(sandbox::HOME), PathBuf::from("/tmp"), PathBuf::from(sandbox::SECRETS), path)
        } else {
            let tmp = work.join("tmp");
            std::fs::create_dir_all(&tmp).map_err(|e| RuntimeError::io("prepare the server's folders", e))?;
            (host_home.clone(), tmp, host_secrets.clone(), self.path.clone())
        };
        let mut vars: Vec<(String, OsString)> = self.pass_env.clone();
        let fixed: [(&str, OsString); 10] = [
            ("PATH", path),
            ("HOME", home.clone().into()),
            ("TMPDIR", tmp.into()),
            ("LANG", "C.UTF-8".into()),
            ("XDG_CACHE_HOME", home.join(".cache").into()),
            ("XDG_CONFIG_HOME", home.join(".config").into()),
            ("XDG_DATA_HOME", home.join(".local/share").into()),
            ("npm_config_cache", home.join(".npm").into()),
            ("npm_config_update_notifier", "false".into()),
            ("PYTHONDONTWRITEBYTECODE", "1".into()),
        ];
        vars.retain(|(k, _)| !fixed.iter().any(|(f, _)| f == k));
        vars.extend(fixed.into_iter().map(|(k, v)| (k.to_owned(), v)));
        let mut files = Vec::new();
        let mut skipped = Vec::new();
        for spec in &record.credentials {
            let Some(value) = values.get(&spec.name) else {
                if env_name_allowed(&spec.name)
                    && let Some(filled) = filled_setting(spec, &host_home, &home)?
                {
                    vars.retain(|(k, _)| k != &spec.name);
                    vars.push((spec.name.clone(), filled));
                }
                continue;
            };
            if !env_name_allowed(&spec.name) {
                skipped.push(spec.name.clone());
                continue;
            }
            let text = match spec.kind {
                CredentialKind::File => {
                    std::fs::create_dir_all(&host_secrets)
                        .map_err(|e| RuntimeError::io("prepare the secrets folder", e))?;
                    let name = slug(&spec.name);
                    let path = host_secrets.join(&name);
                    write_private(&path, value.expose())
                        .map_err(|e| RuntimeError::io("write a credential file", e))?;
                    files.push(path);
                    secrets.join(name).into_os_string()
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
        let secrets_dir = (!files.is_empty()).then_some(host_secrets);
        Ok(ChildEnv { vars, files, secrets_dir })
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

/// The value a setting nobody was asked for gets (the same the planner showed the user): its
/// documented default, or a folder or file of the server's own in its home. `None`: unset, the
/// server's own default applies (or, for an optional value, nothing was sent).
fn filled_setting(
    spec: &CredentialSpec,
    host_home: &Path,
    home: &Path,
) -> Result<Option<OsString>, RuntimeError> {
    let Provide::Filled(fill) = requirements::classify(spec).provide else { return Ok(None) };
    let name = slug(&spec.name);
    Ok(match fill {
        Fill::Value(value) => Some(value.into()),
        Fill::Folder => {
            std::fs::create_dir_all(host_home.join(&name))
                .map_err(|e| RuntimeError::io("prepare the server's folders", e))?;
            Some(home.join(&name).into_os_string())
        }
        Fill::FilePath => Some(home.join(&name).into_os_string()),
        Fill::ServerDefault => None,
    })
}

/// A child's environment: every variable it gets, the credential files to delete when it
/// stops, and the folder holding them (bound read-only into its sandbox).
pub struct ChildEnv {
    pub vars: Vec<(String, OsString)>,
    pub files: Vec<PathBuf>,
    pub secrets_dir: Option<PathBuf>,
}

impl std::fmt::Debug for ChildEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.vars.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ChildEnv").field("names", &names).field("files", &self.files.len()).finish()
    }
}

/// `docker run` with only the options a stdio MCP server needs: interactive, removed on exit,
/// environment variables by name, an init process. Anything that reaches the host (volumes,
/// devices, privileges, the host's network or PID space) is refused, and so is an image name
/// that is not one.
fn check_docker_args(args: &[String]) -> Result<(), String> {
    let mut rest = args.iter().map(String::as_str);
    if rest.next() != Some("run") {
        return Err("a docker launch must be `docker run …`".to_owned());
    }
    let mut image = None;
    while let Some(arg) = rest.next() {
        match arg {
            "-i" | "--interactive" | "--rm" | "--init" | "-t" => {}
            "-e" | "--env" => {
                let name = rest.next().ok_or("`-e` needs a variable name")?;
                if !env_name_allowed(name) {
                    return Err(format!("docker `-e {name}` is not allowed (only plain names, no values)"));
                }
            }
            other if other.starts_with('-') => return Err(format!("docker option {other:?} is not allowed")),
            other => {
                image = Some(other);
                break;
            }
        }
    }
    let image = image.ok_or("the docker launch names no image")?;
    let valid = image.len() <= 255
        && image.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && image.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/:@".contains(&b));
    if valid { Ok(()) } else { Err(format!("{image:?} is not a docker image name")) }
}

/// The first executable `name` on `search_path`, skipping version-manager shims (scripts that
/// would need the manager itself): the real program further down the PATH is used instead.
pub(crate) fn find_program(name: &str, search_path: &OsString) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(search_path)
        .filter(|dir| !dir.components().any(|c| c.as_os_str() == "shims"))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// `<prefix>` of a program at `<prefix>/bin/<name>` (after following links), when that is not
/// under `/usr`, which every sandbox sees anyway, and may be shown to a sandbox at all
/// ([`bindable`]).
pub(crate) fn prefix_outside_usr(program: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    let prefix = real.parent()?.parent()?;
    (!real.starts_with("/usr") && bindable(prefix)).then(|| prefix.to_path_buf())
}

/// Whether a host path may be bound read-only into a sandbox. Inside its namespace a sandboxed
/// process owns every file dynamcp's user owns, so only what any local user could read anyway
/// is shown (world-readable, and for a folder world-searchable), and never `/` nor a home folder
/// as a whole (`/root`, `/home/<user>`). (Callers also keep dynamcp's data dir out.)
pub(crate) fn bindable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else { return false };
    let mode = meta.permissions().mode();
    let readable = mode & 0o004 != 0 && (!meta.is_dir() || mode & 0o001 != 0);
    let depth = path.components().count();
    let home = path == Path::new("/root") || (path.starts_with("/home") && depth <= 3);
    readable && path.is_absolute() && depth > 1 && !home
}

fn push_new(list: &mut Vec<PathBuf>, path: PathBuf) {
    if !list.contains(&path) {
        list.push(path);
    }
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
    use crate::runtime::packages::Ecosystem;

    fn record(launch: Vec<LaunchOption>, credentials: Vec<CredentialSpec>) -> ServerRecord {
        serde_json::from_value(serde_json::json!({
            "id": "demo", "name": "Demo", "description": "", "tools": [], "launch": launch,
            "credentials": credentials,
        }))
        .unwrap()
    }

    fn option(command: &str, args: &[&str]) -> LaunchOption {
        serde_json::from_value(serde_json::json!({
            "kind": if command == "npx" { "npm" } else if command == "uvx" { "pypi" } else { "command" },
            "transport": "stdio", "command": command, "args": args,
        }))
        .unwrap()
    }

    fn launcher(dir: &Path, runtimes: &[&str]) -> Launcher {
        // A fake PATH: executable `npm`, `node` and `docker`, a non-executable `uv`, and a
        // pyenv-style shim that must be skipped.
        let bin = dir.join("bin");
        let shims = dir.join("shims");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&shims).unwrap();
        use std::os::unix::fs::PermissionsExt;
        for name in ["npm", "node", "docker"] {
            std::fs::write(bin.join(name), "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        std::fs::write(bin.join("uv"), "").unwrap();
        std::fs::write(shims.join("python3"), "#!/bin/sh\nexec pyenv exec python3\n").unwrap();
        std::fs::set_permissions(shims.join("python3"), std::fs::Permissions::from_mode(0o755)).unwrap();
        let runtimes: Vec<String> = runtimes.iter().map(|s| s.to_string()).collect();
        let lookup = |name: &str| (name == "SSL_CERT_FILE").then(|| OsString::from("/etc/ssl/x.pem"));
        let path = std::env::join_paths([shims, bin]).unwrap();
        Launcher::new(
            &runtimes,
            Some(path),
            &["SSL_CERT_FILE".to_owned(), "UNSET_ONE".to_owned()],
            lookup,
            dir.join("runtime"),
        )
    }

    #[test]
    fn only_allowed_installed_runtimes_launch() {
        let dir = tempfile::tempdir().unwrap();
        let l = launcher(dir.path(), &["npx", "uvx", "remote", "docker", "python3"]);
        let target = l.target(&record(vec![option("npx", &["-y", "pkg@1.0.0", "--stdio"])], vec![])).unwrap();
        let Target::Package { package, args } = target else { panic!("{target:?}") };
        assert_eq!(
            (package.ecosystem, package.name.as_str(), package.version.as_deref()),
            (Ecosystem::Npm, "pkg", Some("1.0.0"))
        );
        assert_eq!(args, ["--stdio"]);

        let err =
            l.target(&record(vec![option("bash", &["-c", "echo hi"])], vec![])).unwrap_err().to_string();
        assert!(err.contains("`bash` is not an allowed runtime"), "{err}");
        let err = l.target(&record(vec![option("uvx", &["x"])], vec![])).unwrap_err().to_string();
        assert!(err.contains("`uvx` is not installed"), "{err}");
        let err = l.target(&record(vec![option("python3", &["x.py"])], vec![])).unwrap_err().to_string();
        assert!(err.contains("`python3` is not installed"), "a shim is not the program: {err}");
        assert!(l.target(&record(vec![option("/bin/npx", &[])], vec![])).is_err());
        // A package spec that is an option, a path or a URL never reaches npm.
        for args in [&["-y", "--call=id"][..], &["-y", "../x"], &["-y", "https://e.test/x.tgz"], &["--yes"]] {
            let err = l.target(&record(vec![option("npx", args)], vec![])).unwrap_err().to_string();
            assert!(err.contains("server \"demo\" cannot be launched"), "{args:?}: {err}");
        }
        for (args, ok) in [
            (&["run", "-i", "--rm", "-e", "API_KEY", "mcp/thing"][..], true),
            (&["run", "-i", "--rm", "-v", "/:/host", "mcp/thing"], false),
            (&["run", "--privileged", "mcp/thing"], false),
            (&["run", "--network=host", "mcp/thing"], false),
            (&["run", "-e", "LD_PRELOAD", "mcp/thing"], false),
            (&["run", "-e", "A=b", "mcp/thing"], false),
            (&["exec", "x"], false),
            (&["run", "-i", "Bad Image"], false),
        ] {
            let outcome = l.target(&record(vec![option("docker", args)], vec![]));
            assert_eq!(outcome.is_ok(), ok, "{args:?}: {outcome:?}");
        }

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
            {"name": "HTTPS_PROXY"},
            {"name": "UNSENT"},
            {"name": "CACHE_MAX_AGE", "description": "1", "required": true},
            {"name": "LOG_PATH", "description": "[set an accessible absolute path]", "required": true},
            {"name": "LOG_LEVEL", "description": "Logging level", "required": true},
        ]))
        .unwrap();
        let rec = record(vec![option("npx", &["pkg"])], creds);
        let mut values = BTreeMap::new();
        values.insert("API_TOKEN".to_owned(), SecretBytes::new(b"tok-123".to_vec()));
        values.insert("SA_JSON".to_owned(), SecretBytes::new(b"{\"k\":1}".to_vec()));
        values.insert("LD_PRELOAD".to_owned(), SecretBytes::new(b"/tmp/evil.so".to_vec()));
        values.insert("HTTPS_PROXY".to_owned(), SecretBytes::new(b"http://evil.test".to_vec()));
        values.insert("NOT_DECLARED".to_owned(), SecretBytes::new(b"x".to_vec()));
        let work = l.work_dir(uuid::Uuid::nil(), "demo");
        for sandboxed in [false, true] {
            let env = l.environment(&rec, &work, &values, sandboxed).unwrap();
            let get = |k: &str| {
                env.vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.to_string_lossy().into_owned())
            };
            assert_eq!(get("API_TOKEN").as_deref(), Some("tok-123"));
            assert_eq!(get("SSL_CERT_FILE").as_deref(), Some("/etc/ssl/x.pem"));
            assert_eq!(get("UNSET_ONE"), None);
            assert_eq!(get("LD_PRELOAD"), None, "a loader variable is never set from a credential");
            assert_eq!(get("HTTPS_PROXY"), None, "nor a proxy");
            assert_eq!(get("NOT_DECLARED"), None, "only declared names");
            // Settings nobody was asked for get what the planner showed: a documented default,
            // a folder of the server's own, or nothing (the server's own default).
            assert_eq!(get("CACHE_MAX_AGE").as_deref(), Some("1"));
            assert_eq!(get("LOG_LEVEL"), None);
            let logs = PathBuf::from(get("LOG_PATH").unwrap());
            assert_eq!(logs, PathBuf::from(get("HOME").unwrap()).join("log_path"));
            assert!(work.join("home/log_path").is_dir(), "the folder exists before the server starts");
            let (home, file) = (get("HOME").unwrap(), PathBuf::from(get("SA_JSON").unwrap()));
            if sandboxed {
                assert_eq!(home, "/home/agent");
                assert_eq!(file, Path::new("/run/secrets/sa_json"));
                assert_eq!(get("TMPDIR").as_deref(), Some("/tmp"));
                assert_eq!(env.secrets_dir.as_deref(), Some(work.join("secrets").as_path()));
            } else {
                assert_eq!(home, work.join("home").to_string_lossy());
                let path = get("PATH").unwrap();
                assert!(path.starts_with(&dir.path().join("bin").to_string_lossy().into_owned()), "{path}");
                assert_eq!(file, work.join("secrets/sa_json"));
            }
            let written = work.join("secrets/sa_json");
            assert_eq!(std::fs::read(&written).unwrap(), b"{\"k\":1}");
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&written).unwrap().permissions().mode() & 0o777, 0o600);
            assert_eq!(env.files, vec![written]);
            assert!(!format!("{env:?}").contains("tok-123"));
        }
    }

    #[test]
    fn only_what_any_user_could_read_is_bound() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("script.py");
        let secret = dir.path().join("key.pem");
        std::fs::write(&open, "print(1)").unwrap();
        std::fs::write(&secret, "-----BEGIN").unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(bindable(&open));
        assert!(!bindable(&secret));
        for never in ["/", "/root", "/home/someone", "/etc/shadow", "/no/such/file"] {
            assert!(!bindable(Path::new(never)), "{never}");
        }
        assert!(bindable(Path::new("/etc/hostname")) || !Path::new("/etc/hostname").exists());
    }

    #[test]
    fn env_names() {
        for ok in ["GITHUB_TOKEN", "api_key", "_X", "A1", "NODE_ENV", "PROXY_URL"] {
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
            "NODE_EXTRA_CA_CERTS",
            "NODE_TLS_REJECT_UNAUTHORIZED",
            "npm_config_registry",
            "UV_INDEX_URL",
            "GIT_CONFIG_COUNT",
            "GIT_CONFIG_KEY_0",
            "PYTHONWARNINGS",
            "HTTPS_PROXY",
            "all_proxy",
            "BROWSER",
            "SSL_CERT_FILE",
        ] {
            assert!(!env_name_allowed(bad), "{bad}");
        }
    }
}
