//! The sandbox every MCP server (and every package install) runs in: bubblewrap (`bwrap`).
//!
//! A sandboxed process gets its own user, PID, IPC and UTS namespaces, a new session, and a
//! filesystem built from nothing: the system's `/usr` and a short list of `/etc` files read-only,
//! a private `/proc`, `/dev` and `/tmp`, its own writable home, and read-only binds of exactly the
//! paths the caller names (its installed package, its credential files, a runtime that lives
//! outside `/usr`). It never sees the data dir, the vault key, the database, other servers'
//! homes or processes, or the host's `/tmp`. The network stays on: servers call their APIs.
//!
//! What it does not stop: network access (a server can reach anything dynamcp's host can,
//! loopback included), CPU and memory use, and kernel bugs reachable from an unprivileged user.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The files of `/etc` a sandboxed program may read: name resolution, TLS trust, time zones,
/// the dynamic loader's cache and Debian's alternatives. Never the whole of `/etc`.
const ETC: &[&str] = &[
    "resolv.conf",
    "hosts",
    "host.conf",
    "nsswitch.conf",
    "gai.conf",
    "services",
    "protocols",
    // Certificates only: `ssl/private` and `pki/tls/private` hold the host's TLS keys, and a
    // sandboxed process owns, inside its namespace, every file dynamcp's user owns.
    "ssl/certs",
    "ssl/openssl.cnf",
    "ca-certificates",
    "ca-certificates.conf",
    "pki/tls/certs",
    "pki/ca-trust",
    "alternatives",
    "localtime",
    "timezone",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "mime.types",
    "os-release",
];

/// Top-level names that are symlinks into `/usr` on merged-`/usr` systems (or directories
/// on older ones, which are then bound read-only).
const SYSTEM_LINKS: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];

/// Where a sandboxed server's own writable home appears.
pub const HOME: &str = "/home/agent";
/// Where its credential files appear (read-only).
pub const SECRETS: &str = "/run/secrets";
/// Where its installed package appears (read-only).
pub const PACKAGE: &str = "/opt/package";

/// A working bubblewrap, checked once at start.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// The binds every sandbox gets (`/usr`, the top-level links, the `/etc` files), found
    /// once: they do not change while the service runs.
    system: Vec<OsString>,
}

/// Whether servers can be sandboxed here, and if not, why.
#[derive(Debug, Clone)]
pub enum SandboxStatus {
    Ready(Sandbox),
    Unavailable(String),
}

impl SandboxStatus {
    pub fn sandbox(&self) -> Option<&Sandbox> {
        match self {
            Self::Ready(s) => Some(s),
            Self::Unavailable(_) => None,
        }
    }

    /// One line for the start-up log and `doctor`-style reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Ready(s) => format!("bubblewrap sandbox ready ({})", s.bwrap.display()),
            Self::Unavailable(why) => format!("no sandbox: {why}"),
        }
    }
}

/// What one sandboxed process sees besides the system: its uid, its writable home, and the
/// read-only and writable binds it needs, each `(host path, path inside)`.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    pub uid: u32,
    /// Bound writable at [`HOME`]; also the working directory.
    pub home: PathBuf,
    pub read_only: Vec<(PathBuf, PathBuf)>,
    pub writable: Vec<(PathBuf, PathBuf)>,
    /// An `/etc/passwd` and `/etc/group` naming `uid`, so programs that look the user up work.
    pub identity: Option<(PathBuf, PathBuf)>,
}

