//! Image sources: URL checks, the ping check and the add/delete rules of
//! SmartOS imgadm (a source is identified by its normalised URL, type and
//! `insecure` flag; deleting matches the normalised URL).

use std::io::Read;
use std::time::Duration;

use crate::config::{Config, Source};

/// `http://host[:port][/path]` with scheme and host lower-cased, default
/// port and trailing `/` dropped; `http://` is assumed when no scheme is
/// given (as SmartOS does). `None` if it is not a URL.
pub fn normalize(raw: &str) -> Option<String> {
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let u = url::Url::parse(&with_scheme).ok()?;
    let s = u.as_str();
    Some(s.strip_suffix('/').unwrap_or(s).to_string())
}

fn same_url(a: &str, b: &str) -> bool {
    match (normalize(a), normalize(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Checks that a URL can be an image source.
pub fn check_url(raw: &str) -> Result<(), String> {
    let u = url::Url::parse(raw).map_err(|e| format!("{e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("scheme \"{}\" is not http or https", u.scheme()));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err("no host".into());
    }
    Ok(())
}

/// Asks a source whether it is an IMGAPI (`GET <url>/ping`).
pub trait Ping {
    fn ping(&self, url: &str, user_agent: &str) -> Result<(), String>;
}

/// The real check over HTTP.
#[derive(Debug, Clone)]
pub struct HttpPing {
    pub connect_timeout: Duration,
    pub timeout: Duration,
}

impl Default for HttpPing {
    fn default() -> Self {
        HttpPing { connect_timeout: Duration::from_secs(10), timeout: Duration::from_secs(30) }
    }
}

/// Largest /ping answer read.
const MAX_PING_BODY: u64 = 64 * 1024;

impl Ping for HttpPing {
    fn ping(&self, url: &str, user_agent: &str) -> Result<(), String> {
        let target = format!("{}/ping", url.trim_end_matches('/'));
        if target.starts_with("https:") {
            return Err("https sources cannot be checked yet (this imgadm has no TLS support)".into());
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(self.connect_timeout)
            .timeout(self.timeout)
            .user_agent(user_agent)
            .build();
        let resp = match agent.get(&target).set("Accept", "application/json").call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => return Err(format!("GET {target} answered HTTP {code}")),
            Err(ureq::Error::Transport(t)) => return Err(format!("GET {target}: {t}")),
        };
        let mut body = String::new();
        resp.into_reader()
            .take(MAX_PING_BODY)
            .read_to_string(&mut body)
            .map_err(|e| format!("GET {target}: reading the answer: {e}"))?;
        let v: serde_json::Value = serde_json::from_str(&body)
            .map_err(|_| format!("GET {target} answered, but not with JSON: {}", snippet(&body)))?;
        let is_imgapi = match v.get("imgapi") {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(false)) => false,
            Some(serde_json::Value::String(s)) => !s.is_empty(),
            Some(serde_json::Value::Number(n)) => n.as_f64() != Some(0.0),
            Some(_) => true,
        };
        if is_imgapi {
            Ok(())
        } else {
            Err(format!("GET {target} answered without \"imgapi\": {}", snippet(&body)))
        }
    }
}

fn snippet(s: &str) -> String {
    let t: String = s.trim().chars().take(200).collect();
    if t.len() < s.trim().len() {
        format!("{t}...")
    } else {
        t
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Added {
    Added(Source),
    AlreadyHave(Source),
}

/// Adds `source` (after `check`, unless it is already there). A config
/// without `sources` was using the default source implicitly; it is kept.
pub fn add<E>(config: &mut Config, source: Source, check: impl FnOnce(&Source) -> Result<(), E>) -> Result<Added, E> {
    let current = config.effective_sources();
    if let Some(s) =
        current.iter().find(|s| same_url(&s.url, &source.url) && s.kind == source.kind && s.insecure == source.insecure)
    {
        return Ok(Added::AlreadyHave(s.clone()));
    }
    check(&source)?;
    let mut sources = current;
    sources.push(source.clone());
    config.sources = Some(sources);
    Ok(Added::Added(source))
}

/// Removes every source whose URL matches; returns them.
pub fn delete(config: &mut Config, url: &str) -> Vec<Source> {
    let (gone, kept): (Vec<Source>, Vec<Source>) =
        config.effective_sources().into_iter().partition(|s| same_url(&s.url, url));
    if !gone.is_empty() {
        config.sources = Some(kept);
    }
    gone
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DEFAULT_SOURCE_URL;

    #[test]
    fn normalises_like_smartos() {
        assert_eq!(normalize("http://IMGAPI.Example.com/").as_deref(), Some("http://imgapi.example.com"));
        assert_eq!(normalize("imgapi.example.com").as_deref(), Some("http://imgapi.example.com"));
        assert_eq!(normalize("http://a:80/x/").as_deref(), Some("http://a/x"));
        assert_eq!(normalize("https://a:443").as_deref(), Some("https://a"));
        assert_eq!(normalize("https://a:8443/").as_deref(), Some("https://a:8443"));
        assert_eq!(normalize("http://"), None);
    }

    #[test]
    fn url_checks() {
        assert!(check_url("http://imgapi.dc.example.com").is_ok());
        assert!(check_url("https://10.0.0.5:8080/x").is_ok());
        assert!(check_url("imgapi.example.com").is_err());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http://").is_err());
    }

    fn ok(_: &Source) -> Result<(), String> {
        Ok(())
    }

    #[test]
    fn add_and_delete() {
        let mut c = Config { sources: None, ..Default::default() };
        // Implicit default kept when adding.
        let r = add(&mut c, Source::imgapi("http://imgapi.dc"), ok).expect("add");
        assert_eq!(r, Added::Added(Source::imgapi("http://imgapi.dc")));
        assert_eq!(c.sources, Some(vec![Source::imgapi(DEFAULT_SOURCE_URL), Source::imgapi("http://imgapi.dc")]));
        // Same URL, normalised: no change, no check.
        let r = add(&mut c, Source::imgapi("http://IMGAPI.dc/"), |_| Err("must not be called")).expect("add");
        assert_eq!(r, Added::AlreadyHave(Source::imgapi("http://imgapi.dc")));
        // A failed check changes nothing.
        let before = c.clone();
        assert_eq!(add(&mut c, Source::imgapi("http://other"), |_| Err("down")), Err("down"));
        assert_eq!(c, before);
        // Delete by URL.
        assert_eq!(delete(&mut c, "https://images.smartos.org/"), vec![Source::imgapi(DEFAULT_SOURCE_URL)]);
        assert_eq!(delete(&mut c, "http://nope"), vec![]);
        assert_eq!(delete(&mut c, "http://imgapi.dc"), vec![Source::imgapi("http://imgapi.dc")]);
        assert_eq!(c.sources, Some(vec![]));
        assert!(c.effective_sources().is_empty());
    }
}
