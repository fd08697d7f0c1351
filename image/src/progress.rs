//! Per-stage progress on stderr: a spinner on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Timings of the stages run so far.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Timings(pub Vec<(String, f64)>);

impl Timings {
    pub fn total(&self) -> f64 {
        self.0.iter().map(|(_, s)| s).sum()
    }
}

/// Runs `f` as a named stage.
pub fn stage<T>(t: &mut Timings, name: &str, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let start = Instant::now();
    let bar = if std::io::stderr().is_terminal() {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        b.set_message(name.to_string());
        b.enable_steady_tick(Duration::from_millis(200));
        Some(b)
    } else {
        eprintln!("==> {name}");
        None
    };
    let r = f();
    let secs = start.elapsed().as_secs_f64();
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    match &r {
        Ok(_) => eprintln!("==> {name}: done in {secs:.1}s"),
        Err(_) => eprintln!("==> {name}: FAILED after {secs:.1}s"),
    }
    t.0.push((name.to_string(), secs));
    r
}
