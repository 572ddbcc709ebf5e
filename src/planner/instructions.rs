//! Actionable instructions for obtaining a credential: where to create it, which scopes or
//! permissions it needs, and what its value looks like.
//!
//! Catalog descriptions are often placeholders ("YOUR_API_KEY"), and credinfo covers few servers.
//! Where a record has real steps they win; otherwise the steps come from a table of the services
//! MCP servers most often wrap (matched on the variable name, then on the server's name), and the
//! value's format from the variable's suffix.

use crate::catalog::{CredentialKind, CredentialSpec, ServerRecord};

/// A service users create credentials for, and how.
struct Service {
    /// Lowercase fragments of a variable or server name that identify it.
    matches: &'static [&'static str],
    name: &'static str,
    /// Where to create the credential and which permissions to give it.
    steps: &'static [&'static str],
}

const GOOGLE_CLOUD: &str = "Google Cloud";

const SERVICES: &[Service] = &[
    Service {
        matches: &["gmail"],
        name: "Gmail (Google)",
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project, and enable the Gmail API (APIs & Services → Library).",
            "Under APIs & Services → OAuth consent screen, add yourself as a test user; then Credentials → Create credentials → OAuth client ID (type: Desktop app).",
            "Grant only the scopes the workflow needs: https://www.googleapis.com/auth/gmail.readonly to read mail, gmail.modify to label or archive, gmail.send to send.",
        ],
    },
    Service {
        matches: &["sheets", "spreadsheet"],
        name: "Google Sheets (Google)",
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project, and enable the Google Sheets API (and the Google Drive API to find sheets by name).",
            "For a personal account: Credentials → Create credentials → OAuth client ID (Desktop app), scope https://www.googleapis.com/auth/spreadsheets. For automation: IAM → Service accounts → create one → Keys → Add key → JSON, then share the spreadsheet with the service account's e-mail.",
        ],
    },
    Service {
        matches: &["google", "gcp", "gdrive", "drive", "calendar", "youtube"],
        name: GOOGLE_CLOUD,
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project, and enable the API of the service the server uses (APIs & Services → Library).",
            "Create the credential under APIs & Services → Credentials: an API key for public data, an OAuth client ID for your own account's data, or a service account (Keys → Add key → JSON) for automation.",
        ],
    },
    Service {
        matches: &["slack"],
        name: "Slack",
        steps: &[
            "Open https://api.slack.com/apps → Create New App → From scratch, and pick your workspace.",
            "Under OAuth & Permissions add the bot token scopes the workflow needs (e.g. chat:write to post, channels:read and channels:history to read channels), then Install to Workspace.",
            "Copy the Bot User OAuth Token (it starts with xoxb-); the team id (starts with T) is in the workspace URL or Workspace settings.",
        ],
    },
    Service {
        matches: &["github", "gh_"],
        name: "GitHub",
        steps: &[
            "Open https://github.com/settings/personal-access-tokens/new (fine-grained token).",
            "Choose the repositories it may touch and only the permissions needed (e.g. Issues: read and write, Contents: read, Pull requests: read and write), and an expiry.",
            "Copy the token (it starts with github_pat_ or ghp_); it is shown once.",
        ],
    },
    Service {
        matches: &["gitlab"],
        name: "GitLab",
        steps: &[
            "Open GitLab → Preferences → Access tokens (https://gitlab.com/-/user_settings/personal_access_tokens).",
            "Add a token with the api scope (read_api if read-only is enough) and an expiry; copy it (starts with glpat-).",
        ],
    },
    Service {
        matches: &["notion"],
        name: "Notion",
        steps: &[
            "Open https://www.notion.so/profile/integrations → New integration, pick the workspace, and give it read/update/insert content capabilities as needed.",
            "Copy the Internal Integration Secret (starts with ntn_ or secret_), then share each page or database with the integration (••• → Connections).",
        ],
    },
    Service {
        matches: &["jira", "confluence", "atlassian"],
        name: "Atlassian (Jira / Confluence)",
        steps: &[
            "Open https://id.atlassian.com/manage-profile/security/api-tokens → Create API token, and copy it.",
            "The server also needs your site URL (https://<your-site>.atlassian.net) and the e-mail of your Atlassian account.",
        ],
    },
    Service {
        matches: &["linear"],
        name: "Linear",
        steps: &[
            "Open Linear → Settings → Security & access → Personal API keys → New API key (starts with lin_api_); copy it.",
        ],
    },
    Service {
        matches: &["discord"],
        name: "Discord",
        steps: &[
            "Open https://discord.com/developers/applications → New Application → Bot → Reset Token, and copy the token.",
            "Under OAuth2 → URL Generator pick the bot scope and the permissions needed (Send Messages, Read Message History), open the URL and add the bot to your server.",
        ],
    },
    Service {
        matches: &["telegram"],
        name: "Telegram",
        steps: &[
            "Message @BotFather in Telegram, send /newbot and follow the prompts.",
            "Copy the bot token it replies with (format 123456789:AA...).",
        ],
    },
    Service {
        matches: &["openai"],
        name: "OpenAI",
        steps: &[
            "Open https://platform.openai.com/api-keys → Create new secret key (starts with sk-); copy it, it is shown once. The account needs billing enabled.",
        ],
    },
    Service {
        matches: &["anthropic", "claude"],
        name: "Anthropic",
        steps: &[
            "Open https://console.anthropic.com/settings/keys → Create Key (starts with sk-ant-); copy it, it is shown once.",
        ],
    },
    Service {
        matches: &["gemini"],
        name: "Google Gemini",
        steps: &["Open https://aistudio.google.com/app/apikey → Create API key; copy it."],
    },
    Service {
        matches: &["brave"],
        name: "Brave Search",
        steps: &[
            "Open https://api-dashboard.search.brave.com/ → subscribe to a plan (a free one exists) → API Keys → Add; copy the key.",
        ],
    },
    Service {
        matches: &["tavily"],
        name: "Tavily",
        steps: &[
            "Sign in at https://app.tavily.com/ and copy the API key from the dashboard (starts with tvly-).",
        ],
    },
    Service {
        matches: &["exa_", "exa-"],
        name: "Exa",
        steps: &["Sign in at https://dashboard.exa.ai/ → API Keys → Create key; copy it."],
    },
    Service {
        matches: &["firecrawl"],
        name: "Firecrawl",
        steps: &["Sign in at https://www.firecrawl.dev/app → API Keys; copy the key (starts with fc-)."],
    },
    Service {
        matches: &["perplexity"],
        name: "Perplexity",
        steps: &[
            "Open https://www.perplexity.ai/settings/api → Generate API key (starts with pplx-); the account needs credit.",
        ],
    },
    Service {
        matches: &["stripe"],
        name: "Stripe",
        steps: &[
            "Open https://dashboard.stripe.com/apikeys (use Test mode while trying things out).",
            "Prefer a restricted key (Create restricted key) with only the resources the workflow needs; copy it (rk_ or sk_ prefix).",
        ],
    },
    Service {
        matches: &["twilio"],
        name: "Twilio",
        steps: &[
            "Open https://console.twilio.com/ : the Account SID (starts with AC) and Auth Token are on the dashboard under Account Info.",
        ],
    },
    Service {
        matches: &["aws", "amazon"],
        name: "AWS",
        steps: &[
            "Open the IAM console → Users → create a user (or pick one) → attach only the policies the workflow needs (e.g. ReadOnlyAccess).",
            "Security credentials → Create access key → Application running outside AWS; copy the Access key ID (starts with AKIA) and the Secret access key, shown once.",
        ],
    },
    Service {
        matches: &["azure"],
        name: "Microsoft Azure",
        steps: &[
            "Open https://portal.azure.com/ → Microsoft Entra ID → App registrations → New registration; then Certificates & secrets → New client secret, and grant the API permissions the workflow needs.",
        ],
    },
    Service {
        matches: &["outlook", "microsoft", "graph", "onedrive", "teams", "office"],
        name: "Microsoft 365",
        steps: &[
            "Open https://entra.microsoft.com/ → App registrations → New registration (supported accounts as needed).",
            "Certificates & secrets → New client secret; API permissions → Microsoft Graph → the delegated permissions needed (e.g. Mail.Read, Mail.Send, Files.ReadWrite); copy the client id, tenant id and secret.",
        ],
    },
    Service {
        matches: &["cloudflare"],
        name: "Cloudflare",
        steps: &[
            "Open https://dash.cloudflare.com/profile/api-tokens → Create Token, start from a template with only the permissions needed; copy the token. The account id is on the account's overview page.",
        ],
    },
    Service {
        matches: &["airtable"],
        name: "Airtable",
        steps: &[
            "Open https://airtable.com/create/tokens → Create token with the scopes needed (data.records:read, data.records:write) and the bases it may access; copy it (starts with pat).",
        ],
    },
    Service {
        matches: &["hubspot"],
        name: "HubSpot",
        steps: &[
            "In HubSpot open Settings → Integrations → Private Apps → Create a private app, pick the CRM scopes needed, and copy the access token (starts with pat-).",
        ],
    },
    Service {
        matches: &["todoist"],
        name: "Todoist",
        steps: &["Open Todoist → Settings → Integrations → Developer, and copy the API token."],
    },
    Service {
        matches: &["trello"],
        name: "Trello",
        steps: &[
            "Open https://trello.com/power-ups/admin → New Power-Up, then API key → Generate; use the Token link next to the key to authorise your account, and copy both.",
        ],
    },
    Service {
        matches: &["asana"],
        name: "Asana",
        steps: &["Open https://app.asana.com/0/my-apps → Create new token (personal access token); copy it."],
    },
    Service {
        matches: &["figma"],
        name: "Figma",
        steps: &[
            "In Figma open Settings → Security → Personal access tokens → Generate new token with the scopes needed (e.g. File content: read); copy it (starts with figd_).",
        ],
    },
    Service {
        matches: &["sentry"],
        name: "Sentry",
        steps: &[
            "Open Sentry → Settings → Account → API → Personal Tokens (or an organization's Auth Tokens) → Create New Token with event:read, project:read, org:read; copy it.",
        ],
    },
    Service {
        matches: &["supabase"],
        name: "Supabase",
        steps: &[
            "Open https://supabase.com/dashboard/account/tokens → Generate new token (starts with sbp_); for a project's data use Project Settings → API keys.",
        ],
    },
    Service {
        matches: &["vercel"],
        name: "Vercel",
        steps: &[
            "Open https://vercel.com/account/settings/tokens → Create Token with the scope (team) and expiry needed; copy it.",
        ],
    },
    Service {
        matches: &["spotify"],
        name: "Spotify",
        steps: &[
            "Open https://developer.spotify.com/dashboard → Create app (redirect URI http://127.0.0.1:8888/callback), then copy the Client ID and Client secret from its settings.",
        ],
    },
    Service {
        matches: &["twitter", "x_api", "x_bearer"],
        name: "X (Twitter)",
        steps: &[
            "Open https://developer.x.com/en/portal/dashboard → your project's app → Keys and tokens; generate the API key and secret, the access token and secret, or the bearer token the server asks for.",
        ],
    },
    Service {
        matches: &["reddit"],
        name: "Reddit",
        steps: &[
            "Open https://www.reddit.com/prefs/apps → create another app (type script); the client id is under the app's name, the secret beside it.",
        ],
    },
    Service {
        matches: &["shopify"],
        name: "Shopify",
        steps: &[
            "In the Shopify admin open Settings → Apps and sales channels → Develop apps → Create an app, configure the Admin API scopes needed, install it, and copy the Admin API access token (starts with shpat_).",
        ],
    },
    Service {
        matches: &["sendgrid"],
        name: "SendGrid",
        steps: &[
            "Open https://app.sendgrid.com/settings/api_keys → Create API Key with Restricted Access → Mail Send; copy it (starts with SG.).",
        ],
    },
    Service {
        matches: &["resend"],
        name: "Resend",
        steps: &[
            "Open https://resend.com/api-keys → Create API key with Sending access; copy it (starts with re_).",
        ],
    },
    Service {
        matches: &["pinecone"],
        name: "Pinecone",
        steps: &["Open https://app.pinecone.io/ → API Keys → Create API key; copy it."],
    },
    Service {
        matches: &["huggingface", "hf_"],
        name: "Hugging Face",
        steps: &[
            "Open https://huggingface.co/settings/tokens → Create new token (Read is enough to download models); copy it (starts with hf_).",
        ],
    },
    Service {
        matches: &["elevenlabs"],
        name: "ElevenLabs",
        steps: &[
            "Open https://elevenlabs.io/app/settings/api-keys → Create API key with the permissions needed; copy it.",
        ],
    },
    Service {
        matches: &["zendesk"],
        name: "Zendesk",
        steps: &[
            "In Zendesk Admin Center open Apps and integrations → Zendesk API → add an API token; the server also needs your subdomain and agent e-mail.",
        ],
    },
    Service {
        matches: &["postgres", "pg_", "database_url", "mysql", "mongo", "redis", "supabase_db"],
        name: "your database",
        steps: &[
            "Ask your database administrator (or your hosting provider's dashboard) for a connection for a dedicated user with only the privileges the workflow needs (read-only if it only reads).",
        ],
    },
];

