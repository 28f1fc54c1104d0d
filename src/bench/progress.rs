//! [`Progress`]: the progress bar `ringcache bench` draws on stderr while it runs.
//!
//! Promises: nothing is drawn when stderr is not a terminal (so pipes and CI logs stay clean);
//! the bar is cleared before the report is printed; its task has ended when `finish` returns.

// A display of the run's wall-clock progress (clippy.toml's clock rule is for the core).
#![allow(clippy::disallowed_methods)]

use crate::bench::runner::Clock;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Progress {
    bar: ProgressBar,
    task: tokio::task::JoinHandle<()>,
}

impl Progress {
    pub(crate) fn start(clock: Arc<Clock>) -> Option<Progress> {
        if !std::io::stderr().is_terminal() {
            return None;
        }
        let total = clock.end - clock.start;
        let bar = ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:40}] {msg}")
                .expect("a valid template")
                .progress_chars("=> "),
        );
        let shown = bar.clone();
        let task = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64);
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let now = Instant::now();
                let done = clock.completed.load(Ordering::Relaxed);
                let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
                last = (now, done);
                shown.set_position((now - clock.start).as_millis() as u64);
                shown.set_prefix(if now < clock.measure_from {
                    "warm-up"
                } else {
                    "measuring"
                });
                shown.set_message(format!(
                    "{rate:>8.0} ops/s, {} errors",
                    clock.failed.load(Ordering::Relaxed)
                ));
            }
        });
        Some(Progress { bar, task })
    }

    pub(crate) async fn finish(self) {
        self.task.abort();
        let _ = self.task.await;
        self.bar.finish_and_clear();
    }
}
