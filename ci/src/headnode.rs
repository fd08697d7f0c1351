//! A headnode test double: CNAPI's side of an unsetup Linux compute node,
//! through a real RabbitMQ.
//!
//! [`Headnode::start`] starts, inside the dev booter's network namespace
//! (or on the caller's, for loopback tests):
//! - a RabbitMQ broker on `<server_ip>:5672` (the `rabbitmq=` booter puts on
//!   the CN's kernel command line);
//! - an AMQP client that consumes `ur.sysinfo.#` on queue `ur.cnapi` as CNAPI
//!   does, keeps the latest sysinfo of each server with its arrival times and
//!   `Boot Time`s, and records every field CNAPI or booter would trip over
//!   ([`sysinfo_check`]) as a [`Violation`];
//! - an SNTP server on `<server_ip>:123` for joysetup's clock check.
//!
//! It writes `joysetup.sh` and `agentsetup.sh` (`ci/assets/`) next to the
//! served `extra/joysetup/node.config` and adds the keys that node.config
//! lacks of `ntp_hosts=<server_ip>`, `imgapi_domain=imgapi.<dns_domain>`,
//! `rabbitmq` and `assets_admin_ip` (again before each setup, since
//! booter-config rewrites node.config whenever it writes a CN's files).
//!
//! Threads: the AMQP client runs on a tokio runtime whose threads (and
//! lapin's I/O thread) start from a thread that joined the namespace, so
//! every socket it opens is in the namespace; the blocking API hands work
//! to it. The client reconnects after a broker restart, and an execute
//! waiting for its reply survives one (the reply queue is declared again;
//! the request is never sent twice). The event log (`HeadnodeOpts::log`)
//! has every sysinfo arrival and every execute with its full output.
//!
//! Then [`Headnode::execute`], [`Headnode::ping`] and
//! [`Headnode::broadcast_sysinfo`] talk to ur-agent as CNAPI and its
//! clients do, and [`Headnode::setup`] runs the steps of CNAPI's
//! `server-setup` workflow that reach the CN, in its order.
//!
//! Facts taken from TritonDataCenter/sdc-cnapi (565db70): `lib/ur.js`
//! (queue `ur.cnapi.<reqid>` auto-deleted, bound to
//! `ur.execute-reply.<uuid>.<reqid>`, publish `ur.execute.<uuid>.<reqid>`,
//! default timeout 3600 s, reqid a UUID), `lib/models/server.js`
//! `invokeUrScript` (body `{type:"script", script, args, env}`, `args`
//! and `env` default to `[]`/`{}`, no timeout field),
//! `lib/endpoints/servers.js` (a non-zero exit fails the request),
//! `lib/app.js` (routing-key UUID == `sysinfo.UUID`; unsetup servers are
//! `running` for 90 s after each sysinfo), `lib/workflows/server-setup.js`
//! (steps, scripts, step timeouts, `wait_for_reboot`: running and
//! `last_boot` > job creation). From sdc-ur-agent: ping body
//! `{client_id, id}`, answered on `ur.ack<client_id>.<uuid>` with
//! `{req_id, timestamp}`; broadcast `ur.broadcast.sysinfo.<reqid>` answered
//! on `ur.execute-reply.<uuid>.<reqid>`.

pub mod sntp;
pub mod sysinfo_check;

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};

use crate::rabbitmq::{Broker, BrokerOpts};
use sntp::Sntp;
use sysinfo_check::Expect;

/// joysetup.sh as served to CNs.
pub const JOYSETUP_SH: &str = include_str!("../assets/joysetup.sh");
/// agentsetup.sh as served to CNs.
pub const AGENTSETUP_SH: &str = include_str!("../assets/agentsetup.sh");
/// agentsetup.sh's wait for net-agent, in seconds (30 when unset).
pub const NET_AGENT_WAIT_ENV: &str = "TRITON_AGENTSETUP_NET_AGENT_WAIT";
/// The PATH the double gives joysetup (CNAPI sends `env: {}` and leaves
/// PATH to bash's built-in default; joysetup sets its own anyway).
pub const SETUP_PATH: &str = "/usr/bin:/usr/sbin:/bin:/sbin";
/// CNAPI marks an unsetup server `running` for this long after a sysinfo.
pub const RUNNING_WINDOW: Duration = Duration::from_secs(90);
/// Ur's execute timeout in CNAPI (`lib/ur.js`).
pub const UR_EXECUTE_TIMEOUT: Duration = Duration::from_secs(3600);
/// The exchange every ur message goes through.
const EXCHANGE: &str = "amq.topic";
/// CNAPI's sysinfo queue.
const SYSINFO_QUEUE: &str = "ur.cnapi";

/// Where and how the double runs.
#[derive(Debug, Clone)]
pub struct HeadnodeOpts {
    /// The dev booter's network namespace, or `None` for the caller's.
    pub netns: Option<String>,
    /// The admin address: broker, SNTP and (by default) assets live here.
    pub server_ip: Ipv4Addr,
    /// AMQP port (5672; the port in booter's `rabbitmq=`).
    pub amqp_port: u16,
    /// SNTP port (123; 0 picks a free one, for loopback tests).
    pub ntp_port: u16,
    /// The served tftp/HTTP root (holds `extra/joysetup/`).
    pub root: PathBuf,
    /// The platform stamp booter serves (sysinfo `Live Image` must equal it).
    pub platform: String,
    /// Broker data and the double's log (created).
    pub work_dir: PathBuf,
    /// CNAPI's `assets_url` (`http://<assets_admin_ip>`).
    pub assets_url: String,
    /// Event log (sysinfo arrivals, every execute with its full output).
    pub log: Option<PathBuf>,
}

impl HeadnodeOpts {
    pub fn new(
        netns: Option<String>,
        server_ip: Ipv4Addr,
        root: impl Into<PathBuf>,
        platform: &str,
        work_dir: impl Into<PathBuf>,
    ) -> HeadnodeOpts {
        let work_dir = work_dir.into();
        HeadnodeOpts {
            netns,
            server_ip,
            amqp_port: 5672,
            ntp_port: 123,
            root: root.into(),
            platform: platform.into(),
            log: Some(work_dir.join("headnode.log")),
            work_dir,
            assets_url: format!("http://{server_ip}"),
        }
    }

    /// For a running dev booter: its namespace, server IP, tftp root,
    /// platform and the port of its `rabbitmq=`; the log goes next to its
    /// other logs (`<artifacts>/headnode.log`).
    pub fn for_booter(b: &booter_config::DevBooter, work_dir: impl Into<PathBuf>) -> HeadnodeOpts {
        let mut o = HeadnodeOpts::new(Some(b.netns().into()), b.dc.server_ip, &b.root.dir, &b.platform, work_dir);
        if let Some(port) = b.dc.rabbitmq.rsplit(':').next().and_then(|p| p.parse().ok()) {
            o.amqp_port = port;
        }
        o.log = Some(b.opts.artifacts.join("headnode.log"));
        o
    }

    fn joysetup_dir(&self) -> PathBuf {
        self.root.join("extra/joysetup")
    }
}

/// What the double knows of one server (CNAPI's server record, roughly).
#[derive(Debug, Clone)]
pub struct ServerRecord {
    pub uuid: String,
    /// The latest sysinfo.
    pub sysinfo: Value,
    /// Its routing key.
    pub routing_key: String,
    /// When each sysinfo arrived.
    pub arrivals: Vec<SystemTime>,
    /// Each distinct `Boot Time` seen, in order (one per boot).
    pub boot_times: Vec<f64>,
    /// Set by [`Headnode::setup`] (CNAPI's `mark_server_as_setup`).
    pub setup: bool,
    pub setting_up: bool,
}

impl ServerRecord {
    pub fn last_seen(&self) -> Option<SystemTime> {
        self.arrivals.last().copied()
    }

