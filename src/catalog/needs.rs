//! Splits a workflow request into its needs: "find invoices in my Gmail and add them to a Google
//! Sheet" is two needs, one per service. Each need is searched on its own and the results merged,
//! so a request that spans services surfaces a server for each.

use super::text::{is_stop_word, stem, terms, words};

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

/// The needs of a request, in order. A request with one need gives one element (itself, trimmed).
pub fn split(request: &str) -> Vec<String> {
    let collapsed = request.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut parts = vec![format!(" {collapsed} ")];
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
        .map(|p| p.trim().trim_matches(|c: char| ",.;:!?".contains(c)).trim().to_owned())
        .filter(|p| has_content(p))
        .collect();
    if needs.len() <= 1 || needs.len() > MAX_NEEDS {
        return vec![collapsed];
    }
    needs
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

/// Words that name a role, not a service: "test server", "pdf reader" are not services.
const GENERIC: &[&str] = &[
    "access", "agent", "alpha", "analyz", "analysi", "analyt", "api", "app", "assist", "autom", "bank",
    "basic", "bridg", "build", "chat", "cli", "client", "cloud", "code", "connect", "convert", "core",
    "data", "databas", "demo", "dev", "download", "editor", "engin", "explor", "face", "fetcher", "file",
    "finder", "free", "gateway", "gen", "generat", "help", "hub", "integr", "kit", "local", "magic", "manag",
    "master", "nova", "offici", "open", "orchestr", "plugin", "pro", "proxi", "reader", "remot", "runner",
    "sandbox", "scanner", "search", "servic", "simpl", "solver", "spring", "starter", "studio", "test",
    "tester", "toolkit", "toolbox", "tracker", "unoffici", "util", "web", "com", "io", "mac", "new", "smart",
    "system", "think", "thing", "toolsdk", "smitheri", "awesom", "github", "googl", "workflow", "context",
    "protocol", "model", "simpl",
];

impl ServiceLexicon {
    /// `names` are the servers' names; `document_frequency` tells in how many servers (name,
    /// description or tools) a stemmed term occurs.
    pub fn build<'a>(
        names: impl Iterator<Item = &'a str>,
        document_frequency: impl Fn(&str) -> usize,
    ) -> Self {
        let mut in_names: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for name in names {
            let t = terms(name);
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
                let df = document_frequency(term).max(1);
                *n >= 3 && (*n as f32) / (df as f32) >= 0.3
            })
            .map(|(t, _)| t)
            .collect();
        Self { terms }
    }

    /// The services a request names, as the words it used, in order, without overlaps.
    pub fn mentions(&self, request: &str) -> Vec<String> {
        let surface: Vec<String> = words(request).into_iter().filter(|w| !is_stop_word(w)).collect();
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
    }
}
