//! Command line: every path and limit has the CN's default, so the
//! supervisor starts `ur-agent` with no arguments and tests point
//! everything elsewhere.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::Config;

/// ur-agent: answers the headnode over AMQP (sysinfo, ping, execute).
#[derive(Debug, Parser)]
#[command(name = "ur-agent", version)]
pub struct Cli {
    /// AMQP URI of the broker (amqp://user:pass@host:port/%2f); replaces
    /// rabbitmq= from the command line and node.config
    #[arg(long, env = "UR_AGENT_BROKER")]
    pub broker: Option<String>,
    /// Kernel command line to read rabbitmq= and rabbitmq_dns= from
    #[arg(long, default_value = "/proc/cmdline")]
    pub cmdline: PathBuf,
    /// node.config to read rabbitmq= and rabbitmq_dns= from when the command line lacks them
    #[arg(long, default_value = "/etc/node.config")]
    pub node_config: PathBuf,
    /// The sysinfo program (prints the node's JSON; -u refreshes its cache)
    #[arg(long, default_value = "/usr/bin/sysinfo")]
    pub sysinfo: PathBuf,
    /// Setup-state file; sysinfo is published periodically until it says "complete": true
    #[arg(long, default_value = sysinfo::SETUP_STATE_FILE)]
    pub setup_state: PathBuf,
    /// Marker file: the ur.startup message was sent this boot
    #[arg(long, default_value = "/run/triton/ur-startup")]
    pub startup_marker: PathBuf,
    /// Directory for the temporary script files
    #[arg(long, default_value = "/var/tmp")]
    pub tmp_dir: PathBuf,
    /// Period of sysinfo publishes while the node is not set up (e.g. 60s, 500ms)
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub sysinfo_interval: Duration,
    /// Orderly reboot command after a script exits 113 (program and arguments, split on spaces)
    #[arg(long, default_value = "/usr/bin/triton-ctl reboot")]
    pub reboot_cmd: String,
    /// Forced reboot command when the node is still up after --force-reboot-after
    /// [default: sync + reboot(2)]
    #[arg(long)]
    pub force_reboot_cmd: Option<String>,
    /// Time between the orderly reboot request and the forced reboot
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub force_reboot_after: Duration,
    /// Largest request body handled, in bytes; larger messages are dropped
    #[arg(long, default_value_t = crate::MAX_MESSAGE)]
    pub max_message: usize,
    /// Most bytes of stdout, and of stderr, kept from one execute
    #[arg(long, default_value_t = crate::MAX_OUTPUT)]
    pub max_output: usize,
    /// Execute timeout when the request has no "timeout" (ms) field
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub exec_timeout: Duration,
    /// Longest wait between connection retries (they start at 1 s and double)
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub retry_max: Duration,
    /// Time allowed for one connection attempt
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_string).collect()
}

impl Cli {
    /// The agent's configuration; fails (with what to fix) on an empty
    /// reboot command.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let reboot_cmd = words(&self.reboot_cmd);
        if reboot_cmd.is_empty() {
            anyhow::bail!(
                "--reboot-cmd is empty; give a program and its arguments, e.g. \"/usr/bin/triton-ctl reboot\""
            );
        }
        let force_reboot_cmd = match self.force_reboot_cmd {
            Some(s) if words(&s).is_empty() => {
                anyhow::bail!("--force-reboot-cmd is empty; leave it out to use sync + reboot(2)")
            }
            Some(s) => Some(words(&s)),
            None => None,
        };
        if self.sysinfo_interval.is_zero() || self.retry_max.is_zero() || self.connect_timeout.is_zero() {
            anyhow::bail!("--sysinfo-interval, --retry-max and --connect-timeout must be more than 0");
        }
        Ok(Config {
            broker_override: self.broker,
            cmdline: self.cmdline,
            node_config: self.node_config,
            sysinfo: self.sysinfo,
            setup_state: self.setup_state,
            startup_marker: self.startup_marker,
            tmp_dir: self.tmp_dir,
            sysinfo_interval: self.sysinfo_interval,
            reboot_cmd,
            force_reboot_cmd,
            force_reboot_after: self.force_reboot_after,
            max_message: self.max_message,
            max_output: self.max_output,
            exec_timeout: self.exec_timeout,
            retry_max: self.retry_max,
            connect_timeout: self.connect_timeout,
        })
    }
}

/// `90`, `90s`, `1.5s`, `500ms`, `5m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{s:?} is not a duration (e.g. 60s, 500ms, 5m)"))?;
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        u => return Err(format!("{s:?}: unknown unit {u:?} (use ms, s, m or h)")),
    };
    let secs = n * scale;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{s:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent_and_has_cn_defaults() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["ur-agent"]).into_config().expect("config");
        assert_eq!(c.broker_override, None);
        assert_eq!(c.cmdline, PathBuf::from("/proc/cmdline"));
        assert_eq!(c.node_config, PathBuf::from("/etc/node.config"));
        assert_eq!(c.sysinfo, PathBuf::from("/usr/bin/sysinfo"));
        assert_eq!(c.setup_state, PathBuf::from("/opt/triton/config/triton-setup-state.json"));
        assert_eq!(c.startup_marker, PathBuf::from("/run/triton/ur-startup"));
        assert_eq!(c.tmp_dir, PathBuf::from("/var/tmp"));
        assert_eq!(c.sysinfo_interval, Duration::from_secs(60));
        assert_eq!(c.reboot_cmd, ["/usr/bin/triton-ctl", "reboot"]);
        assert_eq!(c.force_reboot_cmd, None);
        assert_eq!(c.force_reboot_after, Duration::from_secs(300));
        assert_eq!(c.max_message, 16 * 1024 * 1024);
        assert_eq!(c.max_output, 5 * 1024 * 1024);
        assert_eq!(c.exec_timeout, Duration::from_secs(3600));
        assert_eq!(c.retry_max, Duration::from_secs(30));
    }

    #[test]
    fn test_overrides() {
        let c = Cli::parse_from([
            "ur-agent",
            "--broker",
            "amqp://guest:guest@127.0.0.1:5999/%2f",
            "--sysinfo-interval",
            "500ms",
            "--force-reboot-cmd",
            "/bin/touch /tmp/x",
            "--force-reboot-after",
            "2s",
            "--max-message",
            "1000",
        ])
        .into_config()
        .expect("config");
        assert_eq!(c.sysinfo_interval, Duration::from_millis(500));
        assert_eq!(c.force_reboot_cmd, Some(vec!["/bin/touch".to_string(), "/tmp/x".to_string()]));
        assert_eq!(c.force_reboot_after, Duration::from_secs(2));
        assert_eq!(c.max_message, 1000);
        assert!(Cli::parse_from(["ur-agent", "--reboot-cmd", " "]).into_config().is_err());
        assert!(Cli::try_parse_from(["ur-agent", "--sysinfo-interval", "soon"]).is_err());
        assert!(Cli::parse_from(["ur-agent", "--sysinfo-interval", "0"]).into_config().is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e300h").is_err());
    }
}