    /// CNAPI's `last_boot`, in seconds since the epoch.
    pub fn last_boot(&self) -> Option<f64> {
        sysinfo_check::boot_time(&self.sysinfo)
    }

    /// CNAPI's `status == running`: a sysinfo within the last 90 s. (The
    /// double has no cn-agent heartbeats; on Linux ur keeps publishing
    /// sysinfo every 60 s, set up or not.)
    pub fn running(&self) -> bool {
        self.last_seen().and_then(|t| t.elapsed().ok()).is_some_and(|d| d < RUNNING_WINDOW)
    }

    /// The admin NIC's MAC (triton-netconfig's rule), `aa:bb:..` lowercase.
    pub fn admin_mac(&self) -> Option<String> {
        sysinfo_check::admin_mac(&self.sysinfo)
    }

    /// The sysinfo's `Setup` as CNAPI reads it.
    pub fn sysinfo_setup(&self) -> bool {
        sysinfo_check::is_setup(&self.sysinfo)
    }

    /// Whether `who` names this server: its UUID, the MAC of any of its
    /// NICs (`:` or `-`, any case) or its hostname.
    pub fn matches(&self, who: &str) -> bool {
        if who == self.uuid || self.sysinfo.get("Hostname").and_then(Value::as_str) == Some(who) {
            return true;
        }
        let want = sysinfo_check::normalize_mac(who);
        self.sysinfo.get("Network Interfaces").and_then(Value::as_object).is_some_and(|nics| {
            nics.values().any(|n| {
                n.get("MAC Address").and_then(Value::as_str).is_some_and(|m| sysinfo_check::normalize_mac(m) == want)
            })
        })
    }
}

/// A problem with a sysinfo (see [`sysinfo_check::check`]), kept once per
/// server and problem with a count.
#[derive(Debug, Clone)]
pub struct Violation {
    /// The routing key's server UUID, when it has one.
    pub uuid: Option<String>,
    pub routing_key: String,
    pub problem: String,
    pub first_seen: SystemTime,
    pub count: u32,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (seen {} time(s))", self.routing_key, self.problem, self.count)
    }
}

/// Ur's execute reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecResult {
    pub exit_status: i64,
    pub stdout: String,
    pub stderr: String,
}

/// Why an execute (or ping, broadcast) got no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecError {
    /// No connection to the broker (it is down, or the double is reconnecting).
    NotConnected,
    /// CNAPI's words: "Timed out waiting for ur response after N seconds".
    Timeout(Duration),
    Amqp(String),
    /// The reply is not what ur sends.
    BadReply(String),
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecError::NotConnected => write!(f, "the headnode double is not connected to the broker"),
            ExecError::Timeout(d) => write!(f, "Timed out waiting for ur response after {} seconds", d.as_secs_f64()),
            ExecError::Amqp(e) => write!(f, "AMQP: {e}"),
            ExecError::BadReply(e) => write!(f, "bad reply from ur: {e}"),
        }
    }
}

impl std::error::Error for ExecError {}

impl From<lapin::Error> for ExecError {
    fn from(e: lapin::Error) -> Self {
        ExecError::Amqp(e.to_string())
    }
}

/// Ur's answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingReply {
    pub req_id: String,
    pub timestamp: String,
}

/// Options of [`Headnode::setup`] (CNAPI's server-setup params).
#[derive(Debug, Clone)]
pub struct SetupOpts {
    /// Defaults to the double's `assets_url`.
    pub assets_url: Option<String>,
    pub disk_layout: Option<String>,
    pub disk_cache: Option<bool>,
    pub disk_spares: Option<u32>,
    pub disk_width: Option<u32>,
    pub disk_exclude: Option<String>,
    pub encryption_enabled: Option<bool>,
    pub postsetup_script: Option<String>,
    /// agentsetup's wait for net-agent (the real script: 30 s).
    pub net_agent_wait: u32,
    /// Multiplies CNAPI's step timeouts (slow emulated CNs).
    pub timeout_factor: u32,
    /// Stop the workflow (successfully) after this step, e.g.
    /// `cnapi.execute_joysetup_script`: the tests power the CN off there.
    pub stop_after: Option<String>,
}

impl Default for SetupOpts {
    fn default() -> Self {
        SetupOpts {
            assets_url: None,
            disk_layout: None,
            disk_cache: None,
            disk_spares: None,
            disk_width: None,
            disk_exclude: None,
            encryption_enabled: None,
            postsetup_script: None,
            net_agent_wait: 2,
            timeout_factor: 1,
            stop_after: None,
        }
    }
}

/// CNAPI's server-setup step timeouts (seconds).
pub mod step_timeout {
    pub const FETCH_SETUP_FILES: u64 = 10;
    pub const EXECUTE_JOYSETUP_SCRIPT: u64 = 3600;
    pub const EXECUTE_AGENTSETUP_SCRIPT: u64 = 3600;
    pub const REBOOT_SERVER: u64 = 600;
    pub const WAIT_FOR_REBOOT: u64 = 1200;
    pub const RUN_POSTSETUP_SCRIPT: u64 = 1000;
}

/// One workflow step as run.
#[derive(Debug, Clone)]
pub struct StepRecord {
    /// CNAPI's task name, e.g. `cnapi.execute_joysetup_script`.
    pub name: String,
    pub started: SystemTime,
    pub elapsed: Duration,
    /// The script's exit status, for steps that run one.
    pub exit_status: Option<i64>,
    pub stdout: String,
    pub stderr: String,
    /// What happened, for steps without a script (or why one was skipped).
    pub note: String,
    pub ok: bool,
}

impl StepRecord {
    /// A step that started at `started` and took `elapsed`, with nothing
    /// recorded yet (not ok until said so).
    fn new(name: &str, started: SystemTime, elapsed: Duration) -> StepRecord {
        StepRecord {
            name: name.into(),
            started,
            elapsed,
            exit_status: None,
            stdout: String::new(),
            stderr: String::new(),
            note: String::new(),
            ok: false,
        }
    }

    pub fn stdout_tail(&self) -> String {
        tail(&self.stdout, TAIL_LINES)
    }

    pub fn stderr_tail(&self) -> String {
        tail(&self.stderr, TAIL_LINES)
    }
}

/// A server-setup run: its steps in order.
#[derive(Debug, Clone)]
pub struct SetupReport {
    pub uuid: String,
    /// CNAPI's job `created_at`.
    pub job_start: SystemTime,
    pub steps: Vec<StepRecord>,
}

impl SetupReport {
    pub fn step(&self, name: &str) -> Option<&StepRecord> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// The step names in the order they ran.
    pub fn names(&self) -> Vec<&str> {
        self.steps.iter().map(|s| s.name.as_str()).collect()
    }

    /// One line per step: name, seconds, exit status or note.
    pub fn summary(&self) -> String {
        self.steps
            .iter()
            .map(|s| {
                let what = match s.exit_status {
                    Some(e) => format!("exit {e}"),
                    None => s.note.clone(),
                };
                format!(
                    "  {:<36} {:>7.1} s  {}{}\n",
                    s.name,
                    s.elapsed.as_secs_f64(),
                    if s.ok { "" } else { "FAILED " },
                    what
                )
            })
            .collect()
    }
}

/// A server-setup that stopped at `step`.
#[derive(Debug)]
pub struct SetupError {
    pub uuid: String,
    pub step: String,
    pub reason: String,
    pub report: Box<SetupReport>,
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "server-setup of {} failed at step {}: {}\nsteps:\n{}",
            self.uuid,
            self.step,
            self.reason,
            self.report.summary()
        )
    }
}

impl std::error::Error for SetupError {}

const TAIL_LINES: usize = 40;

