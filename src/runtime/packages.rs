//! The package store: every npm or PyPI server is installed once per package and version, in a
//! controlled step, and run from there read-only.
//!
//! A catalog launch spec `npx -y NAME[@VERSION] ARGS…` or `uvx [--from NAME] NAME[==VERSION]
//! ARGS…` is parsed into a [`PackageRef`] whose name and version are checked against their
//! registry's grammar (so nothing that looks like an option, a path or a URL gets through).
//! [`PackageStore::install`] installs it, inside the sandbox, with `--` before the name: npm into
//! `store/npm/<name>/<version>/`, uv into a relocatable venv `store/pypi/<name>/<version>/venv`,
//! each with a throw-away download cache, so nothing a server writes can reach another's files. A
//! run starts the installed entry point directly: no `npx`/`uvx` resolution, no registry query,
//! and never a version other than the one asked for.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::sandbox::{Jail, Sandbox};

/// Which registry a package comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ecosystem {
    Npm,
    Pypi,
}

impl Ecosystem {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Npm => "npm",
            Self::Pypi => "pypi",
        }
    }
}

/// A package a launch spec names, checked against its registry's grammar.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PackageRef {
    pub ecosystem: Ecosystem,
    pub name: String,
    /// An exact version the spec pins, if any.
    pub version: Option<String>,
    /// The program to run when it is not the package's default one (`uvx --from NAME cmd`,
    /// `npx -p NAME cmd`).
    pub bin: Option<String>,
}

impl PackageRef {
    /// `npm NAME@VERSION` or `pypi NAME==VERSION`, for logs and events.
    pub fn describe(&self, version: Option<&str>) -> String {
        let version = version.or(self.version.as_deref());
        match (self.ecosystem, version) {
            (Ecosystem::Npm, Some(v)) => format!("npm {}@{v}", self.name),
            (Ecosystem::Pypi, Some(v)) => format!("pypi {}=={v}", self.name),
            (e, None) => format!("{} {}", e.as_str(), self.name),
        }
    }
}

/// npx's options that take no value; uvx's that take one (the Python version, which is the
/// store's choice: the system's interpreter).
const NPX_FLAGS: &[&str] = &["-y", "--yes", "-q", "--quiet", "--no-install", "--no"];
const UVX_FLAGS: &[&str] = &["-q", "--quiet"];
const UVX_VALUE_OPTIONS: &[&str] = &["--python", "-p"];

/// What one runner's options look like.
struct Runner {
    ecosystem: Ecosystem,
    /// Options that take no value.
    flags: &'static [&'static str],
    /// Options whose value is skipped.
    skipped: &'static [&'static str],
    /// The options naming the package when the first word is the program (`--from`, `-p`).
    from: &'static [&'static str],
    split: SplitSpec,
}

/// `NAME[sep VERSION]` → the name and the exact version, if one is pinned.
type SplitSpec = fn(&str) -> Result<(&str, Option<&str>), String>;

/// `npx [-y] [-p NAME CMD | NAME] ARGS…` → the package and the server's own arguments.
pub fn parse_npx(args: &[String]) -> Result<(PackageRef, Vec<String>), String> {
    let npx = Runner {
        ecosystem: Ecosystem::Npm,
        flags: NPX_FLAGS,
        skipped: &[],
        from: &["-p", "--package"],
        split: split_npm_spec,
    };
    parse_runner(&npx, args)
}

/// `uvx [--python V] [--from NAME] CMD ARGS…` → the package and the server's own arguments.
pub fn parse_uvx(args: &[String]) -> Result<(PackageRef, Vec<String>), String> {
    let uvx = Runner {
        ecosystem: Ecosystem::Pypi,
        flags: UVX_FLAGS,
        skipped: UVX_VALUE_OPTIONS,
        from: &["--from"],
        split: split_pypi_spec,
    };
    parse_runner(&uvx, args)
}

