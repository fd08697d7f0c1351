//! Command line of `imgadm` (the subset of SmartOS's that server setup uses).
use clap::{Parser, Subcommand};

/// Manage image sources (and, later, images) on a Triton Linux compute node.
#[derive(Debug, Parser)]
#[command(name = "imgadm", version)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// List installed images (creates the default configuration if missing)
    List {
        /// Do not print the table header
        #[arg(short = 'H')]
        no_header: bool,
        /// JSON output
        #[arg(short = 'j', long = "json")]
        json: bool,
    },
    /// List and edit image sources
    Sources {
        /// Add an image source (checked with GET <URL>/ping unless -f)
        #[arg(short = 'a', value_name = "URL", conflicts_with = "delete")]
        add: Option<String>,
        /// Delete an image source
        #[arg(short = 'd', value_name = "URL")]
        delete: Option<String>,
        /// Do not check that an added source answers as an IMGAPI
        #[arg(short = 'f', long = "force")]
        force: bool,
        /// Type of an added source
        #[arg(short = 't', long = "type", value_name = "TYPE", default_value = "imgapi")]
        kind: String,
        /// List the sources as JSON
        #[arg(short = 'j', long = "json", conflicts_with_all = ["add", "delete"])]
        json: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn setup_invocations_parse() {
        assert!(matches!(Cli::parse_from(["imgadm", "list", "-H"]).cmd, Cmd::List { no_header: true, json: false }));
        assert!(matches!(Cli::parse_from(["imgadm", "sources"]).cmd, Cmd::Sources { add: None, delete: None, .. }));
        let c = Cli::parse_from(["imgadm", "sources", "-f", "-d", "https://images.smartos.org"]);
        assert!(
            matches!(c.cmd, Cmd::Sources { force: true, delete: Some(ref u), .. } if u == "https://images.smartos.org")
        );
        let c = Cli::parse_from(["imgadm", "sources", "-f", "-a", "http://imgapi.dc.example.com"]);
        assert!(matches!(c.cmd, Cmd::Sources { force: true, add: Some(_), ref kind, .. } if kind == "imgapi"));
        assert!(matches!(Cli::parse_from(["imgadm", "sources", "-j"]).cmd, Cmd::Sources { json: true, .. }));
        assert!(Cli::try_parse_from(["imgadm", "sources", "-a", "x", "-d", "y"]).is_err());
        assert!(Cli::try_parse_from(["imgadm", "import", "x"]).is_err());
    }
}
