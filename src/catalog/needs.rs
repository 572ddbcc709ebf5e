//! Splits a workflow request into its needs: "find invoices in my Gmail and add them to a Google
//! Sheet" is two needs, one per service. Each need is searched on its own and the results merged,
//! so a request that spans services surfaces a server for each.

use super::text::{is_stop_word, plain_words, stem, terms, words};

/// Phrases that join the steps of a workflow.
const JOINERS: &[&str] = &[
    " and then ",
    ", and then ",
    ", then ",
    " then ",
    "; ",
    ". ",
    "? ",
    "! ",
    ", and ",
    " and ",
    " as well as ",
    " plus ",
    " also ",
    " after that ",
    " afterwards ",
    " before ",
    " after ",
    " once ",
    " whenever ",
    " every time ",
    " if ",
    " when ",
    ", ",
];

/// At most this many needs: a longer request is more likely prose than a workflow.
pub const MAX_NEEDS: usize = 4;

/// A request longer than this many words is prose (a task told with its background), not a list
/// of steps: it is searched whole. Split, its sentences and the services its background mentions
/// become needs of their own, and on MCP-Bench's task texts (117–380 words) that cost more than
/// half of Recall@5 (eval/README.md). Every workflow request in the team's sets has at most 29.
pub const PROSE_WORDS: usize = 60;

/// Whether `request` is prose to search whole (see [`PROSE_WORDS`]).
pub fn is_prose(request: &str) -> bool {
    request.split_whitespace().nth(PROSE_WORDS).is_some()
}

/// At most this many steps from a request written as a list.
pub const MAX_LIST_STEPS: usize = 8;

/// The items of a request written as a list, one per line ("- read my Gmail", "2) post it",
/// "Step 3: …"), each with its marker removed; `None` unless at least two lines are items. The
/// lines before the first item (the task's background) are not steps.
pub fn list_items(request: &str) -> Option<Vec<String>> {
    let items: Vec<String> = request.lines().filter_map(list_item).filter(|i| has_content(i)).collect();
    (items.len() >= 2).then(|| items.into_iter().take(MAX_LIST_STEPS).collect())
}

/// One line's text when it is a list item.
fn list_item(line: &str) -> Option<String> {
    let t = line.trim();
    let rest = if let Some(r) = t.strip_prefix(['-', '*', '•', '–']) {
        r
    } else {
        let lower = t.to_ascii_lowercase();
        let t2 = if lower.starts_with("step ") { &t[5..] } else { t };
        let digits = t2.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 || digits > 2 {
            return None;
        }
        t2[digits..].strip_prefix(['.', ')', ':'])?
    };
    let text = rest.split_whitespace().collect::<Vec<_>>().join(" ");
    (!text.is_empty()).then_some(text)
}

/// The needs of a request, in order. A request with one need gives one element (itself, trimmed).
pub fn split(request: &str) -> Vec<String> {
    let collapsed = request.split_whitespace().collect::<Vec<_>>().join(" ");
    // A parenthesis is an aside to its step ("a logo (teal and orange)"), never a step of its own.
    let masked = mask_asides(&collapsed);
    let mut parts = vec![format!(" {masked} ")];
    for joiner in JOINERS {
        parts = parts
            .into_iter()
            .flat_map(|p| {
                let lower = p.to_lowercase();
                let mut pieces = Vec::new();
                let mut start = 0;
                for (i, _) in lower.match_indices(joiner) {
                    pieces.push(p[start..i].to_owned());
                    start = i + joiner.len();
                }
                pieces.push(p[start..].to_owned());
                pieces
            })
            .map(|p| format!(" {} ", p.trim()))
            .collect();
    }
    let needs: Vec<String> = parts
        .into_iter()
        .map(|p| unmask(p.trim().trim_matches(|c: char| ",.;:!?".contains(c)).trim()))
        .filter(|p| has_content(p) && !is_schedule(p))
        .collect();
    if needs.len() <= 1 || needs.len() > MAX_NEEDS {
        return vec![collapsed];
    }
    needs
}

