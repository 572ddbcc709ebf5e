//! Whether a request is written in English: the catalog's descriptions and the local embedding
//! model are English, so a request in another language is matched on little more than its
//! product names. Such a request is never planned silently: the reply says so.

/// Function words of the languages requests most often come in, besides English.
const FOREIGN: &[(&str, &[&str])] = &[
    (
        "French",
        &[
            "le", "la", "les", "des", "du", "et", "mes", "mon", "ma", "dans", "pour", "avec", "une", "est",
            "sur", "chaque", "moi", "vérifie", "envoie",
        ],
    ),
    (
        "Spanish",
        &[
            "el", "los", "las", "del", "y", "mis", "mi", "en", "para", "con", "una", "cada", "por", "revisa",
            "envía", "correo",
        ],
    ),
    (
        "German",
        &[
            "der", "die", "das", "und", "meine", "mein", "mit", "für", "ein", "eine", "jeden", "nach",
            "prüfe", "schicke",
        ],
    ),
    (
        "Portuguese",
        &["os", "as", "meus", "minha", "meu", "em", "para", "com", "uma", "cada", "verifique", "envie"],
    ),
    (
        "Italian",
        &["il", "gli", "della", "dei", "e", "miei", "mia", "per", "con", "ogni", "controlla", "invia"],
    ),
];

const ENGLISH: &[&str] = &[
    "the", "and", "my", "to", "a", "in", "for", "with", "of", "on", "me", "it", "is", "every", "from",
    "into", "them", "what", "check", "send", "find", "get", "put", "post",
];

/// The language `request` seems to be written in, when it is not English: a script other than
/// Latin, or more function words of one other language than of English.
pub fn not_english(request: &str) -> Option<&'static str> {
    let letters: Vec<char> = request.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.is_empty() {
        return None;
    }
    let script = |test: fn(char) -> bool| letters.iter().filter(|c| test(**c)).count() * 2 > letters.len();
    if script(|c| ('\u{3040}'..='\u{30ff}').contains(&c)) {
        return Some("Japanese");
    }
    if script(|c| ('\u{ac00}'..='\u{d7af}').contains(&c)) {
        return Some("Korean");
    }
    if script(|c| ('\u{4e00}'..='\u{9fff}').contains(&c)) {
        return Some("Chinese");
    }
    if script(|c| ('\u{0400}'..='\u{04ff}').contains(&c)) {
        return Some("Russian");
    }
    if script(|c| ('\u{0600}'..='\u{06ff}').contains(&c)) {
        return Some("Arabic");
    }
    if script(|c| !c.is_ascii() && !('\u{00c0}'..='\u{024f}').contains(&c)) {
        return Some("a language other than English");
    }
    let words: Vec<String> = request
        .split(|c: char| !c.is_alphabetic() && c != '\'')
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .collect();
    let english = words.iter().filter(|w| ENGLISH.contains(&w.as_str())).count();
    FOREIGN
        .iter()
        .map(|(language, list)| (*language, words.iter().filter(|w| list.contains(&w.as_str())).count()))
        .filter(|(_, n)| *n >= 2 && *n > english)
        .max_by_key(|(_, n)| *n)
        .map(|(language, _)| language)
}

/// What the reply says about a request not in English.
pub fn note(language: &str) -> String {
    format!(
        "Your request seems to be in {language}. I match it against the catalog's English descriptions, so only the \
         products it names are understood: check each step below, or write the request in English for a better plan."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_not_in_english_are_recognised() {
        assert_eq!(not_english("Gmailの請求書を確認してGoogleスプレッドシートにまとめて"), Some("Japanese"));
        assert_eq!(
            not_english("Vérifie mes e-mails Gmail et mets les factures dans une feuille Google"),
            Some("French")
        );
        assert_eq!(
            not_english("Revisa mi correo de Gmail y pon las facturas en una hoja de Google"),
            Some("Spanish")
        );
        assert_eq!(not_english("Prüfe meine Gmail-Rechnungen und schicke sie mit Slack"), Some("German"));
        assert_eq!(not_english("Check my Gmail for invoices and put them in a Google Sheet"), None);
        assert_eq!(not_english("What time is it in Tokyo?"), None);
        assert_eq!(not_english("post the café menu to Slack"), None);
    }
}