/// Reads a runner's known options (any other option is refused as a package name), then the
/// package (or the program, after a `from` option), then the server's own arguments.
fn parse_runner(runner: &Runner, args: &[String]) -> Result<(PackageRef, Vec<String>), String> {
    let mut rest = args.iter().map(String::as_str).peekable();
    let mut from: Option<&str> = None;
    while let Some(&arg) = rest.peek() {
        let (option, inline) = arg.split_once('=').map_or((arg, None), |(o, v)| (o, Some(v)));
        if runner.flags.contains(&arg) {
            rest.next();
        } else if runner.from.contains(&option) || runner.skipped.contains(&option) {
            rest.next();
            let value = match inline {
                Some(value) => value,
                None => rest.next().ok_or_else(|| format!("`{option}` needs a value"))?,
            };
            if runner.from.contains(&option) {
                from = Some(value);
            }
        } else if arg == "--" {
            rest.next();
            break;
        } else {
            break;
        }
    }
    let first = rest.next().ok_or("the launch spec names no package")?;
    let (spec, bin) = match from {
        Some(spec) => (spec, Some(first)),
        None => (first, None),
    };
    let (name, version) = (runner.split)(spec)?;
    if let Some(bin) = bin {
        check_program_name(bin)?;
    }
    let package = PackageRef {
        ecosystem: runner.ecosystem,
        name: name.to_owned(),
        version: version.map(str::to_owned),
        bin: bin.map(str::to_owned),
    };
    Ok((package, rest.map(str::to_owned).collect()))
}

/// `@scope/name@1.2.3` → (`@scope/name`, `1.2.3`); a dist-tag such as `latest` is no pin.
fn split_npm_spec(spec: &str) -> Result<(&str, Option<&str>), String> {
    let at = if let Some(scoped) = spec.strip_prefix('@') {
        scoped.find('@').map(|i| i + 1)
    } else {
        spec.find('@')
    };
    let (name, version) = match at {
        Some(i) => (&spec[..i], Some(&spec[i + 1..])),
        None => (spec, None),
    };
    if !valid_npm_name(name) {
        return Err(format!("{spec:?} is not a valid npm package name"));
    }
    match version {
        Some("latest") | None => Ok((name, None)),
        Some(v) if valid_version(v) => Ok((name, Some(v))),
        Some(v) => Err(format!("{v:?} is not an exact version of {name}")),
    }
}

/// `name==1.2` (or `name@1.2`, as uvx also accepts) → (`name`, `1.2`). Extras and ranges are refused.
fn split_pypi_spec(spec: &str) -> Result<(&str, Option<&str>), String> {
    let (name, version) = match spec.split_once("==").or_else(|| spec.split_once('@')) {
        Some((n, v)) => (n, Some(v)),
        None => (spec, None),
    };
    if !valid_pypi_name(name) {
        return Err(format!("{spec:?} is not a valid PyPI package name"));
    }
    match version {
        Some("latest") | None => Ok((name, None)),
        Some(v) if valid_version(v) => Ok((name, Some(v))),
        Some(v) => Err(format!("{v:?} is not an exact version of {name}")),
    }
}

/// npm's grammar for package names: lowercase URL-safe characters, an optional `@scope/`, at
/// most 214 characters, never starting with `.`, `_` or `-`.
pub fn valid_npm_name(name: &str) -> bool {
    let part = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '_', '-'])
            && p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._~".contains(&b))
    };
    let ok = match name.strip_prefix('@') {
        Some(scoped) => scoped.split_once('/').is_some_and(|(scope, pkg)| part(scope) && part(pkg)),
        None => part(name),
    };
    ok && name.len() <= 214
}

/// PEP 508's grammar for distribution names: letters, digits, `.`, `_` and `-`, starting and
/// ending with a letter or digit.
pub fn valid_pypi_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && name.len() <= 200
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
}

