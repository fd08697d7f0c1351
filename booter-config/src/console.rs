//! A VM's serial console as a growing list of lines: kept in memory for
//! waits, written to a log file with timestamps, optionally echoed to
//! stderr prefixed with the CN name.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
struct Lines {
    lines: Vec<String>,
    /// Attached streams still open.
    open: usize,
    closed: bool,
}

/// Shared console state; clone to read it from several places.
#[derive(Debug, Clone)]
pub struct Console {
    name: String,
    inner: Arc<(Mutex<Lines>, Condvar)>,
}

/// Why a wait on the console failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("{cn}: {why} waiting for {what}; last console lines:\n{tail}")]
    Failed { cn: String, what: String, why: &'static str, tail: String },
    #[error("{cn}: event line {line:?} is not JSON: {reason}")]
    BadEvent { cn: String, line: String, reason: String },
}

impl Console {
    pub fn new(name: &str) -> Console {
        Console { name: name.to_string(), inner: Arc::new((Mutex::new(Lines::default()), Condvar::new())) }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reads `stream` line by line on a thread until EOF; each line is
    /// stored, written to `log` as `[seconds since t0] line` and, when
    /// `echo`, printed to stderr as `[name] line`. The console is closed
    /// when every attached stream has ended.
    pub fn attach(
        &self,
        stream: impl Read + Send + 'static,
        prefix: &'static str,
        log: Option<File>,
        t0: Instant,
        echo: bool,
    ) {
        if let Ok(mut g) = self.inner.0.lock() {
            g.open += 1;
            g.closed = false;
        }
        let me = self.clone();
        std::thread::spawn(move || {
            let mut log = log;
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = String::from_utf8_lossy(&buf);
                        let line = format!("{prefix}{}", text.trim_end_matches(['\r', '\n']));
                        if let Some(f) = log.as_mut() {
                            let _ = writeln!(f, "[{:9.3}] {line}", t0.elapsed().as_secs_f64());
                        }
                        if echo {
                            eprintln!("[{}] {line}", me.name);
                        }
                        me.push(line);
                    }
                }
            }
            me.stream_ended();
        });
    }

    /// Adds a line (also used by tests).
    pub fn push(&self, line: String) {
        if let Ok(mut g) = self.inner.0.lock() {
            g.lines.push(line);
        }
        self.inner.1.notify_all();
    }

    fn stream_ended(&self) {
        if let Ok(mut g) = self.inner.0.lock() {
            g.open = g.open.saturating_sub(1);
            g.closed = g.open == 0;
        }
        self.inner.1.notify_all();
    }

    /// Marks the console ended (QEMU exited).
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.0.lock() {
            g.closed = true;
        }
        self.inner.1.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.inner.0.lock().map(|g| g.lines.clone()).unwrap_or_default()
    }

    pub fn tail(&self, n: usize) -> String {
        let l = self.lines();
        l[l.len().saturating_sub(n)..].join("\n")
    }

    /// Waits for a line at index ≥ `from` satisfying `pred`.
    pub fn wait_line_from(
        &self,
        from: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Result<(usize, String), WaitError> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.inner;
        let fail = |why| WaitError::Failed { cn: self.name.clone(), what: what.into(), why, tail: self.tail(60) };
        let mut g = m.lock().map_err(|_| fail("console lock poisoned"))?;
        loop {
            if let Some((i, l)) = g.lines.iter().enumerate().skip(from).find(|(_, l)| pred(l)) {
                return Ok((i, l.clone()));
            }
            let now = Instant::now();
            if g.closed || now >= deadline {
                let why = if g.closed { "QEMU exited" } else { "timed out" };
                drop(g);
                return Err(fail(why));
            }
            g = cv.wait_timeout(g, deadline - now).map_err(|_| fail("console lock poisoned"))?.0;
        }
    }

    pub fn wait_line(&self, what: &str, timeout: Duration, pred: impl Fn(&str) -> bool) -> Result<String, WaitError> {
        self.wait_line_from(0, what, timeout, pred).map(|(_, l)| l)
    }

    /// Waits for a `TRITON-EVENT` whose JSON has `"phase": phase` and
    /// satisfies `pred`; returns the JSON.
    pub fn wait_event_where(
        &self,
        phase: &str,
        timeout: Duration,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value, WaitError> {
        let line = self.wait_line(&format!("TRITON-EVENT {phase}"), timeout, |l| {
            event_json(l).is_some_and(|v| v["phase"] == phase && pred(&v))
        })?;
        event_json(&line).ok_or_else(|| WaitError::BadEvent {
            cn: self.name.clone(),
            line: line.clone(),
            reason: "unparsable".into(),
        })
    }

    pub fn wait_event(&self, phase: &str, timeout: Duration) -> Result<serde_json::Value, WaitError> {
        self.wait_event_where(phase, timeout, |_| true)
    }
}

/// The JSON of a `TRITON-EVENT {...}` console line.
pub fn event_json(line: &str) -> Option<serde_json::Value> {
    let (_, json) = line.split_once("TRITON-EVENT ")?;
    serde_json::from_str(json.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_found_by_phase_and_fields() {
        let c = Console::new("cn1");
        c.push("noise".into());
        c.push(r#"TRITON-EVENT {"mode":"setup","ok":true,"phase":"mode"}"#.into());
        c.push(r#"[  3.1] TRITON-EVENT {"mode":"unsetup","ok":true,"phase":"mode"}"#.into());
        let v = c.wait_event_where("mode", Duration::from_millis(10), |v| v["mode"] == "unsetup").expect("event");
        assert_eq!(v["ok"], true);
        c.close();
        let e = c.wait_event("ready", Duration::from_secs(5)).expect_err("must fail");
        assert!(e.to_string().contains("QEMU exited"), "{e}");
    }
}
