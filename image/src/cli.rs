use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Builds the Triton Linux platform image (PI).
#[derive(Debug, Parser)]
#[command(name = "triton-pi", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build platform-<STAMP>.tgz from this checkout.
    Build(BuildArgs),
    /// Build twice (the second time with freshly built layers) and compare
    /// initrd, squashfs and tarball bit for bit; names what differs.
    Repro(BuildArgs),
    /// Print build figures: cold build, warm rebuild after touching one
    /// runtime source file, artifact sizes, next to the targets.
    Bench(BenchArgs),
    /// Run `cargo test --release <ARGS>` inside the cached trixie buildroot
    /// (for crates that link trixie's libraries, e.g. `-- -p zfs-sys -p zfs`).
    CargoTest(CargoTestArgs),
    /// Build the conventional BASELINE image for the boot benchmark (Debian
    /// live-boot initramfs, systemd as PID 1, same packages) into
    /// `<out>/baseline-<STAMP>/x86_64/`.
    Baseline(BaselineArgs),
}

#[derive(Debug, Clone, Args)]
pub struct BaselineArgs {
    /// Where `baseline-<STAMP>/` goes.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Cache of expensive layers (shared with `build`).
    #[arg(long, env = "TRITON_PI_CACHE", default_value = "/var/cache/triton-pi")]
    pub cache: PathBuf,
    /// Rebuild the baseline layer even if cached.
    #[arg(long)]
    pub refresh: bool,
}

#[derive(Debug, Clone, Args)]
pub struct CargoTestArgs {
    /// Cache of expensive layers (the buildroot is looked up or built there).
    #[arg(long, env = "TRITON_PI_CACHE", default_value = "/var/cache/triton-pi")]
    pub cache: PathBuf,
    /// Rebuild the buildroot layer even if cached.
    #[arg(long)]
    pub refresh: bool,
    /// Arguments for `cargo test --release` (after `--`).
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

#[derive(Debug, Clone, Args)]
pub struct BuildArgs {
    /// Where the tarball and the unpacked artifacts go.
    #[arg(long, default_value = "out")]
    pub out: PathBuf,
    /// Cache of expensive layers (package set, dkms, tools), outside the clone.
    #[arg(long, env = "TRITON_PI_CACHE", default_value = "/var/cache/triton-pi")]
    pub cache: PathBuf,
    /// Rebuild the Debian layers even if cached (picks up archive updates).
    #[arg(long)]
    pub refresh: bool,
    /// Print a JSON summary (artifacts, sizes, sha256) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write a standalone initrd with the squashfs inside
    /// (`platform-<STAMP>-standalone.initrd`, beside the tarball), for
    /// direct-kernel and USB boots without `fetch=`.
    #[arg(long)]
    pub standalone: bool,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub build: BuildArgs,
    /// Also measure a cold build (empty cache: tools tree, downloads, layers).
    #[arg(long)]
    pub cold: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        let c = Cli::parse_from(["triton-pi", "build", "--json", "--out", "/tmp/x"]);
        match c.command {
            Command::Build(b) => {
                assert!(b.json);
                assert_eq!(b.out, PathBuf::from("/tmp/x"));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::parse_from(["triton-pi", "cargo-test", "--", "-p", "zfs-sys", "-p", "zfs"]);
        match c.command {
            Command::CargoTest(t) => assert_eq!(t.cargo_args, ["-p", "zfs-sys", "-p", "zfs"]),
            other => panic!("{other:?}"),
        }
        let c = Cli::parse_from(["triton-pi", "baseline", "--out", "/tmp/b"]);
        match c.command {
            Command::Baseline(b) => assert_eq!((b.out, b.refresh), (PathBuf::from("/tmp/b"), false)),
            other => panic!("{other:?}"),
        }
    }
}
