//! What each variable a server declares really is: a secret the user must create, a setting only
//! the user knows (an account id, their own site's address), a file to upload, or a setting with
//! a default that nobody needs to be asked for.
//!
//! The catalog's records rarely say. Its `required` and `secret` flags are mostly guessed from
//! names, and a description is often the example value of a README's config block
//! (`CACHE_MAX_AGE: "1"`, `LOG_PATH: "[set an accessible absolute path]"`). So the kind comes from
//! the data where it exists (an explicit default, "optional", a literal example value, the
//! `secret` flag, the value's kind) and otherwise from the name's shape. One function,
//! [`classify`], answers for the planner (what to ask), the runtime (what to fill in) and the
//! exported config (what to write), so what the user is told is what the server gets.

use super::record::{CredentialKind, CredentialSpec};

/// Who provides a variable's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provide {
    /// The user: asked for in `required_credentials` (or `required_files`).
    User,
    /// dynamcp fills it in; never asked.
    Filled(Fill),
    /// Nobody unless the user wants to: listed as optional, never asked.
    Optional,
}

/// The value dynamcp gives a variable nobody is asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// This literal value (the record's stated default or example value).
    Value(String),
    /// A folder of the server's own, inside its sandbox home (created before it starts).
    Folder,
    /// A file path inside the server's sandbox home (the server creates the file).
    FilePath,
    /// Left unset: the server's own default applies (ports, log levels, flags, limits).
    ServerDefault,
}

/// What the value is, which decides how to obtain it and what it looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// An API key, token, password or private key the service issues.
    Token,
    /// An OAuth client's id or secret (the app registration, not a user's token).
    OauthClient,
    /// A short-lived OAuth access token (typically one hour).
    AccessToken,
    /// A long-lived OAuth refresh token.
    RefreshToken,
    /// A value the user makes up (a shared secret between the server and its callers).
    MadeUp,
    /// A connection string with the password in it.
    ConnectionString,
    /// The address of the user's own instance, deployment or endpoint.
    Url,
    /// An identifier of something in the user's account (team, channel, chat, project).
    Identifier,
    /// The e-mail address or user name of an account.
    Account,
    /// A true/false switch.
    Flag,
    /// A number (a limit, a port, an interval).
    Number,
    /// A path on disk.
    Path,
    /// A file's content (a service-account JSON, a key file).
    File,
    /// Anything else.
    Text,
}

/// How one declared variable is treated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// A secret: stored encrypted, never shown (true for every value a user is asked for that
    /// authenticates; settings such as an account id are not secrets).
    pub secret: bool,
    pub shape: Shape,
    pub provide: Provide,
}

impl Requirement {
    /// Asked of the user before the agent can be created.
    pub fn asked(&self) -> bool {
        self.provide == Provide::User
    }

    /// The `kind` the reply gives it: `secret`, `setting` or `file`.
    pub fn kind_label(&self) -> &'static str {
        match (self.shape, self.secret) {
            (Shape::File, _) => "file",
            (_, true) => "secret",
            _ => "setting",
        }
    }
}

/// Variables well-known servers document as optional although the catalog's sources mark them
/// required (their README's example config lists every variable): `(name, why)`.
const KNOWN_OPTIONAL: &[(&str, &str)] = &[
    // The reference Slack server: "optional, limits the channels the bot can access".
    ("SLACK_CHANNEL_IDS", "limits the channels the server may use; all channels the bot is in when unset"),
];

/// Name segments that make a variable a secret.
const SECRET_WORDS: &[&str] = &[
    "KEY",
    "APIKEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "PASSPHRASE",
    "COOKIE",
    "PRIVATE",
    "MNEMONIC",
    "SEED",
    "CREDENTIAL",
    "CREDENTIALS",
    "BEARER",
    "JWT",
];