/// Inside parentheses and quotes, the characters the joiners match (space, comma, semicolon, full
/// stop) become private-use stand-ins, so no joiner splits there; [`unmask`] restores them.
fn mask_asides(text: &str) -> String {
    let quoted = quoted(text);
    let mut depth = 0usize;
    text.chars()
        .zip(quoted)
        .map(|(c, in_quotes)| {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ => {}
            }
            match (depth > 0 || in_quotes, c) {
                (true, ' ') => '\u{E000}',
                (true, ',') => '\u{E001}',
                (true, ';') => '\u{E002}',
                (true, '.') => '\u{E003}',
                _ => c,
            }
        })
        .collect()
}

/// Per character of `text`, whether it is inside quotes: `"…"`, `“…”`, or `'…'`/`‘…’` where the
/// opening mark starts a word and the closing one ends it (so "don't" and "Rivian's" quote
/// nothing). Quoted text is the user's own: a message to post, a playlist's name.
fn quoted(text: &str) -> Vec<bool> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = vec![false; chars.len()];
    // The open mark and where it stands.
    let mut open: Option<(char, usize)> = None;
    for i in 0..chars.len() {
        let c = chars[i];
        let before = i.checked_sub(1).map(|j| chars[j]);
        let after = chars.get(i + 1).copied();
        let word_start = before.is_none_or(|b| b.is_whitespace() || "([{".contains(b))
            && after.is_some_and(|a| !a.is_whitespace());
        let word_end = before.is_some_and(|b| !b.is_whitespace())
            && after.is_none_or(|a| a.is_whitespace() || ",.;:!?)]}".contains(a));
        match (open.map(|(mark, _)| mark), c) {
            (None, '"' | '“') => open = Some((c, i)),
            (None, '\'' | '‘') if word_start => open = Some(('\'', i)),
            (Some('"' | '“'), '"' | '”') => open = None,
            (Some('\''), '\'' | '’') if word_end => open = None,
            (Some(_), _) => out[i] = true,
            _ => {}
        }
    }
    // A mark never closed ("a 27\" monitor") quotes nothing.
    if let Some((_, start)) = open {
        out[start..].fill(false);
    }
    out
}

/// `text` with its quoted parts blanked out.
pub(crate) fn without_quotes(text: &str) -> String {
    text.chars().zip(quoted(text)).map(|(c, q)| if q { ' ' } else { c }).collect()
}

/// The text without its web addresses and issue keys: the words of
/// `https://www.rust-lang.org/learn` name a page to fetch, and `OPS-412` or `ENG-231` an issue,
/// not a product to use.
fn without_urls(text: &str) -> String {
    text.split(' ')
        .map(|w| {
            let bare = w.trim_start_matches(|c: char| !c.is_alphanumeric());
            if w.contains("://") || bare.starts_with("www.") || is_issue_key(bare) { "" } else { w }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `OPS-412`, `ENG-231.`: capital letters, a hyphen, digits (and trailing punctuation), as
/// trackers write issue keys. (`COVID-19` looks the same: it loses only its standing as a
/// product name; search still reads it.)
fn is_issue_key(word: &str) -> bool {
    let word = word.trim_end_matches(|c: char| !c.is_alphanumeric());
    word.split_once('-').is_some_and(|(key, number)| {
        (2..=10).contains(&key.len())
            && key.chars().all(|c| c.is_ascii_uppercase())
            && !number.is_empty()
            && number.chars().all(|c| c.is_ascii_digit())
    })
}

fn unmask(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{E000}' => ' ',
            '\u{E001}' => ',',
            '\u{E002}' => ';',
            '\u{E003}' => '.',
            _ => c,
        })
        .collect()
}

/// When a step should happen, not what it does: "every morning at 7", "on Fridays at 5pm".
/// Such a fragment names no tool to find (scheduling is the agent's job), so it is no need.
fn is_schedule(fragment: &str) -> bool {
    const TIME: &[&str] = &[
        "every",
        "each",
        "at",
        "on",
        "in",
        "the",
        "by",
        "before",
        "after",
        "around",
        "morning",
        "mornings",
        "evening",
        "evenings",
        "night",
        "nights",
        "noon",
        "midnight",
        "afternoon",
        "afternoons",
        "today",
        "tonight",
        "tomorrow",
        "day",
        "days",
        "daily",
        "week",
        "weeks",
        "weekly",
        "weekday",
        "weekdays",
        "weekend",
        "weekends",
        "month",
        "months",
        "monthly",
        "hour",
        "hours",
        "hourly",
        "minute",
        "minutes",
        "am",
        "pm",
        "o",
        "clock",
        "monday",
        "mondays",
        "tuesday",
        "tuesdays",
        "wednesday",
        "wednesdays",
        "thursday",
        "thursdays",
        "friday",
        "fridays",
        "saturday",
        "saturdays",
        "sunday",
        "sundays",
        "first",
        "last",
        "next",
        "end",
        "start",
        "of",
        "once",
        "twice",
        "a",
        "an",
    ];
    let w = words(fragment);
    let clock = |w: &str| {
        let digits = w.strip_suffix("am").or_else(|| w.strip_suffix("pm")).unwrap_or(w);
        !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit())
    };
    !w.is_empty() && w.iter().all(|w| TIME.contains(&w.as_str()) || clock(w))
}

