//! The control socket protocol: one JSON object per line each way.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"start","service":"x"}`,
//! `{"cmd":"stop","service":"x"}`, `{"cmd":"restart","service":"x"}`,
//! `{"cmd":"reboot"}`, `{"cmd":"poweroff"}`.
//!
//! Responses: `{"ok":true,...}` or `{"ok":false,"error":"..."}`; `status`
//! adds `mode`, `conditions` and `services` (see [`ServiceStatus`]).
//! `stop` and `restart` answer once the service has stopped (restarted).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Longest request or response line accepted.
pub const MAX_LINE: usize = 1024 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Status,
    Start { service: String },
    Stop { service: String },
    Restart { service: String },
    Reboot,
    Poweroff,
}

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("bad response from init: {0}")]
    BadResponse(String),
}

impl Request {
    pub fn parse(line: &str) -> Result<Request, ProtocolError> {
        serde_json::from_str(line.trim()).map_err(|e| ProtocolError::BadRequest(e.to_string()))
    }
    /// One line, newline included.
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        s.push('\n');
        s
    }
}

/// One service in a `status` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// `running`, `starting`, `stopping`, `backoff`, `stopped`, `failed`,
    /// `waiting` (needs a condition) or `disabled` (not in this node mode).
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub restarts: u32,
    /// e.g. `exit 1`, `signal SIGKILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    /// Seconds until the next restart (state `backoff`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_in_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waiting_for: Vec<String>,
    pub order: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services: Option<Vec<ServiceStatus>>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response { ok: true, message: Some(message.into()), ..Default::default() }
    }
    pub fn err(error: impl Into<String>) -> Self {
        Response { ok: false, error: Some(error.into()), ..Default::default() }
    }
    pub fn parse(line: &str) -> Result<Response, ProtocolError> {
        serde_json::from_str(line.trim()).map_err(|e| ProtocolError::BadResponse(e.to_string()))
    }
    pub fn to_line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| r#"{"ok":false,"error":"serialize"}"#.into());
        s.push('\n');
        s
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach init at {}: {source} (is this a Triton compute node, and are you root?)", path.display())]
    Connect { path: PathBuf, source: io::Error },
    #[error("talking to init at {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("init at {} closed the connection without answering", path.display())]
    NoAnswer { path: PathBuf },
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
}

/// Sends one request and reads one response. `timeout` bounds each read
/// and write (`None`: wait as long as it takes, e.g. for a long stop).
pub fn call(socket: &Path, req: &Request, timeout: Option<Duration>) -> Result<Response, ClientError> {
    let io_err = |source| ClientError::Io { path: socket.to_path_buf(), source };
    let mut s =
        UnixStream::connect(socket).map_err(|source| ClientError::Connect { path: socket.to_path_buf(), source })?;
    s.set_read_timeout(timeout).map_err(io_err)?;
    s.set_write_timeout(timeout).map_err(io_err)?;
    s.write_all(req.to_line().as_bytes()).map_err(io_err)?;
    let mut line = String::new();
    let n = BufReader::new(&s).take(MAX_LINE as u64).read_line(&mut line).map_err(io_err)?;
    if n == 0 {
        return Err(ClientError::NoAnswer { path: socket.to_path_buf() });
    }
    Ok(Response::parse(&line)?)
}

/// `3d4h`, `5h2m`, `4m10s`, `9s`.
pub fn human_duration(s: u64) -> String {
    let (d, h, m, sec) = (s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}d{h}h")
    } else if h > 0 {
        format!("{h}h{m}m")
    } else if m > 0 {
        format!("{m}m{sec}s")
    } else {
        format!("{sec}s")
    }
}

