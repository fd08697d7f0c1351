//! The built platform the tests boot: `$TRITON_PI_DIR`, else `out/latest`.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(Debug, Clone)]
pub struct Platform {
    pub dir: PathBuf,
}

impl Platform {
    pub fn locate() -> anyhow::Result<Platform> {
        let dir = match std::env::var_os("TRITON_PI_DIR") {
            Some(d) => PathBuf::from(d),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../out/latest"),
        };
        if !dir.join("x86_64/vmlinuz").is_file() {
            bail!(
                "no built platform at {} (x86_64/vmlinuz missing): build it first with \
                 `cargo run --release -p image -- build` or set TRITON_PI_DIR",
                dir.display()
            );
        }
        Ok(Platform { dir: dir.canonicalize().context("platform dir")? })
    }

    pub fn x86(&self, f: &str) -> PathBuf {
        self.dir.join("x86_64").join(f)
    }

    /// `etc/version/buildinfo.json`.
    pub fn buildinfo(&self) -> anyhow::Result<serde_json::Value> {
        let p = self.dir.join("etc/version/buildinfo.json");
        let t = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        serde_json::from_str(&t).with_context(|| format!("parsing {}", p.display()))
    }
}
