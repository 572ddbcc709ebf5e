//! Actionable instructions for obtaining a credential: where to create it, which scopes or
//! permissions it needs, and what its value looks like.
//!
//! Catalog descriptions are often placeholders ("YOUR_API_KEY"), and credinfo covers few servers.
//! Where a record has real steps they win; otherwise the steps come from a table of the services
//! MCP servers most often wrap (matched on the variable name, then on the server's name), and the
//! value's format from the variable's suffix.

use crate::catalog::requirements::{self, Shape};
use crate::catalog::{CredentialSpec, ServerRecord};
#[cfg(test)]
use std::collections::BTreeSet;

/// A service users create credentials for, and how.
struct Service {
    /// Lowercase fragments of a variable or server name that identify it.
    matches: &'static [&'static str],
    name: &'static str,
    /// Where to create the credential and which permissions to give it.
    steps: &'static [&'static str],
}

const GOOGLE_CLOUD: &str = "Google Cloud";
const DATABASE: &str = "your database";

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
        matches: &["outlook", "microsoft", "msgraph", "ms_graph", "graph!", "onedrive", "teams", "office"],
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
        matches: &["mdb_mcp", "atlas!"],
        name: "MongoDB Atlas",
        steps: &[
            "Open https://cloud.mongodb.com/ → your organization → Access Manager → Applications → Service Accounts → Create; give it only the roles the workflow needs (Project Read Only to look, more to change).",
            "Copy the Client ID and the Client Secret (shown once), and add the address the server runs from to the service account's API access list.",
            "For a connection string instead: Database → Connect → Drivers shows mongodb+srv://…; create a database user under Database Access for it.",
        ],
    },
    Service {
        matches: &["neo4j"],
        name: "Neo4j",
        steps: &[
            "Neo4j Aura: https://console.neo4j.io/ → New instance; the password of the user neo4j is shown once (download the credentials file), and the instance page shows the URI (neo4j+s://….databases.neo4j.io).",
            "Your own Neo4j: the bolt:// or neo4j:// address it listens on (e.g. bolt://localhost:7687) and a user created with CREATE USER in Neo4j Browser.",
        ],
    },
    Service {
        matches: &["clickhouse"],
        name: "ClickHouse",
        steps: &[
            "ClickHouse Cloud: https://console.clickhouse.cloud/ → your service → Connect shows the host, port (8443) and user (default); reset the password there if you do not have it.",
            "Better: create a read-only user for the agent (SQL console: CREATE USER … ; GRANT SELECT ON db.* TO …).",
        ],
    },
    Service {
        matches: &["obsidian"],
        name: "Obsidian",
        steps: &[
            "In Obsidian: Settings → Community plugins → Browse → install and enable \"Local REST API\".",
            "Settings → Local REST API shows the API key; copy it (Obsidian must be running for the server to reach it).",
        ],
    },
    Service {
        matches: &["salesforce", "sfdc"],
        name: "Salesforce",
        steps: &[
            "In Salesforce Setup → App Manager → New Connected App (or External Client App): enable OAuth, add the scopes the workflow needs (api, refresh_token), and save; Manage Consumer Details shows the Consumer Key (client id) and Consumer Secret.",
            "For user name and password login the security token comes from your avatar → Settings → Reset My Security Token (it is e-mailed to you).",
        ],
    },
    Service {
        matches: &["bitbucket"],
        name: "Bitbucket",
        steps: &[
            "Bitbucket Cloud: open https://id.atlassian.com/manage-profile/security/api-tokens → Create API token with scopes → Bitbucket, and tick only the scopes needed (e.g. read:repository, read:pullrequest, write:pullrequest); copy it, it is shown once.",
            "Bitbucket Data Center / Server: your avatar → Manage account → HTTP access tokens → Create token, with read or write permission on the projects needed.",
        ],
    },
    Service {
        matches: &["browserstack"],
        name: "BrowserStack",
        steps: &[
            "Open https://www.browserstack.com/accounts/settings; the Automate section shows your user name and access key.",
        ],
    },
    Service {
        matches: &["attio"],
        name: "Attio",
        steps: &[
            "In Attio: Workspace settings → Developers → New access token (or create an integration); grant only the scopes needed (e.g. record read, list entries read/write) and copy the token.",
        ],
    },
    Service {
        matches: &["servicenow"],
        name: "ServiceNow",
        steps: &[
            "Your instance address is https://<instance>.service-now.com.",
            "Ask your ServiceNow admin for an integration user (User Administration → Users → New) with only the roles the workflow needs (e.g. itil), and use its user name and password.",
        ],
    },
    Service {
        matches: &["cloudinary"],
        name: "Cloudinary",
        steps: &[
            "Open https://console.cloudinary.com/ → Settings → API Keys: the cloud name, API key and API secret are there (the dashboard also shows them as one CLOUDINARY_URL).",
        ],
    },
    Service {
        matches: &["sanity"],
        name: "Sanity",
        steps: &[
            "Open https://www.sanity.io/manage → your project: the project id is shown at the top; the dataset is usually production.",
            "API → Tokens → Add API token, with Viewer permission to read or Editor to write; copy it, it is shown once.",
        ],
    },
    Service {
        matches: &["kagi"],
        name: "Kagi",
        steps: &[
            "Open https://kagi.com/settings?p=api and generate an API token; API calls are paid from API credits you add on that page.",
            "Kagi's Search API is in closed beta: ask support@kagi.com for access if search calls are refused (the summarizer works without it).",
        ],
    },
    Service {
        matches: &["plane!"],
        name: "Plane",
        steps: &[
            "In Plane: your avatar → Settings → Personal access tokens (or Workspace settings → API tokens) → Add token; copy it. The workspace slug is the part of the URL after app.plane.so/.",
        ],
    },
    Service {
        matches: &["bugsnag"],
        name: "Bugsnag",
        steps: &["In Bugsnag: Settings (gear) → My account → Personal auth tokens → Generate new token."],
    },
    Service {
        matches: &["oxylabs"],
        name: "Oxylabs",
        steps: &[
            "Open https://dashboard.oxylabs.io/ → the Web Scraper API product → Users: create an API user; its user name and password are the credentials.",
        ],
    },
    Service {
        matches: &["strava"],
        name: "Strava",
        steps: &[
            "Open https://www.strava.com/settings/api and create an API application (any website, authorization callback domain localhost); it shows the Client ID and Client Secret.",
            "A refresh token comes from authorizing that app once with the scopes needed (activity:read_all), as the server's README describes; it lasts until you revoke it.",
        ],
    },
    Service {
        matches: &["zotero"],
        name: "Zotero",
        steps: &[
            "Open https://www.zotero.org/settings/keys → Create new private key; allow library access (and write access only if the workflow changes items).",
            "The same page shows your user id (\"Your userID for use in API calls is …\").",
        ],
    },
    Service {
        matches: &["n8n"],
        name: "n8n",
        steps: &[
            "In n8n: Settings → n8n API → Create an API key; the API address is your n8n address followed by /api/v1.",
        ],
    },
    Service {
        matches: &["argocd", "argo_cd"],
        name: "Argo CD",
        steps: &[
            "Create an account with apiKey capability in argocd-cm, then run `argocd account generate-token --account <name>` (or User Info → Generate token in the web UI); the server address is your Argo CD URL.",
        ],
    },
    Service {
        matches: &["circleci"],
        name: "CircleCI",
        steps: &[
            "Open https://app.circleci.com/settings/user/tokens → Create New Token; copy it, it is shown once.",
        ],
    },
    Service {
        matches: &["paypal"],
        name: "PayPal",
        steps: &[
            "Open https://developer.paypal.com/dashboard/applications → Create App (Sandbox to try, Live for real payments); the app shows the Client ID and Secret.",
        ],
    },
    Service {
        matches: &["xero"],
        name: "Xero",
        steps: &[
            "Open https://developer.xero.com/app/manage → New app → Custom connection (or Web app), choose the scopes needed and the organisation; the app's Configuration page shows the Client id and lets you generate the Client secret.",
        ],
    },
    Service {
        matches: &["mapbox"],
        name: "Mapbox",
        steps: &[
            "Open https://account.mapbox.com/access-tokens/ and copy the default public token (pk.…), or create one with only the scopes needed.",
        ],
    },
    Service {
        matches: &["paperless"],
        name: "Paperless-ngx",
        steps: &[
            "In Paperless-ngx: your user menu → My Profile → API Auth Token → generate and copy it; the address is your Paperless-ngx URL.",
        ],
    },
    Service {
        matches: &["context7"],
        name: "Context7",
        steps: &[
            "Open https://context7.com/dashboard and create an API key (the server works without one, with lower rate limits).",
        ],
    },
    Service {
        matches: &["browserbase"],
        name: "Browserbase",
        steps: &["Open https://www.browserbase.com/settings: it shows your API key and project id."],
    },
    Service {
        matches: &["home_assistant", "homeassistant", "home assistant", "home-assistant", "hass", "ha!"],
        name: "Home Assistant",
        steps: &[
            "In Home Assistant: your profile (bottom left) → Security → Long-lived access tokens → Create token; copy it, it is shown once and lasts ten years unless you delete it.",
            "The address is the one you open Home Assistant at, e.g. http://homeassistant.local:8123.",
        ],
    },
    Service {
        matches: &["sonarr", "radarr", "lidarr", "readarr", "prowlarr"],
        name: "the *arr app",
        steps: &[
            "In the app's web UI: Settings → General → Security shows the API Key; the address is the one you open it at (e.g. http://localhost:8989 for Sonarr, :7878 for Radarr).",
        ],
    },
    Service {
        matches: &["langfuse"],
        name: "Langfuse",
        steps: &[
            "In Langfuse: your project → Settings → API Keys → Create new API keys; copy the public key (pk-lf-…) and the secret key (sk-lf-…, shown once).",
            "The host is the region you signed up in: https://cloud.langfuse.com (EU) or https://us.cloud.langfuse.com (US), or your own instance.",
        ],
    },
    Service {
        matches: &["brightdata", "bright_data", "bright data"],
        name: "Bright Data",
        steps: &[
            "Open https://brightdata.com/cp/setting/users → API key → Add key; give it Admin permissions if the server creates its own zones, as Bright Data's MCP server does.",
        ],
    },
    Service {
        matches: &["shodan"],
        name: "Shodan",
        steps: &[
            "Open https://account.shodan.io/ and copy the API Key shown there; searching and scanning need a paid Shodan membership or API plan, host lookups work on the free one.",
        ],
    },
    Service {
        matches: &["alibaba", "aliyun"],
        name: "Alibaba Cloud",
        steps: &[
            "Open the RAM console (https://ram.console.aliyun.com/users) → Create User with OpenAPI access, attach only the policies the workflow needs (e.g. read-only ones), then Create AccessKey; copy the AccessKey ID and Secret, shown once.",
        ],
    },
    Service {
        matches: &["wolfram"],
        name: "Wolfram|Alpha",
        steps: &[
            "Open https://developer.wolframalpha.com/access, sign in and Get an App ID, choosing the API the server calls (the server's README names it; the LLM API or Full Results API for most).",
        ],
    },
    Service {
        matches: &["zoom"],
        name: "Zoom",
        steps: &[
            "Open https://marketplace.zoom.us/ → Develop → Build App → Server-to-Server OAuth app; add the scopes the workflow needs (e.g. meeting:read, meeting:write) and activate it.",
            "The app's App credentials page shows the Account ID, Client ID and Client Secret.",
        ],
    },
    Service {
        matches: &["thegraph", "subgraph"],
        name: "The Graph",
        steps: &[
            "Open https://thegraph.com/studio/apikeys/ , connect your wallet or sign in, and Create API Key; queries are billed after the monthly free allowance.",
        ],
    },
    Service {
        matches: &["minimax"],
        name: "MiniMax",
        steps: &[
            "Open https://www.minimax.io/platform (or https://platform.minimaxi.com for accounts in mainland China) → API Keys → Create new secret key.",
            "The API host must match where the key was made: https://api.minimax.io for the global platform, https://api.minimaxi.com for mainland China.",
        ],
    },
    Service {
        matches: &["couchbase", "cb_"],
        name: "Couchbase",
        steps: &[
            "Couchbase Capella: your cluster → Connect shows the connection string (couchbases://cb.….cloud.couchbase.com); Settings → Cluster Access → Create cluster access gives a user name and password with the bucket access needed, and Allowed IP addresses must include where the server runs.",
        ],
    },
    Service {
        matches: &["strapi"],
        name: "Strapi",
        steps: &[
            "In the Strapi admin panel: Settings → API Tokens → Create new API token, type Read-only or Custom with only the content types needed; copy it, it is shown once.",
        ],
    },
    Service {
        matches: &["coolify"],
        name: "Coolify",
        steps: &[
            "In Coolify: Keys & Tokens → API tokens → Create (read-only unless the workflow deploys); the address is your Coolify URL.",
        ],
    },
    Service {
        matches: &["ncbi", "entrez", "pubmed"],
        name: "NCBI",
        steps: &[
            "Sign in at https://account.ncbi.nlm.nih.gov/settings/ → API Key Management → Create an API Key (it raises the rate limit from 3 to 10 requests a second).",
        ],
    },
    Service {
        matches: &["moralis"],
        name: "Moralis",
        steps: &["Open https://admin.moralis.com/ → API Keys and copy the default key."],
    },
    Service {
        matches: &["postgres", "pg_", "database_url", "mysql", "mongo", "redis", "supabase_db"],
        name: DATABASE,
        steps: &[
            "Ask your database administrator (or your hosting provider's dashboard) for a connection for a dedicated user with only the privileges the workflow needs (read-only if it only reads).",
        ],
    },
];

