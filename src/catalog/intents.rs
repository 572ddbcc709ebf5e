//! Everyday phrasings mapped to the words server catalogs use: users say "share price", "text
//! me", "my inbox"; servers say "stock quote", "SMS", "email". A need that contains a phrase is
//! searched with the catalog's words added, lexically and by meaning.
//!
//! The table is general workflow vocabulary, grouped by domain, never a rule for one request.
//! `dynamcp eval --ablation` reports selection quality with and without it: it helps most on the
//! sets its entries were learnt from and little on blind ones (eval/README.md), so it is a patch
//! for known phrasings, not the way to generalise.

use super::text::words;

/// `(phrases, catalog words)`: a need containing any phrase (as whole words) gets the words.
/// Grouped by domain; each entry is a way people ask that server descriptions do not use.
const INTENTS: &[(&[&str], &str)] = &[
    // Money and markets.
    (
        &["share price", "stock price", "stock", "stocks", "shares", "ticker", "portfolio"],
        "stock market price quote",
    ),
    (
        &["bitcoin", "btc", "ethereum", "eth", "solana", "sol", "crypto", "coin", "token price"],
        "cryptocurrency crypto price",
    ),
    (
        &[
            "exchange rate",
            "exchange rates",
            "currency",
            "currencies",
            "forex",
            "usd",
            "eur",
            "gbp",
            "yen",
            "euros",
        ],
        "currency exchange rate conversion",
    ),
    (
        &[
            "10 k",
            "10 q",
            "8 k",
            "annual report",
            "quarterly filings",
            "filings",
            "sec filing",
            "sec filings",
        ],
        "sec edgar company filings",
    ),
    (
        &["unemployment", "inflation", "gdp", "cpi", "interest rates", "economic indicators", "recession"],
        "economic data indicators fred",
    ),
    (
        &[
            "tip",
            "split the bill",
            "arithmetic",
            "calculator",
            "do the math",
            "percentage",
            "bmi",
            "calculate",
        ],
        "calculator math arithmetic",
    ),
    // Dates and times: asked as a question about a place or a day, never as "a time server".
    (
        &[
            "what time",
            "time is it",
            "the time in",
            "local time",
            "time zone",
            "timezone",
            "time difference",
            "what day",
            "what date",
            "today s date",
            "day of the week",
        ],
        "current time timezone date clock",
    ),
    // Messages and voice.
    (&["inbox", "unread", "emails", "mailbox"], "email"),
    // Products of a suite are served by the suite's servers, which name the suite, not them.
    (&["outlook", "onedrive", "sharepoint", "microsoft teams"], "microsoft 365 graph"),
    (&["text me", "sms", "text message", "send a text"], "sms text message"),
    (&["on teams", "in teams", "teams channel", "ms teams"], "microsoft teams"),
    (
        &[
            "out loud",
            "aloud",
            "read it to me",
            "audio version",
            "into audio",
            "narrate",
            "narration",
            "voiceover",
        ],
        "text to speech tts audio voice",
    ),
    (
        &[
            "transcribe",
            "transcribing",
            "transcription",
            "dictation",
            "voice memo",
            "voice memos",
            "audio file",
        ],
        "speech to text transcription audio",
    ),
    // Time and places.
    (&["schedule", "agenda", "appointment", "appointments"], "calendar events"),
    (
        &["drive to", "driving", "directions", "commute", "travel time", "how long will it take"],
        "maps directions route travel time",
    ),
    (
        &["snow", "rain", "raining", "umbrella", "forecast", "storm", "sunny", "temperature outside"],
        "weather forecast",
    ),
    (
        &["near me", "nearby", "restaurant", "restaurants", "cafe", "cafes", "brunch spot", "coffee shop"],
        "places search local business reviews",
    ),
    (&["flight", "flights", "airfare", "plane tickets"], "flights search airline"),
    (&["hotel", "hotels", "accommodation", "place to stay"], "hotel search accommodation"),
    (&["concert", "concerts", "gig", "gigs", "live music"], "events concerts tickets"),
    (&["parcel", "tracking number", "shipment", "delivery status"], "package tracking shipping"),
    // Home and health.
    (
        &["lock", "unlock", "unlocked", "thermostat", "lights", "garage door", "smart plug"],
        "smart home home assistant devices",
    ),
    (
        &["sleep score", "heart rate", "workout", "workouts", "step count", "fitness"],
        "fitness health tracker sleep activity",
    ),
    (&["recipe", "recipes", "meal plan", "dinner ideas"], "recipes cooking food"),
    (&["movie", "movies", "film", "films", "tv show", "tv shows"], "movies tv database"),
    // Files and documents (a path or a file name also implies these: see `names_local_file`).
    (
        &[
            "folder",
            "markdown file",
            "markdown files",
            "local file",
            "local files",
            "text file",
            "directory",
            "documents folder",
            "downloads folder",
            "on my desktop",
            "to my desktop",
        ],
        LOCAL_FILES,
    ),
    (&["xlsx", "xls", "workbook", "excel file", "spreadsheet file"], "excel xlsx spreadsheet file"),
    (&["docx", "word document", "word doc"], "word docx document"),
    (&["pdf", "pdfs"], "pdf document"),
    (
        &[
            "ocr",
            "text off",
            "text from the photo",
            "text from the image",
            "scanned",
            "photo of a",
            "handwritten",
        ],
        "ocr image text recognition",
    ),
    (&["remember", "keep track", "don t forget", "still know", "next time"], "memory knowledge graph"),
    // The web and research.
    (&["fill out", "submit", "click", "log into", "login", "portal"], "browser automation"),
    // A shop's own page: only a browser (or a page fetcher) reads its prices.
    (
        &[
            "at amazon",
            "on amazon",
            "amazon price",
            "amazon prices",
            "on ebay",
            "at walmart",
            "on the website",
            "their website",
            "the site",
        ],
        "web browser fetch page",
    ),
    (
        &["http", "https", "this article", "this page", "web page", "webpage", "url"],
        "fetch web page url content",
    ),
    (
        &["translate", "translation", "english version", "in french", "in spanish", "in german"],
        "translate translation language",
    ),
    (
        &[
            "docs for",
            "documentation",
            "api docs",
            "api reference",
            "latest docs",
            "current docs",
            "library docs",
        ],
        "library documentation docs",
    ),
    (&["cited", "citation", "citations", "citing", "h index"], "citation scholarly papers academic search"),
    (&["headlines", "in the news", "breaking news", "top stories"], "news headlines"),
    (
        &["whois", "who owns", "registrar", "domain registration", "domain expiry", "domain owner"],
        "whois domain registration lookup",
    ),
    (&["subreddit", "r"], "reddit"),
    (&["tweet", "tweets", "post it on x"], "twitter x"),
    // Cloud products people name by their parts.
    (
        &[
            "ec2",
            "lambda",
            "lambdas",
            "cloudwatch",
            "iam",
            "dynamodb",
            "cloudformation",
            "rds",
            "aws account",
        ],
        "aws amazon web services",
    ),
    (&["s3", "bucket", "buckets"], "aws s3 bucket storage"),
    (
        &["onedrive", "sharepoint", "office 365", "microsoft 365", "m365"],
        "microsoft 365 onedrive sharepoint graph",
    ),
    (
        &["bigquery", "cloud run", "gcp", "google cloud storage", "cloud functions"],
        "google cloud platform gcp",
    ),
    (&["merge request", "merge requests"], "gitlab merge request"),
];

