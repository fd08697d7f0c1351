//! `/etc/node.config`: one shell-style `key='value'` per line, written by the
//! headnode (contracts 4.1). Lenient like its shell readers: a bad line is a
//! warning, never a failure.

use std::collections::BTreeMap;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeConfig {
    values: BTreeMap<String, String>,
    /// `(line number, reason)` of lines that were skipped.
    pub warnings: Vec<(usize, String)>,
}

fn unquote(v: &str) -> Option<String> {
    let v = v.trim();
    if let Some(inner) = v.strip_prefix('\'') {
        // Shell single quotes; `'\''` is an embedded quote.
        let inner = inner.strip_suffix('\'')?;
        return Some(inner.replace("'\\''", "'"));
    }
    if let Some(inner) = v.strip_prefix('"') {
        return Some(inner.strip_suffix('"')?.replace("\\\"", "\""));
    }
    Some(v.to_string())
}

impl NodeConfig {
    pub fn parse(text: &str) -> NodeConfig {
        let mut c = NodeConfig::default();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((k, v)) = line.split_once('=') else {
                c.warnings.push((i + 1, "no '=' in line".into()));
                continue;
            };
            if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                c.warnings.push((i + 1, format!("{k:?} is not a valid key")));
                continue;
            }
            match unquote(v) {
                Some(v) => {
                    c.values.insert(k.to_string(), v);
                }
                None => c.warnings.push((i + 1, format!("unbalanced quotes in the value of {k}"))),
            }
        }
        c
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.values.get(key).map(String::as_str)
    }

    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.values.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headnode_format() {
        let c = NodeConfig::parse(
            "# generated\ndhcp_lease_time='2592000'\nsapi_domain='sapi.dingo.local'\n\
             root_shadow='$6$abc$def/ghi.'\ncapi_client_url='http://172.16.2.12:8080'\n\
             quote='it'\\''s'\nbare=1\nbroken='x\nno equals\n9bad-key='x'\n",
        );
        assert_eq!(c.get("dhcp_lease_time"), Some("2592000"));
        assert_eq!(c.get("root_shadow"), Some("$6$abc$def/ghi."));
        assert_eq!(c.get("quote"), Some("it's"));
        assert_eq!(c.get("bare"), Some("1"));
        assert_eq!(c.get("broken"), None);
        assert_eq!(c.warnings.iter().map(|w| w.0).collect::<Vec<_>>(), [8, 9, 10]);
    }
}
