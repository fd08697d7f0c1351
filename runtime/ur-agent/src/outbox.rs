//! Messages waiting to be published, in order, until the broker confirms
//! them (publisher confirms). The publisher takes the front message, sends
//! it, and removes it only on a confirm; if the connection breaks, the
//! message stays at the front and goes out first after reconnecting. An
//! execute reply is therefore never lost while the agent runs, and the
//! execute itself is never run again (see [`RecentRequests`]).
//!
//! Kinds differ in what a broken connection does to them:
//! - execute and broadcast replies, and the startup message, are kept;
//! - a ping ack is dropped (the pinger has long given up);
//! - sysinfo is kept, but only the newest one waits (a new one replaces
//!   the queued one).
//!
//! Pure; the agent wraps it in a mutex.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ExecuteReply,
    BroadcastReply,
    PingAck,
    Sysinfo,
    Startup,
}

/// What to do once the broker has confirmed the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterConfirm {
    Nothing,
    /// Write the once-per-boot startup marker.
    WriteStartupMarker,
    /// The script exited 113: reboot now that the reply is out.
    Reboot {
        reqid: String,
    },
}

/// One message to publish on `amq.topic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub id: u64,
    pub routing_key: String,
    pub body: Arc<Vec<u8>>,
    pub kind: Kind,
    pub after: AfterConfirm,
}

#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Outgoing>,
    in_flight: Option<u64>,
    next_id: u64,
}

impl Outbox {
    pub fn new() -> Outbox {
        Outbox::default()
    }

    /// Queues a message; returns its id. A sysinfo replaces any queued
    /// (not in-flight) sysinfo.
    pub fn push(&mut self, routing_key: String, body: Vec<u8>, kind: Kind, after: AfterConfirm) -> u64 {
        if kind == Kind::Sysinfo {
            let in_flight = self.in_flight;
            self.queue.retain(|m| m.kind != Kind::Sysinfo || Some(m.id) == in_flight);
        }
        self.next_id += 1;
        let id = self.next_id;
        self.queue.push_back(Outgoing { id, routing_key, body: Arc::new(body), kind, after });
        id
    }

    /// The front message to publish now (marked in flight), or `None` when
    /// empty or when the front is already in flight.
    pub fn take_next(&mut self) -> Option<Outgoing> {
        if self.in_flight.is_some() {
            return None;
        }
        let m = self.queue.front()?.clone();
        self.in_flight = Some(m.id);
        Some(m)
    }

    /// The broker confirmed message `id`: it leaves the queue.
    pub fn confirmed(&mut self, id: u64) -> Option<AfterConfirm> {
        if self.in_flight == Some(id) {
            self.in_flight = None;
        }
        let pos = self.queue.iter().position(|m| m.id == id)?;
        self.queue.remove(pos).map(|m| m.after)
    }

    /// Publishing `id` failed or was not confirmed: it stays at the front.
    pub fn failed(&mut self, id: u64) {
        if self.in_flight == Some(id) {
            self.in_flight = None;
        }
    }

    /// The connection is gone: nothing is in flight any more, stale ping
    /// acks are dropped. Returns how many messages are still waiting.
    pub fn disconnected(&mut self) -> usize {
        self.in_flight = None;
        self.queue.retain(|m| m.kind != Kind::PingAck);
        self.queue.len()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Routing keys in publish order (for logs and tests).
    pub fn keys(&self) -> Vec<&str> {
        self.queue.iter().map(|m| m.routing_key.as_str()).collect()
    }
}

/// Execute request ids seen recently (running, or replied): a request that
/// arrives again with the same id is not run again. Bounded; the oldest ids
/// are forgotten first.
#[derive(Debug)]
pub struct RecentRequests {
    order: VecDeque<String>,
    set: HashSet<String>,
    cap: usize,
}

impl RecentRequests {
    pub fn new(cap: usize) -> RecentRequests {
        RecentRequests { order: VecDeque::new(), set: HashSet::new(), cap: cap.max(1) }
    }