/// Variables that configure a server rather than authenticate it: never block on them.
const SETTINGS: &[&str] =
    &["MCP_TRANSPORT", "TRANSPORT", "PORT", "MCP_PORT", "HOST", "LOG_LEVEL", "DEBUG", "NODE_ENV", "TIMEOUT"];

/// Whether a declared variable is a setting with a default, not a credential to ask for.
pub fn is_setting(spec: &CredentialSpec) -> bool {
    !spec.secret && SETTINGS.iter().any(|s| spec.name.eq_ignore_ascii_case(s))
}

fn service_for(spec: &CredentialSpec, server: &ServerRecord) -> Option<&'static Service> {
    let key = spec.name.to_lowercase();
    let name = format!("{} {}", server.id, server.name).to_lowercase();
    let find = |text: &str| {
        SERVICES.iter().find(|s| s.matches.iter().any(|m| text.contains(m.trim_end_matches(['_', '-']))))
    };
    let by_key = SERVICES.iter().find(|s| s.matches.iter().any(|m| key.contains(m)));
    match by_key {
        // A generic Google key (GOOGLE_ACCESS_TOKEN) of a Gmail or Sheets server: that product's steps.
        Some(s) if s.name == GOOGLE_CLOUD => find(&name).filter(|n| n.name.contains("(Google)")).or(Some(s)),
        Some(s) => Some(s),
        None => find(&name),
    }
}

