//! The steps of a request, from the needs search splits it into: which are steps with a server
//! of their own, which are arguments of the step before ("Oct 10-14"), and which the agent's
//! model does itself ("summarise them", "tell me who is on call").

use super::choice;
use crate::catalog::SearchIndex;
use crate::catalog::text::{is_stop_word, plain_words, words};

/// The steps of a plan from the search's needs. A short fragment that names no service and
/// implies none ("Oct 10-14", "priority High", "label it bug") is an argument of the step before
/// it, not a step; a step that asks for an answer ("tell me who is on call", "give me the gist")
/// is the model's, unless it says where the answer goes ("tell me on Slack").
pub(super) fn steps_of(index: &SearchIndex, needs: Vec<String>) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::with_capacity(needs.len());
    for need in needs {
        let names = index.products(&need);
        let implied = crate::catalog::intents::extra(&need).is_some();
        let short = need.split_whitespace().count() <= ARGUMENT_WORDS && !opens_a_step(&need);
        match out.last_mut() {
            // Never onto a service's bare name, split from a clause that names two.
            Some(previous) if short && names.is_empty() && !implied && !previous.bare => {
                previous.text.push_str(", ");
                previous.text.push_str(&need);
            }
            _ => {
                let by_model =
                    is_model_step(&need) || (!out.is_empty() && !implied && is_asking(&need, &names));
                let bare = choice::is_bare_name(&need, &names);
                out.push(Step { text: need, by_model, bare });
            }
        }
    }
    out
}

/// One step of a request: its words, and whether the agent's model does it without a tool.
pub(super) struct Step {
    pub text: String,
    pub by_model: bool,
    /// Nothing but one service's name: no argument joins it (what joins names no service, so a
    /// step that is not bare stays so).
    bare: bool,
}

/// At most this many words, a fragment with no service in it is an argument of the step before.
const ARGUMENT_WORDS: usize = 4;

/// Whether a short fragment is a step of its own: it opens with an action ("run the tests",
/// "email Tom"). An action on "it" is one on the step before ("call it 'focus'", "label it
/// bug"), unless it sends or keeps that ("email it to Tom", "save it").
fn opens_a_step(fragment: &str) -> bool {
    let words = plain_words(fragment);
    let Some(verb) = words.first().map(String::as_str) else { return false };
    if DELIVERY.contains(&verb) {
        return true;
    }
    ACTIONS.contains(&verb) && !matches!(words.get(1).map(String::as_str), Some("it" | "them"))
}

/// Verbs that send or keep what the steps before produced.
const DELIVERY: &[&str] = &[
    "email", "mail", "send", "text", "message", "post", "notify", "ping", "share", "remind", "alert",
    "tweet", "forward", "upload", "save", "store", "export", "book", "schedule",
];

/// Verbs of other actions a step can open with.
const ACTIONS: &[&str] = &[
    "run",
    "execute",
    "open",
    "create",
    "add",
    "delete",
    "remove",
    "update",
    "buy",
    "order",
    "find",
    "search",
    "get",
    "fetch",
    "check",
    "read",
    "write",
    "download",
    "install",
    "deploy",
    "translate",
    "convert",
    "play",
    "skip",
    "pause",
    "turn",
    "set",
    "start",
    "stop",
    "restart",
    "scale",
    "close",
    "merge",
    "approve",
    "assign",
    "move",
    "rename",
    "copy",
    "print",
    "look",
    "query",
    "draft",
    "reply",
    "invite",
    "cancel",
    "track",
    "monitor",
    "watch",
    "scrape",
    "crawl",
    "browse",
    "generate",
    "make",
];

/// Openings of a step that asks the model for an answer.
const ASKING: &[&str] =
    &["tell me", "give me", "let me know", "explain", "show me", "summarize", "summarise"];

/// Words that open a question.
const QUESTION_WORDS: &[&str] =
    &["who", "what", "which", "whether", "if", "when", "where", "how", "why", "whose", "whom"];

/// Words for a digest of what other steps fetched.
const DIGESTS: &[&str] =
    &["gist", "summary", "tldr", "tl dr", "short version", "highlights", "key points", "main points"];

/// Whether `need` asks for an answer and names no service as where it goes ("on Slack", "to
/// my Notion"): a service named after a preposition is a destination, not the answer's subject.
fn is_asking(need: &str, names: &[String]) -> bool {
    let plain = plain_words(need);
    let mut rest: &[String] = &plain;
    while let Some((first, tail)) = rest.split_first()
        && matches!(first.as_str(), "just" | "then" | "and" | "also" | "please" | "so" | "now")
    {
        rest = tail;
    }
    let opening = rest.join(" ");
    let Some(asked) = ASKING
        .iter()
        .find_map(|a| if opening == *a { Some("") } else { opening.strip_prefix(&format!("{a} ")) })
    else {
        return false;
    };
    // "tell me who is on call", "give me the gist": a question about, or a digest of, what was
    // fetched. "tell me the current time in Tokyo" asks for something new.
    let first = asked.split(' ').next().unwrap_or_default();
    if !QUESTION_WORDS.contains(&first)
        && !DIGESTS.iter().any(|d| format!(" {asked} ").contains(&format!(" {d} ")))
    {
        return false;
    }
    let padded = format!(" {opening} ");
    !names.iter().any(|n| {
        let n = plain_words(n).join(" ");
        ["on", "in", "via", "through", "with", "to", "into", "using", "from"]
            .iter()
            .any(|p| padded.contains(&format!(" {p} {n} ")) || padded.contains(&format!(" {p} my {n} ")))
    })
}

