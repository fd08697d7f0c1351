//! A private RabbitMQ broker (Debian's rabbitmq-server, run as root with its
//! own node name, ports, data and log directory) for tests of ur-agent and the
//! headnode double. It listens on one address, optionally inside a network
//! namespace (the dev booter's admin network), and has its own epmd port so
//! brokers of parallel tests never share anything.
//!
//! `guest` may log in from any address (the CN is not on loopback); that is
//! the only change from RabbitMQ's defaults.

use std::fs;
use std::net::SocketAddrV4;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

const SERVER: &str = "/usr/lib/rabbitmq/bin/rabbitmq-server";
const READY_LINE: &str = "Server startup complete";
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// Where and how to run the broker.
#[derive(Debug, Clone)]
pub struct BrokerOpts {
    /// Listen address (AMQP).
    pub listen: SocketAddrV4,
    /// Run inside this network namespace (`ip netns exec`), or in the caller's.
    pub netns: Option<String>,
    /// Data, config and log directory (created; kept across [`Broker::restart`]).
    pub dir: PathBuf,
}

/// A running broker; stopped (and its epmd killed) on drop.
#[derive(Debug)]
pub struct Broker {
    opts: BrokerOpts,
    node: String,
    epmd_port: u16,
    dist_port: u16,
    child: Option<Child>,
    starts: u32,
}

/// Ports for the Erlang side (epmd, distribution), unique within this process
/// and spread by pid across processes.
fn erlang_ports() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = 30000 + ((std::process::id() % 500) as u16) * 20 + (n % 10) * 2;
    (base, base + 1)
}

impl Broker {
    /// Writes the config and starts the broker; returns once it accepts AMQP
    /// connections (its log says startup is complete).
    pub fn start(opts: BrokerOpts) -> anyhow::Result<Broker> {
        if !Path::new(SERVER).exists() {
            bail!("{SERVER} is missing: install Debian's rabbitmq-server (bash ci/setup.sh does)");
        }
        fs::create_dir_all(opts.dir.join("log")).with_context(|| format!("creating {}", opts.dir.display()))?;
        fs::write(
            opts.dir.join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = {}:{}\nloopback_users = none\nlog.console = true\nlog.console.level = info\nlog.file = false\n",
                opts.listen.ip(),
                opts.listen.port()
            ),
        )?;
        fs::write(opts.dir.join("enabled_plugins"), "[].\n")?;
        let (epmd_port, dist_port) = erlang_ports();
        let node = format!("rabbit{}x{}@localhost", std::process::id(), epmd_port);
        let mut b = Broker { opts, node, epmd_port, dist_port, child: None, starts: 0 };
        b.spawn()?;
        Ok(b)
    }

    /// `amqp://guest:guest@<ip>:<port>/%2f`.
    pub fn uri(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.opts.listen)
    }

    /// The listen address.
    pub fn addr(&self) -> SocketAddrV4 {
        self.opts.listen
    }

    /// The log of the current run (`log/broker-<n>.log`).
    pub fn log_path(&self) -> PathBuf {
        self.opts.dir.join("log").join(format!("broker-{}.log", self.starts))
    }

    fn command(&self, program: &str) -> Command {
        let mut c = match &self.opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        };
        let d = &self.opts.dir;
        c.env("HOME", d)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_LOGS", "-")
            .env("RABBITMQ_PID_FILE", d.join("broker.pid"))
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
            .env("ERL_EPMD_PORT", self.epmd_port.to_string());
        c
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log_path = self.log_path();
        let log = fs::File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = self.command(SERVER);
        cmd.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).process_group(0);
        let child = cmd.spawn().context("starting rabbitmq-server")?;
        self.child = Some(child);
        let t0 = Instant::now();
        loop {
            let text = fs::read_to_string(&log_path).unwrap_or_default();
            if text.contains(READY_LINE) {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.child = None;
                    bail!(
                        "rabbitmq-server exited ({st}) before it was ready; log {}:\n{}",
                        log_path.display(),
                        tail(&text)
                    );
                }
            }
            if t0.elapsed() > START_TIMEOUT {
                self.stop();
                bail!(
                    "rabbitmq-server not ready after {START_TIMEOUT:?}; log {}:\n{}",
                    log_path.display(),
                    tail(&text)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Whether the broker process is running.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Stops the broker (SIGTERM to its process group, SIGKILL after 20 s) and
    /// its epmd. Connections drop; data stays for [`Broker::restart`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pgid = Pid::from_raw(c.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // The group may already be gone (ESRCH is fine).
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = c.wait();
        }
        let _ = self.command("epmd").arg("-kill").stdout(Stdio::null()).stderr(Stdio::null()).status();
    }

    /// Stops and starts the broker again on the same address and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.spawn()
    }

    /// Starts a stopped broker again.
    pub fn start_again(&mut self) -> anyhow::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        self.spawn()
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a broker on loopback, checks it accepts TCP, restarts it.
    #[test]
    fn broker_starts_and_restarts() {
        if !Path::new(SERVER).exists() {
            println!("SKIPPED broker_starts_and_restarts: {SERVER} missing (run bash ci/setup.sh)");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let port = 35672 + (std::process::id() % 1000) as u16;
        let listen = SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, port);
        let mut b = Broker::start(BrokerOpts { listen, netns: None, dir: dir.path().to_path_buf() }).expect("start");
        assert!(std::net::TcpStream::connect(listen).is_ok(), "broker accepts TCP");
        b.restart().expect("restart");
        assert!(std::net::TcpStream::connect(listen).is_ok(), "broker accepts TCP after restart");
        b.stop();
        assert!(std::net::TcpStream::connect(listen).is_err(), "broker stopped");
    }
}