/// A fragment worth searching: at least one word that is not a stop word or a bare verb of
/// workflow glue ("it", "them", "do that").
fn has_content(fragment: &str) -> bool {
    words(fragment).iter().any(|w| !is_stop_word(w) && w.len() > 1 && !GLUE.contains(&w.as_str()))
}

const GLUE: &[&str] = &["do", "done", "make", "sure", "everything", "thing", "things", "stuff", "etc"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_addresses_and_issue_keys_name_no_product() {
        assert_eq!(
            without_urls("status of OPS-412 in jira, and ENG-231. see https://www.rust-lang.org/learn"),
            "status of  in jira, and  see "
        );
        for key in ["OPS-412", "PAY-88,", "ENG-231."] {
            assert!(is_issue_key(key), "{key}");
        }
        for word in ["e-mail", "eng-231", "X-1", "GPT-4o", "mcp-server", "412"] {
            assert!(!is_issue_key(word), "{word}");
        }
    }

    #[test]
    fn a_request_written_as_a_list_is_split_by_its_items() {
        let request = "We run a small shop and every week the same chores pile up, so here is what I want the agent to do for me, in order, without asking each time:\n\
                       1. Find the new orders in Shopify.\n2) Add each to the Orders sheet in Google Sheets\n- Post a summary to #sales on Slack\n\nThanks!";
        assert_eq!(
            list_items(request).unwrap(),
            [
                "Find the new orders in Shopify.",
                "Add each to the Orders sheet in Google Sheets",
                "Post a summary to #sales on Slack"
            ]
        );
        assert_eq!(list_items("check my Gmail\nand put invoices in a sheet"), None);
        assert_eq!(
            list_items("In 2024 we grew.\n10 people joined."),
            None,
            "a number is not an item marker without its . ) or :"
        );
    }

    #[test]
    fn workflows_split_into_one_need_per_step() {
        assert_eq!(
            split("find invoices in my Gmail and add them to a Google Sheet"),
            ["find invoices in my Gmail", "add them to a Google Sheet"]
        );
        assert_eq!(
            split("monitor Gmail and send Slack notifications"),
            ["monitor Gmail", "send Slack notifications"]
        );
        assert_eq!(
            split("Monitors my Gmail for invoices, extracts the data, and saves it to a Google Sheet."),
            ["Monitors my Gmail for invoices", "extracts the data", "saves it to a Google Sheet"]
        );
        assert_eq!(
            split("text me if it is going to snow in Minneapolis"),
            ["text me", "it is going to snow in Minneapolis"]
        );
        assert_eq!(
            split("query postgres; then post the numbers to discord"),
            ["query postgres", "post the numbers to discord"]
        );
    }

    #[test]
    fn asides_and_schedules_are_not_needs() {
        assert_eq!(
            split("generate a hero image (abstract, teal and orange) and upload it to our S3 bucket"),
            ["generate a hero image (abstract, teal and orange)", "upload it to our S3 bucket"]
        );
        assert_eq!(
            split("every morning at 7, message me on telegram, and list my first meeting"),
            ["message me on telegram", "list my first meeting"]
        );
        assert_eq!(
            split("post \"we ship today, and we're proud\" to slack and to discord"),
            ["post \"we ship today, and we're proud\" to slack", "to discord"]
        );
        assert_eq!(
            without_quotes("add the 'Gig Radar' playlist's songs, don't wait"),
            "add the '         ' playlist's songs, don't wait"
        );
        assert_eq!(without_quotes("put my 27\" monitor on ebay"), "put my 27\" monitor on ebay");
        assert!(is_schedule("on Fridays at 5pm"));
        assert!(is_schedule("every day at 07 30"));
        assert!(!is_schedule("at the office"));
    }

    #[test]
    fn prose_is_told_apart_from_a_step_list() {
        let steps = "check my Gmail for invoices, then add each one to a Google Sheet and tell me on Slack";
        assert!(!is_prose(steps));
        let background = "I run a small bakery and my accountant keeps asking for things. ";
        let prose = format!("{} Could you find every invoice in Gmail and total them?", background.repeat(5));
        assert!(prose.split_whitespace().count() > PROSE_WORDS);
        assert!(is_prose(&prose));
        assert!(!is_prose(&background.repeat(4)), "a request of exactly 48 words is not prose");
    }

    #[test]
    fn single_needs_and_glue_stay_whole() {
        assert_eq!(split("what time is it in Tokyo"), ["what time is it in Tokyo"]);
        assert_eq!(split("  read my   calendar "), ["read my calendar"]);
        assert_eq!(split("check the weather and do it"), ["check the weather and do it"]);
    }
}

