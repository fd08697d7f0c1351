//! `imgadm.conf`, in SmartOS imgadm's JSON shape:
//!
//! ```json
//! {
//!   "sources": [{"url": "https://images.smartos.org", "type": "imgapi"}],
//!   "userAgentExtra": "server/<uuid>",
//!   "dockerImportSkipUuids": true,
//!   "upgradedToVer": "3.0.0"
//! }
//! ```
//!
//! No `sources` key means "the default source" (as SmartOS reads it). Keys
//! we do not use, at the top level and in each source, are kept as they are.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Default directory of the configuration (and, later, the image database).
pub const DEFAULT_DIR: &str = "/usr/triton/config/imgadm";
/// Environment variable naming another directory (for tests).
pub const DIR_ENV: &str = "IMGADM_DIR";
/// The source SmartOS imgadm uses when none is configured.
pub const DEFAULT_SOURCE_URL: &str = "https://images.smartos.org";
/// Source types this imgadm can use.
pub const SOURCE_TYPES: &[&str] = &["imgapi"];

/// Where imgadm keeps its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    pub dir: PathBuf,
}

impl Paths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Paths { dir: dir.into() }
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("imgadm.conf")
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    pub url: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Source {
    pub fn imgapi(url: &str) -> Self {
        Source { url: url.to_string(), kind: "imgapi".into(), insecure: None, channel: None, other: BTreeMap::new() }
    }
}

impl std::fmt::Display for Source {
    /// SmartOS's wording: `"imgapi" image source "https://..."`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "\"{}\" image source \"{}\"", self.kind, self.url)?;
        if self.insecure == Some(true) {
            write!(f, " (insecure)")?;
        }
        if let Some(c) = &self.channel {
            write!(f, " (channel={c})")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources: Option<Vec<Source>>,
    #[serde(rename = "userAgentExtra", default, skip_serializing_if = "Option::is_none")]
    pub user_agent_extra: Option<String>,
    #[serde(flatten)]
    pub other: BTreeMap<String, Value>,
}

impl Config {
    /// What SmartOS imgadm writes on first use, with the default source
    /// made explicit.
    pub fn default_file() -> Self {
        let mut other = BTreeMap::new();
        other.insert("dockerImportSkipUuids".into(), Value::Bool(true));
        other.insert("upgradedToVer".into(), Value::String("3.0.0".into()));
        Config { sources: Some(vec![Source::imgapi(DEFAULT_SOURCE_URL)]), user_agent_extra: None, other }
    }

    /// The sources in use: the configured ones, or the default.
    pub fn effective_sources(&self) -> Vec<Source> {
        self.sources.clone().unwrap_or_else(|| vec![Source::imgapi(DEFAULT_SOURCE_URL)])
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error(
        "config file {} is not valid: {source} (fix it, or remove it to start again from the default)",
        path.display()
    )]
    Parse { path: PathBuf, source: serde_json::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
}

/// The configuration, or `None` when the file does not exist.
pub fn load(paths: &Paths) -> Result<Option<Config>, ConfigError> {
    let path = paths.config();
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    serde_json::from_str(&text).map(Some).map_err(|source| ConfigError::Parse { path, source })
}

/// Writes the configuration atomically (temp file, fsync, rename, fsync of
/// the directory), creating the directory if needed.
pub fn save(paths: &Paths, config: &Config) -> Result<(), ConfigError> {
    let path = paths.config();
    let werr = |source| ConfigError::Write { path: path.clone(), source };
    let mut text =
        serde_json::to_string_pretty(config).map_err(|e| werr(io::Error::new(io::ErrorKind::InvalidData, e)))?;
    text.push('\n');
    fs::create_dir_all(&paths.dir).map_err(werr)?;
    write_atomic(&path, text.as_bytes()).map_err(werr)
}

fn write_atomic(path: &Path, content: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let result = (|| {
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_unknown_keys() {
        let text = r#"{"dockerImportSkipUuids": true, "upgradedToVer": "3.0.0", "userAgentExtra": "server/x",
            "sources": [{"url": "http://a", "type": "imgapi", "insecure": true, "x-extra": 1}], "zzz": [1]}"#;
        let c: Config = serde_json::from_str(text).expect("parse");
        assert_eq!(c.user_agent_extra.as_deref(), Some("server/x"));
        let back: Value = serde_json::to_value(&c).expect("ser");
        let orig: Value = serde_json::from_str(text).expect("parse");
        assert_eq!(back, orig);
    }

    #[test]
    fn missing_sources_means_default() {
        let c: Config = serde_json::from_str("{\"upgradedToVer\": \"3.0.0\"}").expect("parse");
        assert_eq!(c.effective_sources(), vec![Source::imgapi(DEFAULT_SOURCE_URL)]);
        let c: Config = serde_json::from_str("{\"sources\": []}").expect("parse");
        assert!(c.effective_sources().is_empty());
    }

    #[test]
    fn user_agent_extra_must_be_a_string() {
        assert!(serde_json::from_str::<Config>("{\"userAgentExtra\": 5}").is_err());
    }

    #[test]
    fn save_and_load() {
        let d = tempfile::tempdir().expect("tmp");
        let paths = Paths::new(d.path().join("sub/imgadm"));
        assert_eq!(load(&paths).expect("load"), None);
        save(&paths, &Config::default_file()).expect("save");
        let text = fs::read_to_string(paths.config()).expect("read");
        assert_eq!(
            text,
            "{\n  \"sources\": [\n    {\n      \"url\": \"https://images.smartos.org\",\n      \"type\": \"imgapi\"\n    \
             }\n  ],\n  \"dockerImportSkipUuids\": true,\n  \"upgradedToVer\": \"3.0.0\"\n}\n"
        );
        assert_eq!(load(&paths).expect("load"), Some(Config::default_file()));
        // Only the config file is left (no temp files).
        assert_eq!(fs::read_dir(&paths.dir).expect("ls").count(), 1);
        fs::write(paths.config(), "{not json").expect("w");
        let e = load(&paths).expect_err("bad");
        assert!(e.to_string().contains("is not valid"), "{e}");
    }
}