/// Verbs of a step the model does on its own: processing what other steps fetched.
const MODEL_VERBS: &[&str] = &[
    "extract",
    "extracts",
    "extracting",
    "parse",
    "parses",
    "parsing",
    "summarize",
    "summarizes",
    "summarise",
    "summarises",
    "summarizing",
    "analyze",
    "analyzes",
    "analyse",
    "analyses",
    "classify",
    "classifies",
    "categorize",
    "categorise",
    "process",
    "processes",
    "pull",
    "pulls",
    "figure",
    "determine",
];

/// Objects such a step works on.
const MODEL_OBJECTS: &[&str] = &[
    "out",
    "data",
    "details",
    "detail",
    "info",
    "information",
    "fields",
    "content",
    "contents",
    "key",
    "relevant",
    "important",
    "amounts",
    "totals",
    "text",
    "summary",
    "it",
    "them",
    "this",
    "that",
    "these",
    "those",
    "each",
    "one",
];

/// Whether a need is only processing ("extracts the data", "summarise them"): a processing verb,
/// and nothing but generic objects besides (no service, no place to read or write).
pub(super) fn is_model_step(need: &str) -> bool {
    let words: Vec<String> = words(need).into_iter().filter(|w| !is_stop_word(w)).collect();
    words.iter().any(|w| MODEL_VERBS.contains(&w.as_str()))
        && words.iter().all(|w| MODEL_VERBS.contains(&w.as_str()) || MODEL_OBJECTS.contains(&w.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(names: &[&str]) -> SearchIndex {
        let servers = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let mut r = crate::catalog::record::tests::record(&format!("s{i}"));
                r.name = (*name).to_owned();
                r
            })
            .collect();
        SearchIndex::build(servers)
    }

    fn shaped(index: &SearchIndex, needs: &[&str]) -> Vec<(String, bool)> {
        steps_of(index, needs.iter().map(|n| (*n).to_owned()).collect())
            .into_iter()
            .map(|s| (s.text, s.by_model))
            .collect()
    }

    #[test]
    fn processing_is_the_model_s() {
        assert!(is_model_step("extracts the data"));
        assert!(is_model_step("summarise them"));
        assert!(!is_model_step("saves it to a Google Sheet"));
        assert!(!is_model_step("extract text from a PDF"));
        assert!(!is_model_step("the data"));
    }

    #[test]
    fn arguments_join_their_step_and_questions_are_the_model_s() {
        let index = index(&[
            "Slack MCP",
            "Slack Server",
            "Slack Bot",
            "Airbnb MCP",
            "Airbnb Search",
            "Airbnb Finder",
        ]);
        // "Oct 10-14" and "under $150 a night" say which listings; they are not steps.
        assert_eq!(
            shaped(&index, &["find an airbnb in Lisbon for 2 people", "Oct 10-14", "under $150 a night"]),
            [("find an airbnb in Lisbon for 2 people, Oct 10-14, under $150 a night".to_owned(), false)]
        );
        // An answer the model gives from what the step before fetched.
        assert_eq!(
            shaped(&index, &["find the on-call page", "tell me who is on call next week"]),
            [
                ("find the on-call page".to_owned(), false),
                ("tell me who is on call next week".to_owned(), true)
            ]
        );
        assert_eq!(
            shaped(&index, &["read the report", "just give me the gist"])[1],
            ("just give me the gist".to_owned(), true)
        );
        // Where the answer goes is a step of its own, and so is a need the words imply.
        assert_eq!(
            shaped(&index, &["read the report", "tell me on Slack"])[1],
            ("tell me on Slack".to_owned(), false)
        );
        assert_eq!(
            shaped(&index, &["look up the museum", "give me directions from the station"])[1],
            ("give me directions from the station".to_owned(), false)
        );
        // However short, a step that sends or keeps something, or that acts, is a step.
        assert_eq!(shaped(&index, &["find the invoice", "email it to Tom"]).len(), 2);
        assert_eq!(shaped(&index, &["check the time", "run `touch /tmp/x`"]).len(), 2);
        assert_eq!(shaped(&index, &["block two hours", "call it 'focus'"]).len(), 1);
        // Asked for something new, not about what was fetched: a step of its own.
        assert_eq!(
            shaped(&index, &["echo my messages back", "tell me the current time in Tokyo"])[1],
            ("tell me the current time in Tokyo".to_owned(), false)
        );
        // A question alone is the request, not an answer to another step.
        assert_eq!(shaped(&index, &["tell me the weather"]), [("tell me the weather".to_owned(), false)]);
    }
}