/// Steps that produce one particular variable, whatever service's table would also match it:
/// ids, addresses and tokens that a service's key-creation steps do not yield.
struct KeySteps {
    /// Upper-case names, exact, or a suffix when written `*_SUFFIX`.
    names: &'static [&'static str],
    /// Only for a server whose id or name contains one of these (empty: any server).
    servers: &'static [&'static str],
    steps: &'static [&'static str],
}

const GOOGLE_ACCESS_TOKEN_STEPS: &[&str] = &[
    "Open https://developers.google.com/oauthplayground/ and, in Step 1, select the scopes the workflow needs (e.g. https://www.googleapis.com/auth/gmail.readonly for mail, https://www.googleapis.com/auth/spreadsheets for Sheets, https://www.googleapis.com/auth/drive.readonly for Drive).",
    "Click Authorize APIs, sign in with the Google account whose data the agent uses, then in Step 2 click Exchange authorization code for tokens.",
    "Copy the Access token (it starts with ya29.). It lasts one hour: after that the server is refused until you send a new one (for lasting access give the server a refresh token, if it accepts one, or a service-account key).",
];

const GOOGLE_OAUTH_CLIENT_STEPS: &[&str] = &[
    "Open https://console.cloud.google.com/, pick or create a project, and enable the APIs the server uses (APIs & Services → Library; e.g. Gmail API, Google Drive API, Google Calendar API, Google Sheets API).",
    "APIs & Services → OAuth consent screen: user type External (or Internal in a Workspace), fill in the app name and your e-mail, and add your own Google account under Test users.",
    "APIs & Services → Credentials → Create credentials → OAuth client ID → application type Desktop app → Create; copy the Client ID (ends in .apps.googleusercontent.com) and the Client secret (starts with GOCSPX-).",
    "The first time the server runs it opens Google's sign-in to grant access with this client; while the consent screen is in Testing, that grant lasts 7 days.",
];