/// What servers that read and write the user's own files say they do.
const LOCAL_FILES: &str = "filesystem read write files";

/// Extensions of plain files people keep on their machines and name in a request. Not code
/// (`Next.js` is a product), not domains (`example.org`), and not formats a specialist server
/// reads better than a file server (see [`SPECIALIST_EXTENSIONS`]).
const FILE_EXTENSIONS: &[&str] = &[
    "txt", "md", "markdown", "csv", "tsv", "json", "jsonl", "yaml", "yml", "toml", "xml", "log", "png",
    "jpg", "jpeg", "gif", "svg", "webp", "zip", "html",
];

/// Files whose format needs its own server (a workbook, a document, a database): naming one
/// implies that server, not the user's files in general.
const SPECIALIST_EXTENSIONS: &[&str] =
    &["pdf", "docx", "doc", "xlsx", "xls", "pptx", "db", "sqlite", "sqlite3", "parquet", "ipynb"];

/// Whether `need` names a plain file or a folder on the user's machine: a home, relative or
/// absolute path ("~/backups", "./logs/app.log", "/home/me/notes") or a file name with an
/// extension ("notes.txt", "CHANGELOG.md"); never a web address, nor a workbook, document or
/// database file ("sales.xlsx", "~/data/app.db"), which their own servers read.
fn names_local_file(need: &str) -> bool {
    need.split_whitespace().any(|token| {
        let t = token
            .trim_matches(|c: char| {
                matches!(c, '"' | '\'' | '`' | ',' | ';' | ':' | '(' | ')' | '?' | '!' | '*')
            })
            .trim_end_matches('.');
        if t.contains("://") || t.starts_with("www.") || t.contains('@') {
            return false;
        }
        let extension = t.rsplit('/').next().and_then(|name| name.rsplit_once('.')).map(|(stem, ext)| {
            (stem.chars().next().is_some_and(char::is_alphanumeric), ext.to_ascii_lowercase())
        });
        if extension.as_ref().is_some_and(|(_, ext)| SPECIALIST_EXTENSIONS.contains(&ext.as_str())) {
            return false;
        }
        let path = ["~/", "./", "../", "/home/", "/Users/", "/tmp/", "/var/", "/etc/", "/mnt/"]
            .iter()
            .any(|p| t.starts_with(p));
        path || extension.is_some_and(|(named, ext)| named && FILE_EXTENSIONS.contains(&ext.as_str()))
    })
}