/// The last `n` lines of `s`.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh random-looking v4 UUID (CNAPI's reqids are UUIDs); from the
/// clock, the pid and a counter through SHA-1, so it cannot fail.
pub fn gen_uuid() -> String {
    use sha1::{Digest, Sha1};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut h = Sha1::new();
    h.update(nanos.to_le_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(N.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// CNAPI's fetch_setup_files script (args: `[assets_url]`), with the disk
/// options CNAPI prepends to node.config. Stricter than CNAPI's, which
/// reports only `chmod`'s status: any failed download fails the step.
pub fn fetch_setup_files_script(uuid: &str, o: &SetupOpts) -> anyhow::Result<String> {
    let safe = |what: &str, v: &str| -> anyhow::Result<()> {
        if v.chars().all(|c| c.is_ascii_alphanumeric() || "_,.-+/".contains(c)) {
            Ok(())
        } else {
            bail!("setup option {what}={v:?}: only letters, digits and _,.-+/ are allowed")
        }
    };
    let mut disk = String::new();
    if let Some(v) = &o.disk_layout {
        safe("disk_layout", v)?;
        disk.push_str(&format!("echo \"layout='{v}'\"; "));
    }
    if let Some(v) = o.disk_cache {
        disk.push_str(&format!("echo \"cache='{v}'\"; "));
    }
    if let Some(v) = o.disk_spares {
        disk.push_str(&format!("echo \"spares={v}\"; "));
    }
    if let Some(v) = o.disk_width {
        disk.push_str(&format!("echo \"width={v}\"; "));
    }
    if let Some(v) = &o.disk_exclude {
        safe("disk_exclude", v)?;
        disk.push_str(&format!("echo \"disk_exclude='{v}'\"; "));
    }
    if let Some(v) = o.encryption_enabled {
        disk.push_str(&format!("echo \"encryption_enabled='{v}'\"; "));
    }
    let cfg = format!("config-{uuid}");
    Ok([
        "#!/bin/bash".to_string(),
        "set -o errexit -o pipefail -o xtrace".into(),
        "cd /var/tmp".into(),
        format!("mkdir -p /var/tmp/node.config /var/tmp/{cfg}"),
        format!("({disk}curl -fsS \"$1/extra/joysetup/node.config\") | tee {cfg}/node.config node.config/node.config >/dev/null"),
        "curl -fsS -O \"$1/extra/joysetup/joysetup.sh\"".into(),
        "curl -fsS -O \"$1/extra/joysetup/agentsetup.sh\"".into(),
        "chmod +x *.sh".into(),
    ]
    .join("\n"))
}

/// CNAPI's execute_joysetup_script.
pub const JOYSETUP_STEP_SCRIPT: &str = "#!/bin/bash\nset -o xtrace\ncd /var/tmp\n./joysetup.sh";
/// CNAPI's execute_agentsetup_script.
pub const AGENTSETUP_STEP_SCRIPT: &str =
    "#!/bin/bash\nset -o xtrace\ncd /var/tmp\necho ASSETS_URL = $ASSETS_URL\n./agentsetup.sh";
/// CNAPI's reboot_server (ur replies 0, then reboots).
pub const REBOOT_STEP_SCRIPT: &str = "#!/bin/bash\nexit 113";

/// Writes joysetup.sh and agentsetup.sh (0755) into `<root>/extra/joysetup`
/// and adds the keys of `defaults` missing from its node.config (creating
/// a minimal one when there is none).
pub fn install_assets(root: &Path, defaults: &[(&str, String)]) -> anyhow::Result<()> {
    let dir = root.join("extra/joysetup");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, text) in [("joysetup.sh", JOYSETUP_SH), ("agentsetup.sh", AGENTSETUP_SH)] {
        let p = dir.join(name);
        // It may be a hard link into something else: replace, do not write through.
        let _ = fs::remove_file(&p);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).with_context(|| format!("chmod {}", p.display()))?;
    }
    let p = dir.join("node.config");
    let old = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
    };
    let text = add_node_config_defaults(&old, defaults);
    if text != old {
        let _ = fs::remove_file(&p);
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// `text` (node.config: `key='value'` lines) with `key='value'` lines
/// appended for each default whose key it lacks.
pub fn add_node_config_defaults(text: &str, defaults: &[(&str, String)]) -> String {
    let has = |k: &str| text.lines().any(|l| l.trim_start().strip_prefix(k).is_some_and(|r| r.starts_with('=')));
    let mut out = text.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    for (k, v) in defaults {
        if !has(k) {
            out.push_str(&format!("{k}='{}'\n", v.replace('\'', "'\\''")));
        }
    }
    out
}

/// The value of `key` in node.config text, unquoted.
pub fn node_config_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.trim().strip_prefix(key)?.strip_prefix('=')?;
        Some(v.trim_matches('\'').trim_matches('"').to_string())
    })
}

#[derive(Debug, Default)]
struct State {
    servers: BTreeMap<String, ServerRecord>,
    violations: Vec<Violation>,
    connected: bool,
    connections: u32,
    sysinfos: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    conn: Mutex<Option<Arc<Connection>>>,
    expect: Expect,
    log: Mutex<Option<File>>,
    t0: Instant,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> Option<Arc<Connection>> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_conn(&self, c: Option<Arc<Connection>>) {
        let up = c.is_some();
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = c;
        let mut st = self.state();
        st.connected = up;
        if up {
            st.connections += 1;
        }
        drop(st);
        self.changed.notify_all();
    }

    fn log(&self, msg: &str) {
        if let Some(f) = self.log.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
            let _ = writeln!(f, "[{:9.3}] {msg}", self.t0.elapsed().as_secs_f64());
        }
    }

    fn violation(st: &mut State, uuid: Option<&str>, routing_key: &str, problem: String) {
        if let Some(v) = st.violations.iter_mut().find(|v| v.uuid.as_deref() == uuid && v.problem == problem) {
            v.count += 1;
            return;
        }
        st.violations.push(Violation {
            uuid: uuid.map(str::to_string),
            routing_key: routing_key.to_string(),
            problem,
            first_seen: SystemTime::now(),
            count: 1,
        });
    }

    /// CNAPI's `onSysinfoReceivedUr`, plus the checks.
    fn on_sysinfo(&self, routing_key: &str, payload: &[u8]) {
        let now = SystemTime::now();
        let key_uuid = sysinfo_check::routing_key_uuid(routing_key);
        let v: Value = match serde_json::from_slice(payload) {
            Ok(v) => v,
            Err(e) => {
                self.log(&format!("sysinfo {routing_key}: not JSON: {e}"));
                let mut st = self.state();
                Self::violation(&mut st, key_uuid, routing_key, format!("the payload is not JSON: {e}"));
                drop(st);
                self.changed.notify_all();
                return;
            }
        };
        let problems = sysinfo_check::check(routing_key, &v, &self.expect);
        self.log(&format!(
            "sysinfo {routing_key}: Boot Time {:?}, Setup {}, {} problem(s){}",
            sysinfo_check::boot_time(&v),
            v.get("Setup").map(Value::to_string).unwrap_or_default(),
            problems.len(),
            if problems.is_empty() { String::new() } else { format!(": {}", problems.join("; ")) }
        ));
        let mut st = self.state();
        st.sysinfos += 1;
        for p in problems {
            Self::violation(&mut st, key_uuid, routing_key, p);
        }
        // Recorded under the routing key's UUID (CNAPI would assert first).
        if let Some(uuid) = key_uuid {
            let rec = st.servers.entry(uuid.to_string()).or_insert_with(|| ServerRecord {
                uuid: uuid.to_string(),
                sysinfo: Value::Null,
                routing_key: String::new(),
                arrivals: Vec::new(),
                boot_times: Vec::new(),
                setup: false,
                setting_up: false,
            });
            if let Some(bt) = sysinfo_check::boot_time(&v) {
                if rec.boot_times.last() != Some(&bt) {
                    rec.boot_times.push(bt);
                }
            }
            rec.sysinfo = v;
            rec.routing_key = routing_key.to_string();
            rec.arrivals.push(now);
        }
        drop(st);
        self.changed.notify_all();
    }
}

