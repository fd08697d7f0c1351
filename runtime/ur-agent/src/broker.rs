//! Where the broker is: `rabbitmq=<user>:<pass>:<host>:<port>` on the kernel
//! command line (booter puts it there), else in `/etc/node.config`; the
//! `rabbitmq_dns=` value (same form, a DNS name as host) is tried after it,
//! or alone when there is no `rabbitmq=`. `--broker <amqp URI>` replaces all
//! of this (tests, debugging).
//!
//! Pure: callers read the files and pass their text. Malformed values are
//! reported as [`ConfigProblem`]s (the agent logs them and keeps running);
//! passwords never appear in `Display` output.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use boot_params::{Cmdline, NodeConfig};
use lapin::uri::{AMQPAuthority, AMQPQueryString, AMQPScheme, AMQPUri, AMQPUserInfo};

/// The form a `rabbitmq=` value must have (for error messages).
pub const FORM: &str = "<user>:<password>:<host>:<port>, e.g. guest:guest:10.99.99.16:5672";

/// A parsed `rabbitmq=` value.
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerAddr {
    pub user: String,
    pub password: String,
    pub host: String,
    pub port: u16,
}

/// Why a `rabbitmq=` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddrError {
    #[error("the value is empty")]
    Empty,
    #[error("it has {0} ':'-separated field(s), 4 are needed")]
    FieldCount(usize),
    #[error("the {0} field is empty")]
    EmptyField(&'static str),
    #[error("the port {0:?} is not a number between 1 and 65535")]
    BadPort(String),
    #[error("the host {0:?} contains whitespace or '/'")]
    BadHost(String),
}

impl BrokerAddr {
    /// Parses `user:password:host:port`. The password may itself contain ':'
    /// (user is the first field, host and port the last two).
    pub fn parse(value: &str) -> Result<BrokerAddr, AddrError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(AddrError::Empty);
        }
        let fields: Vec<&str> = value.split(':').collect();
        if fields.len() < 4 {
            return Err(AddrError::FieldCount(fields.len()));
        }
        let n = fields.len();
        let user = fields[0];
        let password = fields[1..n - 2].join(":");
        let host = fields[n - 2];
        let port = fields[n - 1];
        for (name, v) in [("user", user), ("password", password.as_str()), ("host", host), ("port", port)] {
            if v.is_empty() {
                return Err(AddrError::EmptyField(name));
            }
        }
        if host.contains(|c: char| c.is_whitespace() || c == '/') {
            return Err(AddrError::BadHost(host.to_string()));
        }
        let port = match port.parse::<u16>() {
            Ok(p) if p > 0 => p,
            _ => return Err(AddrError::BadPort(port.to_string())),
        };
        Ok(BrokerAddr { user: user.to_string(), password, host: host.to_string(), port })
    }

    /// The AMQP URI: vhost `/`, heartbeat 30 s, connection timeout.
    pub fn uri(&self, connect_timeout: Duration) -> AMQPUri {
        AMQPUri {
            scheme: AMQPScheme::AMQP,
            authority: AMQPAuthority {
                userinfo: AMQPUserInfo { username: self.user.clone(), password: self.password.clone() },
                host: self.host.clone(),
                port: self.port,
            },
            vhost: "/".into(),
            query: AMQPQueryString {
                heartbeat: Some(crate::HEARTBEAT_S),
                connection_timeout: Some(connect_timeout.as_millis() as u64),
                ..AMQPQueryString::default()
            },
        }
    }
}

/// `user:***@host:port`.
impl fmt::Display for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:***@{}:{}", self.user, self.host, self.port)
    }
}

impl fmt::Debug for BrokerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A raw value with everything that may be a password replaced by `***`
/// (for messages about malformed values).
pub fn mask_raw(value: &str) -> String {
    let fields: Vec<&str> = value.split(':').collect();
    match fields.len() {
        0 | 1 => value.to_string(),
        2 | 3 => {
            let mut f: Vec<String> = fields.iter().map(|s| s.to_string()).collect();
            f[1] = "***".into();
            f.join(":")
        }
        n => format!("{}:***:{}:{}", fields[0], fields[n - 2], fields[n - 1]),
    }
}

/// Where a candidate address came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Cmdline,
    NodeConfig,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Cmdline => "kernel command line",
            Origin::NodeConfig => "node.config",
        })
    }
}

/// One address to try, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Candidate {
    Addr {
        addr: BrokerAddr,
        origin: Origin,
        key: &'static str,
    },
    /// `--broker`: password masked in `shown`.
    Uri {
        uri: AMQPUri,
        shown: String,
    },
}

impl Candidate {
    pub fn uri(&self, connect_timeout: Duration) -> AMQPUri {
        match self {
            Candidate::Addr { addr, .. } => addr.uri(connect_timeout),
            Candidate::Uri { uri, .. } => uri.clone(),
        }
    }
}

