//! Outgoing bodies and routing keys, ids and timestamps.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backoff::random_u64;

/// `exit_status` of the reply to a request that was rejected before anything
/// ran (malformed, too large, unknown type): the shell's "usage" status.
pub const REJECTED_EXIT_STATUS: i32 = 2;

/// The reply to an execute: what CNAPI reads (`msg.exit_status`,
/// `msg.stdout`, `msg.stderr`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecuteReply {
    pub exit_status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl ExecuteReply {
    /// The reply to a request that could not be run: `stderr` says why.
    pub fn rejected(reason: &str) -> ExecuteReply {
        ExecuteReply {
            exit_status: REJECTED_EXIT_STATUS,
            stdout: String::new(),
            stderr: format!("ur-agent: request rejected: {reason}\n"),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The ping answer: `{req_id, timestamp}` (timestamp as JS `toISOString()`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingAck {
    pub req_id: Value,
    pub timestamp: String,
}

impl PingAck {
    pub fn new(req_id: Value, now: SystemTime) -> PingAck {
        PingAck { req_id, timestamp: iso8601_millis(now) }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// `ur.execute-reply.<uuid>.<reqid>` (execute and broadcast replies).
pub fn execute_reply_key(uuid: &str, reqid: &str) -> String {
    format!("ur.execute-reply.{uuid}.{reqid}")
}

/// `ur.ack<client_id>.<uuid>` (no dot between `ack` and the client id).
pub fn ping_ack_key(client_id: &str, uuid: &str) -> String {
    format!("ur.ack{client_id}.{uuid}")
}

/// `ur.sysinfo.<uuid>.<8 hex>`.
pub fn sysinfo_key(uuid: &str) -> String {
    format!("ur.sysinfo.{uuid}.{}", gen_id())
}

/// `ur.startup.<uuid>`.
pub fn startup_key(uuid: &str) -> String {
    format!("ur.startup.{uuid}")
}

/// Eight lower-case hex digits (ur's `genId`, zero-padded).
pub fn gen_id() -> String {
    format!("{:08x}", random_u64() as u32)
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), as JavaScript's `toISOString()`.
pub fn iso8601_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day) in the proleptic Gregorian
/// calendar (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::time::Duration;

    #[test]
    fn timestamps_match_javascript() {
        assert_eq!(iso8601_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // new Date(1627800000123).toISOString()
        let t = UNIX_EPOCH + Duration::from_millis(1_627_800_000_123);
        assert_eq!(iso8601_millis(t), "2021-08-01T06:40:00.123Z");
        // Leap day.
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(iso8601_millis(t), "2000-02-29T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(iso8601_millis(t), "2099-12-31T23:59:59.000Z");
    }

    #[test]
    fn keys_and_ids() {
        assert_eq!(execute_reply_key("u", "r"), "ur.execute-reply.u.r");
        assert_eq!(ping_ack_key("c1", "u"), "ur.ackc1.u");
        assert_eq!(startup_key("u"), "ur.startup.u");
        let k = sysinfo_key("u");
        let id = k.strip_prefix("ur.sysinfo.u.").expect("prefix");
        assert!(id.len() == 8 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{k}");
    }

    #[test]
    fn reply_bodies() {
        let r = ExecuteReply { exit_status: 0, stdout: "hi\n".into(), stderr: String::new() };
        let v: Value = serde_json::from_slice(&r.to_json()).expect("json");
        assert_eq!(v, json!({"exit_status":0,"stdout":"hi\n","stderr":""}));
        let r = ExecuteReply::rejected("body is not JSON: EOF");
        assert_eq!(r.exit_status, REJECTED_EXIT_STATUS);
        assert_eq!(r.stderr, "ur-agent: request rejected: body is not JSON: EOF\n");
        let a = PingAck::new(json!("r1"), UNIX_EPOCH);
        let v: Value = serde_json::from_slice(&a.to_json()).expect("json");
        assert_eq!(v, json!({"req_id":"r1","timestamp":"1970-01-01T00:00:00.000Z"}));
    }
}
