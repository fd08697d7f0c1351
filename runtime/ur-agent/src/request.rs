//! Incoming messages: what a routing key asks for and the typed body of an
//! execute or ping request. Every way a message can be wrong is a
//! [`RequestError`] that says what was wrong; nothing here panics.
//!
//! Execute body (sdc-ur-agent `onExecute`, CNAPI `invokeUrScript`):
//! `type` (`"script"` | `"file"`), `script` or `file` (string), `args`
//! (array, default `[]`), `env` (object; when present it *replaces* the
//! environment, CNAPI always sends one). `timeout` (milliseconds, optional)
//! is ours: ur has none and CNAPI's Ur path refuses a timeout; the name and
//! unit are those of CNAPI's `CommandExecute` `timeout` parameter. Other
//! keys (`timestamp` in ur's README) are ignored.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

/// What a routing key on the request queue asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `ur.execute.<target>.<reqid>`.
    Execute { reqid: String },
    /// `ur.broadcast.<kind>.<reqid>`.
    Broadcast { kind: String, reqid: String },
}

impl Route {
    /// The request id a reply goes to.
    pub fn reqid(&self) -> &str {
        match self {
            Route::Execute { reqid } | Route::Broadcast { reqid, .. } => reqid,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("routing key {0:?} is not ur.execute.<node>.<reqid> or ur.broadcast.<kind>.<reqid>")]
    RoutingKey(String),
    #[error("body is {size} bytes, over the {limit}-byte limit (--max-message)")]
    TooLarge { size: usize, limit: usize },
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is not a JSON object (got {0})")]
    NotObject(&'static str),
    #[error("missing field {0:?}")]
    Missing(&'static str),
    #[error("field {field:?} must be {expected} (got {got})")]
    WrongType { field: String, expected: &'static str, got: &'static str },
    #[error("unknown type {0:?}: must be \"script\" or \"file\"")]
    UnknownType(String),
    #[error("field {0:?} must not be empty")]
    Empty(&'static str),
    #[error("timeout must be a positive number of milliseconds (got {0})")]
    BadTimeout(String),
    #[error("unknown broadcast {0:?} (only \"sysinfo\" is known)")]
    UnknownBroadcast(String),
    #[error("client_id {0:?} makes the reply routing key longer than 255 bytes")]
    ClientIdTooLong(String),
}

/// Splits a request routing key; `ur.execute.<target>.<reqid>` where target
/// is `<uuid>` or `<uuid>-<adminMac>` (the bindings guarantee it is ours).
pub fn route(key: &str) -> Result<Route, RequestError> {
    let parts: Vec<&str> = key.split('.').collect();
    let bad = || RequestError::RoutingKey(key.to_string());
    if parts.len() != 4 || parts[0] != "ur" || parts.iter().any(|p| p.is_empty()) {
        return Err(bad());
    }
    match parts[1] {
        "execute" => Ok(Route::Execute { reqid: parts[3].to_string() }),
        "broadcast" => Ok(Route::Broadcast { kind: parts[2].to_string(), reqid: parts[3].to_string() }),
        _ => Err(bad()),
    }
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// Script text, written to a private temp file and executed.
    Script(String),
    /// An existing executable.
    File(String),
}

/// A validated execute request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecuteRequest {
    pub program: Program,
    pub args: Vec<String>,
    /// `Some` replaces the whole environment.
    pub env: Option<BTreeMap<String, String>>,
    pub timeout: Option<Duration>,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn object(body: &[u8]) -> Result<Map<String, Value>, RequestError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(RequestError::NotObject(kind(&other))),
        Err(e) => Err(RequestError::NotJson(e.to_string())),
    }
}

fn string_field(m: &Map<String, Value>, field: &'static str) -> Result<String, RequestError> {
    match m.get(field) {
        None | Some(Value::Null) => Err(RequestError::Missing(field)),
        Some(Value::String(s)) if s.is_empty() => Err(RequestError::Empty(field)),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(RequestError::WrongType { field: field.into(), expected: "a string", got: kind(other) }),
    }
}

/// A scalar as node's `String(v)` would give it (args and env values).
fn scalar(field: String, v: &Value) -> Result<String, RequestError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(RequestError::WrongType { field, expected: "a string, number or boolean", got: kind(other) }),
    }
}

