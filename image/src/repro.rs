//! `triton-pi repro`: two builds of one commit must be bit-identical. The
//! second build makes its Debian layers afresh (from the same downloaded
//! packages) in a scratch cache; on a mismatch, the differing files of the two
//! staging trees are listed.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use std::process::Command;

use anyhow::Context;

use crate::build::{run_with, source_root, Internal, Summary};
use crate::cli::BuildArgs;
use crate::host;
use crate::layers::remove_tree;
use crate::source::sha256_file;
use crate::source::Source;

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

/// Lines of `unsquashfs -lln` (mode, owner, size, time, path) that are in
/// one image's listing and not the other's.
pub fn listing_diff(a: &Path, b: &Path) -> anyhow::Result<Vec<String>> {
    let list = |p: &Path| -> anyhow::Result<Vec<String>> {
        let out = host::output(Command::new("unsquashfs").args(["-lln", "-d", ""]).arg(p))?;
        Ok(out.lines().map(str::to_string).collect())
    };
    let (la, lb) = (list(a)?, list(b)?);
    let (sa, sb): (std::collections::BTreeSet<_>, std::collections::BTreeSet<_>) =
        (la.iter().collect(), lb.iter().collect());
    let mut out: Vec<String> = sa.difference(&sb).map(|l| format!("a: {l}")).collect();
    out.extend(sb.difference(&sa).map(|l| format!("b: {l}")));
    Ok(out)
}

/// Files that differ between two trees (missing on either side included).
pub fn diff_trees(a: &Path, b: &Path) -> anyhow::Result<Vec<String>> {
    let (da, db) = (tree_digests(a)?, tree_digests(b)?);
    let mut keys: Vec<&String> = da.keys().chain(db.keys()).collect();
    keys.sort();
    keys.dedup();
    Ok(keys.into_iter().filter(|k| da.get(*k) != db.get(*k)).cloned().collect())
}

fn compare(a: &Summary, b: &Summary) -> Vec<String> {
    let mut diffs = Vec::new();
    for (x, y) in a.artifacts.iter().zip(&b.artifacts) {
        if x.sha256 != y.sha256 {
            diffs.push(format!(
                "{}: {} vs {}",
                x.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                x.sha256,
                y.sha256
            ));
        }
    }
    if a.tarball.sha256 != b.tarball.sha256 {
        diffs.push(format!("tarball: {} vs {}", a.tarball.sha256, b.tarball.sha256));
    }
    diffs
}

/// A clean checkout of HEAD (a detached git worktree), removed when dropped.
struct Worktree {
    repo: PathBuf,
    path: PathBuf,
}

impl Worktree {
    fn add(repo: &Path, path: &Path) -> anyhow::Result<Worktree> {
        let _ = remove_tree(path);
        let git = |args: &[&str]| {
            let mut c = Command::new("git");
            c.arg("-C").arg(repo).args(args);
            c
        };
        let _ = host::run(&mut git(&["worktree", "prune"]));
        host::run(git(&["worktree", "add", "--detach", "--force"]).arg(path).arg("HEAD"))
            .context("checking out HEAD for the reproducibility builds")?;
        Ok(Worktree { repo: repo.to_path_buf(), path: path.to_path_buf() })
    }
}

impl Drop for Worktree {
    fn drop(&mut self) {
        let _ = host::run(
            Command::new("git").arg("-C").arg(&self.repo).args(["worktree", "remove", "--force"]).arg(&self.path),
        );
    }
}

pub fn run(args: &BuildArgs) -> anyhow::Result<()> {
    let repo = source_root()?;
    if Source::discover(&repo)?.dirty {
        eprintln!("note: uncommitted changes are not part of this check; it builds HEAD");
    }
    let wt = Worktree::add(&repo, &args.cache.join("work/repro-src"))?;
    let scratch: PathBuf = args.cache.join("repro-layers");
    remove_tree(&scratch)?;
    let keep = Internal { keep_staging: true, layer_cache: None, src: Some(wt.path.clone()) };
    let a = run_with(&BuildArgs { out: args.out.join("repro-a"), ..args.clone() }, &keep)?;
    let fresh = Internal { keep_staging: true, layer_cache: Some(scratch.clone()), src: Some(wt.path.clone()) };
    let b = run_with(&BuildArgs { out: args.out.join("repro-b"), refresh: true, ..args.clone() }, &fresh)?;
    let diffs = compare(&a, &b);
    let report = if diffs.is_empty() {
        Ok(())
    } else {
        let mut msg = format!("builds of {} differ:\n  {}", a.commit, diffs.join("\n  "));
        if let (Some(sa), Some(sb)) = (&a.staging, &b.staging) {
            let files = diff_trees(sa, sb)?;
            msg.push_str(&format!("\nfiles that differ in the root filesystem ({}):\n  ", files.len()));
            msg.push_str(&files.iter().take(50).cloned().collect::<Vec<_>>().join("\n  "));
        }
        // Same contents but different squashfs: owners, modes, sizes, links.
        let squash = |s: &Summary| s.platform_dir.join("x86_64/filesystem.squashfs");
        let meta = listing_diff(&squash(&a), &squash(&b))?;
        if !meta.is_empty() {
            msg.push_str(&format!(
                "
squashfs listing differences (unsquashfs -lln, {}):\n  ",
                meta.len()
            ));
            msg.push_str(&meta.iter().take(50).cloned().collect::<Vec<_>>().join("\n  "));
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
            x.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        );
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

    #[test]
    fn squashfs_listing_shows_metadata_only_differences() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().expect("tmp");
        let mut images = Vec::new();
        for (name, mode) in [("a", 0o644), ("b", 0o600)] {
            let t = d.path().join(name);
            fs::create_dir_all(&t).expect("mkdir");
            fs::write(t.join("f"), "same").expect("w");
            fs::set_permissions(t.join("f"), fs::Permissions::from_mode(mode)).expect("chmod");
            let img = d.path().join(format!("{name}.sqfs"));
            host::output(Command::new("mksquashfs").arg(&t).arg(&img).args([
                "-noappend",
                "-no-progress",
                "-all-time",
                "1",
            ]))
            .expect("mksquashfs (squashfs-tools)");
            images.push(img);
        }
        assert!(diff_trees(&d.path().join("a"), &d.path().join("b")).expect("diff").is_empty());
        let l = listing_diff(&images[0], &images[1]).expect("listing");
        assert_eq!(l.len(), 2, "{l:?}");
        assert!(l[0].starts_with("a: -rw-r--r--") && l[1].starts_with("b: -rw-------"), "{l:?}");
    }
}
