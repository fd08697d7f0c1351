//! Console output: human lines on `/dev/console`, a copy in the kernel log,
//! and the machine-readable `TRITON-EVENT` lines the tests and benchmarks read.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::Mutex;
use std::time::Instant;

use serde_json::json;

static START: Mutex<Option<Instant>> = Mutex::new(None);

/// Installs the tracing subscriber (console + kmsg).
pub fn install() {
    if let Ok(mut s) = START.lock() {
        s.get_or_insert_with(Instant::now);
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(|| ConsoleWriter)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

struct ConsoleWriter;

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        line_bytes(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn line_bytes(buf: &[u8]) {
    let text = String::from_utf8_lossy(buf);
    let text = text.trim_end_matches('\n');
    // /dev/console may not exist yet (very early) or be gone; stderr is the fallback.
    match OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut c) => {
            let _ = writeln!(c, "{text}");
        }
        Err(_) => eprintln!("{text}"),
    }
    // Level 7 (debug): kept in dmesg, not echoed to the console a second time.
    if let Ok(mut k) = OpenOptions::new().write(true).open("/dev/kmsg") {
        for l in text.lines() {
            let _ = k.write_all(format!("<7>triton-init: {l}\n").as_bytes());
        }
    }
}

/// Prints one line on the console (and the kernel log).
pub fn line(msg: &str) {
    line_bytes(msg.as_bytes());
}

/// Milliseconds since the kernel booted (`/proc/uptime`), so stage 1 and
/// stage 2 report on one clock; since init started if /proc is not there.
pub fn uptime_ms() -> u64 {
    if let Some(ms) = std::fs::read_to_string("/proc/uptime").ok().and_then(|t| parse_uptime_ms(&t)) {
        return ms;
    }
    START.lock().ok().and_then(|s| s.map(|t| t.elapsed().as_millis() as u64)).unwrap_or(0)
}

fn parse_uptime_ms(text: &str) -> Option<u64> {
    let secs: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some((secs * 1000.0) as u64)
}

/// Formats a `TRITON-EVENT` line: `phase`, `ok`, then the given fields.
pub fn event_line(phase: &str, ok: bool, fields: serde_json::Value) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("phase".into(), phase.into());
    obj.insert("ok".into(), ok.into());
    if let serde_json::Value::Object(m) = fields {
        obj.extend(m);
    }
    format!("TRITON-EVENT {}", serde_json::Value::Object(obj))
}

/// Prints a `TRITON-EVENT` line.
pub fn event(phase: &str, ok: bool, fields: serde_json::Value) {
    line(&event_line(phase, ok, fields));
}

/// Runs `f` as one phase: times it and prints its `TRITON-EVENT` (with the
/// phase's own `ms`; failures carry the error).
pub fn phase<T>(name: &str, f: impl FnOnce() -> anyhow::Result<(T, serde_json::Value)>) -> anyhow::Result<T> {
    let t = Instant::now();
    match f() {
        Ok((v, mut fields)) => {
            if let serde_json::Value::Object(m) = &mut fields {
                m.insert("ms".into(), (t.elapsed().as_millis() as u64).into());
            }
            event(name, true, fields);
            Ok(v)
        }
        Err(e) => {
            event(name, false, json!({ "ms": t.elapsed().as_millis() as u64, "error": format!("{e:#}") }));
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_parse() {
        assert_eq!(parse_uptime_ms("12.34 40.00\n"), Some(12340));
        assert_eq!(parse_uptime_ms("x"), None);
    }

    #[test]
    fn event_shape() {
        let l = event_line("fetch", false, serde_json::json!({"error": "x", "ms": 3}));
        let json = l.strip_prefix("TRITON-EVENT ").expect("prefix");
        let v: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(v["phase"], "fetch");
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "x");
        assert!(!l.contains('\n'));
    }
}