/// An exact version: starts with a digit, then letters, digits and `.+-_!`. Never a range, a
/// tag, a path or a URL.
pub fn valid_version(version: &str) -> bool {
    version.len() <= 64
        && version.as_bytes().first().is_some_and(u8::is_ascii_digit)
        && version.bytes().all(|b| b.is_ascii_alphanumeric() || b"._+-!".contains(&b))
}

/// A program name inside a package: no path, no option.
fn check_program_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(['-', '.'])
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
    if ok { Ok(()) } else { Err(format!("{name:?} is not a program name")) }
}

/// An installed package: where it is, which version, and its entry point (relative to `dir`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    #[serde(skip)]
    pub dir: PathBuf,
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    pub entry: PathBuf,
}

const MANIFEST: &str = "dynamcp-package.json";

/// Why an install failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    Unavailable(String),
    #[error("installing {package} failed: {reason}")]
    Failed { package: String, reason: String },
    #[error("installing {package} took longer than {secs} s")]
    Timeout { package: String, secs: u64 },
    #[error("could not {what}: {source}")]
    Io { what: &'static str, source: std::io::Error },
}

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> InstallError {
    move |source| InstallError::Io { what, source }
}

/// The tools an install needs, resolved at start.
#[derive(Debug, Clone, Default)]
pub struct Installers {
    pub npm: Option<PathBuf>,
    pub uv: Option<PathBuf>,
}

/// Held while one package is being installed, so two starts never install it twice at once.
type InstallLock = Arc<tokio::sync::Mutex<()>>;

/// Installed packages under one root, one folder per package and version.
pub struct PackageStore {
    root: PathBuf,
    installers: Installers,
    /// Environment every install gets (PATH, TLS trust and proxy settings).
    base_env: Vec<(String, OsString)>,
    /// Host paths an install must see read-only (runtimes outside `/usr`, a CA file).
    extra_ro: Vec<PathBuf>,
    locks: std::sync::Mutex<HashMap<(Ecosystem, String), InstallLock>>,
}