const KEY_STEPS: &[KeySteps] = &[
    KeySteps {
        names: &["GAS_ENDPOINT", "*_APPS_SCRIPT_URL", "APPS_SCRIPT_URL", "GAS_URL", "*_WEBAPP_URL"],
        servers: &[],
        steps: &[
            "This is the address of your own Google Apps Script web app, which the server's README gives you the code for: open https://script.google.com/, create a project and paste that code.",
            "Click Deploy → New deployment → Select type: Web app; execute as yourself, with the access the README says; Deploy and authorize it.",
            "Copy the Web app URL (https://script.google.com/macros/s/…/exec).",
        ],
    },
    KeySteps {
        names: &[
            "GOOGLE_ACCESS_TOKEN",
            "GMAIL_ACCESS_TOKEN",
            "GOOGLE_OAUTH_ACCESS_TOKEN",
            "GOOGLE_OAUTH_TOKEN",
        ],
        servers: &[],
        steps: GOOGLE_ACCESS_TOKEN_STEPS,
    },
    KeySteps {
        names: &["GOOGLE_REFRESH_TOKEN", "GMAIL_REFRESH_TOKEN", "GOOGLE_OAUTH_REFRESH_TOKEN"],
        servers: &[],
        steps: &[
            "You need your own OAuth client first (GOOGLE_CLIENT_ID and GOOGLE_CLIENT_SECRET): https://console.cloud.google.com/ → APIs & Services → Credentials → Create credentials → OAuth client ID (Web application, authorized redirect URI https://developers.google.com/oauthplayground).",
            "Open https://developers.google.com/oauthplayground/, click the gear icon, tick Use your own OAuth credentials and enter that client's id and secret; select the scopes the workflow needs, Authorize APIs, then Exchange authorization code for tokens.",
            "Copy the Refresh token (it starts with 1//). It lasts until revoked, except that Google expires it after 7 days while the OAuth consent screen's publishing status is Testing: publish the app (In production) for a lasting one.",
        ],
    },
    KeySteps {
        names: &[
            "GOOGLE_APPLICATION_CREDENTIALS",
            "*SERVICE_ACCOUNT_KEY",
            "*SERVICE_ACCOUNT_JSON",
            "*SERVICE_ACCOUNT_FILE",
            "*SERVICE_ACCOUNT_PATH",
        ],
        servers: &[],
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project, and enable the APIs the workflow uses (APIs & Services → Library: e.g. Google Drive API, Google Sheets API).",
            "IAM & Admin → Service accounts → Create service account (no project role is needed for Drive or Sheets) → open it → Keys → Add key → Create new key → JSON; the file downloads once.",
            "Share each spreadsheet, document or folder the agent may use with the service account's e-mail (…@….iam.gserviceaccount.com), as you would with a person. The key lasts until you delete it.",
        ],
    },
    KeySteps {
        names: &["SLACK_TEAM_ID", "SLACK_WORKSPACE_ID"],
        servers: &[],
        steps: &[
            "Open Slack in a browser (https://app.slack.com/client): the address is https://app.slack.com/client/T…/…, and the part starting with T is the team id. In the desktop app: click the workspace name → Tools & settings → Workspace settings shows the same address.",
        ],
    },
    KeySteps {
        names: &["SLACK_CHANNEL_IDS", "SLACK_CHANNEL_ID", "SLACK_CHANNEL", "SLACK_DEFAULT_CHANNEL"],
        servers: &[],
        steps: &[
            "In Slack, open the channel, click its name at the top → About (or View channel details); the Channel ID (starts with C) is at the bottom. Separate several ids with commas.",
            "Invite the app's bot to each channel (/invite @your-bot) so it can read and post there.",
        ],
    },
    KeySteps {
        names: &["TELEGRAM_CHAT_ID", "CHAT_ID", "TG_CHAT_ID", "TELEGRAM_CHANNEL_ID"],
        servers: &[],
        steps: &[
            "Send any message to your bot (or add it to the group), then open https://api.telegram.org/bot<your bot token>/getUpdates in a browser.",
            "The chat id is the number at result[…].message.chat.id (groups and channels are negative, e.g. -1001234567890).",
        ],
    },
    KeySteps {
        names: &["DISCORD_CHANNEL_ID", "DISCORD_GUILD_ID", "DISCORD_SERVER_ID", "GUILD_ID"],
        servers: &[],
        steps: &[
            "In Discord open User Settings → Advanced and turn on Developer Mode.",
            "Right-click the server (for a guild id) or the channel (for a channel id) → Copy ID.",
        ],
    },
    KeySteps {
        names: &["NOTION_DATABASE_ID", "NOTION_PAGE_ID", "NOTION_PARENT_PAGE_ID", "NOTION_ROOT_PAGE_ID"],
        servers: &[],
        steps: &[
            "Open the page or database in Notion → Share → Copy link; the id is the 32 hexadecimal characters at the end of the link, before any ?v=.",
            "Share it with your integration (••• → Connections) or the server cannot see it.",
        ],
    },
    KeySteps {
        names: &["*SPREADSHEET_ID", "*SHEET_ID", "GOOGLE_SHEETS_ID"],
        servers: &[],
        steps: &[
            "Open the spreadsheet in Google Sheets; its id is the part of the address between /d/ and /edit (https://docs.google.com/spreadsheets/d/<id>/edit).",
        ],
    },
    KeySteps {
        names: &["*DRIVE_FOLDER_ID", "*FOLDER_ID"],
        servers: &["google", "drive", "gdrive"],
        steps: &[
            "Open the folder in Google Drive; its id is the last part of the address (https://drive.google.com/drive/folders/<id>).",
        ],
    },
    KeySteps {
        names: &["GOOGLE_CALENDAR_ID", "CALENDAR_ID"],
        servers: &[],
        steps: &[
            "Your main calendar's id is your Gmail address. For another calendar: Google Calendar → Settings → the calendar under Settings for my calendars → Integrate calendar → Calendar ID.",
        ],
    },
    KeySteps {
        names: &["GOOGLE_SEARCH_ENGINE_ID", "GOOGLE_CSE_ID", "GOOGLE_CX", "SEARCH_ENGINE_ID"],
        servers: &[],
        steps: &[
            "Open https://programmablesearchengine.google.com/controlpanel/all → Add, choose Search the entire web, create it, and copy the Search engine ID from its Overview page.",
        ],
    },
    KeySteps {
        names: &["AWS_REGION", "AWS_DEFAULT_REGION"],
        servers: &[],
        steps: &[
            "The AWS region your resources are in, as shown at the top right of the AWS console (e.g. us-east-1, eu-west-1).",
        ],
    },
    KeySteps {
        names: &["AZURE_TENANT_ID", "MS_TENANT_ID", "MICROSOFT_TENANT_ID", "TENANT_ID"],
        servers: &[],
        steps: &[
            "Open https://entra.microsoft.com/ → Overview: the Tenant ID is listed under Basic information (for an app registration, also on its Overview page as Directory (tenant) ID).",
        ],
    },
    KeySteps {
        names: &["CLOUDFLARE_ACCOUNT_ID", "CF_ACCOUNT_ID"],
        servers: &[],
        steps: &[
            "Open https://dash.cloudflare.com/, pick the account: the Account ID is in the address (dash.cloudflare.com/<account id>/…) and on the right of any zone's Overview page.",
        ],
    },
    KeySteps {
        names: &["GITHUB_OWNER", "GITHUB_USERNAME", "GITHUB_ORG", "GITHUB_REPO", "GITHUB_REPOSITORY"],
        servers: &[],
        steps: &[
            "The owner is the user or organisation name in the repository's address, the repo its name: https://github.com/<owner>/<repo>.",
        ],
    },
    KeySteps {
        names: &[
            "JIRA_URL",
            "JIRA_BASE_URL",
            "JIRA_HOST",
            "CONFLUENCE_URL",
            "CONFLUENCE_BASE_URL",
            "ATLASSIAN_SITE",
            "ATLASSIAN_URL",
        ],
        servers: &[],
        steps: &[
            "The address of your Atlassian site as you open it in the browser, e.g. https://your-team.atlassian.net (for Confluence Cloud add /wiki).",
        ],
    },
    KeySteps {
        names: &[
            "JIRA_EMAIL",
            "JIRA_USER_EMAIL",
            "JIRA_USERNAME",
            "CONFLUENCE_EMAIL",
            "CONFLUENCE_USERNAME",
            "ATLASSIAN_EMAIL",
        ],
        servers: &[],
        steps: &["The e-mail address you sign in to Atlassian with (it pairs with the API token)."],
    },
    KeySteps {
        names: &["TWILIO_ACCOUNT_SID"],
        servers: &[],
        steps: &[
            "Open https://console.twilio.com/: the Account SID (starts with AC) is on the dashboard under Account Info.",
        ],
    },
    KeySteps {
        names: &["TWILIO_FROM_NUMBER", "TWILIO_PHONE_NUMBER", "TWILIO_NUMBER"],
        servers: &[],
        steps: &[
            "Open https://console.twilio.com/ → Phone Numbers → Manage → Active numbers, and copy the number in E.164 form (+15551234567); buy one there if the list is empty.",
        ],
    },
    KeySteps {
        names: &["SUPABASE_URL", "SUPABASE_PROJECT_URL"],
        servers: &[],
        steps: &[
            "Open https://supabase.com/dashboard → your project → Project Settings → Data API: the Project URL (https://<ref>.supabase.co).",
        ],
    },
    KeySteps {
        names: &["ZENDESK_SUBDOMAIN"],
        servers: &[],
        steps: &["The first part of your Zendesk address: for https://acme.zendesk.com it is acme."],
    },
    KeySteps {
        names: &["*_APP_PASSWORD", "APP_PASSWORD", "APP_SPECIFIC_PASSWORD"],
        servers: &[],
        steps: &[
            "An app password is a separate password for one program, made in your mail account's security settings once 2-step verification is on; your normal password is refused over IMAP/SMTP.",
            "Gmail: https://myaccount.google.com/apppasswords → name it → copy the 16 letters. iCloud: https://account.apple.com → Sign-In and Security → App-Specific Passwords. Yahoo: Account security → Generate app password. Outlook.com: https://account.live.com/proofs/AppPassword.",
        ],
    },
    KeySteps {
        names: &["GOOGLE_MAPS_API_KEY", "MAPS_API_KEY", "GOOGLE_PLACES_API_KEY"],
        servers: &[],
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project with billing enabled, and enable the Maps APIs the server calls (APIs & Services → Library: e.g. Places API, Geocoding API, Directions API).",
            "APIs & Services → Credentials → Create credentials → API key; then restrict it to those APIs (API restrictions) and copy it (it starts with AIza).",
        ],
    },
    KeySteps {
        names: &["GOOGLE_API_KEY", "GOOGLE_SEARCH_API_KEY", "GOOGLE_CSE_API_KEY", "CSE_API_KEY"],
        servers: &["search", "cse"],
        steps: &[
            "Open https://console.cloud.google.com/, pick or create a project, and enable the Custom Search API (APIs & Services → Library).",
            "APIs & Services → Credentials → Create credentials → API key; restrict it to the Custom Search API and copy it (it starts with AIza). The search engine id comes from https://programmablesearchengine.google.com/.",
        ],
    },
    KeySteps {
        names: &["AWS_SESSION_TOKEN"],
        servers: &[],
        steps: &[
            "A session token comes only with temporary credentials, together with its own access key id and secret (not with an IAM user's long-term keys): in the AWS access portal (IAM Identity Center) pick the account and role → Access keys, and copy all three; or run `aws sts get-session-token` (or `aws sts assume-role`) with your CLI.",
            "It expires with them, after 1 to 12 hours: send all three again when the server is refused. For lasting access, leave the session token out and give the server an IAM user's access key id and secret instead.",
        ],
    },
    KeySteps {
        names: &["AWS_PROFILE"],
        servers: &[],
        steps: &[
            "The name of a profile in ~/.aws/config and ~/.aws/credentials (`aws configure --profile <name>` creates one; `default` is the unnamed one).",
            "dynamcp runs the server in a sandbox that does not see your ~/.aws folder: a profile name alone gives it no credentials, so also send AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY when the server declares them.",
        ],
    },
    KeySteps {
        names: &["BITBUCKET_USERNAME", "BITBUCKET_USER"],
        servers: &[],
        steps: &[
            "Bitbucket Cloud: your user name (not your e-mail), shown at https://bitbucket.org/account/settings/ under Username.",
            "Bitbucket Data Center / Server: the user name you sign in with.",
        ],
    },
    KeySteps {
        names: &["*_MNEMONIC", "MNEMONIC", "*_SEED_PHRASE", "SEED_PHRASE", "*_RECOVERY_PHRASE"],
        servers: &[],
        steps: &[
            "The recovery (seed) phrase of the wallet the agent uses: in the wallet app, open the account's security settings → show the secret recovery phrase.",
            "Whoever has it controls every account of that wallet: use a wallet made for this agent, funded with only what it may spend.",
        ],
    },
    KeySteps {
        names: &[
            "WALLET_PRIVATE_KEY",
            "ETH_PRIVATE_KEY",
            "EVM_PRIVATE_KEY",
            "SOLANA_PRIVATE_KEY",
            "SOL_PRIVATE_KEY",
        ],
        servers: &[],
        steps: &[
            "Export the private key of the wallet account the agent uses: MetaMask → account menu → Account details → Show private key (a 64-character hex string); Phantom → Settings → Manage accounts → Show private key (base58) for Solana.",
            "Whoever has it controls the account: use an account made for this agent, funded with only what it may spend (and the gas it needs).",
        ],
    },
    KeySteps {
        names: &["SHOPIFY_STORE_DOMAIN", "SHOPIFY_DOMAIN", "SHOPIFY_SHOP", "MYSHOPIFY_DOMAIN"],
        servers: &[],
        steps: &[
            "Your store's myshopify.com address (Settings → Domains shows it), e.g. your-store.myshopify.com.",
        ],
    },
];

