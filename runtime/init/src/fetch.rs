//! Fetches the root image over HTTP with retries, timeouts and progress on the
//! console, hashing it while it streams to disk.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::hashes::Sha256Hex;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {message} (after {attempts} attempts)")]
    Http { url: String, message: String, attempts: u32 },
    #[error("writing {path}: {source} (is the node short of RAM for the root image?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url}: got {got} bytes, server announced {expected}")]
    Short { url: String, got: u64, expected: u64 },
    #[error("tftp:// root images are not supported yet: {0} (enable booter's http_pxe_boot)")]
    TftpUnsupported(String),
}

/// Retry and timeout policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub attempts: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub first_backoff: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: 6,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            first_backoff: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: Sha256Hex,
    pub attempts: u32,
    pub elapsed: Duration,
}

/// Formats a progress line, e.g. `fetch: 45.0/150.0 MiB (30%) 12.3 MiB/s`.
pub fn progress_line(done: u64, total: Option<u64>, secs: f64) -> String {
    let mib = |b: u64| b as f64 / 1048576.0;
    let rate = if secs > 0.0 { mib(done) / secs } else { 0.0 };
    match total {
        Some(t) if t > 0 => {
            format!("fetch: {:.1}/{:.1} MiB ({}%) {:.1} MiB/s", mib(done), mib(t), done * 100 / t, rate)
        }
        _ => format!("fetch: {:.1} MiB {:.1} MiB/s", mib(done), rate),
    }
}

/// Downloads `url` to `dest`, retrying on any failure with doubling backoff.
pub fn fetch(url: &str, dest: &Path, policy: &Policy, progress: &mut dyn FnMut(&str)) -> Result<Fetched, FetchError> {
    let agent =
        ureq::AgentBuilder::new().timeout_connect(policy.connect_timeout).timeout_read(policy.read_timeout).build();
    let start = Instant::now();
    let mut backoff = policy.first_backoff;
    let mut last = String::new();
    for attempt in 1..=policy.attempts.max(1) {
        match fetch_once(&agent, url, dest, progress) {
            Ok((bytes, sha256)) => return Ok(Fetched { bytes, sha256, attempts: attempt, elapsed: start.elapsed() }),
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(m)) => {
                progress(&format!("fetch: attempt {attempt}/{} failed: {m}", policy.attempts));
                last = m;
            }
        }
        if attempt < policy.attempts {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(16));
        }
    }
    Err(FetchError::Http { url: url.to_string(), message: last, attempts: policy.attempts })
}

enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

fn fetch_once(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(u64, Sha256Hex), Attempt> {
    let resp = agent.get(url).call().map_err(|e| Attempt::Retry(e.to_string()))?;
    let total: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let wr = |source| Attempt::Fatal(FetchError::Write { path: dest.to_path_buf(), source });
    let mut out = File::create(dest).map_err(wr)?;
    let mut body = resp.into_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let n = body.read(&mut buf).map_err(|e| Attempt::Retry(format!("reading body: {e}")))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n]).map_err(wr)?;
        hasher.update(&buf[..n]);
        done += n as u64;
        if last_report.elapsed() >= Duration::from_secs(3) {
            progress(&progress_line(done, total, start.elapsed().as_secs_f64()));
            last_report = Instant::now();
        }
    }
    out.sync_all().map_err(wr)?;
    if let Some(t) = total {
        if t != done {
            return Err(Attempt::Retry(FetchError::Short { url: url.to_string(), got: done, expected: t }.to_string()));
        }
    }
    progress(&progress_line(done, total, start.elapsed().as_secs_f64()));
    Ok((done, Sha256Hex::from_digest(&hasher.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::net::TcpListener;

    /// A one-file HTTP/1.0 server on loopback serving `body`, failing the
    /// first `fail_first` requests with 503.
    fn serve(body: Vec<u8>, fail_first: usize) -> String {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        std::thread::spawn(move || {
            for (i, s) in l.incoming().enumerate() {
                let Ok(mut s) = s else { continue };
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                while r.read_line(&mut line).map(|n| n > 2).unwrap_or(false) {
                    line.clear();
                }
                if i < fail_first {
                    let _ = s.write_all(b"HTTP/1.0 503 Busy\r\nContent-Length: 0\r\n\r\n");
                } else {
                    let _ = write!(s, "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
                    let _ = s.write_all(&body);
                }
            }
        });
        format!("http://{addr}/filesystem.squashfs")
    }

    fn quick() -> Policy {
        Policy { attempts: 3, first_backoff: Duration::from_millis(10), ..Policy::default() }
    }

    #[test]
    fn fetch_hashes_and_retries() {
        let url = serve(b"hello world".to_vec(), 1);
        let d = tempfile::tempdir().expect("tmp");
        let dest = d.path().join("f");
        let mut lines = Vec::new();
        let f = fetch(&url, &dest, &quick(), &mut |l| lines.push(l.to_string())).expect("fetch");
        assert_eq!(f.attempts, 2);
        assert_eq!(f.bytes, 11);
        assert_eq!(f.sha256.as_str(), "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9");
        assert_eq!(std::fs::read(&dest).expect("read"), b"hello world");
        assert!(lines.iter().any(|l| l.contains("503")), "{lines:?}");
    }

    #[test]
    fn fetch_gives_up_with_the_url() {
        let url = serve(Vec::new(), 100);
        let d = tempfile::tempdir().expect("tmp");
        let e = fetch(&url, &d.path().join("f"), &quick(), &mut |_| {}).expect_err("fails");
        let m = e.to_string();
        assert!(m.contains(&url) && m.contains("3 attempts"), "{m}");
    }

    #[test]
    fn progress_format() {
        assert_eq!(progress_line(1048576, Some(4194304), 1.0), "fetch: 1.0/4.0 MiB (25%) 1.0 MiB/s");
        assert_eq!(progress_line(0, None, 0.0), "fetch: 0.0 MiB 0.0 MiB/s");
    }
}
