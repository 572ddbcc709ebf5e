//! Text analysis for lexical search: lowercasing, splitting identifiers (`send_email`,
//! `getCurrentTime`), dropping stop words, and English stemming, so "emails" meets "send_email".

use std::collections::HashSet;
use std::sync::LazyLock;

use rust_stemmers::{Algorithm, Stemmer};

static STEMMER: LazyLock<Stemmer> = LazyLock::new(|| Stemmer::create(Algorithm::English));

/// Words that carry no meaning for choosing a server: English function words, and words every
/// MCP server description uses.
const STOP_WORDS: &[&str] = &[
    "a",
    "about",
    "after",
    "all",
    "also",
    "an",
    "and",
    "any",
    "are",
    "as",
    "at",
    "be",
    "by",
    "can",
    "could",
    "do",
    "does",
    "each",
    "every",
    "for",
    "from",
    "get",
    "give",
    "has",
    "have",
    "help",
    "how",
    "i",
    "if",
    "in",
    "into",
    "is",
    "it",
    "its",
    "just",
    "let",
    "like",
    "me",
    "mcp",
    "model",
    "context",
    "protocol",
    "my",
    "need",
    "of",
    "on",
    "or",
    "our",
    "please",
    "server",
    "servers",
    "so",
    "some",
    "that",
    "the",
    "their",
    "them",
    "then",
    "there",
    "these",
    "this",
    "those",
    "to",
    "tool",
    "tools",
    "up",
    "us",
    "use",
    "using",
    "via",
    "want",
    "was",
    "we",
    "what",
    "when",
    "where",
    "which",
    "while",
    "who",
    "will",
    "with",
    "would",
    "you",
    "your",
    "provides",
    "provide",
    "allows",
    "allow",
    "enables",
    "enable",
    "integration",
    "integrates",
    "capabilities",
    "functionality",
    "ai",
    "assistant",
    "assistants",
    "llm",
    "llms",
];

static STOP_SET: LazyLock<HashSet<&'static str>> = LazyLock::new(|| STOP_WORDS.iter().copied().collect());

/// `text` trimmed, and cut to `max` characters with "…" when longer: for reasons and descriptions
/// shown to users or models.
pub fn clip(text: &str, max: usize) -> String {
    let text = text.trim();
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}…")
}

/// `text` on one line (every run of whitespace, newlines included, becomes one space) and
/// clipped to `max` characters: for text a model or a catalog wrote that goes into a prompt.
pub fn one_line(text: &str, max: usize) -> String {
    clip(&text.split_whitespace().collect::<Vec<_>>().join(" "), max)
}

pub fn is_stop_word(word: &str) -> bool {
    STOP_SET.contains(word)
}

/// Splits text into lowercase words, breaking identifiers at `_`, `-`, `.`, `/` and camelCase
/// boundaries. Stop words are kept; see [`terms`].
pub fn words(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            if c.is_uppercase() && prev_lower && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = c.is_lowercase() || c.is_ascii_digit();
            current.extend(c.to_lowercase());
        } else {
            prev_lower = false;
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Splits text into lowercase words at anything not a letter or digit, keeping camelCase whole:
/// "GitHub" is one word here ("github"), two in [`words`].
pub fn plain_words(text: &str) -> Vec<String> {
    alphanumeric_runs(text).map(str::to_lowercase).collect()
}

/// The maximal runs of letters and digits in `text`, as written. [`terms`] analyses each run on
/// its own, so the terms of a text are the terms of its runs in order.
pub fn alphanumeric_runs(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty())
}

/// The index terms of a text: words without stop words, stemmed. A camelCase word gives its
/// parts and itself, so "GitHub" matches "github" and "git hub", and "OneDrive" matches
/// "onedrive" as well as "one drive".
pub fn terms(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for chunk in alphanumeric_runs(text) {
        let parts = words(chunk);
        let joined = (parts.len() > 1).then(|| chunk.to_lowercase());
        for w in parts.into_iter().chain(joined) {
            if is_stop_word(&w) {
                continue;
            }
            // "whats" stems to "what": a stop word in disguise (it made "WhatsApp" match).
            let stemmed = stem(&w);
            if !is_stop_word(&stemmed) {
                out.push(stemmed);
            }
        }
    }
    out
}

pub fn stem(word: &str) -> String {
    STEMMER.stem(word).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_split_and_terms_are_stemmed() {
        assert_eq!(
            words("send_email getCurrentTime HTTPServer v2.0"),
            ["send", "email", "get", "current", "time", "httpserver", "v2", "0"]
        );
        assert_eq!(terms("Send emails to my Google Sheets"), ["send", "email", "googl", "sheet"]);
        assert_eq!(terms("the MCP server for Slack"), ["slack"]);
        assert_eq!(terms("my GitHub issues"), ["git", "hub", "github", "issu"]);
        assert_eq!(terms("whats the weather"), ["weather"]);
        assert_eq!(terms("WhatsApp"), ["app", "whatsapp"]);
        assert_eq!(plain_words("my OneDrive, send_email"), ["my", "onedrive", "send", "email"]);
    }
}