    /// Records `reqid`; `false` if it was already there.
    pub fn insert(&mut self, reqid: &str) -> bool {
        if self.set.contains(reqid) {
            return false;
        }
        if self.order.len() == self.cap {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        self.order.push_back(reqid.to_string());
        self.set.insert(reqid.to_string());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(o: &mut Outbox, key: &str, kind: Kind) -> u64 {
        o.push(key.into(), key.as_bytes().to_vec(), kind, AfterConfirm::Nothing)
    }

    #[test]
    fn in_order_and_removed_only_on_confirm() {
        let mut o = Outbox::new();
        let a = push(&mut o, "a", Kind::ExecuteReply);
        let b = push(&mut o, "b", Kind::ExecuteReply);
        let m = o.take_next().expect("a");
        assert_eq!(m.id, a);
        assert_eq!(o.take_next(), None, "one in flight at a time");
        o.failed(a);
        assert_eq!(o.take_next().expect("a again").id, a, "a failed publish is retried first");
        assert_eq!(o.confirmed(a), Some(AfterConfirm::Nothing));
        assert_eq!(o.take_next().expect("b").id, b);
        assert_eq!(o.confirmed(b), Some(AfterConfirm::Nothing));
        assert!(o.is_empty());
        assert_eq!(o.take_next(), None);
        assert_eq!(o.confirmed(99), None);
    }

    #[test]
    fn disconnect_keeps_replies_drops_pings() {
        let mut o = Outbox::new();
        let r1 = push(&mut o, "reply1", Kind::ExecuteReply);
        push(&mut o, "ack", Kind::PingAck);
        push(&mut o, "reply2", Kind::ExecuteReply);
        push(&mut o, "startup", Kind::Startup);
        assert_eq!(o.take_next().expect("reply1").id, r1);
        assert_eq!(o.disconnected(), 3);
        assert_eq!(o.keys(), ["reply1", "reply2", "startup"]);
        assert_eq!(o.take_next().expect("after reconnect").id, r1);
    }

    #[test]
    fn only_the_newest_sysinfo_waits() {
        let mut o = Outbox::new();
        push(&mut o, "sys1", Kind::Sysinfo);
        push(&mut o, "reply", Kind::ExecuteReply);
        push(&mut o, "sys2", Kind::Sysinfo);
        assert_eq!(o.keys(), ["reply", "sys2"]);
        // An in-flight sysinfo is not pulled from under the publisher.
        let mut o = Outbox::new();
        let s1 = push(&mut o, "sys1", Kind::Sysinfo);
        assert_eq!(o.take_next().expect("sys1").id, s1);
        push(&mut o, "sys2", Kind::Sysinfo);
        assert_eq!(o.keys(), ["sys1", "sys2"]);
        assert_eq!(o.confirmed(s1), Some(AfterConfirm::Nothing));
        assert_eq!(o.keys(), ["sys2"]);
    }

    #[test]
    fn after_confirm_actions_come_back() {
        let mut o = Outbox::new();
        let id = o.push("r".into(), vec![], Kind::ExecuteReply, AfterConfirm::Reboot { reqid: "9".into() });
        let m = o.take_next().expect("r");
        assert_eq!(m.after, AfterConfirm::Reboot { reqid: "9".into() });
        assert_eq!(o.confirmed(id), Some(AfterConfirm::Reboot { reqid: "9".into() }));
        assert_eq!(o.len(), 0);
    }

    #[test]
    fn recent_requests_are_bounded() {
        let mut r = RecentRequests::new(2);
        assert!(r.insert("a"));
        assert!(!r.insert("a"));
        assert!(r.insert("b"));
        assert!(r.insert("c"));
        assert!(r.insert("a"), "oldest forgotten");
        assert!(!r.insert("c"));
    }
}