/// The human-readable `triton-ctl status` table.
pub fn status_table(services: &[ServiceStatus]) -> String {
    let header = ["SERVICE", "STATE", "PID", "RESTARTS", "UPTIME", "LAST EXIT"];
    let rows: Vec<[String; 6]> = services
        .iter()
        .map(|s| {
            let state = match (&s.restart_in_s, s.waiting_for.is_empty()) {
                (Some(t), _) => format!("{} ({}s)", s.state, t),
                (None, false) => format!("{} ({})", s.state, s.waiting_for.join(",")),
                _ => s.state.clone(),
            };
            [
                s.name.clone(),
                state,
                s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                s.restarts.to_string(),
                s.uptime_s.map(human_duration).unwrap_or_else(|| "-".into()),
                s.last_exit.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let fmt_row = |cells: &[String]| {
        let mut line = String::new();
        for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                line.push_str(c);
            } else {
                line.push_str(&format!("{c:<w$}  "));
            }
        }
        line.trim_end().to_string() + "\n"
    };
    let mut out = fmt_row(&header.map(String::from));
    for r in &rows {
        out.push_str(&fmt_row(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let cases = [
            (r#"{"cmd":"status"}"#, Request::Status),
            (r#"{"cmd":"start","service":"a"}"#, Request::Start { service: "a".into() }),
            (r#"{"cmd":"stop","service":"a"}"#, Request::Stop { service: "a".into() }),
            (r#"{"cmd":"restart","service":"a"}"#, Request::Restart { service: "a".into() }),
            (r#"{"cmd":"reboot"}"#, Request::Reboot),
            (r#"{"cmd":"poweroff"}"#, Request::Poweroff),
        ];
        for (text, want) in cases {
            assert_eq!(Request::parse(text).expect(text), want);
            assert_eq!(want.to_line(), format!("{text}\n"));
        }
    }

    #[test]
    fn bad_requests_are_errors() {
        for bad in [
            "",
            "nonsense",
            r#"{"cmd":"explode"}"#,
            r#"{"cmd":"start"}"#,
            r#"{"cmd":"stop","service":"a","force":true}"#,
            r#"{"service":"a"}"#,
            r#"{"cmd":"start","service":5}"#,
        ] {
            let e = Request::parse(bad).expect_err(bad);
            assert!(e.to_string().starts_with("bad request"), "{e}");
        }
    }

    #[test]
    fn responses_serialize_compactly() {
        assert_eq!(Response::err("no such service").to_line(), "{\"ok\":false,\"error\":\"no such service\"}\n");
        let st = Response {
            ok: true,
            services: Some(vec![ServiceStatus {
                name: "a".into(),
                state: "running".into(),
                pid: Some(12),
                restarts: 2,
                last_exit: Some("exit 1".into()),
                uptime_s: Some(65),
                restart_in_s: None,
                waiting_for: vec![],
                order: 1,
            }]),
            ..Default::default()
        };
        let line = st.to_line();
        assert_eq!(Response::parse(&line).expect("parse"), st);
        assert!(line.contains("\"pid\":12") && !line.contains("waiting_for"), "{line}");
    }

    #[test]
    fn table_and_durations() {
        assert_eq!(human_duration(9), "9s");
        assert_eq!(human_duration(250), "4m10s");
        assert_eq!(human_duration(3 * 3600 + 120), "3h2m");
        assert_eq!(human_duration(2 * 86400 + 3600), "2d1h");
        let s = |name: &str, state: &str| ServiceStatus {
            name: name.into(),
            state: state.into(),
            pid: None,
            restarts: 0,
            last_exit: None,
            uptime_s: None,
            restart_in_s: None,
            waiting_for: vec![],
            order: 0,
        };
        let mut w = s("cn-agent", "waiting");
        w.waiting_for = vec!["pool".into()];
        let t = status_table(&[s("ur", "running"), w]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "SERVICE   STATE           PID  RESTARTS  UPTIME  LAST EXIT");
        assert_eq!(lines[2], "cn-agent  waiting (pool)  -    0         -       -");
    }

    #[test]
    fn client_reports_unreachable_socket() {
        let d = tempfile::tempdir().expect("tempdir");
        let e = call(&d.path().join("none.sock"), &Request::Status, None).expect_err("no socket");
        assert!(matches!(e, ClientError::Connect { .. }));
        assert!(e.to_string().contains("cannot reach init"), "{e}");
    }
}