fn key_steps(spec: &CredentialSpec, server: &ServerRecord) -> Option<&'static [&'static str]> {
    let key = spec.name.to_ascii_uppercase();
    let server_name = format!("{} {}", server.id, server.name).to_lowercase();
    KEY_STEPS
        .iter()
        .find(|k| {
            k.names.iter().any(|n| match n.strip_prefix('*') {
                Some(suffix) => key.ends_with(suffix),
                None => key == *n,
            }) && (k.servers.is_empty() || k.servers.iter().any(|s| server_name.contains(s)))
        })
        .map(|k| k.steps)
}

/// Whether `text` names `fragment`: a whole word of it for a short fragment ("gh", "aws": never
/// inside "flight" or "laws"), anywhere for a longer one ("spreadsheet" in "googlespreadsheets").
fn names(text: &str, fragment: &str) -> bool {
    // "graph!": the whole word only (not "thegraph").
    let (fragment, whole) = match fragment.strip_suffix('!') {
        Some(word) => (word, true),
        None => (fragment, false),
    };
    let fragment = fragment.trim_matches(['_', '-']);
    if fragment.len() >= 5 && !whole {
        return text.contains(fragment);
    }
    let words: Vec<&str> = text.split(|c: char| !c.is_ascii_alphanumeric()).collect();
    if fragment.contains(' ') {
        return text.contains(fragment);
    }
    words.contains(&fragment)
}