/// Parses and validates an execute body.
pub fn parse_execute(body: &[u8]) -> Result<ExecuteRequest, RequestError> {
    let m = object(body)?;
    let ty = string_field(&m, "type")?;
    let program = match ty.as_str() {
        "script" => Program::Script(string_field(&m, "script")?),
        "file" => Program::File(string_field(&m, "file")?),
        _ => return Err(RequestError::UnknownType(ty)),
    };
    let args = match m.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => {
            a.iter().enumerate().map(|(i, v)| scalar(format!("args[{i}]"), v)).collect::<Result<_, _>>()?
        }
        Some(other) => {
            return Err(RequestError::WrongType { field: "args".into(), expected: "an array", got: kind(other) })
        }
    };
    let env = match m.get("env") {
        None | Some(Value::Null) => None,
        Some(Value::Object(o)) => {
            let mut env = BTreeMap::new();
            for (k, v) in o {
                if k.is_empty() || k.contains(['=', '\0']) {
                    return Err(RequestError::WrongType {
                        field: format!("env key {k:?}"),
                        expected: "a name without '=' or NUL",
                        got: "such a name",
                    });
                }
                env.insert(k.clone(), scalar(format!("env.{k}"), v)?);
            }
            Some(env)
        }
        Some(other) => {
            return Err(RequestError::WrongType { field: "env".into(), expected: "an object", got: kind(other) })
        }
    };
    let timeout = match m.get("timeout") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(ms) if ms >= 1.0 && ms.is_finite() && ms <= 1e12 => Some(Duration::from_millis(ms as u64)),
            _ => return Err(RequestError::BadTimeout(n.to_string())),
        },
        Some(other) => return Err(RequestError::BadTimeout(kind(other).to_string())),
    };
    Ok(ExecuteRequest { program, args, env, timeout })
}

/// A ping: `{client_id, id}`; the ack goes to `ur.ack<client_id>.<uuid>`
/// with `req_id` = `id` (any JSON value; `null` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Ping {
    pub client_id: String,
    pub id: Value,
}