/// The runtime thread (inside the namespace) that owns the AMQP client.
#[derive(Debug)]
struct Runtime {
    handle: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Runtime {
    fn start(netns: Option<String>, shared: Arc<Shared>, uri: String) -> anyhow::Result<Runtime> {
        let (tx, rx) = mpsc::channel::<anyhow::Result<tokio::runtime::Handle>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("headnode-amqp".into())
            .spawn(move || {
                // Sockets belong to the namespace of the thread that makes
                // them; the runtime's threads (and lapin's I/O thread) are
                // started from this one and inherit it.
                if let Some(ns) = &netns {
                    if let Err(e) = sntp::enter_netns(ns) {
                        let _ = tx.send(Err(anyhow::anyhow!("{e}")));
                        return;
                    }
                }
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("headnode-rt")
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = tx.send(Err(anyhow::anyhow!("tokio runtime: {e}")));
                        return;
                    }
                };
                let _ = tx.send(Ok(rt.handle().clone()));
                rt.block_on(async move {
                    let sup = tokio::spawn(supervise(shared.clone(), uri));
                    let _ = stop_rx.await;
                    sup.abort();
                    if let Some(c) = shared.conn() {
                        let _ =
                            tokio::time::timeout(Duration::from_secs(3), c.close(200, "headnode stops".into())).await;
                    }
                    shared.set_conn(None);
                });
                rt.shutdown_timeout(Duration::from_secs(3));
            })
            .context("starting the headnode's AMQP thread")?;
        let handle = rx.recv().context("the headnode's AMQP thread ended early")??;
        Ok(Runtime { handle, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// Runs `f` on the runtime and waits for its result.
    fn run<F>(&self, f: F) -> Option<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let (tx, rx) = mpsc::channel();
        self.handle.spawn(async move {
            let _ = tx.send(f.await);
        });
        rx.recv().ok()
    }

    fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Connects, consumes sysinfo, reconnects after the broker goes away.
async fn supervise(shared: Arc<Shared>, uri: String) {
    loop {
        match session(&shared, &uri).await {
            Ok(()) => shared.log("AMQP connection closed"),
            Err(e) => shared.log(&format!("AMQP: {e}")),
        }
        if shared.conn().is_some() {
            shared.set_conn(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn session(shared: &Shared, uri: &str) -> anyhow::Result<()> {
    let conn = tokio::time::timeout(Duration::from_secs(10), Connection::connect(uri, ConnectionProperties::default()))
        .await
        .map_err(|_| anyhow::anyhow!("connecting to {uri} timed out"))??;
    let conn = Arc::new(conn);
    let ch = conn.create_channel().await?;
    ch.queue_declare(SYSINFO_QUEUE.into(), QueueDeclareOptions::default(), FieldTable::default()).await?;
    ch.queue_bind(
        SYSINFO_QUEUE.into(),
        EXCHANGE.into(),
        "ur.sysinfo.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let mut consumer = ch
        .basic_consume(
            SYSINFO_QUEUE.into(),
            "headnode-sysinfo".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    shared.log(&format!("AMQP connected to {uri}; consuming ur.sysinfo.# on {SYSINFO_QUEUE}"));
    shared.set_conn(Some(conn.clone()));
    loop {
        tokio::select! {
            d = consumer.next() => match d {
                Some(Ok(d)) => shared.on_sysinfo(d.routing_key.as_str(), &d.data),
                Some(Err(e)) => return Err(e.into()),
                None => return Ok(()),
            },
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                if !conn.status().connected() {
                    bail!("the connection to {uri} is down");
                }
            }
        }
    }
}

async fn publish_json(ch: &Channel, routing_key: &str, body: &Value) -> Result<(), ExecError> {
    let payload = serde_json::to_vec(body).map_err(|e| ExecError::Amqp(e.to_string()))?;
    ch.basic_publish(
        EXCHANGE.into(),
        routing_key.into(),
        BasicPublishOptions::default(),
        &payload,
        BasicProperties::default().with_content_type("application/json".into()),
    )
    .await?;
    Ok(())
}

/// A reply queue (auto-delete, consumed without acks) bound to `binding`.
async fn reply_queue(ch: &Channel, name: &str, binding: &str) -> Result<lapin::Consumer, ExecError> {
    ch.queue_declare(
        name.into(),
        QueueDeclareOptions { auto_delete: true, ..Default::default() },
        FieldTable::default(),
    )
    .await?;
    let consumer = ch
        .basic_consume(
            name.into(),
            format!("headnode-{name}").into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await?;
    ch.queue_bind(name.into(), EXCHANGE.into(), binding.into(), QueueBindOptions::default(), FieldTable::default())
        .await?;
    Ok(consumer)
}

async fn next_json(consumer: &mut lapin::Consumer) -> Result<(String, Value), ExecError> {
    match consumer.next().await {
        None => Err(ExecError::Amqp("the reply queue's consumer was cancelled".into())),
        Some(Err(e)) => Err(e.into()),
        Some(Ok(d)) => {
            let v = serde_json::from_slice(&d.data)
                .map_err(|e| ExecError::BadReply(format!("{e}: {}", String::from_utf8_lossy(&d.data))))?;
            Ok((d.routing_key.as_str().to_string(), v))
        }
    }
}

/// The current connection, once it is up and is not `stale`; `None` at `deadline`.
async fn wait_connection(
    shared: &Shared,
    stale: Option<&Arc<Connection>>,
    deadline: tokio::time::Instant,
) -> Option<Arc<Connection>> {
    loop {
        if let Some(c) = shared.conn() {
            if c.status().connected() && !stale.is_some_and(|s| Arc::ptr_eq(s, &c)) {
                return Some(c);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// One attempt of an execute on `conn`: declare and bind the reply queue,
/// publish the request unless `published`, wait for the reply until `deadline`.
async fn execute_attempt(
    conn: &Connection,
    uuid: &str,
    reqid: &str,
    body: &Value,
    published: &mut bool,
    deadline: tokio::time::Instant,
) -> Result<Value, ExecError> {
    let ch = conn.create_channel().await?;
    let result = async {
        let mut consumer =
            reply_queue(&ch, &format!("ur.cnapi.{reqid}"), &format!("ur.execute-reply.{uuid}.{reqid}")).await?;
        if !*published {
            // At most once: ur must never run a setup script twice.
            *published = true;
            publish_json(&ch, &format!("ur.execute.{uuid}.{reqid}"), body).await?;
        }
        match tokio::time::timeout_at(deadline, next_json(&mut consumer)).await {
            Ok(r) => r.map(|(_, v)| v),
            Err(_) => Err(ExecError::Timeout(Duration::ZERO)),
        }
    }
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "done".into())).await;
    result
}

/// CNAPI's `Ur.prototype.execute`: queue `ur.cnapi.<reqid>` (auto-delete)
/// bound to `ur.execute-reply.<uuid>.<reqid>`, then the request on
/// `ur.execute.<uuid>.<reqid>`. Unlike CNAPI, a broker restart while the
/// script runs is survived: the reply queue is declared again on the new
/// connection (the request is not sent again) and the wait goes on.
async fn execute_async(
    shared: Arc<Shared>,
    uuid: String,
    body: Value,
    timeout: Duration,
) -> Result<ExecResult, ExecError> {
    let reqid = gen_uuid();
    let deadline = tokio::time::Instant::now() + timeout;
    // Before the request is sent, wait a little for a connection.
    let first = (tokio::time::Instant::now() + timeout.min(Duration::from_secs(30))).min(deadline);
    let mut conn = wait_connection(&shared, None, first).await.ok_or(ExecError::NotConnected)?;
    let mut published = false;
    let v = loop {
        match execute_attempt(&conn, &uuid, &reqid, &body, &mut published, deadline).await {
            Ok(v) => break v,
            Err(ExecError::Timeout(_)) => return Err(ExecError::Timeout(timeout)),
            Err(ExecError::Amqp(e)) if published => {
                // The connection went away (a broker restart): wait for the
                // next one and listen for the reply again.
                tokio::time::sleep(Duration::from_millis(300)).await;
                if conn.status().connected() {
                    return Err(ExecError::Amqp(e));
                }
                shared.log(&format!("execute {reqid} on {uuid}: {e}; waiting for the broker to listen again"));
                conn = wait_connection(&shared, Some(&conn), deadline).await.ok_or(ExecError::Timeout(timeout))?;
                shared.log(&format!("execute {reqid} on {uuid}: reconnected, waiting for the reply"));
            }
            Err(e) => return Err(e),
        }
    };
    let exit_status = v
        .get("exit_status")
        .and_then(Value::as_i64)
        .ok_or_else(|| ExecError::BadReply(format!("no numeric exit_status in {v}")))?;
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    Ok(ExecResult { exit_status, stdout: text("stdout"), stderr: text("stderr") })
}

async fn ping_async(conn: Arc<Connection>, uuid: String) -> Result<PingReply, ExecError> {
    let client_id = gen_uuid();
    let id = gen_uuid();
    let ch = conn.create_channel().await?;
    let result = async {
        let mut consumer =
            reply_queue(&ch, &format!("ur.cnapi.ping.{client_id}"), &format!("ur.ack{client_id}.{uuid}")).await?;
        publish_json(&ch, &format!("ur.ping.{uuid}"), &json!({"client_id": client_id, "id": id})).await?;
        loop {
            let (_, v) = next_json(&mut consumer).await?;
            let req_id = v.get("req_id").and_then(Value::as_str).unwrap_or_default();
            if req_id == id {
                let timestamp = v.get("timestamp").and_then(Value::as_str).unwrap_or_default().to_string();
                return Ok(PingReply { req_id: id.clone(), timestamp });
            }
        }
    }
    .await;
    let _ = ch.close(200, "done".into()).await;
    result
}

async fn broadcast_async(conn: Arc<Connection>, wait: Duration) -> Result<Vec<(String, Value)>, ExecError> {
    let reqid = gen_uuid();
    let ch = conn.create_channel().await?;
    let result = async {
        let mut consumer =
            reply_queue(&ch, &format!("ur.cnapi.{reqid}"), &format!("ur.execute-reply.*.{reqid}")).await?;
        publish_json(&ch, &format!("ur.broadcast.sysinfo.{reqid}"), &json!({})).await?;
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(r) = tokio::time::timeout_at(deadline, next_json(&mut consumer)).await {
            got.push(r?);
        }
        Ok(got)
    }
    .await;
    let _ = ch.close(200, "done".into()).await;
    result
}

/// The headnode double; everything stops on drop.
#[derive(Debug)]
pub struct Headnode {
    opts: HeadnodeOpts,
    shared: Arc<Shared>,
    rt: Runtime,
    broker: Mutex<Broker>,
    sntp: Sntp,
    /// Added to the served node.config when missing (at start and before
    /// each setup: booter-config rewrites node.config with every CN it writes).
    node_config_defaults: Vec<(&'static str, String)>,
}

impl Headnode {
    /// Installs the setup assets, starts SNTP, the broker and the AMQP
    /// client, and returns once the client is connected.
    pub fn start(opts: HeadnodeOpts) -> anyhow::Result<Headnode> {
        fs::create_dir_all(&opts.work_dir).with_context(|| format!("creating {}", opts.work_dir.display()))?;
        let node_config = fs::read_to_string(opts.joysetup_dir().join("node.config")).unwrap_or_default();
        let dns_domain = node_config_value(&node_config, "dns_domain").unwrap_or_else(|| "local".into());
        let node_config_defaults = vec![
            ("rabbitmq", format!("guest:guest:{}:{}", opts.server_ip, opts.amqp_port)),
            ("assets_admin_ip", opts.server_ip.to_string()),
            ("ntp_hosts", opts.server_ip.to_string()),
            ("imgapi_domain", format!("imgapi.{dns_domain}")),
        ];
        install_assets(&opts.root, &node_config_defaults)?;
        let log = match &opts.log {
            Some(p) => Some(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening {}", p.display()))?,
            ),
            None => None,
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            conn: Mutex::new(None),
            expect: Expect { platform: Some(opts.platform.clone()) },
            log: Mutex::new(log),
            t0: Instant::now(),
        });
        let sntp = Sntp::start(opts.netns.as_deref(), SocketAddrV4::new(opts.server_ip, opts.ntp_port))
            .context("starting the headnode's SNTP server")?;
        shared.log(&format!("SNTP on udp {}", sntp.addr()));
        let broker = Broker::start(BrokerOpts {
            listen: SocketAddrV4::new(opts.server_ip, opts.amqp_port),
            netns: opts.netns.clone(),
            dir: opts.work_dir.join("broker"),
        })
        .context("starting the headnode's RabbitMQ")?;
        shared.log(&format!("RabbitMQ on {} (log {})", broker.addr(), broker.log_path().display()));
        let rt = Runtime::start(opts.netns.clone(), shared.clone(), broker.uri())?;
        let uri = broker.uri();
        let hn = Headnode { opts, shared, rt, broker: Mutex::new(broker), sntp, node_config_defaults };
        if !hn.wait_connected(Duration::from_secs(30)) {
            bail!("the headnode double could not connect to its broker at {uri} within 30 s");
        }
        Ok(hn)
    }

    pub fn opts(&self) -> &HeadnodeOpts {
        &self.opts
    }

    /// The broker (to stop, restart or read its log).
    pub fn broker(&mut self) -> &mut Broker {
        self.broker.get_mut().unwrap_or_else(|p| p.into_inner())
    }

    /// Restarts the broker (same address and data) while other threads
    /// use the double: an execute in flight keeps waiting for its reply
    /// and the client reconnects on its own.
    pub fn restart_broker(&self) -> anyhow::Result<()> {
        self.shared.log("restarting the broker");
        let r = self.broker.lock().unwrap_or_else(|p| p.into_inner()).restart();
        self.shared.log(&format!("broker restarted: {r:?}"));
        r
    }

    /// Stops the broker (and its epmd) through a shared reference, for a
    /// double shared with a thread that may still be waiting on it.
    pub fn stop_broker(&self) {
        self.shared.log("stopping the broker");
        self.broker.lock().unwrap_or_else(|p| p.into_inner()).stop();
    }

    /// Publishes `payload` as is on `amq.topic` with `routing_key` (for
    /// malformed-message tests).
    pub fn publish_raw(&self, routing_key: &str, payload: &[u8]) -> Result<(), ExecError> {
        let conn = self.connection()?;
        let (key, payload) = (routing_key.to_string(), payload.to_vec());
        self.shared.log(&format!("publish_raw {key} ({} bytes)", payload.len()));
        self.rt
            .run(async move {
                let ch = conn.create_channel().await?;
                ch.basic_publish(
                    EXCHANGE.into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    &payload,
                    BasicProperties::default().with_content_type("application/json".into()),
                )
                .await?;
                ch.close(200, "done".into()).await?;
                Ok::<(), ExecError>(())
            })
            .unwrap_or_else(|| Err(ExecError::Amqp("the headnode's runtime stopped".into())))
    }

    /// The SNTP server's address.
    pub fn ntp_addr(&self) -> SocketAddrV4 {
        self.sntp.addr()
    }

    /// NTP client requests answered so far.
    pub fn ntp_requests(&self) -> u64 {
        self.sntp.requests()
    }

    /// Whether the AMQP client is connected now.
    pub fn connected(&self) -> bool {
        self.shared.state().connected
    }

    /// Connections made so far (1 + reconnections).
    pub fn connections(&self) -> u32 {
        self.shared.state().connections
    }

    /// Waits until the client is connected (after start or a broker restart).
    pub fn wait_connected(&self, timeout: Duration) -> bool {
        self.wait_until(timeout, |st| st.connected.then_some(())).is_some()
    }

    fn wait_until<T>(&self, timeout: Duration, mut f: impl FnMut(&State) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + timeout;
        let mut st = self.shared.state();
        loop {
            if let Some(x) = f(&st) {
                return Some(x);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            st = self.shared.changed.wait_timeout(st, left.min(Duration::from_secs(1))).map(|(g, _)| g).ok()?;
        }
    }

    /// Every server seen.
    pub fn servers(&self) -> Vec<ServerRecord> {
        self.shared.state().servers.values().cloned().collect()
    }

    /// A server by UUID, NIC MAC or hostname.
    pub fn server(&self, who: &str) -> Option<ServerRecord> {
        self.shared.state().servers.values().find(|s| s.matches(who)).cloned()
    }

    /// Sysinfo messages received.
    pub fn sysinfo_count(&self) -> u64 {
        self.shared.state().sysinfos
    }

    /// Waits for a sysinfo from `who` (UUID, MAC or hostname).
    pub fn wait_sysinfo(&self, who: &str, timeout: Duration) -> anyhow::Result<ServerRecord> {
        self.wait_sysinfo_where(who, timeout, |_| true)
    }

    /// Waits for a sysinfo from `who` for which `pred` holds (e.g. a
    /// later `Boot Time`, `Setup` true).
    pub fn wait_sysinfo_where(
        &self,
        who: &str,
        timeout: Duration,
        pred: impl Fn(&ServerRecord) -> bool,
    ) -> anyhow::Result<ServerRecord> {
        // `pred` runs on copies, outside the lock: it may call the double.
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<ServerRecord> = self.shared.state().servers.values().cloned().collect();
            if let Some(r) = seen.iter().find(|s| s.matches(who) && pred(s)) {
                return Ok(r.clone());
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                let seen: Vec<String> = seen.iter().map(|s| format!("{} ({:?})", s.uuid, s.admin_mac())).collect();
                bail!(
                    "no (matching) sysinfo from {who} within {timeout:?}; servers seen: [{}]; log {}",
                    seen.join(", "),
                    self.opts.log.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                );
            };
            let st = self.shared.state();
            let _ = self.shared.changed.wait_timeout(st, left.min(Duration::from_millis(200)));
        }
    }

    /// Every sysinfo problem so far (the tests assert this is empty).
    pub fn violations(&self) -> Vec<Violation> {
        self.shared.state().violations.clone()
    }

    /// Forgets the violations recorded so far.
    pub fn clear_violations(&self) {
        self.shared.state().violations.clear();
    }

    fn connection(&self) -> Result<Arc<Connection>, ExecError> {
        self.shared.conn().ok_or(ExecError::NotConnected)
    }

    /// Runs `script` on server `uuid` through ur, as CNAPI does, waiting up
    /// to `timeout` for the reply.
    pub fn execute(
        &self,
        uuid: &str,
        script: &str,
        args: &[&str],
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> Result<ExecResult, ExecError> {
        let body = json!({"type": "script", "script": script, "args": args, "env": env});
        let t = Instant::now();
        let first = script.lines().find(|l| !l.starts_with("#!")).unwrap_or_default().to_string();
        self.shared.log(&format!("execute on {uuid} (timeout {timeout:?}): {first} ..."));
        let r = self
            .rt
            .run(execute_async(self.shared.clone(), uuid.to_string(), body, timeout))
            .unwrap_or_else(|| Err(ExecError::Amqp("the headnode's runtime stopped".into())));
        match &r {
            Ok(x) => self.shared.log(&format!(
                "execute on {uuid}: exit {} after {:.1} s\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
                x.exit_status,
                t.elapsed().as_secs_f64(),
                x.stdout.trim_end(),
                x.stderr.trim_end()
            )),
            Err(e) => self.shared.log(&format!("execute on {uuid}: {e}")),
        }
        r
    }

    /// Pings ur on `uuid` (`ur.ping.<uuid>`).
    pub fn ping(&self, uuid: &str, timeout: Duration) -> Result<PingReply, ExecError> {
        let conn = self.connection()?;
        let id = uuid.to_string();
        match self.rt.run(async move { tokio::time::timeout(timeout, ping_async(conn, id)).await }) {
            None => Err(ExecError::Amqp("the headnode's runtime stopped".into())),
            Some(Err(_)) => Err(ExecError::Timeout(timeout)),
            Some(Ok(r)) => r,
        }
    }

    /// Asks every ur for its sysinfo (`ur.broadcast.sysinfo.<reqid>`) and
    /// collects the replies for `wait`: UUID (from the reply's routing key)
    /// → sysinfo. Each reply is checked like a `ur.sysinfo` message.
    pub fn broadcast_sysinfo(&self, wait: Duration) -> Result<BTreeMap<String, Value>, ExecError> {
        let conn = self.connection()?;
        let got = self
            .rt
            .run(broadcast_async(conn, wait))
            .ok_or_else(|| ExecError::Amqp("the headnode's runtime stopped".into()))??;
        let mut out = BTreeMap::new();
        for (key, v) in got {
            // ur.execute-reply.<uuid>.<reqid>
            let parts: Vec<&str> = key.split('.').collect();
            let (uuid, id) = match parts.as_slice() {
                ["ur", "execute-reply", uuid, id] => (uuid.to_string(), id.to_string()),
                _ => return Err(ExecError::BadReply(format!("reply on {key}"))),
            };
            let as_sysinfo = format!("ur.sysinfo.{uuid}.{id}");
            let problems = sysinfo_check::check(&as_sysinfo, &v, &self.shared.expect);
            let mut st = self.shared.state();
            for p in problems {
                Shared::violation(&mut st, Some(&uuid), &key, p);
            }
            drop(st);
            out.insert(uuid, v);
        }
        Ok(out)
    }

    fn update_server(&self, uuid: &str, f: impl FnOnce(&mut ServerRecord)) {
        let mut st = self.shared.state();
        if let Some(r) = st.servers.get_mut(uuid) {
            f(r);
        }
    }

    /// CNAPI's `server-setup` workflow for `uuid`, the steps that reach the
    /// CN in their order (NAPI, cn-agent task and `touch_setup_complete` /
    /// `restart_ur` on Linux are recorded as not applicable):
    /// mark_as_setting_up, fetch_setup_files, execute_joysetup_script,
    /// execute_agentsetup_script, reboot_server, wait_for_reboot,
    /// run_postsetup_script, mark_server_as_setup. A failing step stops the
    /// workflow (and clears `setting_up`, as CNAPI's `onerror`). Running it
    /// again is fine: the scripts are idempotent.
    /// Whether `o.stop_after` names `step` (logged).
    fn stop_here(&self, uuid: &str, o: &SetupOpts, step: &str) -> bool {
        let stop = o.stop_after.as_deref() == Some(step);
        if stop {
            self.shared.log(&format!("server-setup of {uuid}: stopped after {step} as asked"));
        }
        stop
    }

    pub fn setup(&self, uuid: &str, o: &SetupOpts) -> Result<SetupReport, SetupError> {
        let job_start = SystemTime::now();
        let mut report = SetupReport { uuid: uuid.into(), job_start, steps: Vec::new() };
        let assets = o.assets_url.clone().unwrap_or_else(|| self.opts.assets_url.clone());
        let factor = u64::from(o.timeout_factor.max(1));
        let secs = |s: u64| Duration::from_secs(s * factor);
        self.shared.log(&format!("server-setup of {uuid} starts (assets {assets})"));
        if let Err(e) = install_assets(&self.opts.root, &self.node_config_defaults) {
            return Err(SetupError {
                uuid: uuid.into(),
                step: "cnapi.validate_params".into(),
                reason: format!("installing the setup assets: {e:#}"),
                report: Box::new(report),
            });
        }

        let fail = |report: &SetupReport, step: &str, reason: String| {
            self.update_server(uuid, |r| r.setting_up = false);
            self.shared.log(&format!("server-setup of {uuid}: {step} failed: {reason}"));
            SetupError { uuid: uuid.into(), step: step.into(), reason, report: Box::new(report.clone()) }
        };

        // CNAPI's validate_params: the server must exist (have sent sysinfo).
        let Some(server) = self.server(uuid).filter(|s| s.uuid == uuid) else {
            return Err(fail(&report, "cnapi.validate_params", format!("no server {uuid} (no sysinfo seen from it)")));
        };
        let linux = server.sysinfo.get("System Type").and_then(Value::as_str) == Some("Linux");

        let note = |report: &mut SetupReport, name: &str, note: &str| {
            report.steps.push(StepRecord {
                note: note.into(),
                ok: true,
                ..StepRecord::new(name, SystemTime::now(), Duration::ZERO)
            });
        };

        self.update_server(uuid, |r| r.setting_up = true);
        note(&mut report, "cnapi.mark_as_setting_up", "setting_up = true");

        let run = |report: &mut SetupReport,
                   name: &str,
                   script: &str,
                   args: &[&str],
                   env: BTreeMap<String, String>,
                   timeout: Duration|
         -> Result<(), SetupError> {
            let started = SystemTime::now();
            let t = Instant::now();
            let r = self.execute(uuid, script, args, &env, timeout);
            let mut rec = StepRecord::new(name, started, t.elapsed());
            match r {
                Err(e) => {
                    rec.note = e.to_string();
                    report.steps.push(rec);
                    Err(fail(report, name, format!("ur execute: {e}")))
                }
                Ok(x) => {
                    rec.exit_status = Some(x.exit_status);
                    rec.stdout = x.stdout;
                    rec.stderr = x.stderr;
                    rec.ok = x.exit_status == 0;
                    let ok = rec.ok;
                    let reason = format!(
                        "exit status {}\n--- stdout (last {TAIL_LINES} lines) ---\n{}\n--- stderr (last {TAIL_LINES} lines) ---\n{}",
                        x.exit_status,
                        rec.stdout_tail(),
                        rec.stderr_tail()
                    );
                    report.steps.push(rec);
                    if ok {
                        Ok(())
                    } else {
                        Err(fail(report, name, reason))
                    }
                }
            }
        };

        let script =
            fetch_setup_files_script(uuid, o).map_err(|e| fail(&report, "cnapi.fetch_setup_files", e.to_string()))?;
        let joysetup_env = BTreeMap::from([("PATH".to_string(), SETUP_PATH.to_string())]);
        let agentsetup_env = BTreeMap::from([
            ("ASSETS_URL".to_string(), assets.clone()),
            (NET_AGENT_WAIT_ENV.to_string(), o.net_agent_wait.to_string()),
        ]);
        // CNAPI's three ur steps: (task, script, args, env, timeout).
        let steps = [
            (
                "cnapi.fetch_setup_files",
                script.as_str(),
                vec![assets.as_str()],
                BTreeMap::new(),
                step_timeout::FETCH_SETUP_FILES,
            ),
            (
                "cnapi.execute_joysetup_script",
                JOYSETUP_STEP_SCRIPT,
                vec![],
                joysetup_env,
                step_timeout::EXECUTE_JOYSETUP_SCRIPT,
            ),
            (
                "cnapi.execute_agentsetup_script",
                AGENTSETUP_STEP_SCRIPT,
                vec![],
                agentsetup_env,
                step_timeout::EXECUTE_AGENTSETUP_SCRIPT,
            ),
        ];
        for (name, script, args, env, timeout) in steps {
            run(&mut report, name, script, &args, env, secs(timeout))?;
            if self.stop_here(uuid, o, name) {
                return Ok(report);
            }
        }

        note(&mut report, "cnapi.update_nics", "not applicable: the double has no NAPI");
        note(&mut report, "cnapi.poll_tasks", "not applicable: no cn-agent tasks were started");
        if linux {
            note(&mut report, "cnapi.touch_setup_complete", "skipped: not needed on Linux");
        } else {
            run(
                &mut report,
                "cnapi.touch_setup_complete",
                "#!/bin/bash\ntouch /var/svc/setup_complete",
                &[],
                BTreeMap::new(),
                secs(1000),
            )?;
        }

        run(
            &mut report,
            "cnapi.reboot_server",
            REBOOT_STEP_SCRIPT,
            &[],
            BTreeMap::new(),
            secs(step_timeout::REBOOT_SERVER),
        )?;

        // wait_for_reboot: running, and last_boot later than the job's creation.
        let started = SystemTime::now();
        let t = Instant::now();
        let job_secs = job_start.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs_f64();
        let timeout = secs(step_timeout::WAIT_FOR_REBOOT);
        let rebooted = self.wait_until(timeout, |st| {
            st.servers
                .get(uuid)
                .filter(|s| s.running() && s.last_boot().is_some_and(|b| b > job_secs))
                .and_then(ServerRecord::last_boot)
        });
        let mut rec =
            StepRecord { ok: rebooted.is_some(), ..StepRecord::new("cnapi.wait_for_reboot", started, t.elapsed()) };
        match rebooted {
            Some(b) => {
                rec.note = format!("Boot Time {b} > job start {job_secs:.0}");
                report.steps.push(rec);
            }
            None => {
                let last = self.server(uuid).and_then(|s| s.last_boot());
                rec.note = format!("no sysinfo with Boot Time > {job_secs:.0} (last {last:?})");
                report.steps.push(rec);
                return Err(fail(
                    &report,
                    "cnapi.wait_for_reboot",
                    format!(
                        "no sysinfo with a Boot Time after the job start ({job_secs:.0}) within {timeout:?}; last Boot Time {last:?}"
                    ),
                ));
            }
        }

        match &o.postsetup_script {
            Some(s) => run(
                &mut report,
                "cnapi.run_postsetup_script",
                s,
                &[],
                BTreeMap::new(),
                secs(step_timeout::RUN_POSTSETUP_SCRIPT),
            )?,
            None => note(&mut report, "cnapi.run_postsetup_script", "no postsetup_script"),
        }
        if linux {
            note(&mut report, "cnapi.restart_ur", "skipped: not required on Linux");
        } else {
            note(&mut report, "cnapi.restart_ur", "not run: the double does not restart ur (svcadm) on SmartOS");
        }

        self.update_server(uuid, |r| {
            r.setup = true;
            r.setting_up = false;
        });
        let sysinfo_setup = self.server(uuid).map(|s| s.sysinfo_setup()).unwrap_or(false);
        note(&mut report, "cnapi.mark_server_as_setup", &format!("setup = true (sysinfo Setup = {sysinfo_setup})"));
        self.shared.log(&format!("server-setup of {uuid} done:\n{}", report.summary()));
        Ok(report)
    }

    /// Stops the AMQP client, the SNTP server and the broker.
    pub fn stop(&mut self) {
        self.rt.stop();
        self.sntp.stop();
        self.broker().stop();
    }
}

impl Drop for Headnode {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_v4_and_distinct() {
        let a = gen_uuid();
        let b = gen_uuid();
        assert_ne!(a, b);
        assert!(sysinfo_check::is_uuid(&a), "{a}");
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    #[test]
    fn fetch_script_follows_cnapi() {
        let uuid = "564d5535-0a3c-44c1-9f2e-10ddb1a257bf";
        let s = fetch_setup_files_script(uuid, &SetupOpts::default()).expect("script");
        assert!(s.starts_with("#!/bin/bash\n"), "{s}");
        assert!(s.contains("\ncd /var/tmp\n"));
        assert!(s.contains(&format!("mkdir -p /var/tmp/node.config /var/tmp/config-{uuid}")));
        assert!(s.contains(&format!(
            "(curl -fsS \"$1/extra/joysetup/node.config\") | tee config-{uuid}/node.config node.config/node.config"
        )));
        assert!(s.contains(
            "curl -fsS -O \"$1/extra/joysetup/joysetup.sh\"\ncurl -fsS -O \"$1/extra/joysetup/agentsetup.sh\""
        ));
        assert!(s.ends_with("chmod +x *.sh"));

        let o = SetupOpts {
            disk_layout: Some("mirror".into()),
            disk_cache: Some(false),
            disk_spares: Some(1),
            disk_width: Some(3),
            disk_exclude: Some("vdb,vdc".into()),
            encryption_enabled: Some(false),
            ..Default::default()
        };
        let s = fetch_setup_files_script(uuid, &o).expect("script");
        assert!(
            s.contains(
                "(echo \"layout='mirror'\"; echo \"cache='false'\"; echo \"spares=1\"; echo \"width=3\"; \
                 echo \"disk_exclude='vdb,vdc'\"; echo \"encryption_enabled='false'\"; curl -fsS"
            ),
            "{s}"
        );
        let bad = SetupOpts { disk_layout: Some("x'; rm -rf /".into()), ..Default::default() };
        assert!(fetch_setup_files_script(uuid, &bad).is_err());
    }

    #[test]
    fn node_config_defaults_are_added_once() {
        let text = "assets_admin_ip='10.99.99.9'\nntp_hosts='10.1.1.1'";
        let out = add_node_config_defaults(
            text,
            &[("ntp_hosts", "10.99.99.9".into()), ("imgapi_domain", "imgapi.dev.example".into())],
        );
        assert_eq!(out, "assets_admin_ip='10.99.99.9'\nntp_hosts='10.1.1.1'\nimgapi_domain='imgapi.dev.example'\n");
        assert_eq!(add_node_config_defaults(&out, &[("imgapi_domain", "x".into())]), out);
        assert_eq!(node_config_value(&out, "ntp_hosts").as_deref(), Some("10.1.1.1"));
        assert_eq!(node_config_value(&out, "ntp"), None);
        assert_eq!(add_node_config_defaults("", &[("k", "it's".into())]), "k='it'\\''s'\n");
    }

    #[test]
    fn assets_are_installed() {
        let d = tempfile::tempdir().expect("tempdir");
        install_assets(d.path(), &[("ntp_hosts", "10.99.99.9".into())]).expect("install");
        let dir = d.path().join("extra/joysetup");
        for f in ["joysetup.sh", "agentsetup.sh"] {
            let m = fs::metadata(dir.join(f)).expect("script");
            assert_eq!(m.permissions().mode() & 0o777, 0o755, "{f}");
        }
        assert_eq!(fs::read_to_string(dir.join("joysetup.sh")).expect("read"), JOYSETUP_SH);
        assert_eq!(fs::read_to_string(dir.join("node.config")).expect("read"), "ntp_hosts='10.99.99.9'\n");
        // Again: nothing changes.
        install_assets(d.path(), &[("ntp_hosts", "10.0.0.1".into())]).expect("install");
        assert_eq!(fs::read_to_string(dir.join("node.config")).expect("read"), "ntp_hosts='10.99.99.9'\n");
    }

    #[test]
    fn scripts_are_bash_and_shellcheck_clean() {
        for (name, text) in [("joysetup.sh", JOYSETUP_SH), ("agentsetup.sh", AGENTSETUP_SH)] {
            assert!(text.starts_with("#!/bin/bash\n"), "{name}");
            for opt in ["set -o errexit", "set -o pipefail", "set -o xtrace"] {
                assert!(text.contains(opt), "{name} lacks {opt}");
            }
            let out = std::process::Command::new("bash").args(["-n", "-c", text]).output().expect("bash");
            assert!(out.status.success(), "bash -n {name}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
        if crate::scenario::on_path("shellcheck") {
            let out = std::process::Command::new("shellcheck")
                .arg(path.join("joysetup.sh"))
                .arg(path.join("agentsetup.sh"))
                .output()
                .expect("shellcheck");
            assert!(out.status.success(), "shellcheck:\n{}", String::from_utf8_lossy(&out.stdout));
        } else {
            println!("shellcheck is not installed: only bash -n was run");
        }
    }

    /// The invocations the brief and the headnode script fix.
    #[test]
    fn joysetup_calls_the_headnode_commands() {
        for want in [
            "export PATH=/usr/bin:/usr/sbin:/sbin:/usr/node/bin:/usr/triton/bin\n",
            "readonly FETCHED_DIR=/var/tmp/node.config\n",
            "readonly FETCHED_CONFIG=$FETCHED_DIR/node.config\n",
            ". /usr/triton/bin/config.sh\n",
            "SDC_CONFIG_FILENAME=$FETCHED_CONFIG\nfi\nload_sdc_config\n",
            "/usr/bin/bootparams | grep '^headnode=true'",
            "if [[ \"$(zpool list)\" == \"no pools available\" ]]; then",
            "ntpdate -b \"${servers[@]}\"",
            "ntpdig -j \"${servers[@]}\" |\n            json -e 'this.offset=Math.floor(Math.abs(this.offset))' offset",
            "((offset > 10))",
            "readonly LAYOUT_JSON=/tmp/pool.json\n",
            "disklayout \"${opts[@]}\" > \"$LAYOUT_JSON\"",
            "sysinfo | json 'MiB of Memory'",
            "json capacity < \"$LAYOUT_JSON\"",
            "readonly POOL=zones\n",
            "mkzpool -B -f \"${enc[@]}\" \"$POOL\" \"$LAYOUT_JSON\"",
            "mkzpool -f \"${enc[@]}\" \"$POOL\" \"$LAYOUT_JSON\"",
            "zfs set atime=off \"$POOL\"",
            "touch \"/$POOL/.system_pool\"",
            "readonly OPT_CONFIG=/opt/triton/config\n",
            "readonly USR_CONFIG=/usr/triton/config\n",
            "readonly STATE_NAME=triton-setup-state.json\n",
            "this.seen_states.push('$state');",
            "zfs create -V \"${dump_mib}mb\" \\\n        -o checksum=noparity",
            "zfs create -o quota=10g -o mountpoint=\"/$POOL/global/cores\"",
            "zfs set mountpoint=/opt \"$POOL/opt\"",
            "TMPDIR=/tmp cpio -pdm \"/$POOL/var\"",
            "zfs set mountpoint=/var \"$POOL/var\"",
            "systemctl restart triton-lxd.service",
            "ln -s \"$OPT_CONFIG\" \"$USR_CONFIG\"",
            "zfs create -V \"${vol_gib}g\"",
            "zfs set refreservation=\"${want_gib}g\" \"$POOL/swap\"",
            "imgadm list -H",
            "-e \"this.userAgentExtra = 'server/$(sysinfo | json UUID)'\"",
            "imgadm sources -f -d \"$src\"",
            "imgadm sources -f -a \"http://${CONFIG_imgapi_domain:?}\"",
        ] {
            assert!(JOYSETUP_SH.contains(want), "joysetup.sh lacks {want:?}");
        }
        for want in [
            "readonly INSTALL_LOG=/var/log/triton-agent-install.log\n",
            "/usr/triton/bin/install-default-agents &> \"$INSTALL_LOG\"",
            "NET_AGENT_WAIT=${TRITON_AGENTSETUP_NET_AGENT_WAIT:-30}",
            "sleep \"${NET_AGENT_WAIT}\"",
            "record_state agents_installed",
            "this.complete = true;",
            "sysinfo -u",
            "readonly AGENTS_BIN=/opt/triton/agents/bin\n",
            "if [[ -d $AGENTS_BIN ]]; then",
        ] {
            assert!(AGENTSETUP_SH.contains(want), "agentsetup.sh lacks {want:?}");
        }
        assert!(AGENTSETUP_SH.contains(NET_AGENT_WAIT_ENV));
    }
}