/// What the value looks like, from the variable's name and kind.
fn format_hint(spec: &CredentialSpec) -> String {
    let key = spec.name.to_uppercase();
    if spec.kind == CredentialKind::File
        || key.ends_with("_FILE")
        || key.ends_with("_PATH")
        || key == "GOOGLE_APPLICATION_CREDENTIALS"
    {
        return "Format: upload the file itself (for a service account, the downloaded JSON key); dynamcp stores it \
                encrypted and gives the server its path."
            .to_owned();
    }
    if key.contains("DATABASE_URL") || key.contains("CONNECTION_STRING") || key.ends_with("_DSN") {
        return "Format: a connection URL such as postgresql://user:password@host:5432/dbname.".to_owned();
    }
    if key.ends_with("_URL")
        || key.ends_with("_ENDPOINT")
        || key.ends_with("_HOST")
        || key.ends_with("_DOMAIN")
    {
        return "Format: the full address, e.g. https://example.com, with no trailing slash.".to_owned();
    }
    if key.ends_with("_ID") || key.ends_with("_SID") {
        return "Format: the identifier exactly as shown (no quotes, no spaces).".to_owned();
    }
    if key.contains("EMAIL") || key.ends_with("_USER") || key.ends_with("_USERNAME") {
        return "Format: the account's e-mail address or user name.".to_owned();
    }
    if spec.secret || ["TOKEN", "KEY", "SECRET", "PASSWORD"].iter().any(|w| key.contains(w)) {
        return "Format: paste the value exactly as shown, with no quotes or spaces. It is stored encrypted and only \
                given to this server."
            .to_owned();
    }
    "Format: a plain text value.".to_owned()
}