/// A server's id and name as words that can name a service: without the registry's namespace
/// (`io.github.someone/…` names where the server is published, not GitHub).
fn server_words(server: &ServerRecord) -> String {
    format!("{} {}", server.id, server.name)
        .to_lowercase()
        .replace("io.github.", " ")
        .replace("io-github-", " ")
}

fn service_for(spec: &CredentialSpec, server: &ServerRecord) -> Option<&'static Service> {
    let key = spec.name.to_lowercase();
    let name = server_words(server);
    let find = |text: &str| SERVICES.iter().find(|s| s.matches.iter().any(|m| names(text, m)));
    match find(&key) {
        // A generic Google key (GOOGLE_ACCESS_TOKEN) of a Gmail or Sheets server: that product's steps.
        Some(s) if s.name == GOOGLE_CLOUD => find(&name).filter(|n| n.name.contains("(Google)")).or(Some(s)),
        Some(s) => Some(s),
        None => find(&name),
    }
}

/// Services whose variables only a server for that very product reads: a Slack token declared
/// by a browser server is a catalog error, not a need. (Model providers, clouds and databases
/// are left out: servers of every kind use them.)
const APPS: &[&str] = &[
    "Slack",
    "GitHub",
    "GitLab",
    "Notion",
    "Linear",
    "Discord",
    "Telegram",
    "Stripe",
    "Twilio",
    "Airtable",
    "HubSpot",
    "Todoist",
    "Trello",
    "Asana",
    "Figma",
    "Sentry",
    "Spotify",
    "X (Twitter)",
    "Reddit",
    "Shopify",
    "Zendesk",
];

/// The app a variable belongs to when the server's own text never mentions it (its id, name,
/// description and tools): `Some("Slack")` for `SLACK_BOT_TOKEN` on a Playwright
/// server. Such a variable is not asked.
pub fn foreign_app(spec: &CredentialSpec, server: &ServerRecord) -> Option<&'static str> {
    let key = spec.name.to_lowercase();
    let service = SERVICES.iter().find(|s| s.matches.iter().any(|m| names(&key, m)))?;
    if !APPS.contains(&service.name) {
        return None;
    }
    // Where the code lives (a github.com repository) is not what it serves: id, name,
    // description and tools only.
    let mut text = format!("{} {}", server_words(server), server.description).to_lowercase();
    for tool in &server.tools {
        text.push(' ');
        text.push_str(&tool.name.to_lowercase());
        text.push(' ');
        text.push_str(&tool.description.to_lowercase());
    }
    let mentioned = service.matches.iter().any(|m| names(&text, m));
    (!mentioned).then_some(service.name)
}

/// Whether the user is asked for `spec` of `server`: its requirement says so, and it is not
/// another product's variable ([`foreign_app`]).
pub fn is_asked(spec: &CredentialSpec, server: &ServerRecord) -> bool {
    requirements::classify(spec).asked() && foreign_app(spec, server).is_none()
}

/// The record's own description when it says where the value comes from (it has a link), which
/// beats any table: it names the very console, product and scopes of this server.
fn described_source(spec: &CredentialSpec) -> Option<String> {
    let d = spec.description.trim();
    // A bare address ("http://192.168.4.44:8000") is the author's example, not a source.
    let link = (d.contains("http://") || d.contains("https://")) && d.contains(' ');
    (link && !requirements::is_placeholder_value(d.split_whitespace().next().unwrap_or("")))
        .then(|| d.to_owned())
}

/// What the value looks like, from its shape.
fn format_hint(spec: &CredentialSpec, shape: Shape) -> String {
    match shape {
        Shape::File => "Format: upload the file itself (for a service account, the downloaded JSON key); dynamcp \
                        stores it encrypted and gives the server its path."
            .to_owned(),
        Shape::ConnectionString => {
            let text = format!("{} {}", spec.name, spec.description).to_lowercase();
            let example = if text.contains("mongo") {
                "mongodb+srv://user:password@cluster.example.net/dbname"
            } else if text.contains("mysql") || text.contains("mariadb") {
                "mysql://user:password@host:3306/dbname"
            } else if text.contains("redis") {
                "redis://user:password@host:6379/0"
            } else {
                "postgresql://user:password@host:5432/dbname"
            };
            format!("Format: a connection URL such as {example}. It is stored encrypted.")
        }
        Shape::Url if requirements::host_only(spec) => {
            "Format: the host name alone, e.g. db.example.com or 192.168.1.20, with no https:// and no path."
                .to_owned()
        }
        Shape::Url => "Format: the full address, e.g. https://example.com, with no trailing slash.".to_owned(),
        Shape::Identifier => "Format: the identifier exactly as shown (no quotes, no spaces).".to_owned(),
        Shape::Account => "Format: the account's e-mail address or user name.".to_owned(),
        Shape::Flag => "Format: true or false.".to_owned(),
        Shape::Number => "Format: a whole number.".to_owned(),
        Shape::Path => "Format: a path inside the server's sandbox; dynamcp gives it a folder of its own.".to_owned(),
        Shape::Text if !spec.secret => "Format: a plain text value.".to_owned(),
        _ if ["MNEMONIC", "SEED_PHRASE", "RECOVERY_PHRASE"].iter().any(|w| spec.name.to_ascii_uppercase().contains(w)) => {
            "Format: the 12 or 24 words in order, separated by single spaces. It is stored encrypted and only given to \
             this server."
                .to_owned()
        }
        _ if wallet_key(spec) => "Format: the key exactly as the wallet shows it (hex, with or without 0x, for EVM \
                                  chains; base58 for Solana). It is stored encrypted and only given to this server."
            .to_owned(),
        _ if spec.name.to_ascii_uppercase().contains("PRIVATE_KEY") => {
            "Format: the whole key, including its -----BEGIN and -----END lines (or the hex string, for a wallet key). \
             It is stored encrypted and only given to this server."
                .to_owned()
        }
        _ => "Format: paste the value exactly as shown, with no quotes or spaces. It is stored encrypted and only \
              given to this server."
            .to_owned(),
    }
}

/// A blockchain wallet's key rather than a PEM key: named so, or described as one.
fn wallet_key(spec: &CredentialSpec) -> bool {
    let text = format!("{} {}", spec.name, spec.description).to_lowercase();
    // Short words whole ("eth" is inside "method", "crypto" inside "cryptographic").
    text.contains("private_key")
        && ["wallet", "eth!", "ethereum", "evm!", "solana", "sol!", "blockchain", "web3", "crypto!"]
            .iter()
            .any(|w| names(&text, w))
}

/// Whether a service's steps yield this very value: they name what the variable holds
/// (`ZOOM_ACCOUNT_ID` → "account id", `LANGFUSE_HOST` → "host", an address for a URL).
fn steps_name_value(service: &Service, spec: &CredentialSpec) -> bool {
    let key = spec.name.to_lowercase();
    let rest: Vec<&str> = key
        .split('_')
        .filter(|w| !w.is_empty() && *w != "mcp" && !service.matches.iter().any(|m| names(w, m)))
        .map(|w| match w {
            "username" => "user name",
            "userid" => "user id",
            other => other,
        })
        .collect();
    if rest.is_empty() {
        return false;
    }
    let steps = service.steps.join(" ").to_lowercase();
    let phrase = rest.join(" ");
    let address =
        matches!(rest.last().copied(), Some("url" | "host" | "endpoint" | "uri" | "server" | "address"));
    steps.contains(&phrase) || (address && (steps.contains("address") || steps.contains("host")))
}

/// A description that is not a placeholder: the record's own when it says something, else one
/// made from the service, the variable and what it is.
pub fn description(spec: &CredentialSpec, server: &ServerRecord) -> String {
    let own = spec.description.trim();
    if !is_placeholder(own)
        && requirements::stated_default(own).is_none()
        && !own.eq_ignore_ascii_case(&spec.name)
    {
        return own.to_owned();
    }
    let what = match requirements::classify(spec).kind_label() {
        "file" => "file",
        "secret" => "credential",
        _ => "setting",
    };
    match service_for(spec, server) {
        Some(s) => format!("{} {what} {} needs ({}).", s.name, server.name, spec.name),
        None => format!("The {what} {} reads from {}.", server.name, spec.name),
    }
}

