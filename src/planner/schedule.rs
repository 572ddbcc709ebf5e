//! When a request wants its agent to run: "every Friday", "each morning at 8", "daily",
//! "whenever a new invoice arrives". dynamcp runs an agent when asked and schedules nothing, so
//! the plan keeps the wording in its workflow and the reply says how to trigger the runs.

use crate::catalog::needs::WEEKDAYS;

/// Words after "every" / "each" that make a schedule (with [`WEEKDAYS`]).
const PERIODS: &[&str] = &[
    "morning", "evening", "night", "day", "weekday", "weekend", "week", "month", "year", "hour", "minute",
    "quarter", "other",
];

/// One-word schedules.
const ADVERBS: &[&str] = &["daily", "weekly", "hourly", "monthly", "nightly", "yearly", "annually"];

/// The schedule or trigger `request` asks for, as written, if any.
pub fn of(request: &str) -> Option<String> {
    let words: Vec<&str> = request.split_whitespace().collect();
    let clean = |w: &str| w.trim_matches(|c: char| !c.is_alphanumeric()).to_lowercase();
    for (i, word) in words.iter().enumerate() {
        let w = clean(word);
        let next = words.get(i + 1).map(|n| clean(n)).unwrap_or_default();
        let after = words.get(i + 2).map(|n| clean(n)).unwrap_or_default();
        let period = |p: &str| {
            let p = p.trim_end_matches('s');
            PERIODS.contains(&p) || WEEKDAYS.contains(&p)
        };
        let phrase = |len: usize| {
            let end = (i + len).min(words.len());
            let mut text = words[i..end].join(" ");
            // "every morning at 8" keeps its time.
            if words.get(end).is_some_and(|a| clean(a) == "at")
                && let Some(t) = words.get(end + 1)
            {
                text = format!("{text} at {t}");
            }
            text.trim_end_matches(|c: char| !c.is_alphanumeric()).to_owned()
        };
        if matches!(w.as_str(), "every" | "each")
            && (period(&next)
                || next.parse::<u32>().is_ok() && period(&after)
                || next == "other" && period(&after))
        {
            let len = if period(&next) && next != "other" { 2 } else { 3 };
            return Some(phrase(len));
        }
        if ADVERBS.contains(&w.as_str()) {
            return Some(phrase(1));
        }
        if w == "on" && WEEKDAYS.contains(&next.trim_end_matches('s')) && next.ends_with('s') {
            return Some(phrase(2));
        }
        if w == "whenever" || w == "when" && words.iter().skip(i).take(8).any(|n| is_event(&clean(n))) {
            let end = words
                .iter()
                .skip(i + 1)
                .position(|n| n.ends_with([',', '.', ';']))
                .map_or(words.len(), |p| i + p + 2);
            return Some(
                words[i..end.min(i + 10).min(words.len())]
                    .join(" ")
                    .trim_end_matches([',', '.', ';'])
                    .to_owned(),
            );
        }
    }
    None
}

/// Verbs of something happening, that make "when …" a trigger rather than a question.
fn is_event(word: &str) -> bool {
    [
        "arrives", "arrive", "changes", "change", "appears", "lands", "drops", "rises", "falls", "fails",
        "exceeds", "goes",
    ]
    .contains(&word)
}

/// What the reply says about a schedule.
pub fn advice(when: &str) -> String {
    format!(
        "You want this to run {when}. dynamcp runs an agent when it is asked to and does not schedule runs itself: \
         trigger it with POST /api/agents/<id>/run from cron, a systemd timer or your CI's scheduler \
         (e.g. the crontab line `0 8 * * 1-5 curl -s -X POST …/api/agents/<id>/run -H 'Content-Type: application/json' \
         -d '{{\"input\": \"run the workflow\"}}'` runs it at 8:00 on weekdays)."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_and_triggers_are_found_as_written() {
        assert_eq!(of("every Friday, email me the sales report").as_deref(), Some("every Friday"));
        assert_eq!(of("Every morning at 8am summarise my inbox").as_deref(), Some("Every morning at 8am"));
        assert_eq!(of("post the weather to Slack daily").as_deref(), Some("daily"));
        assert_eq!(of("check the site every 15 minutes").as_deref(), Some("every 15 minutes"));
        assert_eq!(of("back up the db on Sundays").as_deref(), Some("on Sundays"));
        assert_eq!(
            of("whenever a new invoice arrives in Gmail, add it to the sheet").as_deref(),
            Some("whenever a new invoice arrives in Gmail")
        );
        assert_eq!(
            of("tell me when the price drops below $100").as_deref(),
            Some("when the price drops below $100")
        );
        assert_eq!(of("check my Gmail for invoices and put them in a Google Sheet"), None);
        assert_eq!(of("what is every prime below 20"), None);
        assert_eq!(of("when was the Eiffel tower built"), None);
    }
}
