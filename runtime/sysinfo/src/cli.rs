//! Command line of `sysinfo` (SmartOS's flags).
use clap::Parser;

/// Print this compute node's sysinfo JSON (cached in /run/triton/sysinfo.json).
#[derive(Debug, Parser)]
#[command(name = "sysinfo", version)]
pub struct Cli {
    /// Refresh the cache (collect again) and print nothing.
    #[arg(short = 'u', conflicts_with = "parseable")]
    pub update: bool,
    /// Print `Key='value'` lines for shell scripts instead of JSON.
    #[arg(short = 'p')]
    pub parseable: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["sysinfo"]);
        assert!(!c.update && !c.parseable);
        assert!(Cli::parse_from(["sysinfo", "-u"]).update);
        assert!(Cli::parse_from(["sysinfo", "-p"]).parseable);
        assert!(Cli::try_parse_from(["sysinfo", "-u", "-p"]).is_err());
    }
}