/// Placeholder descriptions copied from README templates: "YOUR_API_KEY", "your-token-here", "",
/// or a bare example value ("T01234567").
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
        || t.starts_with('[')
        || !t.contains(' ')
}

/// Where the server's own documentation is, for values no table knows.
fn readme(server: &ServerRecord) -> Option<&str> {
    server.repository.as_deref().or(server.homepage.as_deref())
}

/// Steps that produce the value: the record's own, else steps for this very variable, else the
/// service's steps when they yield it (a key or a token), else what the value is and the
/// server's README.
fn steps_for(spec: &CredentialSpec, server: &ServerRecord, shape: Shape) -> Vec<String> {
    let own: Vec<String> =
        spec.instructions.iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect();
    if !own.is_empty() {
        return own;
    }
    if let Some(steps) = key_steps(spec, server) {
        return steps.iter().map(|s| (*s).to_owned()).collect();
    }
    if let Some(source) = described_source(spec) {
        return vec![format!("{} (from {}'s own documentation)", source.trim_end_matches('.'), server.name)];
    }
    let service = service_for(spec, server);
    let at_readme = |what: String| match readme(server) {
        Some(url) => format!(
            "{what} dynamcp has no steps of its own for this value: {}'s README ({url}) is where its author describes it.",
            server.name
        ),
        None => what,
    };
    let mut steps = Vec::new();
    match shape {
        Shape::MadeUp => steps.push(
            "Nobody issues this value: choose a long random string yourself (e.g. the output of `openssl rand -hex 32`). \
             The server accepts only callers that present it, so keep it private."
                .to_owned(),
        ),
        Shape::AccessToken if service.is_some_and(|s| s.name.contains("Google")) => {
            steps.extend(GOOGLE_ACCESS_TOKEN_STEPS.iter().map(|s| (*s).to_owned()));
        }
        // A database's steps give a connection, not an API key the server happens to read.
        Shape::Token if service.is_some_and(|s| s.name == DATABASE) => {
            steps.push(at_readme(format!("{} is read by {}.", spec.name, server.name)));
        }
        Shape::OauthClient if service.is_some_and(|s| s.name.contains("Google")) => {
            steps.extend(GOOGLE_OAUTH_CLIENT_STEPS.iter().map(|s| (*s).to_owned()));
        }
        Shape::Token | Shape::OauthClient | Shape::AccessToken | Shape::RefreshToken | Shape::File
            if service.is_some() =>
        {
            steps.extend(service.into_iter().flat_map(|s| s.steps.iter().map(|s| (*s).to_owned())));
            if shape == Shape::AccessToken {
                steps.push(
                    "An OAuth access token expires (often within an hour); send a new one when the server reports it \
                     is refused."
                        .to_owned(),
                );
            }
        }
        Shape::ConnectionString if service.is_some() => {
            steps.extend(service.into_iter().flat_map(|s| s.steps.iter().map(|s| (*s).to_owned())));
        }
        Shape::Url | Shape::Identifier | Shape::Account | Shape::Text
            if service.is_some_and(|s| steps_name_value(s, spec)) =>
        {
            steps.extend(service.into_iter().flat_map(|s| s.steps.iter().map(|s| (*s).to_owned())));
        }
        Shape::Url if requirements::host_only(spec) => steps.push(at_readme(match service {
            Some(s) => format!("The host name of your own {} server or instance (no https://, no path).", s.name),
            None => format!("The host name of the server {} connects to (no https://, no path).", server.name),
        })),
        Shape::Url => steps.push(at_readme(match service {
            Some(s) => format!("The address of your own {} instance, site or deployment, as you open it in a browser.", s.name),
            None => format!("The address of the service {} connects to (your own instance or deployment).", server.name),
        })),
        Shape::Identifier => steps.push(at_readme(match service {
            Some(s) => format!("The id of the {} item the workflow works on ({}), as {} shows it.", s.name, spec.name, s.name),
            None => format!("The id {} reads from {}, as the service shows it.", server.name, spec.name),
        })),
        Shape::Account => steps.push(match service {
            Some(s) => format!("The e-mail address or user name you sign in to {} with.", s.name),
            None => format!("The e-mail address or user name of the account {} uses.", server.name),
        }),
        Shape::Flag => steps.push(at_readme(format!("true to turn on what {} controls, false to leave it off.", spec.name))),
        _ => {
            steps.push(at_readme(format!("{} is read by {}.", spec.name, server.name)));
            let upper = spec.name.to_ascii_uppercase();
            if shape == Shape::Token && (upper.contains("KEY") || upper.contains("TOKEN")) && !upper.contains("PRIVATE") {
                steps.push("Where the service lets you, create it with only the access the workflow needs.".to_owned());
            }
        }
    }
    steps
}

