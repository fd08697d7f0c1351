//! Command line (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "booter-config",
    version,
    about = "Booter's files for Linux CNs, and a dev booter (DHCP/TFTP/HTTP + QEMU in a private netns)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Lay out a tftp root exactly as booter's dhcpd zone serves /tftpboot.
    Layout(LayoutArgs),
    /// Print the embedded default CN description (TOML).
    ExampleConfig {
        /// Number of CNs.
        #[arg(long, default_value_t = 1)]
        cns: usize,
    },
    /// Run a dev booter in a private network namespace and netboot QEMU CNs (root).
    Boot(BootArgs),
}

#[derive(Debug, Args)]
pub struct LayoutArgs {
    /// CN description (.toml or .json).
    #[arg(long, short)]
    pub config: PathBuf,
    /// PI tarball (platform-<STAMP>.tgz) or unpacked platform-<STAMP>/ directory; repeatable.
    #[arg(long, required = true)]
    pub pi: Vec<PathBuf>,
    /// The tftp root to write (created).
    #[arg(long, short)]
    pub out: PathBuf,
    /// Print the written files as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct BootArgs {
    /// Boot N admin-only CNs from the embedded description (cn1..cnN, 10.99.99.101..).
    #[arg(long, conflicts_with = "config")]
    pub cns: Option<usize>,
    /// CN description (.toml or .json); every CN in it is booted.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// PI tarball or directory [default: $TRITON_PI_DIR, else out/latest].
    #[arg(long)]
    pub pi: Option<PathBuf>,
    /// Work directory (tftp root, disks, leases).
    #[arg(long, default_value = "/var/tmp/triton-devbooter")]
    pub work_dir: PathBuf,
    /// Console logs etc. [default: <work-dir>/artifacts].
    #[arg(long)]
    pub artifacts: Option<PathBuf>,
    /// Network namespace name [default: tbooter-<pid>].
    #[arg(long)]
    pub netns: Option<String>,
    /// Stop once every CN has printed its `ready` event.
    #[arg(long)]
    pub until_ready: bool,
    /// Give up after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub timeout: u64,
    /// Do not echo the consoles.
    #[arg(long, short)]
    pub quiet: bool,
    /// Memory per CN in MiB.
    #[arg(long, default_value_t = 2048)]
    pub memory: u32,
    /// Exit a CN's QEMU when it reboots instead of netbooting it again.
    #[arg(long)]
    pub no_reboot: bool,
    /// Start from blank disks (delete the CNs' disks first).
    #[arg(long)]
    pub fresh_disks: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        super::Cli::command().debug_assert();
    }
}