impl fmt::Display for Candidate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Candidate::Addr { addr, origin, key } => write!(f, "{addr} ({origin} {key}=)"),
            Candidate::Uri { shown, .. } => write!(f, "{shown} (--broker)"),
        }
    }
}

/// A value that cannot be used, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem(pub String);

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The candidates in the order to try them, and the problems found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    pub candidates: Vec<Candidate>,
    pub problems: Vec<ConfigProblem>,
}

/// Parses `--broker`: an `amqp://` URI; heartbeat and connection timeout are
/// added when the URI does not set them.
pub fn from_override(uri: &str, connect_timeout: Duration) -> Resolution {
    match AMQPUri::from_str(uri) {
        Ok(mut u) => {
            u.query.heartbeat.get_or_insert(crate::HEARTBEAT_S);
            u.query.connection_timeout.get_or_insert(connect_timeout.as_millis() as u64);
            let shown = format!(
                "{}://{}:***@{}:{}/{}",
                u.scheme, u.authority.userinfo.username, u.authority.host, u.authority.port, u.vhost
            );
            Resolution { candidates: vec![Candidate::Uri { uri: u, shown }], problems: vec![] }
        }
        Err(e) => Resolution {
            candidates: vec![],
            problems: vec![ConfigProblem(format!(
                "--broker is not a valid AMQP URI ({e}); expected amqp://<user>:<password>@<host>:<port>/%2f"
            ))],
        },
    }
}

