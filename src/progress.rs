//! Progress of long operations (catalog import, embedding): a bar on a terminal, periodic log
//! lines otherwise, so a service under systemd or Docker still shows it is alive.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports `(done, total)` for one named task.
pub struct Progress {
    what: String,
    bar: Option<ProgressBar>,
    last_log: Mutex<Option<Instant>>,
}

/// Seconds between log lines when there is no terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);

impl Progress {
    pub fn new(what: impl Into<String>) -> Self {
        let what = what.into();
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_message(what.clone());
            bar
        });
        Self { what, bar, last_log: Mutex::new(None) }
    }

    pub fn update(&self, done: u64, total: u64) {
        // Nothing to do is nothing to report.
        if total == 0 {
            return;
        }
        if let Some(bar) = &self.bar {
            bar.set_length(total);
            bar.set_position(done);
            if done >= total {
                bar.finish_and_clear();
            }
            return;
        }
        let mut last = match self.last_log.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let due = last.is_none_or(|t| t.elapsed() >= LOG_EVERY);
        if due || done >= total {
            tracing::info!(task = %self.what, done, total, "progress");
            *last = Some(Instant::now());
        }
    }
}
