//! `triton-pi repro`: two builds of one commit must be bit-identical. The
//! second build makes its Debian layers afresh (from the same downloaded
//! packages) in a scratch cache; on a mismatch, the differing files of the two
//! staging trees are listed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

use crate::build::{run_with, Internal, Summary};
use crate::cli::BuildArgs;
use crate::layers::remove_tree;
use crate::source::sha256_file;

fn tree_digests(root: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    fn walk(base: &Path, d: &Path, out: &mut BTreeMap<String, String>) -> anyhow::Result<()> {
        for e in fs::read_dir(d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            let md = fs::symlink_metadata(&p)?;
            let rel = p.strip_prefix(base)?.to_string_lossy().into_owned();
            if md.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p)?.display()));
            } else if md.is_dir() {
                walk(base, &p, out)?;
            } else if md.is_file() {
                out.insert(rel, sha256_file(&p)?);
            }
        }
        Ok(())
    }
    walk(root, root, &mut out)?;
    Ok(out)
}

/// Files that differ between two trees (missing on either side included).
pub fn diff_trees(a: &Path, b: &Path) -> anyhow::Result<Vec<String>> {
    let (da, db) = (tree_digests(a)?, tree_digests(b)?);
    let mut keys: Vec<&String> = da.keys().chain(db.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys
        .into_iter()
        .filter(|k| da.get(*k) != db.get(*k))
        .cloned()
        .collect())
}

fn compare(a: &Summary, b: &Summary) -> Vec<String> {
    let mut diffs = Vec::new();
    for (x, y) in a.artifacts.iter().zip(&b.artifacts) {
        if x.sha256 != y.sha256 {
            diffs.push(format!(
                "{}: {} vs {}",
                x.path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                x.sha256,
                y.sha256
            ));
        }
    }
    if a.tarball.sha256 != b.tarball.sha256 {
        diffs.push(format!(
            "tarball: {} vs {}",
            a.tarball.sha256, b.tarball.sha256
        ));
    }
    diffs
}

pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let out_a = args.out.join("repro-a");
    let out_b = args.out.join("repro-b");
    let scratch: PathBuf = args.cache.join("repro-layers");
    remove_tree(&scratch)?;
    let keep = Internal {
        keep_staging: true,
        layer_cache: None,
    };
    let a = run_with(
        &BuildArgs {
            out: out_a,
            ..args.clone()
        },
        &keep,
    )?;
    let fresh = Internal {
        keep_staging: true,
        layer_cache: Some(scratch.clone()),
    };
    let b = run_with(
        &BuildArgs {
            out: out_b,
            refresh: true,
            ..args.clone()
        },
        &fresh,
    )?;
    let diffs = compare(&a, &b);
    let report = if diffs.is_empty() {
        Ok(())
    } else {
        let mut msg = format!("builds of {} differ:\n  {}", a.commit, diffs.join("\n  "));
        if let (Some(sa), Some(sb)) = (&a.staging, &b.staging) {
            let files = diff_trees(sa, sb)?;
            msg.push_str(&format!(
                "\nfiles that differ in the root filesystem ({}):\n  ",
                files.len()
            ));
            msg.push_str(
                &files
                    .iter()
                    .take(50)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n  "),
            );
        }
        Err(anyhow::anyhow!(msg))
    };
    for s in [&a.staging, &b.staging].into_iter().flatten() {
        let _ = remove_tree(s);
    }
    let _ = remove_tree(&scratch);
    report?;
    for x in a.artifacts.iter().chain([&a.tarball]) {
        println!(
            "reproducible: {} {}",
            x.sha256,
            x.path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
    }
    if a.dirty {
        bail!("the checkout has uncommitted changes: reproducible, but not of a commit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_differing_files() {
        let d = tempfile::tempdir().expect("tmp");
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        for t in [&a, &b] {
            fs::create_dir_all(t.join("etc")).expect("mkdir");
            fs::write(t.join("etc/same"), "x").expect("w");
        }
        fs::write(a.join("etc/shadow"), "root:1").expect("w");
        fs::write(b.join("etc/shadow"), "root:2").expect("w");
        fs::write(b.join("only-b"), "").expect("w");
        assert_eq!(diff_trees(&a, &b).expect("diff"), ["etc/shadow", "only-b"]);
    }
}