/// Candidates from the command line and node.config texts (`None` = file
/// missing or unreadable): `rabbitmq` (cmdline, else node.config), then
/// `rabbitmq_dns` (cmdline, else node.config). A malformed value is a
/// problem and the same key from the next source is used instead.
pub fn resolve(cmdline: Option<&str>, node_config: Option<&str>) -> Resolution {
    let cmdline = cmdline.map(Cmdline::parse);
    let node_config = node_config.map(NodeConfig::parse);
    let mut r = Resolution::default();
    for key in ["rabbitmq", "rabbitmq_dns"] {
        let sources = [
            (Origin::Cmdline, cmdline.as_ref().and_then(|c| c.get(key))),
            (Origin::NodeConfig, node_config.as_ref().and_then(|c| c.get(key))),
        ];
        for (origin, value) in sources {
            let Some(value) = value else { continue };
            match BrokerAddr::parse(value) {
                Ok(addr) => {
                    let c = Candidate::Addr { addr, origin, key };
                    if !r.candidates.contains(&c) {
                        r.candidates.push(c);
                    }
                    break;
                }
                Err(e) => r.problems.push(ConfigProblem(format!(
                    "{origin} {key}={:?} is malformed: {e}; it must be {FORM}",
                    mask_raw(value)
                ))),
            }
        }
    }
    if r.candidates.is_empty() && r.problems.is_empty() {
        r.problems.push(ConfigProblem(format!(
            "no rabbitmq= (or rabbitmq_dns=) on the kernel command line or in node.config; it must be {FORM}"
        )));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> BrokerAddr {
        BrokerAddr::parse(s).expect("valid")
    }

    #[test]
    fn parses_booter_form() {
        let a = addr("guest:guest:10.99.99.16:5672");
        assert_eq!(
            (a.user.as_str(), a.password.as_str(), a.host.as_str(), a.port),
            ("guest", "guest", "10.99.99.16", 5672)
        );
        assert_eq!(a.to_string(), "guest:***@10.99.99.16:5672");
        assert_eq!(format!("{a:?}"), "guest:***@10.99.99.16:5672");
        assert_eq!(addr(" u:p:rabbit.dc.example.com:5673\n").host, "rabbit.dc.example.com");
        // A ':' in the password is kept.
        assert_eq!(addr("u:p:a:ss:h:1").password, "p:a:ss");
    }

    #[test]
    fn malformed_values() {
        assert_eq!(BrokerAddr::parse(""), Err(AddrError::Empty));
        assert_eq!(BrokerAddr::parse("  "), Err(AddrError::Empty));
        assert_eq!(BrokerAddr::parse("guest:guest:10.0.0.1"), Err(AddrError::FieldCount(3)));
        assert_eq!(BrokerAddr::parse(":guest:h:5672"), Err(AddrError::EmptyField("user")));
        assert_eq!(BrokerAddr::parse("guest::h:5672"), Err(AddrError::EmptyField("password")));
        assert_eq!(BrokerAddr::parse("guest:g::5672"), Err(AddrError::EmptyField("host")));
        assert_eq!(BrokerAddr::parse("guest:g:h:"), Err(AddrError::EmptyField("port")));
        assert_eq!(BrokerAddr::parse("guest:g:h:amqp"), Err(AddrError::BadPort("amqp".into())));
        assert_eq!(BrokerAddr::parse("guest:g:h:0"), Err(AddrError::BadPort("0".into())));
        assert_eq!(BrokerAddr::parse("guest:g:h:70000"), Err(AddrError::BadPort("70000".into())));
        assert_eq!(BrokerAddr::parse("guest:g:h/x:1"), Err(AddrError::BadHost("h/x".into())));
    }

    #[test]
    fn masks_raw_values() {
        assert_eq!(mask_raw("guest:secret:10.0.0.1:5672"), "guest:***:10.0.0.1:5672");
        assert_eq!(mask_raw("guest:secret:10.0.0.1"), "guest:***:10.0.0.1");
        assert_eq!(mask_raw("guest:se:cr:et:h:1"), "guest:***:h:1");
        assert_eq!(mask_raw("justahost"), "justahost");
    }

    #[test]
    fn uri_has_heartbeat_and_vhost() {
        let u = addr("ur:p@ss/w:127.0.0.1:5672").uri(Duration::from_secs(10));
        assert_eq!(u.vhost, "/");
        assert_eq!(u.query.heartbeat, Some(30));
        assert_eq!(u.query.connection_timeout, Some(10_000));
        assert_eq!(u.authority.userinfo.password, "p@ss/w");
    }

    #[test]
    fn cmdline_wins_then_dns() {
        let r = resolve(
            Some("console=ttyS0 rabbitmq=guest:guest:10.0.0.1:5672 rabbitmq_dns=guest:guest:rabbitmq.dc.example:5672"),
            Some("rabbitmq='other:pw:10.0.0.2:5672'\n"),
        );
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let shown: Vec<String> = r.candidates.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            shown,
            [
                "guest:***@10.0.0.1:5672 (kernel command line rabbitmq=)",
                "guest:***@rabbitmq.dc.example:5672 (kernel command line rabbitmq_dns=)"
            ]
        );
    }

    #[test]
    fn node_config_when_cmdline_lacks_it() {
        let r = resolve(
            Some("console=ttyS0"),
            Some("sapi_domain='sapi.x'\nrabbitmq='guest:guest:10.0.0.2:5672'\nrabbitmq_dns='guest:guest:rmq.x:5672'\n"),
        );
        assert!(r.problems.is_empty());
        assert_eq!(r.candidates.len(), 2);
        assert!(matches!(&r.candidates[0], Candidate::Addr { origin: Origin::NodeConfig, key: "rabbitmq", .. }));
        assert!(matches!(&r.candidates[1], Candidate::Addr { origin: Origin::NodeConfig, key: "rabbitmq_dns", .. }));
    }

    #[test]
    fn dns_alone_is_enough() {
        let r = resolve(None, Some("rabbitmq_dns='guest:guest:rmq.x:5672'\n"));
        assert!(r.problems.is_empty());
        assert_eq!(r.candidates.len(), 1);
    }

    #[test]
    fn malformed_cmdline_value_is_reported_and_node_config_used() {
        let r = resolve(Some("rabbitmq=guest:secret:10.0.0.1"), Some("rabbitmq='guest:guest:10.0.0.2:5672'"));
        assert_eq!(r.problems.len(), 1);
        let p = r.problems[0].to_string();
        assert!(p.contains("kernel command line rabbitmq=\"guest:***:10.0.0.1\" is malformed"), "{p}");
        assert!(p.contains("3 ':'-separated field(s), 4 are needed"), "{p}");
        assert!(p.contains(FORM), "{p}");
        assert!(!p.contains("secret"), "{p}");
        assert_eq!(r.candidates.len(), 1);
    }

    #[test]
    fn nothing_usable_is_a_problem() {
        let r = resolve(Some("console=ttyS0"), None);
        assert!(r.candidates.is_empty());
        assert_eq!(r.problems.len(), 1);
        assert!(r.problems[0].0.starts_with("no rabbitmq="), "{}", r.problems[0]);
        let r = resolve(Some("rabbitmq="), Some("rabbitmq='x:y:z:port'"));
        assert!(r.candidates.is_empty());
        assert_eq!(r.problems.len(), 2);
        assert!(r.problems[0].0.contains("the value is empty"));
        assert!(r.problems[1].0.contains("node.config rabbitmq="));
        assert!(r.problems[1].0.contains("\"port\" is not a number"));
    }

    #[test]
    fn override_uri() {
        let r = from_override("amqp://guest:sekrit@127.0.0.1:5999/%2f", Duration::from_secs(5));
        assert!(r.problems.is_empty());
        let c = &r.candidates[0];
        assert_eq!(c.to_string(), "amqp://guest:***@127.0.0.1:5999// (--broker)");
        let u = c.uri(Duration::from_secs(1));
        assert_eq!(u.query.heartbeat, Some(30));
        assert_eq!(u.authority.port, 5999);
        let r = from_override("http://x", Duration::from_secs(5));
        assert!(r.candidates.is_empty());
        assert!(r.problems[0].0.starts_with("--broker is not a valid AMQP URI"));
    }
}
