//! Everyday phrasings mapped to the words server catalogs use: users say "share price", "text
//! me", "my inbox"; servers say "stock quote", "SMS", "email". A need that contains a phrase is
//! searched with the catalog's words added, lexically and by meaning.
//!
//! The table is general workflow vocabulary, kept short on purpose; `dynamcp eval --ablation`
//! reports selection quality with and without it.

use super::text::words;

/// `(phrases, catalog words)`: a need containing any phrase (as whole words) gets the words.
const INTENTS: &[(&[&str], &str)] = &[
    (
        &["share price", "stock price", "stock", "stocks", "shares", "ticker", "portfolio"],
        "stock market price quote",
    ),
    (
        &["bitcoin", "btc", "ethereum", "eth", "solana", "sol", "crypto", "coin", "token price"],
        "cryptocurrency crypto price",
    ),
    (&["inbox", "unread", "emails", "mailbox"], "email"),
    (&["text me", "sms", "text message", "send a text"], "sms text message"),
    (&["schedule", "agenda", "appointment", "appointments"], "calendar events"),
    (
        &["folder", "markdown file", "local file", "directory", "documents folder"],
        "filesystem read write files",
    ),
    (&["remember", "keep track", "don t forget", "still know", "next time"], "memory knowledge graph"),
    (&["fill out", "submit", "click", "log into", "login", "portal"], "browser automation"),
    (
        &["drive to", "driving", "directions", "commute", "travel time", "how long will it take"],
        "maps directions route travel time",
    ),
    (
        &["http", "https", "this article", "this page", "web page", "webpage", "url"],
        "fetch web page url content",
    ),
    (
        &["translate", "translation", "english version", "in french", "in spanish", "in german"],
        "translate translation language",
    ),
    (&["subreddit", "r"], "reddit"),
    (&["tweet", "tweets", "post it on x"], "twitter x"),
];

/// The catalog words to add to a need, or `None` when no phrase matches.
pub fn expand(need: &str) -> Option<String> {
    let w = words(need);
    let padded = format!(" {} ", w.join(" "));
    let mut extra: Vec<&str> = Vec::new();
    for (phrases, words) in INTENTS {
        if phrases.iter().any(|p| padded.contains(&format!(" {p} "))) && !extra.contains(words) {
            extra.push(words);
        }
    }
    (!extra.is_empty()).then(|| format!("{need} ({})", extra.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Whole words only: "stockholm" is not "stock".
        assert_eq!(expand("weather in stockholm"), None);
    }
}