/// Name segments of a tuning knob: the server has its own default.
const TUNING_WORDS: &[&str] = &[
    "LIMIT",
    "LIMITS",
    "MAX",
    "MIN",
    "TIMEOUT",
    "INTERVAL",
    "DAYS",
    "HOURS",
    "SECONDS",
    "MS",
    "TTL",
    "AGE",
    "SIZE",
    "COUNT",
    "RETRIES",
    "RETRY",
    "CONCURRENCY",
    "WORKERS",
    "THREADS",
    "PORT",
    "LEVEL",
    "VERBOSE",
    "VERBOSITY",
    "DEBUG",
    "TRANSPORT",
    "MODE",
    "CACHE",
    "LOG",
    "LOGGING",
    "ENV",
    "ENABLED",
    "ENABLE",
    "DISABLE",
    "DISABLED",
    "READONLY",
    "NAMESPACE",
    "HEARTBEAT",
    "ORIGINS",
    "LISTEN",
    "BIND",
    "PAGE",
    "BATCH",
    "RATE",
    "LANG",
    "LANGUAGE",
    "LOCALE",
    "TZ",
    "TIMEZONE",
    "FORMAT",
    "THEME",
    "MODEL",
    "TEMPERATURE",
    "TELEMETRY",
];

/// Name segments of a true/false switch.
const FLAG_WORDS: &[&str] = &[
    "ENABLED", "ENABLE", "DISABLE", "DISABLED", "USE", "ALLOW", "READONLY", "DEBUG", "VERBOSE", "LOCAL",
    "DRY", "HEADLESS", "SKIP", "FORCE", "STRICT",
];

/// Names the runtime sets itself or that only configure the server's own HTTP side.
const PLUMBING: &[&str] = &[
    "PATH",
    "HOME",
    "NODE_ENV",
    "HOST",
    "PORT",
    "TRANSPORT",
    "MCP_TRANSPORT",
    "MCP_PORT",
    "MCP_HOST",
    "SERVER_NAME",
    "MCP_SERVER_NAME",
    "TIMEOUT",
    "TZ",
];