impl Sandbox {
    /// Finds `program` (bubblewrap: `bwrap` on `search_path`, or an absolute path) and checks
    /// that it can create the namespaces it needs by running `true` inside them.
    pub fn detect(program: &str, search_path: Option<&OsString>) -> SandboxStatus {
        let found = if Path::new(program).is_absolute() {
            Some(PathBuf::from(program)).filter(|p| p.is_file())
        } else {
            search_path.and_then(|p| super::launch::find_program(program, p))
        };
        let Some(bwrap) = found else {
            return SandboxStatus::Unavailable(format!(
                "bubblewrap (`{program}`) is not installed; install the `bubblewrap` package"
            ));
        };
        let sandbox = Self::new(bwrap);
        let Some(truth) = ["/usr/bin/true", "/bin/true"].into_iter().map(Path::new).find(|p| p.exists())
        else {
            return SandboxStatus::Unavailable("no `true` program to test the sandbox with".to_owned());
        };
        let mut probe = std::process::Command::new(&sandbox.bwrap);
        probe.args(sandbox.arguments(&Jail { uid: 10_000, ..Jail::default() }, truth, &[]));
        probe.env_clear().stdin(std::process::Stdio::null()).stdout(std::process::Stdio::null());
        match probe.output() {
            Ok(out) if out.status.success() => SandboxStatus::Ready(sandbox),
            Ok(out) => SandboxStatus::Unavailable(format!(
                "bubblewrap cannot create its namespaces here ({}); user namespaces may be disabled \
                 (sysctl kernel.unprivileged_userns_clone, or a container's seccomp profile)",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => SandboxStatus::Unavailable(format!("could not run bubblewrap: {e}")),
        }
    }

    /// `program args` inside `jail`. The caller sets the environment on the returned command
    /// (with `env_clear` first): bubblewrap hands its own environment to the program, so no
    /// value ever appears on a command line.
    pub fn command(&self, jail: &Jail, program: &Path, args: &[String]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(&self.bwrap);
        command.args(self.arguments(jail, program, args));
        command
    }

    fn new(bwrap: PathBuf) -> Self {
        let mut system: Vec<OsString> = ["--ro-bind", "/usr", "/usr"].map(OsString::from).to_vec();
        for name in SYSTEM_LINKS {
            let host = Path::new("/").join(name);
            match std::fs::read_link(&host) {
                Ok(target) => system.extend(["--symlink".into(), target.into(), host.into()]),
                Err(_) if host.is_dir() => {
                    system.extend(["--ro-bind".into(), host.clone().into(), host.into()])
                }
                Err(_) => {}
            }
        }
        for name in ETC {
            let host = Path::new("/etc").join(name);
            if host.exists() {
                system.extend(["--ro-bind".into(), host.clone().into(), host.into()]);
            }
        }
        Self { bwrap, system }
    }

    fn arguments(&self, jail: &Jail, program: &Path, args: &[String]) -> Vec<OsString> {
        let uid = jail.uid.to_string();
        let namespaces = [
            "--unshare-user",
            "--uid",
            &uid,
            "--gid",
            &uid,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--die-with-parent",
            "--new-session",
            "--cap-drop",
            "ALL",
            "--hostname",
            "sandbox",
        ];
        let mut a: Vec<OsString> = namespaces.iter().map(OsString::from).collect();
        a.extend(self.system.iter().cloned());
        let mut push = |items: &[&dyn AsRef<std::ffi::OsStr>]| {
            a.extend(items.iter().map(|i| i.as_ref().to_os_string()));
        };
        if let Some((passwd, group)) = &jail.identity {
            push(&[&"--ro-bind", passwd, &"/etc/passwd", &"--ro-bind", group, &"/etc/group"]);
        }
        push(&[&"--proc", &"/proc", &"--dev", &"/dev", &"--tmpfs", &"/tmp"]);
        if !jail.home.as_os_str().is_empty() {
            push(&[&"--bind", &jail.home, &HOME, &"--chdir", &HOME]);
        } else {
            push(&[&"--chdir", &"/"]);
        }
        for (host, inside) in &jail.read_only {
            push(&[&"--ro-bind", host, inside]);
        }
        for (host, inside) in &jail.writable {
            push(&[&"--bind", host, inside]);
        }
        push(&[&"--", &program]);
        a.extend(args.iter().map(OsString::from));
        a
    }
}

/// The uid a tenant's servers run as inside their namespace: stable, from the tenant's name.
pub fn tenant_uid(tenant: &str) -> u32 {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(tenant.as_bytes());
    10_000 + u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]) % 50_000
}

/// Writes the `/etc/passwd` and `/etc/group` a sandbox shows for `uid` into `dir`.
pub fn write_identity(dir: &Path, uid: u32) -> std::io::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir)?;
    let passwd = dir.join("passwd");
    let group = dir.join("group");
    std::fs::write(&passwd, format!("agent:x:{uid}:{uid}:agent:{HOME}:/usr/sbin/nologin\n"))?;
    std::fs::write(&group, format!("agent:x:{uid}:\n"))?;
    Ok((passwd, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenants_get_stable_distinct_uids_in_range() {
        let a = tenant_uid("alice");
        assert_eq!(a, tenant_uid("alice"));
        assert_ne!(a, tenant_uid("bob"));
        for t in ["", "alice", "bob", "x".repeat(300).as_str()] {
            assert!((10_000..60_000).contains(&tenant_uid(t)));
        }
    }

    #[test]
    fn arguments_bind_only_what_the_jail_names() {
        let sandbox = Sandbox::new(PathBuf::from("/usr/bin/bwrap"));
        let jail = Jail {
            uid: 12_345,
            home: PathBuf::from("/data/runtime/agents/a/s/home"),
            read_only: vec![(PathBuf::from("/data/packages/x/1.0.0"), PathBuf::from(PACKAGE))],
            writable: Vec::new(),
            identity: None,
        };
        let args: Vec<String> = sandbox
            .arguments(&jail, Path::new("/opt/package/bin/x"), &["--flag".to_owned()])
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let joined = args.join(" ");
        assert!(joined.contains("--unshare-user --uid 12345 --gid 12345 --unshare-pid"), "{joined}");
        assert!(joined.contains("--die-with-parent --new-session"), "{joined}");
        assert!(joined.contains("--bind /data/runtime/agents/a/s/home /home/agent --chdir /home/agent"));
        assert!(joined.contains("--ro-bind /data/packages/x/1.0.0 /opt/package"));
        assert!(joined.ends_with("-- /opt/package/bin/x --flag"), "{joined}");
        assert!(!args.iter().any(|a| a == "/etc" || a == "/" || a == "/data"), "{joined}");
        assert!(!joined.contains("--share-net") && !joined.contains("--unshare-net"));
    }
}
