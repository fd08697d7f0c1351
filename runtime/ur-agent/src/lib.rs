//! ur-agent: the AMQP agent through which the headnode reaches a CN
//! (sysinfo, ping, execute). A Rust version of `sdc-ur-agent` that keeps its
//! wire contract (contracts 5.2) and adds what a platform agent needs:
//! bounded output, timeouts, retries and replies that survive a broker
//! restart.
//!
//! # Wire contract (exchange `amq.topic`)
//!
//! | direction | routing key | body |
//! |---|---|---|
//! | in | `ur.execute.<uuid>.<reqid>`, `ur.execute.<uuid>-<adminMac>.<reqid>` | `{"type":"script","script":"#!/bin/bash ...","args":[],"env":{}}` or `{"type":"file","file":"/path",...}`, optional `timeout` (ms) |
//! | out | `ur.execute-reply.<uuid>.<reqid>` | `{"exit_status":n,"stdout":"...","stderr":"..."}` |
//! | in | `ur.broadcast.sysinfo.<reqid>` | anything |
//! | out | `ur.execute-reply.<uuid>.<reqid>` | the sysinfo object |
//! | in | `ur.ping.<uuid>` | `{"client_id":"...","id":"..."}` |
//! | out | `ur.ack<client_id>.<uuid>` | `{"req_id":<id>,"timestamp":"<ISO 8601>"}` |
//! | out | `ur.startup.<uuid>` | sysinfo, once per boot (marker file) |
//! | out | `ur.sysinfo.<uuid>.<8 hex>` | sysinfo, at start and every interval until setup is complete |
//!
//! Queues: `ur.request.<uuid>.<adminMac>` (exclusive) bound to the three
//! request keys (`ur.execute.<uuid>-<adminMac>.*`, `ur.execute.<uuid>.*`,
//! `ur.broadcast.*.*`), and `ur.ping.<uuid>` (auto-delete) bound to itself.
//!
//! # Behaviour, and where it differs from sdc-ur-agent
//!
//! - **Broker**: `rabbitmq=` (kernel command line, else node.config), then
//!   `rabbitmq_dns=`; heartbeat 30 s, vhost `/`. A malformed value is one
//!   error line (password masked) and the agent keeps re-reading the files;
//!   an unreachable broker is retried 1 s → 30 s (doubling, up to 20 %
//!   jitter), one line per failed address. ur exits instead.
//! - **Identity**: `sysinfo` must give `UUID` and an admin NIC; otherwise the
//!   error is logged and sysinfo is run again later (ur throws).
//! - **Sysinfo**: `sysinfo -u` then `sysinfo` before each periodic publish;
//!   published at start and every interval while the setup-state file
//!   (`sysinfo::SETUP_STATE_FILE`, the one path init and sysinfo use) does
//!   not say `complete: true`, once more when it does, then no more. ur on
//!   Linux watches `/usr/triton/state/triton-setup.json`, which nothing
//!   writes.
//! - **Execute**: several at once; stdout/stderr capped (5 MiB each, ur's
//!   `maxBuffer`); optional `timeout` in ms (default one hour, CNAPI's wait);
//!   on either limit the process group is killed, `exit_status` is non-zero
//!   (137 for our SIGKILL) and stderr ends with a `ur-agent: ...` note. ur
//!   replied 0 when its buffer overflowed. Exit 113 → reply 0, and once the
//!   broker confirmed the reply, `triton-ctl reboot`; still up after 5 min
//!   → sync + reboot(2).
//! - **Bad input** (not JSON, wrong types, missing fields, unknown `type`,
//!   body over 16 MiB): one warning line with the routing key and size, the
//!   message acked and dropped, and an error reply
//!   (`exit_status` [`reply::REJECTED_EXIT_STATUS`], stderr
//!   `ur-agent: request rejected: <why>`) when the routing key gives a
//!   request id. ur ignored unknown types silently and crashed on bad JSON.
//! - **Broker restarts**: replies wait in the [`outbox::Outbox`] until the
//!   broker confirms them (publisher confirms), in order; running scripts
//!   are not disturbed; an execute id already seen is not run again.
//!
//! # Layout
//!
//! Pure parts (unit tested): [`broker`] (where the broker is),
//! [`identity`] (UUID and admin MAC from sysinfo), [`request`] (routing keys
//! and bodies), [`reply`] (reply bodies, ids, timestamps), [`outbox`] (the
//! ordered queue of replies waiting for a publisher confirm), [`backoff`].
//! Effects: [`exec`] (running a script or file with limits), [`host`]
//! (sysinfo, setup-state, marker, reboot), [`agent`] (the AMQP session loop).
//! The binary (`src/main.rs`) only parses [`cli::Cli`], installs logging and
//! calls [`agent::run`].

pub mod agent;
pub mod backoff;
pub mod broker;
pub mod cli;
pub mod exec;
pub mod host;
pub mod identity;
pub mod outbox;
pub mod reply;
pub mod request;

use std::path::PathBuf;
use std::time::Duration;

/// Most bytes of stdout, and of stderr, kept from one execute (ur's
/// `maxBuffer`, 5 MiB).
pub const MAX_OUTPUT: usize = 5 * 1024 * 1024;
/// Largest request body handled; larger ones are dropped (16 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// Execute timeout when the request has none: one hour, the time CNAPI's Ur
/// client waits for a reply (`lib/ur.js`, `timeoutSeconds` 60*60); after that
/// nobody listens for the reply.
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(3600);
/// AMQP heartbeat (seconds), as ur.
pub const HEARTBEAT_S: u16 = 30;
/// The exit status a script uses to ask for a reboot after the reply.
pub const REBOOT_EXIT_STATUS: i32 = 113;

/// Everything the agent needs to know; [`cli::Cli`] builds it with the CN's
/// defaults, tests point every path elsewhere.
#[derive(Debug, Clone)]
pub struct Config {
    /// An `amqp://` URI that replaces the address from cmdline/node.config.
    pub broker_override: Option<String>,
    /// Kernel command line (`/proc/cmdline`).
    pub cmdline: PathBuf,
    /// `/etc/node.config`.
    pub node_config: PathBuf,
    /// The sysinfo program (`/usr/bin/sysinfo`).
    pub sysinfo: PathBuf,
    /// The setup-state file (`sysinfo::SETUP_STATE_FILE`).
    pub setup_state: PathBuf,
    /// Marker that the startup message was sent this boot.
    pub startup_marker: PathBuf,
    /// Where scripts are written before they run.
    pub tmp_dir: PathBuf,
    /// Period of sysinfo publishes while the node is not set up.
    pub sysinfo_interval: Duration,
    /// Orderly reboot command (program and arguments).
    pub reboot_cmd: Vec<String>,
    /// Forced reboot command; `None` = sync + reboot(2).
    pub force_reboot_cmd: Option<Vec<String>>,
    /// Time between the orderly request and the forced reboot.
    pub force_reboot_after: Duration,
    /// Largest request body handled.
    pub max_message: usize,
    /// Most bytes kept of stdout and of stderr.
    pub max_output: usize,
    /// Execute timeout when the request has none.
    pub exec_timeout: Duration,
    /// Longest wait between connection (and sysinfo) retries.
    pub retry_max: Duration,
    /// Time allowed for one connection attempt.
    pub connect_timeout: Duration,
}