/// Names of services and capabilities, learned from the catalog: words (and word pairs) that
/// server *names* use far more than descriptions do ("gmail", "postgres", "google calendar"), so
/// a request that names two services in one clause ("export revenue from Postgres into a Google
/// Sheet") still yields one need per service.
#[derive(Debug, Default)]
pub struct ServiceLexicon {
    terms: std::collections::HashSet<String>,
}

/// The least share of a proper name's servers that are named after it, for names that three or
/// more servers carry.
const PROPER_SHARE: f32 = 0.2;

/// Words that name a role, not a service: "test server", "pdf reader" are not services.
const GENERIC: &[&str] = &[
    "access", "agent", "alpha", "analyz", "analysi", "analyt", "api", "app", "assist", "autom", "bank",
    "basic", "bridg", "build", "chat", "cli", "client", "cloud", "code", "connect", "convert", "core",
    "data", "databas", "demo", "dev", "download", "editor", "engin", "explor", "face", "fetcher", "file",
    "finder", "free", "gateway", "gen", "generat", "help", "hub", "integr", "kit", "local", "magic", "manag",
    "master", "nova", "offici", "open", "orchestr", "plugin", "pro", "proxi", "reader", "remot", "runner",
    "sandbox", "scanner", "search", "servic", "simpl", "solver", "spring", "starter", "studio", "test",
    "tester", "toolkit", "toolbox", "tracker", "unoffici", "util", "web", "com", "io", "mac", "new", "smart",
    "system", "think", "thing", "toolsdk", "smitheri", "awesom", "googl", "workflow", "context", "protocol",
    "model", "simpl",
];

/// The services a text names, as its writer marks them: someone who capitalises "Google
/// Calendar" and writes "deep work" in lower case names one product, not two. When some
/// mentions are capitalised and others are not, only the capitalised ones are kept; a text in
/// one case keeps all.
///
/// Days and months ("next Monday") and bare words for a database ("the prod db") are never
/// taken for a product here, whatever servers are named after them.
pub fn as_written(text: &str, mentions: Vec<String>) -> Vec<String> {
    let mentions: Vec<String> = mentions
        .into_iter()
        .filter(|m| {
            let m = m.to_lowercase();
            !NOT_PRODUCTS.contains(&m.as_str()) && !WEEKDAYS.contains(&m.as_str())
        })
        .collect();
    let capitalised = |mention: &str| {
        let first = mention.split_whitespace().next().unwrap_or(mention);
        text.split(|c: char| !c.is_alphanumeric())
            .any(|w| w.eq_ignore_ascii_case(first) && w.starts_with(|c: char| c.is_uppercase()))
    };
    let marked: Vec<bool> = mentions.iter().map(|m| capitalised(m)).collect();
    if marked.iter().all(|m| *m) || !marked.iter().any(|m| *m) {
        return mentions;
    }
    mentions.into_iter().zip(marked).filter(|(_, m)| *m).map(|(s, _)| s).collect()
}