/// Numbered steps to obtain the value, then its format.
pub fn instructions(spec: &CredentialSpec, server: &ServerRecord) -> String {
    let shape = requirements::shape(spec);
    let mut steps = steps_for(spec, server, shape);
    steps.push(format_hint(spec, shape));
    steps.iter().enumerate().map(|(i, s)| format!("{}. {s}", i + 1)).collect::<Vec<_>>().join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::requirements::classify;

    fn server(id: &str, name: &str) -> ServerRecord {
        serde_json::from_value(serde_json::json!({"id": id, "name": name, "repository": format!("https://github.com/someone/{id}")}))
            .unwrap()
    }

    fn spec(name: &str, description: &str, secret: bool) -> CredentialSpec {
        CredentialSpec {
            name: name.into(),
            description: description.into(),
            required: true,
            secret,
            kind: crate::catalog::import::credential_kind(name, description),
            instructions: vec![],
        }
    }

    /// The variables the most requested services' servers ask for, each with what its steps must
    /// say (where the value comes from) and must not say (another value's steps).
    /// (server id, variable, catalog description, kind, must contain, must not contain)
    type Row = (
        &'static str,
        &'static str,
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static [&'static str],
    );

    #[rustfmt::skip]
    const TABLE: &[Row] = &[
        ("gmail-mcp-2", "GOOGLE_ACCESS_TOKEN", "Google OAuth access token with Gmail scopes.", "secret", &["oauthplayground", "one hour", "ya29."], &["OAuth client ID (type: Desktop app)"]),
        ("gmail-mcp-3", "GAS_ENDPOINT", "YOUR_DEPLOYMENT_URL", "setting", &["script.google.com", "Web app", "/exec"], &["OAuth", "console.cloud.google.com"]),
        ("gmail-mcp-3", "VALID_API_KEY", "YOUR_API_KEY", "secret", &["random string", "openssl rand"], &["console.cloud.google.com"]),
        ("google-sheets-mcp", "GOOGLE_CLIENT_ID", "Google OAuth client ID.", "setting", &["console.cloud.google.com", "OAuth client ID"], &[]),
        ("google-sheets-mcp", "GOOGLE_REFRESH_TOKEN", "", "secret", &["oauthplayground", "Use your own OAuth credentials", "7 days"], &[]),
        ("google-sheets-mcp", "SPREADSHEET_ID", "", "setting", &["/d/", "/edit"], &["OAuth"]),
        ("google-drive-mcp", "GOOGLE_APPLICATION_CREDENTIALS", "/path/to/credentials.json", "file", &["Service accounts", "JSON", "upload the file"], &[]),
        ("google-calendar-mcp", "GOOGLE_CALENDAR_ID", "your_calendar_id", "setting", &["Integrate calendar"], &["OAuth client"]),
        ("slack", "SLACK_BOT_TOKEN", "xoxb-your-bot-token", "secret", &["api.slack.com/apps", "chat:write", "xoxb-"], &[]),
        ("slack", "SLACK_TEAM_ID", "T01234567", "setting", &["app.slack.com/client", "starting with T"], &["Create New App"]),
        ("slack", "SLACK_CHANNEL_IDS", "C01234567, C76543210", "optional", &["Channel ID", "starts with C"], &["Create New App"]),
        ("github", "GITHUB_PERSONAL_ACCESS_TOKEN", "Your GitHub personal access token", "secret", &["personal-access-tokens", "github_pat_"], &[]),
        ("github", "GITHUB_OWNER", "Your GitHub username", "setting", &["github.com/<owner>/<repo>"], &["personal-access-tokens"]),
        ("gitlab", "GITLAB_PERSONAL_ACCESS_TOKEN", "your_token_here", "secret", &["personal_access_tokens", "glpat-"], &[]),
        ("notion-mcp-server", "NOTION_TOKEN", "", "secret", &["notion.so/profile/integrations", "ntn_"], &[]),
        ("notion-mcp-server", "NOTION_DATABASE_ID", "", "setting", &["32 hexadecimal"], &["New integration"]),
        ("jira-mcp", "JIRA_API_TOKEN", "Your Jira API token", "secret", &["id.atlassian.com/manage-profile/security/api-tokens"], &[]),
        ("jira-mcp", "JIRA_URL", "https://your-domain.atlassian.net", "setting", &["atlassian.net"], &["api-tokens"]),
        ("jira-mcp", "JIRA_USER_EMAIL", "your_email", "setting", &["e-mail address you sign in"], &["api-tokens"]),
        ("linear-mcp", "LINEAR_API_KEY", "your_linear_api_key_here", "secret", &["lin_api_"], &[]),
        ("discord-mcp", "DISCORD_TOKEN", "Your Discord bot token", "secret", &["discord.com/developers/applications", "Reset Token"], &[]),
        ("discord-mcp", "DISCORD_CHANNEL_ID", "", "setting", &["Developer Mode", "Copy ID"], &["Reset Token"]),
        ("telegram-mcp", "TELEGRAM_BOT_TOKEN", "", "secret", &["@BotFather", "/newbot"], &[]),
        ("telegram-mcp", "TELEGRAM_CHAT_ID", "your_chat_id_here", "setting", &["getUpdates", "chat.id"], &["/newbot"]),
        ("openai-mcp", "OPENAI_API_KEY", "your-openai-api-key", "secret", &["platform.openai.com/api-keys"], &[]),
        ("brave-search", "BRAVE_API_KEY", "YOUR API KEY HERE", "secret", &["api-dashboard.search.brave.com"], &[]),
        ("tavily-mcp", "TAVILY_API_KEY", "your-tavily-api-key", "secret", &["app.tavily.com", "tvly-"], &[]),
        ("exa-mcp", "EXA_API_KEY", "", "secret", &["dashboard.exa.ai"], &[]),
        ("firecrawl-mcp", "FIRECRAWL_API_KEY", "YOUR-API-KEY", "secret", &["firecrawl.dev", "fc-"], &[]),
        ("perplexity-mcp", "PERPLEXITY_API_KEY", "your-perplexity-key", "secret", &["perplexity.ai/settings/api"], &[]),
        ("stripe-mcp", "STRIPE_SECRET_KEY", "", "secret", &["dashboard.stripe.com/apikeys", "restricted key"], &[]),
        ("twilio-mcp", "TWILIO_ACCOUNT_SID", "", "setting", &["console.twilio.com", "starts with AC"], &[]),
        ("twilio-mcp", "TWILIO_AUTH_TOKEN", "", "secret", &["console.twilio.com", "Auth Token"], &[]),
        ("twilio-mcp", "TWILIO_FROM_NUMBER", "", "setting", &["Active numbers", "E.164"], &[]),
        ("aws-mcp", "AWS_ACCESS_KEY_ID", "YOUR_AWS_ACCESS_KEY_ID", "secret", &["Create access key", "AKIA"], &[]),
        ("aws-mcp", "AWS_SECRET_ACCESS_KEY", "YOUR_AWS_SECRET_ACCESS_KEY", "secret", &["Create access key"], &[]),
        ("aws-mcp", "AWS_REGION", "YOUR_AWS_REGION", "setting", &["us-east-1"], &["Create access key"]),
        ("outlook-mcp", "MS_CLIENT_SECRET", "", "secret", &["entra.microsoft.com", "Mail.Read"], &[]),
        ("outlook-mcp", "AZURE_TENANT_ID", "Azure Tenant ID", "setting", &["Tenant ID"], &["New client secret"]),
        ("cloudflare-mcp", "CLOUDFLARE_API_TOKEN", "", "secret", &["dash.cloudflare.com/profile/api-tokens"], &[]),
        ("cloudflare-mcp", "CLOUDFLARE_ACCOUNT_ID", "", "setting", &["Account ID"], &["Create Token"]),
        ("airtable-mcp-server", "AIRTABLE_API_KEY", "pat123.abc123", "secret", &["airtable.com/create/tokens", "data.records:read"], &[]),
        ("hubspot-mcp", "HUBSPOT_ACCESS_TOKEN", "", "secret", &["Private Apps", "pat-"], &[]),
        ("todoist-mcp", "TODOIST_API_TOKEN", "your_api_token_here", "secret", &["Integrations", "Developer"], &[]),
        ("trello-mcp", "TRELLO_API_KEY", "", "secret", &["trello.com/power-ups/admin"], &[]),
        ("asana-mcp", "ASANA_ACCESS_TOKEN", "", "secret", &["app.asana.com/0/my-apps"], &[]),
        ("figma-mcp", "FIGMA_API_KEY", "YOUR_FIGMA_API_KEY", "secret", &["Personal access tokens", "figd_"], &[]),
        ("sentry-mcp", "SENTRY_AUTH_TOKEN", "", "secret", &["Auth Tokens", "event:read"], &[]),
        ("supabase-mcp", "SUPABASE_ACCESS_TOKEN", "", "secret", &["supabase.com/dashboard/account/tokens", "sbp_"], &[]),
        ("supabase-mcp", "SUPABASE_URL", "Your Supabase project URL", "setting", &["supabase.co"], &["sbp_"]),
        ("spotify-mcp", "SPOTIFY_CLIENT_ID", "", "setting", &["developer.spotify.com/dashboard"], &[]),
        ("shopify-mcp", "SHOPIFY_ACCESS_TOKEN", "", "secret", &["Develop apps", "shpat_"], &[]),
        ("postgres-mcp", "DATABASE_URL", "", "secret", &["postgresql://user:password@host:5432/dbname", "only the privileges"], &[]),
        ("hubspot-mcp", "HUBSPOT_PORTAL_ID", "", "setting", &["README", "github.com/someone/hubspot-mcp"], &["Private Apps"]),
        ("zoom-mcp", "ZOOM_ACCOUNT_ID", "", "setting", &["Server-to-Server OAuth", "Account ID"], &[]),
        ("home-assistant-mcp", "HOME_ASSISTANT_TOKEN", "", "secret", &["Long-lived access tokens"], &[]),
        ("hass-mcp", "HA_URL", "", "setting", &["homeassistant.local:8123"], &[]),
        ("langfuse-mcp", "LANGFUSE_SECRET_KEY", "", "secret", &["sk-lf-"], &[]),
        ("langfuse-mcp", "LANGFUSE_HOST", "", "setting", &["cloud.langfuse.com"], &[]),
        ("pancakeswap-mcp", "THEGRAPH_API_KEY", "", "secret", &["thegraph.com/studio"], &["entra.microsoft.com"]),
        ("outlook-mcp", "MS_GRAPH_CLIENT_ID", "", "setting", &["entra.microsoft.com"], &[]),
        ("aws-mcp", "AWS_SESSION_TOKEN", "", "secret", &["temporary credentials", "expires"], &["Create access key"]),
        ("bedrock-mcp", "AWS_PROFILE", "", "setting", &["~/.aws/config", "sandbox"], &[]),
        ("bitbucket-mcp", "BITBUCKET_USERNAME", "", "setting", &["not your e-mail"], &[]),
        ("osmosis-mcp", "OSMOSIS_MNEMONIC", "", "secret", &["recovery (seed) phrase", "separated by single spaces"], &["no quotes or spaces"]),
        ("uniswap-mcp", "WALLET_PRIVATE_KEY", "", "secret", &["Show private key", "hex"], &["-----BEGIN"]),
        ("github-app-mcp", "GITHUB_APP_PRIVATE_KEY", "The app's private key for the authentication method", "secret", &["-----BEGIN"], &["base58"]),
        ("zotero-mcp", "ZOTERO_USER_ID", "", "setting", &["userID for use in API calls"], &[]),
        ("sanity-mcp", "SANITY_PROJECT_ID", "", "setting", &["project id is shown"], &[]),
        ("kagi-mcp", "KAGI_API_KEY", "", "secret", &["kagi.com/settings?p=api", "closed beta"], &[]),
        ("obsidian-mcp", "OBSIDIAN_API_KEY", "", "secret", &["Local REST API"], &[]),
        ("neo4j-mcp", "NEO4J_PASSWORD", "", "secret", &["console.neo4j.io"], &[]),
        ("clickhouse-mcp", "CLICKHOUSE_PASSWORD", "", "secret", &["console.clickhouse.cloud"], &[]),
        ("shodan-mcp", "SHODAN_API_KEY", "", "secret", &["account.shodan.io"], &[]),
        ("wolfram-mcp", "WOLFRAM_API_KEY", "", "secret", &["App ID"], &[]),
        ("imap-mcp", "GMAIL_APP_PASSWORD", "", "secret", &["myaccount.google.com/apppasswords"], &["OAuth client"]),
        ("google-maps-mcp", "GOOGLE_MAPS_API_KEY", "", "secret", &["Places API", "API key"], &["OAuth client ID"]),
        ("google-search-mcp", "GOOGLE_API_KEY", "", "secret", &["Custom Search API"], &["OAuth client ID"]),
        ("asterisk-mcp", "PHONE_API_URL", "http://192.168.4.44:8000", "setting", &["address"], &["192.168.4.44"]),
        // A database driver takes a bare host name; a scheme breaks the connection.
        ("mysql-mcp-server", "MYSQL_HOST", "", "setting", &["host name alone"], &["https://example.com"]),
        ("shopify-mcp", "MYSHOPIFY_DOMAIN", "", "setting", &["host name alone"], &["https://example.com"]),
    ];

    #[test]
    fn the_most_requested_services_get_steps_that_produce_each_value() {
        let mut services = BTreeSet::new();
        let mut wrong = Vec::new();
        for (id, key, description, kind, must, must_not) in TABLE {
            let record = server(id, id);
            let spec = spec(key, description, false);
            let requirement = classify(&spec);
            let (asked, label) = match *kind {
                "optional" => (false, "setting"),
                other => (true, other),
            };
            if requirement.asked() != asked || requirement.kind_label() != label {
                wrong.push(format!("{id} {key}: {requirement:?}, expected asked as {kind}"));
            }
            let text = instructions(&spec, &record);
            for m in must.iter().filter(|m| !text.contains(**m)) {
                wrong.push(format!("{id} {key}: expected {m:?} in\n{text}"));
            }
            for m in must_not.iter().filter(|m| text.contains(**m)) {
                wrong.push(format!("{id} {key}: did not expect {m:?} in\n{text}"));
            }
            services.insert(id.split(['-', '_']).next().unwrap_or(id));
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
        assert!(services.len() >= 30, "{} services: {services:?}", services.len());
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
        assert_eq!(
            description(&spec("SLACK_TEAM_ID", "T01234567", false), &server("slack", "Slack")),
            "Slack setting Slack needs (SLACK_TEAM_ID).",
            "an example value is not a description"
        );
        s.instructions = vec!["Deploy the Apps Script and copy its key.".into()];
        let text = instructions(&s, &gmail);
        assert!(text.starts_with("1. Deploy the Apps Script"), "{text}");
    }

    #[test]
    fn a_service_is_named_by_whole_words_not_by_letters_inside_others() {
        // "gh" is inside "flight" and "playwright"; neither is GitHub.
        let flights = server("flightradar24-mcp", "Flightradar24");
        let text = instructions(&spec("FR24_API_KEY", "", true), &flights);
        assert!(!text.contains("personal-access-tokens"), "{text}");
        let playwright = server("playwright-mcp-2", "Playwright");
        assert!(
            !instructions(&spec("AMAP_MAPS_API_KEY", "", true), &playwright)
                .contains("personal-access-tokens")
        );
        assert!(
            instructions(&spec("GH_TOKEN", "", true), &server("gh-mcp", "gh"))
                .contains("personal-access-tokens")
        );
        // A description with a link says where this very value comes from.
        let airtable = "Airtable personal access token. Create at https://airtable.com/create/tokens/new with scopes: schema.bases:read, data.records:read.";
        let text = instructions(
            &spec("AIRTABLE_API_KEY", airtable, true),
            &server("airtable-mcp-server", "Airtable"),
        );
        assert!(
            text.starts_with(
                "1. Airtable personal access token. Create at https://airtable.com/create/tokens/new"
            ),
            "{text}"
        );
        // A Google OAuth client is a Desktop-app client with a consent screen and a test user.
        let calendar = instructions(
            &spec("GOOGLE_CLIENT_ID", "", false),
            &server("google-calendar-mcp", "Google Calendar"),
        );
        assert!(calendar.contains("Test users") && calendar.contains("Desktop app"), "{calendar}");
    }

    #[test]
    fn another_product_s_variables_are_recognised() {
        let mut playwright = server("playwright-mcp-2", "Playwright");
        playwright.description = "Browser automation with Playwright".into();
        assert_eq!(foreign_app(&spec("SLACK_BOT_TOKEN", "", true), &playwright), Some("Slack"));
        assert_eq!(
            foreign_app(&spec("GITHUB_PERSONAL_ACCESS_TOKEN", "", true), &playwright),
            Some("GitHub"),
            "its repository on github.com is not GitHub use"
        );
        assert_eq!(
            foreign_app(&spec("OPENAI_API_KEY", "", true), &playwright),
            None,
            "model providers serve every kind"
        );
        let slack = server("slack-mcp-server", "Slack MCP Server");
        assert_eq!(foreign_app(&spec("SLACK_BOT_TOKEN", "", true), &slack), None);
        let ticktick = server(
            "io-github-alexarevalo9-ticktick-mcp-server",
            "io.github.alexarevalo9/ticktick-mcp-server",
        );
        assert!(
            !instructions(&spec("TICKTICK_CLIENT_ID", "", false), &ticktick)
                .contains("personal-access-tokens")
        );
        let redis = server("redis", "Redis");
        assert!(!instructions(&spec("API_KEY", "", true), &redis).contains("database administrator"));
        assert!(
            instructions(
                &spec("MDB_MCP_CONNECTION_STRING", "MongoDB connection string", true),
                &server("mongodb", "MongoDB")
            )
            .contains("mongodb+srv://")
        );
    }

    #[test]
    fn unknown_values_point_to_the_server_s_readme() {
        let record = server("acme-mcp", "Acme");
        let text = instructions(&spec("ACME_WIDGET", "", false), &record);
        assert!(text.contains("https://github.com/someone/acme-mcp"), "{text}");
        assert!(!text.contains("settings or developer console"), "{text}");
    }
}