/// Verbs that act on files themselves. A file named without one is another server's input
/// ("cut the background out of ~/Pictures/me.jpg" wants an image editor, not a file server).
const FILE_VERBS: &[&str] = &[
    "read", "open", "save", "write", "rename", "move", "copy", "delete", "list", "find", "search", "back up",
    "backup", "export", "store", "organize", "organise", "archive", "append", "create", "put",
];

/// Whether a need (its words, space-padded) acts on files.
fn handles_files(padded: &str) -> bool {
    FILE_VERBS.iter().any(|v| padded.contains(&format!(" {v} ")))
}

/// What to search for a step that sends an email and names no provider ("email my accountant the
/// adjusted gross income figure"): the words after the verb are the message, not the tool, and
/// searched with the step they pull in servers for their subject (a finance server for "income").
pub fn message_step(need: &str) -> Option<&'static str> {
    let w = words(need);
    let mut w = w.iter().map(String::as_str).skip_while(|w| ["and", "then", "also", "please"].contains(w));
    let verb = w.next()?;
    let next = w.next();
    let email = matches!(verb, "email" | "mail") || (verb == "e" && next == Some("mail"));
    email.then_some("send an email message to a recipient")
}

/// The catalog words to add to a need, or `None` when no phrase matches.
pub fn expand(need: &str) -> Option<String> {
    extra(need).map(|extra| format!("{need} ({extra})"))
}

/// Only the catalog words a need's phrases imply ("what time is it in Tokyo" → "current time
/// timezone date clock"), or `None`.
pub fn extra(need: &str) -> Option<String> {
    let w = words(need);
    let padded = format!(" {} ", w.join(" "));
    let mut extra: Vec<&str> = Vec::new();
    for (phrases, words) in INTENTS {
        if phrases.iter().any(|p| padded.contains(&format!(" {p} "))) && !extra.contains(words) {
            extra.push(words);
        }
    }
    if names_local_file(need) && handles_files(&padded) && !extra.contains(&LOCAL_FILES) {
        extra.push(LOCAL_FILES);
    }
    (!extra.is_empty()).then(|| extra.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_email_step_is_searched_as_sending_email_not_as_its_message() {
        for need in
            ["email my accountant the adjusted gross income figure", "and e-mail me whatever it prints"]
        {
            assert!(message_step(need).is_some(), "{need}");
        }
        for need in ["read the email from my accountant", "find emails about invoices", "summarise the mail"]
        {
            assert_eq!(message_step(need), None, "{need}");
        }
    }

    #[test]
    fn a_path_or_a_file_name_implies_the_user_s_files() {
        for need in [
            "back up the keys into ~/backups",
            "read ./logs/app.log",
            "Read notes.txt on my desktop",
            "write a CHANGELOG.md for the last 20 commits",
            "rename the photos in /home/me/trip",
            "save it as 'summary.MD'",
            "back up the notes into ~/backups",
        ] {
            assert!(extra(need).is_some_and(|e| e.contains(LOCAL_FILES)), "{need}");
        }
        for need in [
            "fetch https://example.org/notes.txt",
            "check staging.acme.dev for broken links",
            "build it with Next.js",
            "email me at a.b@example.com",
            "list the posts in /r/rust",
            "convert .jpeg to .jpg",
            "make a bar chart in sales.xlsx",
            "open ~/data/app.db and list its tables",
            "cut the background out of ~/Pictures/me.jpg",
        ] {
            assert!(!extra(need).is_some_and(|e| e.contains(LOCAL_FILES)), "{need}");
        }
    }

    #[test]
    fn everyday_phrasing_gains_catalog_words() {
        assert_eq!(
            expand("whats nvidia's share price doing today").as_deref(),
            Some("whats nvidia's share price doing today (stock market price quote)")
        );
        assert_eq!(
            expand("text me in the morning").as_deref(),
            Some("text me in the morning (sms text message)")
        );
        assert_eq!(expand("send an email with gmail"), None);
        // Whole words only: "stockholm" is not "stock", "block" is not "lock".
        assert_eq!(expand("weather in stockholm"), None);
        assert_eq!(expand("show the latest block height"), None);
        // A product named by its part is searched as the whole.
        assert_eq!(
            expand("which EC2 instances are running").as_deref(),
            Some("which EC2 instances are running (aws amazon web services)")
        );
        // "10-K" is split like any identifier, and each matching entry adds its words once.
        assert_eq!(
            expand("compare the 10-K filings").as_deref(),
            Some("compare the 10-K filings (sec edgar company filings)")
        );
    }
}
