//! imgadm for a Triton Linux compute node: for now what server setup
//! (the headnode's joysetup.sh `setup_imgadm`) needs:
//!
//! - `imgadm list [-H] [-j]`: imported images (none yet: no image store on
//!   this platform so far); creates the default configuration if missing;
//! - `imgadm sources [-j]`: the configured source URLs, one per line;
//! - `imgadm sources -a URL [-f] [-t imgapi]`: add a source, checked with
//!   `GET <URL>/ping` unless `-f`;
//! - `imgadm sources -d URL`: delete a source.
//!
//! The configuration is `imgadm.conf` (SmartOS's JSON shape, see
//! [`config`]) in `/usr/triton/config/imgadm` (`$IMGADM_DIR` overrides),
//! which survives reboots on a set-up CN. Every command creates it with the
//! default source when it is missing, as SmartOS imgadm does on first use.
//! `import` and real `list` output come later; they will add an image store
//! beside the configuration.

pub mod cli;
pub mod config;
pub mod sources;

use std::io::{self, Write};

use serde::Serialize;

use cli::{Cli, Cmd};
use config::{Config, ConfigError, Paths, Source, SOURCE_TYPES};
use sources::{Added, Ping};

#[derive(Debug, thiserror::Error)]
pub enum ImgadmError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("\"{url}\" is not a usable image source URL: {reason} (give one like http://imgapi.example.com)")]
    BadUrl { url: String, reason: String },
    #[error("source type \"{kind}\" is not supported on this platform (supported: {})", SOURCE_TYPES.join(", "))]
    UnsupportedType { kind: String },
    #[error(
        "image source {url} did not answer as an IMGAPI: {reason}; check the URL and that this node can reach \
         it, or add it without this check with -f"
    )]
    Ping { url: String, reason: String },
    #[error("writing output: {0}")]
    Output(#[from] io::Error),
}

/// The User-Agent of requests to sources.
pub fn user_agent(config: &Config) -> String {
    let mut ua = format!("imgadm/{} (Triton Linux CN)", env!("CARGO_PKG_VERSION"));
    if let Some(extra) = &config.user_agent_extra {
        ua.push(' ');
        ua.push_str(extra);
    }
    ua
}

/// The configuration, written with the default source first if missing.
pub fn load_or_create(paths: &Paths) -> Result<Config, ConfigError> {
    match config::load(paths)? {
        Some(c) => Ok(c),
        None => {
            let c = Config::default_file();
            config::save(paths, &c)?;
            Ok(c)
        }
    }
}

/// How `sources -j` shows a source (as SmartOS: url, type, insecure).
#[derive(Serialize)]
struct ListedSource<'a> {
    url: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure: Option<bool>,
}

pub fn run(cli: &Cli, paths: &Paths, ping: &dyn Ping, out: &mut dyn Write) -> Result<(), ImgadmError> {
    let mut config = load_or_create(paths)?;
    match &cli.cmd {
        Cmd::List { no_header, json } => {
            // No image store yet: nothing is imported.
            if *json {
                writeln!(out, "[]")?;
            } else if !no_header {
                writeln!(out, "UUID  NAME  VERSION  OS  TYPE  PUB")?;
            }
        }
        Cmd::Sources { add: Some(url), kind, force, .. } => {
            if !SOURCE_TYPES.contains(&kind.as_str()) {
                return Err(ImgadmError::UnsupportedType { kind: kind.clone() });
            }
            sources::check_url(url).map_err(|reason| ImgadmError::BadUrl { url: url.clone(), reason })?;
            let mut source = Source::imgapi(url);
            source.kind = kind.clone();
            let ua = user_agent(&config);
            let check = |s: &Source| {
                if *force {
                    Ok(())
                } else {
                    ping.ping(&s.url, &ua).map_err(|reason| ImgadmError::Ping { url: s.url.clone(), reason })
                }
            };
            match sources::add(&mut config, source, check)? {
                Added::Added(s) => {
                    config::save(paths, &config)?;
                    writeln!(out, "Added {s}")?;
                }
                Added::AlreadyHave(s) => writeln!(out, "Already have {s}, no change")?,
            }
        }
        Cmd::Sources { delete: Some(url), .. } => {
            let gone = sources::delete(&mut config, url);
            if gone.is_empty() {
                writeln!(out, "Do not have image source \"{url}\", no change")?;
            } else {
                config::save(paths, &config)?;
                for s in gone {
                    writeln!(out, "Deleted {s}")?;
                }
            }
        }
        Cmd::Sources { json: true, .. } => {
            let list = config.effective_sources();
            let shown: Vec<ListedSource> =
                list.iter().map(|s| ListedSource { url: &s.url, kind: &s.kind, insecure: s.insecure }).collect();
            let text = serde_json::to_string_pretty(&shown).map_err(io::Error::other)?;
            writeln!(out, "{text}")?;
        }
        Cmd::Sources { .. } => {
            for s in config.effective_sources() {
                writeln!(out, "{}", s.url)?;
            }
        }
    }
    Ok(())
}