/// Parses a ping body (`client_id` may be a string or a number, as ur
/// concatenates it into the key).
pub fn parse_ping(body: &[u8]) -> Result<Ping, RequestError> {
    let m = object(body)?;
    let client_id = match m.get("client_id") {
        None | Some(Value::Null) => return Err(RequestError::Missing("client_id")),
        Some(Value::String(s)) if s.is_empty() => return Err(RequestError::Empty("client_id")),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => {
            return Err(RequestError::WrongType {
                field: "client_id".into(),
                expected: "a string or number",
                got: kind(other),
            })
        }
    };
    // ur.ack<client_id>.<uuid>: 7 + len + 1 + uuid (36).
    if client_id.len() > 200 {
        return Err(RequestError::ClientIdTooLong(client_id));
    }
    Ok(Ping { client_id, id: m.get("id").cloned().unwrap_or(Value::Null) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn exec(v: Value) -> Result<ExecuteRequest, RequestError> {
        parse_execute(v.to_string().as_bytes())
    }

    #[test]
    fn routes() {
        assert_eq!(route("ur.execute.abc.123"), Ok(Route::Execute { reqid: "123".into() }));
        assert_eq!(route("ur.execute.abc-00:11:22:33:44:55.9f"), Ok(Route::Execute { reqid: "9f".into() }));
        assert_eq!(
            route("ur.broadcast.sysinfo.77"),
            Ok(Route::Broadcast { kind: "sysinfo".into(), reqid: "77".into() })
        );
        for bad in ["ur.execute.abc", "ur.execute.abc.1.2", "ur.other.a.b", "xx.execute.a.b", "ur.execute..1", ""] {
            assert_eq!(route(bad), Err(RequestError::RoutingKey(bad.into())), "{bad}");
        }
        assert_eq!(route("ur.execute.abc.123").expect("route").reqid(), "123");
    }

    #[test]
    fn cnapi_script_request() {
        let r = exec(json!({"type":"script","script":"#!/bin/bash\necho hi","args":["a",1,true],"env":{"PATH":"/usr/bin","N":2}}))
            .expect("valid");
        assert_eq!(r.program, Program::Script("#!/bin/bash\necho hi".into()));
        assert_eq!(r.args, ["a", "1", "true"]);
        let env = r.env.expect("env");
        assert_eq!(env.get("PATH").map(String::as_str), Some("/usr/bin"));
        assert_eq!(env.get("N").map(String::as_str), Some("2"));
        assert_eq!(r.timeout, None);
    }

    #[test]
    fn file_request_defaults() {
        let r = exec(json!({"type":"file","file":"/usr/bin/true","timestamp":"2010-11-10T00:00:00Z"})).expect("valid");
        assert_eq!(r.program, Program::File("/usr/bin/true".into()));
        assert!(r.args.is_empty());
        assert_eq!(r.env, None);
        let r = exec(json!({"type":"file","file":"/x","timeout":1500,"args":null,"env":null})).expect("valid");
        assert_eq!(r.timeout, Some(Duration::from_millis(1500)));
        assert_eq!(r.env, None);
    }

    #[test]
    fn malformed_requests() {
        assert!(matches!(parse_execute(b"{not json"), Err(RequestError::NotJson(_))));
        assert!(matches!(parse_execute(b""), Err(RequestError::NotJson(_))));
        assert_eq!(parse_execute(b"[1,2]"), Err(RequestError::NotObject("an array")));
        assert_eq!(exec(json!({"script":"x"})), Err(RequestError::Missing("type")));
        assert_eq!(exec(json!({"type":"script"})), Err(RequestError::Missing("script")));
        assert_eq!(exec(json!({"type":"file","file":""})), Err(RequestError::Empty("file")));
        assert_eq!(exec(json!({"type":"shell","script":"x"})), Err(RequestError::UnknownType("shell".into())));
        assert_eq!(
            exec(json!({"type":7})),
            Err(RequestError::WrongType { field: "type".into(), expected: "a string", got: "a number" })
        );
        assert_eq!(
            exec(json!({"type":"script","script":"x","args":"a b"})),
            Err(RequestError::WrongType { field: "args".into(), expected: "an array", got: "a string" })
        );
        assert_eq!(
            exec(json!({"type":"script","script":"x","args":[{"a":1}]})),
            Err(RequestError::WrongType {
                field: "args[0]".into(),
                expected: "a string, number or boolean",
                got: "an object"
            })
        );
        assert_eq!(
            exec(json!({"type":"script","script":"x","env":["A=1"]})),
            Err(RequestError::WrongType { field: "env".into(), expected: "an object", got: "an array" })
        );
        assert!(matches!(
            exec(json!({"type":"script","script":"x","env":{"A=B":"1"}})),
            Err(RequestError::WrongType { .. })
        ));
        assert!(matches!(
            exec(json!({"type":"script","script":"x","env":{"A":null}})),
            Err(RequestError::WrongType { .. })
        ));
        assert_eq!(exec(json!({"type":"script","script":"x","timeout":0})), Err(RequestError::BadTimeout("0".into())));
        assert_eq!(
            exec(json!({"type":"script","script":"x","timeout":-5})),
            Err(RequestError::BadTimeout("-5".into()))
        );
        assert_eq!(
            exec(json!({"type":"script","script":"x","timeout":"10"})),
            Err(RequestError::BadTimeout("a string".into()))
        );
        let e = exec(json!({"type":"shell"})).expect_err("bad").to_string();
        assert_eq!(e, "unknown type \"shell\": must be \"script\" or \"file\"");
    }

    #[test]
    fn pings() {
        let p = parse_ping(br#"{"client_id":"c1","id":"r1"}"#).expect("ping");
        assert_eq!(p, Ping { client_id: "c1".into(), id: json!("r1") });
        let p = parse_ping(br#"{"client_id":42}"#).expect("ping");
        assert_eq!((p.client_id.as_str(), p.id), ("42", Value::Null));
        assert_eq!(parse_ping(br#"{"id":"r1"}"#), Err(RequestError::Missing("client_id")));
        assert_eq!(parse_ping(br#"{"client_id":""}"#), Err(RequestError::Empty("client_id")));
        assert!(matches!(parse_ping(br#"{"client_id":[1]}"#), Err(RequestError::WrongType { .. })));
        assert!(matches!(parse_ping(b"nope"), Err(RequestError::NotJson(_))));
        let long = format!(r#"{{"client_id":"{}"}}"#, "x".repeat(300));
        assert!(matches!(parse_ping(long.as_bytes()), Err(RequestError::ClientIdTooLong(_))));
    }
}