/// The days of the week, lower case.
pub const WEEKDAYS: &[&str] = &["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];

/// Words some servers are named after that name no product when people write them (besides
/// [`WEEKDAYS`]).
const NOT_PRODUCTS: &[&str] = &[
    "january",
    "february",
    "march",
    "april",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
    "db",
];

/// Stems of common English words: the whole words of the WordPiece vocabulary of the
/// `all-MiniLM-L6-v2` model (from BERT's uncased vocabulary, Apache-2.0), lower case. A word
/// a server is named after that is not among them is a proper name ("discogs", "github").
static ENGLISH: std::sync::LazyLock<std::collections::HashSet<String>> =
    std::sync::LazyLock::new(|| include_str!("english-words.txt").lines().map(stem).collect());

/// Whether a stemmed term is a common English word's.
fn english(term: &str) -> bool {
    ENGLISH.contains(term)
}

/// A server name without its registry namespace: `@scope/x-mcp` → `x-mcp`,
/// `io.github.owner/x` → `x`, `io-github-owner-x` → `owner-x`. Namespaces say where a server is
/// published, not what it serves; counted as names they made "github" look like a role word.
fn without_namespace(name: &str) -> String {
    let base = if name.starts_with('@') || name.starts_with("io.github.") {
        name.rsplit('/').next().unwrap_or(name)
    } else {
        name
    };
    base.replace("io-github-", "").replace("ai-smithery-", "")
}

impl ServiceLexicon {
    /// `names` are the servers' names; `document_frequency` tells in how many servers (name,
    /// description or tools) a stemmed term occurs.
    pub fn build<'a>(
        names: impl Iterator<Item = &'a str>,
        document_frequency: impl Fn(&str) -> usize,
    ) -> Self {
        let mut in_names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for name in names {
            let t = terms(&without_namespace(name));
            let mut seen = std::collections::HashSet::new();
            for w in &t {
                seen.insert(w.clone());
            }
            for pair in t.windows(2) {
                seen.insert(format!("{} {}", pair[0], pair[1]));
            }
            for w in seen {
                *in_names.entry(w).or_default() += 1;
            }
        }
        let terms = in_names
            .into_iter()
            .filter(|(term, n)| {
                let parts: Vec<&str> = term.split(' ').collect();
                if parts.iter().all(|p| GENERIC.contains(p)) || parts.iter().any(|p| p.len() < 2) {
                    return false;
                }
                if parts.len() == 2 {
                    // A pair counts when both words are service-like or one is a known brand prefix.
                    return *n >= 3
                        && parts.iter().filter(|p| GENERIC.contains(p)).count() <= 1
                        && parts.contains(&"googl")
                        || (*n >= 5 && !parts.iter().any(|p| GENERIC.contains(p)));
                }
                let share = (*n as f32) / (document_frequency(term).max(1) as f32);
                // A word no English vocabulary knows names a product even when few servers are
                // named after it ("discogs", "caltrain"), or when descriptions use it often
                // ("github"), as long as it stays mostly in names.
                let proper = term.len() >= 3 && !english(term);
                (*n >= 3 && share >= 0.3)
                    || (proper && *n < 3 && share >= 0.5)
                    || (proper && *n >= 3 && share >= PROPER_SHARE)
            })
            .map(|(t, _)| t)
            .collect();
        Self { terms }
    }

    /// The services a request names, as the words it used, in order, without overlaps.
    pub fn mentions(&self, request: &str) -> Vec<String> {
        // A quoted name is the user's ("my 'Gig Radar' playlist"), never a service they name.
        let surface: Vec<String> = plain_words(&without_urls(&without_quotes(request)))
            .into_iter()
            .filter(|w| !is_stop_word(w))
            .collect();
        let stems: Vec<String> = surface.iter().map(|w| stem(w)).collect();
        let mut out: Vec<String> = Vec::new();
        let mut seen_terms = std::collections::HashSet::new();
        let mut i = 0;
        while i < stems.len() {
            if i + 1 < stems.len() {
                let pair = format!("{} {}", stems[i], stems[i + 1]);
                if self.terms.contains(&pair) {
                    if seen_terms.insert(pair) {
                        out.push(format!("{} {}", surface[i], surface[i + 1]));
                    }
                    i += 2;
                    continue;
                }
            }
            if self.terms.contains(&stems[i]) && seen_terms.insert(stems[i].clone()) {
                out.push(surface[i].clone());
            }
            i += 1;
        }
        out
    }
}