/// A description that is not a placeholder: the record's own when it says something, else one
/// made from the service and the variable.
pub fn description(spec: &CredentialSpec, server: &ServerRecord) -> String {
    let own = spec.description.trim();
    if !is_placeholder(own) {
        return own.to_owned();
    }
    let what = if spec.kind == CredentialKind::File { "file" } else { "credential" };
    match service_for(spec, server) {
        Some(s) => format!("{} {what} {} needs ({}).", s.name, server.name, spec.name),
        None => format!("The {what} {} reads from {}.", server.name, spec.name),
    }
}

/// Placeholder descriptions copied from README templates: "YOUR_API_KEY", "your-token-here", "".
fn is_placeholder(text: &str) -> bool {
    let t = text.trim().trim_matches(['<', '>', '"', '\'']).to_lowercase();
    t.is_empty()
        || t.starts_with("your")
        || t.ends_with("_here")
        || t.ends_with("-here")
        || t.ends_with(" here")
        || t.starts_with("xxx")
        || t.starts_with("/path/")
        || t.contains("path/to/")
        || t.starts_with("sk-...")
        || t.split_whitespace().count() == 1 && t.contains(['_', '-'])
}

/// Numbered steps to obtain the credential, then its format.
pub fn instructions(spec: &CredentialSpec, server: &ServerRecord) -> String {
    let mut steps: Vec<String> =
        spec.instructions.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if steps.is_empty() {
        match service_for(spec, server) {
            Some(s) => steps.extend(s.steps.iter().map(|s| (*s).to_owned())),
            None => {
                let home = server.homepage.as_deref().or(server.repository.as_deref());
                steps.push(match home {
                    Some(url) => format!(
                        "Read how {} obtains {} at {url} (its README's configuration section).",
                        server.name, spec.name
                    ),
                    None => format!(
                        "Find {} in the settings or developer console of the service {} connects to.",
                        spec.name, server.name
                    ),
                });
                steps.push("Create it with the least access the workflow needs.".to_owned());
            }
        }
    }
    steps.push(format_hint(spec));
    steps.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(id: &str, name: &str) -> ServerRecord {
        serde_json::from_value(serde_json::json!({"id": id, "name": name})).unwrap()
    }

    fn spec(name: &str, description: &str, secret: bool) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            description: description.into(),
            required: true,
            secret,
            kind: CredentialKind::Env,
            instructions: vec![],
        }
    }

    #[test]
    fn known_services_get_their_console_scopes_and_format() {
        let sheets = server("google-sheets-mcp-5", "google-sheets-mcp");
        let text = instructions(&spec("GOOGLE_ACCESS_TOKEN", "Google OAuth access token", true), &sheets);
        assert!(text.starts_with("1. Open https://console.cloud.google.com/"), "{text}");
        assert!(text.contains("auth/spreadsheets"), "{text}");
        assert!(text.contains("no quotes or spaces"), "{text}");
        let slack = instructions(&spec("SLACK_BOT_TOKEN", "", true), &server("slack", "Slack"));
        assert!(slack.contains("chat:write") && slack.contains("xoxb-"), "{slack}");
    }

    #[test]
    fn the_record_s_own_steps_win_and_placeholders_are_replaced() {
        let mut s = spec("VALID_API_KEY", "YOUR_API_KEY", true);
        let gmail = server("gmail-mcp-2", "Gmail MCP");
        assert_eq!(description(&s, &gmail), "Gmail (Google) credential Gmail MCP needs (VALID_API_KEY).");
        assert_eq!(
            description(&spec("X", "Google OAuth client ID.", false), &gmail),
            "Google OAuth client ID."
        );
        s.instructions = vec!["Deploy the Apps Script and copy its key.".into()];
        let text = instructions(&s, &gmail);
        assert!(text.starts_with("1. Deploy the Apps Script"), "{text}");
        let url = instructions(&spec("GAS_ENDPOINT", "YOUR_DEPLOYMENT_URL", false), &gmail);
        assert!(url.contains("https://example.com"), "{url}");
    }

    #[test]
    fn settings_are_not_credentials() {
        assert!(is_setting(&spec("MCP_TRANSPORT", "Transport type.", false)));
        assert!(!is_setting(&spec("GOOGLE_CLIENT_ID", "", false)));
        assert!(!is_setting(&spec("PORT", "", true)));
    }
}