impl PackageStore {
    pub fn new(
        root: PathBuf,
        installers: Installers,
        base_env: Vec<(String, OsString)>,
        extra_ro: Vec<PathBuf>,
    ) -> Self {
        Self { root, installers, base_env, extra_ro, locks: std::sync::Mutex::new(HashMap::new()) }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn package_dir(&self, package: &PackageRef) -> PathBuf {
        // npm names may hold one `/` (the scope); `@` and `/` become `+` so each package is one folder.
        let folder: String =
            package.name.chars().map(|c| if c == '/' || c == '@' { '+' } else { c }).collect();
        let folder = match package.ecosystem {
            Ecosystem::Npm => folder,
            // PyPI names compare case- and separator-insensitively (PEP 503).
            Ecosystem::Pypi => folder.to_ascii_lowercase().replace(['_', '.'], "-"),
        };
        self.root.join(package.ecosystem.as_str()).join(folder)
    }

    /// The installed `version` of `package`, or with no version, the one installed last.
    pub fn installed(&self, package: &PackageRef, version: Option<&str>) -> Option<Installed> {
        let base = self.package_dir(package);
        let dir = match version {
            Some(v) => base.join(v),
            None => std::fs::read_dir(&base)
                .ok()?
                .flatten()
                .filter(|e| e.path().join(MANIFEST).is_file())
                .max_by_key(|e| e.path().join(MANIFEST).metadata().and_then(|m| m.modified()).ok())?
                .path(),
        };
        let text = std::fs::read_to_string(dir.join(MANIFEST)).ok()?;
        let mut installed: Installed = serde_json::from_str(&text).ok()?;
        if installed.name != package.name || installed.ecosystem != package.ecosystem {
            return None;
        }
        installed.dir = dir;
        Some(installed)
    }

    /// `package` at `version` (the newest when `None`), installed inside `sandbox` if it is not
    /// already; concurrent calls for one package wait for each other.
    pub async fn install(
        &self,
        package: &PackageRef,
        version: Option<&str>,
        sandbox: Option<&Sandbox>,
        timeout: Duration,
    ) -> Result<Installed, InstallError> {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .map_err(|_| InstallError::Unavailable("the package store is poisoned".into()))?;
            locks.entry((package.ecosystem, package.name.clone())).or_default().clone()
        };
        let _held = lock.lock().await;
        if let Some(found) = self.installed(package, version) {
            return Ok(found);
        }
        let staging = self.root.join(".staging").join(uuid::Uuid::new_v4().to_string());
        std::fs::create_dir_all(&staging).map_err(io("create a staging folder"))?;
        let outcome =
            tokio::time::timeout(timeout, self.install_into(package, version, &staging, sandbox)).await;
        let result = match outcome {
            Ok(Ok(installed)) => self.settle(package, installed, &staging),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                Err(InstallError::Timeout { package: package.describe(version), secs: timeout.as_secs() })
            }
        };
        let _ = std::fs::remove_dir_all(&staging);
        result
    }

    /// Publishes a finished install: its manifest is written inside `staging` first, then the
    /// folder is renamed into place in one step, so a version's folder is either whole or absent.
    /// When another process published the same version first, theirs is used.
    fn settle(
        &self,
        package: &PackageRef,
        mut installed: Installed,
        staging: &Path,
    ) -> Result<Installed, InstallError> {
        if let Some(found) = self.installed(package, Some(&installed.version)) {
            return Ok(found);
        }
        let built = staging.join("pkg");
        let manifest = serde_json::to_vec_pretty(&installed)
            .map_err(|e| io("write a manifest")(std::io::Error::other(e)))?;
        std::fs::write(built.join(MANIFEST), manifest).map_err(io("write a manifest"))?;
        std::fs::create_dir_all(self.package_dir(package)).map_err(io("create the package folder"))?;
        let dest = self.package_dir(package).join(&installed.version);
        if let Err(e) = std::fs::rename(&built, &dest) {
            return self
                .installed(package, Some(&installed.version))
                .ok_or_else(|| io("move an install into the store")(e));
        }
        installed.dir = dest;
        Ok(installed)
    }

    async fn install_into(
        &self,
        package: &PackageRef,
        version: Option<&str>,
        staging: &Path,
        sandbox: Option<&Sandbox>,
    ) -> Result<Installed, InstallError> {
        let target = staging.join("pkg");
        let scratch = staging.join("scratch");
        for dir in [&target, &scratch] {
            std::fs::create_dir_all(dir).map_err(io("create a staging folder"))?;
        }
        let mut env = self.base_env.clone();
        env.push(("HOME".into(), scratch.clone().into()));
        env.push(("TMPDIR".into(), scratch.clone().into()));
        let spec = match (package.ecosystem, version) {
            (Ecosystem::Npm, Some(v)) => format!("{}@{v}", package.name),
            (Ecosystem::Pypi, Some(v)) => format!("{}=={v}", package.name),
            (_, None) => package.name.clone(),
        };
        let fail = |reason: String| InstallError::Failed { package: package.describe(version), reason };
        let steps: Vec<(PathBuf, Vec<String>)> = match package.ecosystem {
            Ecosystem::Npm => {
                let npm = self.installers.npm.clone().ok_or_else(|| {
                    InstallError::Unavailable("npm is not installed on this machine".into())
                })?;
                env.push(("npm_config_cache".into(), scratch.join("npm-cache").into()));
                env.push(("npm_config_update_notifier".into(), "false".into()));
                let args = [
                    "install",
                    "--prefix",
                    &target.to_string_lossy(),
                    "--no-save",
                    "--no-package-lock",
                    "--no-audit",
                    "--no-fund",
                    "--omit=dev",
                    "--loglevel=error",
                    "--",
                    &spec,
                ];
                vec![(npm, args.map(str::to_owned).to_vec())]
            }
            Ecosystem::Pypi => {
                let uv =
                    self.installers.uv.clone().ok_or_else(|| {
                        InstallError::Unavailable("uv is not installed on this machine".into())
                    })?;
                env.push(("UV_CACHE_DIR".into(), scratch.join("uv-cache").into()));
                env.push(("UV_PYTHON_DOWNLOADS".into(), "never".into()));
                env.push(("UV_LINK_MODE".into(), "copy".into()));
                env.push(("UV_NO_CONFIG".into(), "1".into()));
                let venv = target.join("venv").to_string_lossy().into_owned();
                let python = target.join("venv/bin/python").to_string_lossy().into_owned();
                vec![
                    (
                        uv.clone(),
                        ["venv", "--quiet", "--relocatable", "--python-preference", "only-system", &venv]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                    (
                        uv,
                        ["pip", "install", "--quiet", "--compile-bytecode", "--python", &python, "--", &spec]
                            .map(str::to_owned)
                            .to_vec(),
                    ),
                ]
            }
        };
        for (program, args) in steps {
            let mut command = match sandbox {
                Some(sandbox) => {
                    // The installers and their runtimes are under `/usr` or among `extra_ro`.
                    let read_only: Vec<(PathBuf, PathBuf)> =
                        self.extra_ro.iter().map(|p| (p.clone(), p.clone())).collect();
                    let jail = Jail {
                        uid: 10_000,
                        home: PathBuf::new(),
                        read_only,
                        writable: vec![(staging.to_path_buf(), staging.to_path_buf())],
                        identity: None,
                    };
                    sandbox.command(&jail, &program, &args)
                }
                None => {
                    let mut c = tokio::process::Command::new(&program);
                    c.args(&args).current_dir(staging);
                    c
                }
            };
            command
                .env_clear()
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdin(std::process::Stdio::null())
                .kill_on_drop(true);
            let out = command
                .output()
                .await
                .map_err(|e| fail(format!("could not run {}: {e}", program.display())))?;
            if !out.status.success() {
                let said = String::from_utf8_lossy(&out.stderr);
                let said: Vec<&str> = said.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
                let tail = said[said.len().saturating_sub(6)..].join(" | ");
                return Err(fail(if tail.is_empty() {
                    format!("it exited with {}", out.status)
                } else {
                    tail
                }));
            }
        }
        let (version, entry) = match package.ecosystem {
            Ecosystem::Npm => npm_entry(&target, package)?,
            Ecosystem::Pypi => pypi_entry(&target, package)?,
        };
        Ok(Installed {
            dir: PathBuf::new(),
            ecosystem: package.ecosystem,
            name: package.name.clone(),
            version,
            entry,
        })
    }
}