fn segments(name: &str) -> Vec<String> {
    name.to_ascii_uppercase().split(['_', '-', '.']).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// Whether an address is asked as a bare host name: a `…_HOST` or `…_DOMAIN` variable (a
/// database driver takes `db.example.com`, not `https://db.example.com`), unless the server's own
/// description shows it with a scheme.
pub fn host_only(spec: &CredentialSpec) -> bool {
    let segs = segments(&spec.name);
    matches!(segs.last().map(String::as_str), Some("HOST" | "HOSTNAME" | "DOMAIN"))
        && !spec.description.contains("://")
}

fn has_any(segs: &[String], words: &[&str]) -> bool {
    segs.iter().any(|s| words.contains(&s.as_str()))
}

/// What a description says the value defaults to: `default: X`, `(default X)`, `defaults to X`.
pub fn stated_default(description: &str) -> Option<String> {
    let lower = description.to_ascii_lowercase(); // byte offsets stay those of `description`
    for marker in
        ["defaults to ", "default: ", "default:", "default is ", "(default ", "default = ", "default="]
    {
        if let Some(at) = lower.find(marker) {
            let rest = description[at + marker.len()..].trim_start();
            let value: String = rest
                .trim_start_matches(['\'', '"', '`'])
                .chars()
                .take_while(|c| !matches!(c, '\'' | '"' | '`' | ')' | ',' | ';' | ' ') && *c != '\n')
                .collect();
            let value = value.trim_end_matches('.').trim();
            if !value.is_empty() && !is_placeholder_value(value) && value.len() <= 200 {
                return Some(value.to_owned());
            }
        }
    }
    None
}

/// A value copied from a README template rather than a real one: "your-token", "<KEY>", "xxx".
pub fn is_placeholder_value(value: &str) -> bool {
    let v = value.trim().to_lowercase();
    v.is_empty()
        || v.contains("your")
        || v.contains("xxx")
        || v.contains("***")
        || v.contains('<')
        || v.contains('[')
        || v.contains('{')
        || v.contains("example")
        || v.contains("here")
        || v.contains("path/to")
        || v.contains("/path/")
        || v.contains("my-")
        || v.contains("my_")
        || v.contains("mycompany")
        || v.contains("changeme")
        || v.contains("replace")
        || v.contains("...")
        || v.contains('…')
        || v.contains('\\')
        || v.contains("你的")
        || v.starts_with("value")
        || ["string", "text", "port", "host", "not", "tbd", "todo"].contains(&v.as_str())
}

/// A description that is itself a value (`"1"`, `"info"`, `"http://localhost:6333"`), and that
/// value when it is not a placeholder.
fn literal_value(description: &str, name: &str) -> Option<String> {
    let d = description.trim().trim_matches(['"', '\'', '`']);
    if d.is_empty() || d.contains(char::is_whitespace) || d.len() > 120 || is_placeholder_value(d) {
        return None;
    }
    // A description that repeats the name ("MCP_SERVER_NAME") or is a bare upper-case token
    // ("REPLY_TO_EMAILS_COMMA_SEPARATED") says nothing.
    if d.eq_ignore_ascii_case(name) || (d.len() > 12 && d.contains('_') && d == d.to_uppercase()) {
        return None;
    }
    // "bucket_name" for S3_BUCKET_NAME, "api_base_url": the name again, in lower case.
    let words: Vec<String> = segments(d);
    let own = segments(name);
    if words.len() > 1 && words.iter().all(|w| own.contains(w) || ["API", "NAME", "ID"].contains(&w.as_str()))
    {
        return None;
    }
    Some(d.to_owned())
}

fn is_url_value(v: &str) -> bool {
    let l = v.to_lowercase();
    ["http://", "https://", "bolt://", "ws://", "wss://", "redis://", "grpc://"]
        .iter()
        .any(|p| l.starts_with(p))
}

/// Hosts under which every customer has their own name: a URL there is an example of the
/// user's own site, never a default.
const TENANT_DOMAINS: &[&str] = &[
    "atlassian.net",
    "salesforce.com",
    "service-now.com",
    "okta.com",
    "zendesk.com",
    "myshopify.com",
    "sharepoint.com",
    "freshdesk.com",
    "my.site.com",
    "notion.site",
];

/// A URL that is a usable default, not an example of the user's own: a local service or a
/// public address (not a private network's, not a per-customer SaaS host).
fn default_url(v: &str) -> bool {
    let l = v.to_lowercase();
    let host = l.split("://").nth(1).unwrap_or("").split(['/', ':']).next().unwrap_or("");
    let private = host.starts_with("192.168.")
        || host.starts_with("10.")
        || host.starts_with("172.")
        || host.ends_with(".local")
        || host.ends_with(".internal")
        || !host.contains('.') && host != "localhost";
    let tenant = TENANT_DOMAINS.iter().any(|d| host.ends_with(d));
    !host.is_empty() && !private && !tenant
}

/// The shape of a value, from its name, description and how it travels.
pub fn shape(spec: &CredentialSpec) -> Shape {
    let name = spec.name.to_ascii_uppercase();
    let segs = segments(&name);
    let d = spec.description.to_lowercase();
    let last = segs.last().map(String::as_str).unwrap_or("");
    if is_credential_file(spec) {
        return Shape::File;
    }
    if made_up(&name, &d) {
        return Shape::MadeUp;
    }
    if name.contains("CONNECTION_STRING")
        || name.contains("DATABASE_URL")
        || name.ends_with("_DSN")
        || name.ends_with("_URI") && (d.contains("password") || d.contains("mongodb"))
    {
        return Shape::ConnectionString;
    }
    if name.contains("REFRESH_TOKEN") {
        return Shape::RefreshToken;
    }
    if name.contains("ACCESS_TOKEN") && (name.contains("GOOGLE") || d.contains("oauth")) {
        return Shape::AccessToken;
    }
    // An access key's id (AWS_ACCESS_KEY_ID) is half of a key pair: a credential like the other half.
    if name.contains("ACCESS_KEY") {
        return Shape::Token;
    }
    if name.contains("CLIENT_ID") || name.contains("CLIENT_SECRET") || name.contains("APP_SECRET") {
        return Shape::OauthClient;
    }
    if path_setting(spec) {
        return Shape::Path;
    }
    if has_any(&segs, SECRET_WORDS) && !matches!(last, "ID" | "IDS" | "NAME" | "URL" | "PATH" | "FILE") {
        return Shape::Token;
    }
    if spec.secret && !matches!(last, "ID" | "IDS" | "URL" | "HOST" | "NAME" | "USER" | "USERNAME" | "EMAIL")
    {
        return Shape::Token;
    }
    if matches!(
        last,
        "URL" | "URI" | "ENDPOINT" | "HOST" | "DOMAIN" | "SERVER" | "INSTANCE" | "SITE" | "BASE"
    ) || name.contains("BASE_URL")
    {
        return Shape::Url;
    }
    if matches!(
        last,
        "ID" | "IDS" | "SID" | "KEY" | "SLUG" | "REGION" | "WORKSPACE" | "ORG" | "OWNER" | "REPO"
    ) || name.ends_with("ACCOUNT")
        || name.ends_with("PROJECT")
        || name.ends_with("DATABASE")
        || name.ends_with("CHANNEL")
        || name.ends_with("CHANNELS")
    {
        return Shape::Identifier;
    }
    if name.contains("EMAIL") || matches!(last, "USER" | "USERNAME" | "LOGIN" | "ACCOUNT") {
        return Shape::Account;
    }
    let value = literal_value(&spec.description, &spec.name);
    let boolish =
        |v: &str| matches!(v.to_lowercase().as_str(), "true" | "false" | "yes" | "no" | "on" | "off");
    if value.as_deref().is_some_and(boolish) || d.contains("true/false") || d.contains("true or false") {
        return Shape::Flag;
    }
    if has_any(&segs, FLAG_WORDS) && !has_any(&segs, &["LEVEL", "MODE"]) {
        return Shape::Flag;
    }
    if value.as_deref().is_some_and(|v| v.parse::<f64>().is_ok()) || has_any(&segs, TUNING_WORDS) {
        return Shape::Number;
    }
    Shape::Text
}

/// A shared secret the user chooses rather than obtains (the server checks callers against it).
fn made_up(name: &str, description: &str) -> bool {
    const NAMES: &[&str] =
        &["VALID_API_KEY", "JWT_SECRET", "SESSION_SECRET", "SHARED_SECRET", "COOKIE_SECRET", "AUTH_SECRET"];
    NAMES.iter().any(|n| name.ends_with(n))
        || name.starts_with("VALID_")
        || (name.contains("SECRET") || name.contains("KEY"))
            && ["random string", "any string", "of your choice", "you choose", "generate a random", "make up"]
                .iter()
                .any(|p| description.contains(p))
}

/// A file whose content authenticates: uploaded, stored encrypted, given to the server as a path.
fn is_credential_file(spec: &CredentialSpec) -> bool {
    let name = spec.name.to_ascii_uppercase();
    let d = spec.description.to_lowercase();
    let about_secret = name.contains("CREDENTIAL")
        || name.contains("KEY")
        || name.contains("TOKEN")
        || name.contains("CERT")
        || name.contains("SERVICE_ACCOUNT")
        || name.contains("SECRET")
        || name.contains("OAUTH")
        || d.contains("service account")
        || d.contains("service-account")
        || d.contains("credentials")
        || d.contains("key file")
        || d.contains(".pem")
        || d.contains(".p12")
        || d.contains("oauth");
    (spec.kind == CredentialKind::File && (about_secret || spec.secret))
        || name == "GOOGLE_APPLICATION_CREDENTIALS"
}

/// A path the server reads or writes its own data at (logs, a working folder, a database file):
/// a setting dynamcp fills with a place in the server's sandbox, never an upload.
fn path_setting(spec: &CredentialSpec) -> bool {
    let name = spec.name.to_ascii_uppercase();
    let segs = segments(&name);
    let d = spec.description.to_lowercase();
    let by_name =
        has_any(&segs, &["PATH", "DIR", "DIRECTORY", "FOLDER", "ROOT", "PATHS", "DIRS", "WORKSPACE"])
            || name.ends_with("_FILE")
            || name.ends_with("_DB");
    let by_value =
        d.starts_with('/') || d.starts_with("~/") || d.contains("absolute path") || d.contains("path to");
    (by_name || by_value || spec.kind == CredentialKind::File) && !is_credential_file(spec) && name != "PATH"
}

/// Whether a path setting names a folder (created for it) rather than a file.
fn folder_path(spec: &CredentialSpec) -> bool {
    let segs = segments(&spec.name);
    let d = spec.description.to_lowercase();
    let file_like = spec.name.to_ascii_uppercase().ends_with("_FILE")
        || [".json", ".jsonl", ".db", ".sqlite", ".txt", ".csv", ".log", ".yaml", ".yml", ".md"]
            .iter()
            .any(|e| d.contains(e))
        || d.contains("file path")
        || d.contains("path to the file")
        || has_any(&segs, &["DB", "SQLITE"]);
    !file_like || d.contains("directory") || d.contains("folder")
}

/// A description that calls the value optional: "(optional)", "Optional: …", "string, optional",
/// not "optionally also grant write access", nor optional only in another setup ("optional with
/// a self-hosted URL", "optional if you run it locally").
fn says_optional(description: &str) -> bool {
    description.match_indices("optional").any(|(at, word)| {
        let rest = &description[at + word.len()..];
        let next = rest.chars().next();
        let before = description[..at].chars().next_back();
        let condition = rest
            .split_whitespace()
            .next()
            .is_some_and(|w| next == Some(' ') && ["with", "when", "if", "unless", "in", "on"].contains(&w));
        next.is_none_or(|c| !c.is_alphabetic()) && before.is_none_or(|c| !c.is_alphabetic()) && !condition
    })
}

/// How `spec` is treated: who provides it and what it is.
pub fn classify(spec: &CredentialSpec) -> Requirement {
    let name = spec.name.to_ascii_uppercase();
    let segs = segments(&name);
    let shape = shape(spec);
    let secret_shape = matches!(
        shape,
        Shape::Token
            | Shape::AccessToken
            | Shape::RefreshToken
            | Shape::MadeUp
            | Shape::ConnectionString
            | Shape::File
    ) || shape == Shape::OauthClient && name.contains("SECRET");
    let secret = secret_shape || spec.secret && matches!(shape, Shape::Text | Shape::OauthClient);
    let d = spec.description.to_lowercase();
    let says_optional = says_optional(&d)
        || d.contains("if needed")
        || d.contains("if you want")
        || d.starts_with("override")
        || d.contains("(not required)");
    let known_optional = KNOWN_OPTIONAL.iter().any(|(n, _)| name == *n);
    let provide = if known_optional {
        Provide::Optional
    } else if secret {
        // A secret never takes a default from a description: that is an example, not a value.
        if spec.required && !says_optional { Provide::User } else { Provide::Optional }
    } else if shape == Shape::Path {
        Provide::Filled(if folder_path(spec) { Fill::Folder } else { Fill::FilePath })
    } else if PLUMBING.contains(&name.as_str())
        || name.starts_with("MCP_") && !has_any(&segs, SECRET_WORDS)
        || has_any(&segs, &["TRANSPORT", "SSE", "HTTP", "STREAMABLE"])
    {
        // How the server listens is decided by how dynamcp launches it.
        Provide::Filled(Fill::ServerDefault)
    } else if let Some(value) = stated_default(&spec.description) {
        Provide::Filled(Fill::Value(value))
    } else if let Some(value) = literal_value(&spec.description, &spec.name)
        && (!is_url_value(&value) || default_url(&value))
        // A required account id or user name shown as "T01234567" or "root" is an example.
        && (!spec.required || !matches!(shape, Shape::Identifier | Shape::Account))
    {
        Provide::Filled(Fill::Value(value))
    } else if matches!(shape, Shape::Flag | Shape::Number) {
        Provide::Filled(Fill::ServerDefault)
    } else if spec.required && !says_optional {
        Provide::User
    } else {
        Provide::Optional
    };
    Requirement { secret, shape, provide }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, description: &str, required: bool, secret: bool) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            description: description.into(),
            required,
            secret,
            kind: crate::catalog::import::credential_kind(name, description),
            instructions: vec![],
        }
    }

    fn provide(name: &str, description: &str) -> Provide {
        classify(&spec(name, description, true, false)).provide
    }

    #[test]
    fn the_excel_server_s_settings_are_filled_not_asked() {
        // excel-mcp-server-4 as the catalog has it: every description is a README example value.
        assert_eq!(provide("CACHE_MAX_AGE", "1"), Provide::Filled(Fill::Value("1".into())));
        assert_eq!(provide("LOG_RETENTION_DAYS", "7"), Provide::Filled(Fill::Value("7".into())));
        assert_eq!(provide("LOG_CLEANUP_INTERVAL", "24"), Provide::Filled(Fill::Value("24".into())));
        let log = classify(&spec("LOG_PATH", "[set an accessible absolute path]", true, false));
        assert_eq!(log.provide, Provide::Filled(Fill::Folder), "a path setting is a folder, not an upload");
        assert_eq!(log.kind_label(), "setting");
        assert_eq!(provide("EXCEL_FILES_PATH", "/path/to/excel/files"), Provide::Filled(Fill::Folder));
        assert_eq!(
            provide("MEMORY_FILE_PATH", "/path/to/custom/memory.json"),
            Provide::Filled(Fill::FilePath)
        );
        assert_eq!(provide("EXCEL_MCP_PAGING_CELLS_LIMIT", ""), Provide::Filled(Fill::ServerDefault));
    }

    #[test]
    fn secrets_are_asked_and_never_take_an_example_as_a_value() {
        let key = classify(&spec("AIRTABLE_API_KEY", "pat123.abc123", true, true));
        assert!(key.asked() && key.secret);
        assert_eq!(key.kind_label(), "secret");
        // The catalog's secret flag is a guess from the name, and misses some.
        assert!(classify(&spec("GITHUB_TOKEN", "Your GitHub personal access token", true, false)).secret);
        assert_eq!(
            classify(&spec("GOOGLE_ACCESS_TOKEN", "Google OAuth access token.", true, true)).shape,
            Shape::AccessToken
        );
        assert_eq!(classify(&spec("VALID_API_KEY", "YOUR_API_KEY", true, true)).shape, Shape::MadeUp);
        assert_eq!(
            classify(&spec("QDRANT_API_KEY", "your_api_key_if_needed", true, true)).provide,
            Provide::User,
            "a placeholder's wording does not make it optional"
        );
        assert_eq!(
            classify(&spec("AUTH_TOKEN", "Authentication token for the bridge API (Optional)", true, true))
                .provide,
            Provide::Optional
        );
        let sa = classify(&spec("GOOGLE_APPLICATION_CREDENTIALS", "/path/to/credentials.json", true, false));
        assert_eq!((sa.kind_label(), sa.asked()), ("file", true));
    }

    #[test]
    fn what_only_the_user_knows_is_asked_as_a_setting() {
        for (name, description) in [
            ("GAS_ENDPOINT", "YOUR_DEPLOYMENT_URL"),
            ("SLACK_TEAM_ID", "T01234567"),
            ("JIRA_URL", "https://your-domain.atlassian.net"),
            ("N8N_API_URL", "http://your-n8n-instance:5678/api/v1"),
            ("GITHUB_OWNER", "Your GitHub username"),
            ("SALESFORCE_INSTANCE_URL", "https://your-domain.my.salesforce.com"),
        ] {
            let r = classify(&spec(name, description, true, false));
            assert!(r.asked() && !r.secret, "{name}: {r:?}");
            assert_eq!(r.kind_label(), "setting");
        }
        assert_eq!(classify(&spec("GAS_ENDPOINT", "", true, false)).shape, Shape::Url);
        assert_eq!(classify(&spec("SLACK_CHANNEL_IDS", "", true, false)).shape, Shape::Identifier);
    }

    #[test]
    #[ignore]
    fn survey() {
        let text = std::fs::read_to_string("/work/shared/catalog/credinfo.json").unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for e in v["env_vars"].as_array().unwrap() {
            let name = e["name"].as_str().unwrap();
            for d in e["descriptions"].as_array().unwrap().iter().take(1) {
                let r = classify(&spec(name, d.as_str().unwrap(), true, e["secret"].as_bool().unwrap()));
                println!(
                    "{}\t{:?}\t{:?}\t{}\t{}",
                    e["server_count"],
                    r.provide,
                    r.shape,
                    name,
                    d.as_str().unwrap().chars().take(70).collect::<String>()
                );
            }
        }
    }

    #[test]
    fn defaults_come_from_the_data() {
        assert_eq!(provide("LOG_LEVEL", "info"), Provide::Filled(Fill::Value("info".into())));
        assert_eq!(provide("LOG_LEVEL", "Logging level"), Provide::Filled(Fill::ServerDefault));
        assert_eq!(
            provide("QDRANT_URL", "http://localhost:6333"),
            Provide::Filled(Fill::Value("http://localhost:6333".into()))
        );
        assert_eq!(
            provide("GITLAB_API_URL", "https://gitlab.com/api/v4"),
            Provide::Filled(Fill::Value("https://gitlab.com/api/v4".into()))
        );
        assert_eq!(
            provide("APP_LOG_LEVEL", "Logging level: 'DEBUG', 'INFO', 'WARN', 'ERROR'. Default: 'INFO'"),
            Provide::Filled(Fill::Value("INFO".into()))
        );
        assert_eq!(provide("ZOTERO_LOCAL", ""), Provide::Filled(Fill::ServerDefault));
        assert_eq!(classify(&spec("ZOTERO_LOCAL", "", true, false)).shape, Shape::Flag);
        assert_eq!(
            provide("MCP_HTTP_PORT", "The port to run the HTTP server on."),
            Provide::Filled(Fill::ServerDefault)
        );
        // How the server listens is decided by how dynamcp launches it, never by a README example.
        assert_eq!(provide("PORT", "3000"), Provide::Filled(Fill::ServerDefault));
        assert_eq!(provide("MCP_TRANSPORT", "sse"), Provide::Filled(Fill::ServerDefault));
        assert_eq!(
            classify(&spec("VIS_REQUEST_SERVER", "Optional: a private chart rendering service", true, false))
                .provide,
            Provide::Optional
        );
        assert_eq!(stated_default("Server mode: 'all' (default), 'code'"), None);
        // "optionally" grants more scopes; it does not make the token optional.
        let airtable = "Airtable personal access token (e.g., pat123.abc123). Create at https://airtable.com/create/tokens/new with scopes: schema.bases:read, data.records:read, and optionally schema.bases:write.";
        assert!(classify(&spec("AIRTABLE_API_KEY", airtable, true, true)).asked());
        // Optional only in another setup: the usual one needs it.
        let firecrawl = "Firecrawl API key (starts with fc-); needed for the cloud API, optional with a self-hosted FIRECRAWL_API_URL.";
        assert!(classify(&spec("FIRECRAWL_API_KEY", firecrawl, true, true)).asked());
        assert!(!classify(&spec("SENTRY_TOKEN", "Sentry token (optional)", true, true)).asked());
        assert_eq!(stated_default("Request timeout in ms (default 30000)"), Some("30000".into()));
        // Letters whose lower case is longer than themselves do not shift where the value is read.
        assert_eq!(stated_default("İİİ ẞ timeout (default 30)"), Some("30".into()));
    }
}