#[cfg(test)]
mod lexicon_tests {
    use super::*;

    #[test]
    fn services_named_in_one_clause_are_found() {
        let names = [
            "Postgres MCP",
            "Postgres Server",
            "postgres-query",
            "Google Sheets",
            "Google Sheets MCP",
            "Google Sheets Server",
            "Test Server",
            "Test Tools",
            "Test Runner",
            "Gmail",
            "Gmail MCP",
            "Gmail Reader",
        ];
        let lexicon = ServiceLexicon::build(names.iter().copied(), |_| 4);
        assert_eq!(
            lexicon.mentions("Export last month's revenue from Postgres into a new Google Sheet"),
            ["postgres", "google sheet"]
        );
        assert_eq!(lexicon.mentions("run my test suite"), Vec::<String>::new());
        assert_eq!(lexicon.mentions("gmail gmail"), ["gmail"]);
        // A quoted name is the user's own, not a service.
        assert_eq!(lexicon.mentions("add 'Gmail Digest' to my postgres table"), ["postgres"]);
    }

    #[test]
    fn a_writer_s_capitals_and_the_calendar_tell_products_from_words() {
        let names = [
            "Google Calendar MCP",
            "Google Calendar Server",
            "Google Calendar Tools",
            "Deep Research",
            "Deep Think",
            "Deep Search",
            "Monday MCP",
            "Monday Boards",
            "Monday Server",
        ];
        let lexicon = ServiceLexicon::build(names.iter().copied(), |_| 4);
        let request = "Block 2 hours in Google Calendar for deep work";
        assert_eq!(lexicon.mentions(request), ["google calendar", "deep"]);
        assert_eq!(as_written(request, lexicon.mentions(request)), ["google calendar"]);
        // Written in one case, every mention stands.
        let lower = "block 2 hours in google calendar for deep work";
        assert_eq!(as_written(lower, lexicon.mentions(lower)), ["google calendar", "deep"]);
        // A day is a date, whatever servers are named after it.
        let day = "call them next Monday";
        assert_eq!(lexicon.mentions(day), ["monday"], "search keeps every mention");
        assert_eq!(as_written(day, lexicon.mentions(day)), Vec::<String>::new());
    }

    #[test]
    fn a_name_no_english_vocabulary_knows_is_a_product_however_few_servers_carry_it() {
        let names =
            ["Discogs MCP Server", "Garden Planner", "GitHub MCP", "GitHub Issues", "GitHub PR Server"];
        // "github" is in three names but in twelve servers' text; "discogs" and "garden" in one each.
        let df = |t: &str| match t {
            "github" => 12,
            _ => 1,
        };
        let lexicon = ServiceLexicon::build(names.iter().copied(), df);
        assert_eq!(lexicon.mentions("what's my record collection on discogs worth"), ["discogs"]);
        assert_eq!(lexicon.mentions("plan my garden"), Vec::<String>::new(), "an English word");
        assert_eq!(
            lexicon.mentions("fetch https://discogs.com/x and (www.github.com/y)"),
            Vec::<String>::new()
        );
        assert_eq!(lexicon.mentions("check my github PRs"), ["github"]);
        // A word of a few servers' text that also names one is a description word, not a name.
        let lexicon = ServiceLexicon::build(names.iter().copied(), |_| 3);
        assert_eq!(lexicon.mentions("discogs"), Vec::<String>::new());
    }

    #[test]
    fn registry_namespaces_are_not_service_names() {
        let names = [
            "@toolsdk-remote/io-github-ann-notes",
            "@toolsdk-remote/io-github-bob-tweets",
            "io.github.carol/weather-mcp",
            "@toolsdk-remote/ai-smithery-dan-maps",
            "GitHub MCP",
            "GitHub Issues",
            "GitHub PR Server",
        ];
        assert_eq!(without_namespace(names[0]), "ann-notes");
        assert_eq!(without_namespace(names[2]), "weather-mcp");
        assert_eq!(without_namespace(names[3]), "dan-maps");
        let lexicon = ServiceLexicon::build(names.iter().copied(), |_| 4);
        assert_eq!(lexicon.mentions("open a GitHub issue for the crash"), ["github"]);
        assert_eq!(lexicon.mentions("smithery notes"), Vec::<String>::new());
    }
}