/// The installed version of an npm package and its `node_modules/.bin` entry, chosen as npx
/// chooses: the only bin, or the one named like the package, or the one the spec names.
fn npm_entry(target: &Path, package: &PackageRef) -> Result<(String, PathBuf), InstallError> {
    let fail = |reason: String| InstallError::Failed { package: package.describe(None), reason };
    let manifest = target.join("node_modules").join(&package.name).join("package.json");
    let text = std::fs::read_to_string(&manifest)
        .map_err(|_| fail("npm installed nothing under its name".into()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| fail(format!("its package.json is not JSON: {e}")))?;
    let version = json["version"]
        .as_str()
        .filter(|v| valid_version(v))
        .ok_or_else(|| fail("its package.json has no valid version".into()))?;
    let unscoped = package.name.rsplit('/').next().unwrap_or(&package.name);
    let bins: Vec<String> = match &json["bin"] {
        serde_json::Value::String(_) => vec![unscoped.to_owned()],
        serde_json::Value::Object(map) => map.keys().cloned().collect(),
        _ => Vec::new(),
    };
    let chosen = match &package.bin {
        Some(bin) => bins.iter().find(|b| *b == bin),
        None if bins.len() == 1 => bins.first(),
        None => bins.iter().find(|b| b.as_str() == unscoped),
    }
    .ok_or_else(|| {
        fail(if bins.is_empty() {
            "the package has no program to run (no `bin`)".into()
        } else {
            format!("no program to run among its bins: {}", bins.join(", "))
        })
    })?;
    check_program_name(chosen).map_err(fail)?;
    let entry = PathBuf::from("node_modules/.bin").join(chosen);
    if !target.join(&entry).exists() {
        return Err(fail(format!("npm did not create its program {chosen}")));
    }
    Ok((version.to_owned(), entry))
}

/// The installed version of a PyPI package (from its `.dist-info`) and its console script.
fn pypi_entry(target: &Path, package: &PackageRef) -> Result<(String, PathBuf), InstallError> {
    let fail = |reason: String| InstallError::Failed { package: package.describe(None), reason };
    let normal = |s: &str| s.to_ascii_lowercase().replace(['-', '.'], "_");
    let wanted = normal(&package.name);
    let lib = target.join("venv/lib");
    let mut version = None;
    for python in std::fs::read_dir(&lib).map_err(|_| fail("uv created no venv".into()))?.flatten() {
        for entry in std::fs::read_dir(python.path().join("site-packages")).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".dist-info")
                && let Some((dist, v)) = stem.rsplit_once('-')
                && normal(dist) == wanted
            {
                version = Some(v.to_owned());
            }
        }
    }
    let version = version
        .filter(|v| valid_version(v))
        .ok_or_else(|| fail("uv installed nothing under its name".into()))?;
    let bin_dir = target.join("venv/bin");
    let candidates: Vec<String> = match &package.bin {
        Some(bin) => vec![bin.clone()],
        None => vec![
            package.name.clone(),
            package.name.replace('_', "-"),
            package.name.replace('-', "_"),
            package.name.to_ascii_lowercase(),
        ],
    };
    let chosen = candidates.into_iter().find(|c| bin_dir.join(c).is_file()).ok_or_else(|| {
        let scripts: Vec<String> = std::fs::read_dir(&bin_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                !n.starts_with("python")
                    && !n.starts_with("activate")
                    && !n.starts_with("pydoc")
                    && n != "deactivate"
            })
            .collect();
        fail(format!(
            "it has no program named like the package (its programs: {})",
            if scripts.is_empty() { "none".into() } else { scripts.join(", ") }
        ))
    })?;
    check_program_name(&chosen).map_err(fail)?;
    Ok((version, PathBuf::from("venv/bin").join(chosen)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn npx_specs_parse_into_checked_packages() {
        let (p, rest) = parse_npx(&strings(&["-y", "@modelcontextprotocol/server-everything"])).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_deref(), rest.len()),
            ("@modelcontextprotocol/server-everything", None, 0)
        );
        let (p, rest) = parse_npx(&strings(&["-y", "pkg@1.2.3", "--stdio", "x"])).unwrap();
        assert_eq!((p.name.as_str(), p.version.as_deref()), ("pkg", Some("1.2.3")));
        assert_eq!(rest, ["--stdio", "x"]);
        let (p, _) = parse_npx(&strings(&["-y", "@scope/pkg@latest"])).unwrap();
        assert_eq!((p.name.as_str(), p.version), ("@scope/pkg", None));
        let (p, rest) = parse_npx(&strings(&["-p", "@scope/tools", "the-cli", "a"])).unwrap();
        assert_eq!(
            (p.name.as_str(), p.bin.as_deref(), rest),
            ("@scope/tools", Some("the-cli"), strings(&["a"]))
        );
        for bad in [
            vec!["-y", "--call=sh -c id"],
            vec!["--call=id"],
            vec!["-y", "../../etc"],
            vec!["-y", "/usr/bin/env"],
            vec!["-y", "https://evil.example/x.tgz"],
            vec!["-y", "git+ssh://x"],
            vec!["-y", "pkg@^1.0"],
            vec!["-y", "pkg@file:../x"],
            vec!["-y", "Pkg"],
            vec!["-y"],
            vec!["-p", "pkg", "--evil"],
        ] {
            assert!(parse_npx(&strings(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn uvx_specs_parse_into_checked_packages() {
        let (p, rest) = parse_uvx(&strings(&["mcp-server-time", "--local-timezone", "UTC"])).unwrap();
        assert_eq!(
            (p.ecosystem, p.name.as_str(), p.version.as_deref()),
            (Ecosystem::Pypi, "mcp-server-time", None)
        );
        assert_eq!(rest, ["--local-timezone", "UTC"]);
        let (p, _) =
            parse_uvx(&strings(&["--from", "awslabs.core-mcp-server==1.0.2", "awslabs.core-mcp-server"]))
                .unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_deref(), p.bin.as_deref()),
            ("awslabs.core-mcp-server", Some("1.0.2"), Some("awslabs.core-mcp-server"))
        );
        let (p, _) = parse_uvx(&strings(&["--python", "3.12", "pkg@2.0"])).unwrap();
        assert_eq!((p.name.as_str(), p.version.as_deref()), ("pkg", Some("2.0")));
        for bad in [
            vec!["--with", "evil", "pkg"],
            vec!["-"],
            vec!["pkg[extra]"],
            vec!["pkg>=1"],
            vec!["./local"],
            vec!["--from", "git+https://x", "y"],
            vec!["--directory /path/to/x", "pkg"],
        ] {
            assert!(parse_uvx(&strings(&bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_and_versions_follow_the_registries() {
        for ok in ["a", "mcp-server-commands", "@scope/pkg.js", "x_y~z"] {
            assert!(valid_npm_name(ok), "{ok}");
        }
        for bad in ["", "-x", ".x", "_x", "A", "@scope", "@/x", "a/b", "a b", "@s/p/q", &"x".repeat(215)] {
            assert!(!valid_npm_name(bad), "{bad}");
        }
        for ok in ["mcp-server-time", "awslabs.core-mcp-server", "A1", "x"] {
            assert!(valid_pypi_name(ok), "{ok}");
        }
        for bad in ["", "-x", "x-", "a/b", "a b", "a[b]"] {
            assert!(!valid_pypi_name(bad), "{bad}");
        }
        for ok in ["1", "1.2.3", "2026.10.19", "1.0.0-beta.1", "1.0.0+build", "1!2.0"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["", "latest", "^1", "~1", ">=1", "1 || 2", "file:x", "-1", "1/2"] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn an_installed_manifest_is_found_by_version_or_as_the_latest() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            PackageStore::new(dir.path().to_path_buf(), Installers::default(), Vec::new(), Vec::new());
        let package = PackageRef { ecosystem: Ecosystem::Npm, name: "@s/p".into(), version: None, bin: None };
        assert!(store.installed(&package, None).is_none());
        let folder = dir.path().join("npm/+s+p/1.0.0");
        std::fs::create_dir_all(&folder).unwrap();
        let manifest = Installed {
            dir: PathBuf::new(),
            ecosystem: Ecosystem::Npm,
            name: "@s/p".into(),
            version: "1.0.0".into(),
            entry: "node_modules/.bin/p".into(),
        };
        std::fs::write(folder.join(MANIFEST), serde_json::to_vec(&manifest).unwrap()).unwrap();
        let found = store.installed(&package, None).unwrap();
        assert_eq!((found.version.as_str(), found.dir.as_path()), ("1.0.0", folder.as_path()));
        assert!(store.installed(&package, Some("2.0.0")).is_none());
        let other = PackageRef { name: "p".into(), ..package };
        assert!(store.installed(&other, None).is_none());
    }
}
