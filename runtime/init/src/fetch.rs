//! Fetches the root image over HTTP or TFTP with retries, timeouts and
//! progress on the console, hashing it while it streams to disk.
//!
//! Both protocols write through one [`Sink`] (file + sha256 + progress) and
//! share the retry loop in [`with_retries`]; only the transfer differs.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use boot_params::{FetchSource, TftpUrl};
use sha2::{Digest, Sha256};

use crate::hashes::Sha256Hex;
use crate::tftp;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("GET {url}: {message} (after {attempts} attempts)")]
    Http { url: String, message: String, attempts: u32 },
    #[error("TFTP {url}: {message} (after {attempts} attempts)")]
    Tftp { url: String, message: String, attempts: u32 },
    #[error(
        "TFTP {url}: {message}; check that this platform is installed on the boot server \
         (sdcadm platform install) and that booter's TFTP root serves it"
    )]
    TftpRefused { url: String, message: String },
    #[error("writing {path}: {source} (is the node short of RAM for the root image?)")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("GET {url}: got {got} bytes, server announced {expected}")]
    Short { url: String, got: u64, expected: u64 },
}

/// Retry and timeout policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub attempts: u32,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub first_backoff: Duration,
    /// Block size, per-packet timeout and retransmissions for TFTP.
    pub tftp: tftp::Options,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            attempts: 6,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            first_backoff: Duration::from_secs(1),
            tftp: tftp::Options::default(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Fetched {
    pub bytes: u64,
    pub sha256: Sha256Hex,
    pub attempts: u32,
    pub elapsed: Duration,
    /// `"http"` or `"tftp"`.
    pub proto: &'static str,
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

/// Downloads `source` to `dest`, retrying on any transient failure with doubling backoff.
pub fn fetch(
    source: &FetchSource,
    dest: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(&str),
) -> Result<Fetched, FetchError> {
    match source {
        FetchSource::Http(url) => fetch_http(url, dest, policy, progress),
        FetchSource::Tftp(url) => fetch_tftp(url, dest, policy, progress),
    }
}

/// Downloads an `http://` URL to `dest`.
pub fn fetch_http(
    url: &str,
    dest: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(&str),
) -> Result<Fetched, FetchError> {
    let agent =
        ureq::AgentBuilder::new().timeout_connect(policy.connect_timeout).timeout_read(policy.read_timeout).build();
    let failed = |message, attempts| FetchError::Http { url: url.to_string(), message, attempts };
    with_retries("http", policy, progress, failed, |progress| http_once(&agent, url, dest, progress))
}

/// Downloads a `tftp://` URL to `dest`.
pub fn fetch_tftp(
    url: &TftpUrl,
    dest: &Path,
    policy: &Policy,
    progress: &mut dyn FnMut(&str),
) -> Result<Fetched, FetchError> {
    let failed = |message, attempts| FetchError::Tftp { url: url.url.clone(), message, attempts };
    with_retries("tftp", policy, progress, failed, |progress| {
        let mut sink = Sink::create(dest, None, progress).map_err(Attempt::Fatal)?;
        match tftp::read(url, &policy.tftp, &mut sink) {
            Ok(_) => sink.finish().map_err(Attempt::Fatal),
            Err(tftp::TftpError::Sink(e)) => Err(Attempt::Fatal(sink.write_error(e))),
            Err(e) if e.is_permanent() => {
                Err(Attempt::Fatal(FetchError::TftpRefused { url: url.url.clone(), message: e.to_string() }))
            }
            Err(e) => Err(Attempt::Retry(e.to_string())),
        }
    })
}

/// The shared retry loop: runs `once` up to `policy.attempts` times.
fn with_retries(
    proto: &'static str,
    policy: &Policy,
    progress: &mut dyn FnMut(&str),
    failed: impl Fn(String, u32) -> FetchError,
    mut once: impl FnMut(&mut dyn FnMut(&str)) -> Result<(u64, Sha256Hex), Attempt>,
) -> Result<Fetched, FetchError> {
    let start = Instant::now();
    let mut backoff = policy.first_backoff;
    let mut last = String::new();
    let attempts = policy.attempts.max(1);
    for attempt in 1..=attempts {
        match once(&mut *progress) {
            Ok((bytes, sha256)) => {
                return Ok(Fetched { bytes, sha256, attempts: attempt, elapsed: start.elapsed(), proto })
            }
            Err(Attempt::Fatal(e)) => return Err(e),
            Err(Attempt::Retry(m)) => {
                progress(&format!("fetch: attempt {attempt}/{attempts} failed: {m}"));
                last = m;
            }
        }
        if attempt < attempts {
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(16));
        }
    }
    Err(failed(last, attempts))
}

enum Attempt {
    Retry(String),
    Fatal(FetchError),
}

/// Where every transfer writes: the image file, the running sha256 and the
/// progress lines (every 3 s, and once at the end).
pub struct Sink<'p> {
    out: File,
    path: PathBuf,
    hasher: Sha256,
    done: u64,
    total: Option<u64>,
    start: Instant,
    last_report: Instant,
    progress: &'p mut dyn FnMut(&str),
}

impl<'p> Sink<'p> {
    /// Creates (truncates) `dest`.
    pub fn create(dest: &Path, total: Option<u64>, progress: &'p mut dyn FnMut(&str)) -> Result<Sink<'p>, FetchError> {
        let out = File::create(dest).map_err(|source| FetchError::Write { path: dest.to_path_buf(), source })?;
        let now = Instant::now();
        Ok(Sink {
            out,
            path: dest.to_path_buf(),
            hasher: Sha256::new(),
            done: 0,
            total,
            start: now,
            last_report: now,
            progress,
        })
    }

    pub fn set_total(&mut self, total: Option<u64>) {
        self.total = total;
    }

    pub fn total(&self) -> Option<u64> {
        self.total
    }

    pub fn written(&self) -> u64 {
        self.done
    }

    fn write_error(&self, source: std::io::Error) -> FetchError {
        FetchError::Write { path: self.path.clone(), source }
    }

    fn write_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.out.write_all(data)?;
        self.hasher.update(data);
        self.done += data.len() as u64;
        if self.last_report.elapsed() >= Duration::from_secs(3) {
            (self.progress)(&progress_line(self.done, self.total, self.start.elapsed().as_secs_f64()));
            self.last_report = Instant::now();
        }
        Ok(())
    }

    /// Appends `data` to the file and the hash.
    pub fn write(&mut self, data: &[u8]) -> Result<(), FetchError> {
        self.write_raw(data).map_err(|e| self.write_error(e))
    }

    /// Syncs the file, prints the final progress line, returns size and hash.
    pub fn finish(self) -> Result<(u64, Sha256Hex), FetchError> {
        self.out.sync_all().map_err(|e| self.write_error(e))?;
        (self.progress)(&progress_line(self.done, self.total, self.start.elapsed().as_secs_f64()));
        Ok((self.done, Sha256Hex::from_digest(&self.hasher.finalize())))
    }
}

impl tftp::Sink for Sink<'_> {
    fn size_known(&mut self, bytes: u64) {
        self.set_total(Some(bytes));
    }

    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.write_raw(data)
    }
}

fn http_once(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<(u64, Sha256Hex), Attempt> {
    let resp = agent.get(url).call().map_err(|e| match e {
        // The server answered that it does not have the file (or will not
        // give it): asking again will not change that. Timeouts and rate
        // limits are retried like network errors and 5xx.
        ureq::Error::Status(code, _) if (400..500).contains(&code) && code != 408 && code != 429 => {
            Attempt::Fatal(FetchError::Http {
                url: url.to_string(),
                message: format!(
                    "{e}; the boot server does not serve this file: check that the platform is installed on the \
                     headnode (sdcadm platform list) and assigned to this CN"
                ),
                attempts: 1,
            })
        }
        e => Attempt::Retry(e.to_string()),
    })?;
    let total: Option<u64> = resp.header("Content-Length").and_then(|v| v.parse().ok());
    let mut sink = Sink::create(dest, total, progress).map_err(Attempt::Fatal)?;
    let mut body = resp.into_reader();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = body.read(&mut buf).map_err(|e| Attempt::Retry(format!("reading body: {e}")))?;
        if n == 0 {
            break;
        }
        sink.write(&buf[..n]).map_err(Attempt::Fatal)?;
    }
    if let Some(t) = total {
        if t != sink.written() {
            let short = FetchError::Short { url: url.to_string(), got: sink.written(), expected: t };
            return Err(Attempt::Retry(short.to_string()));
        }
    }
    sink.finish().map_err(Attempt::Fatal)
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
        let f = fetch_http(&url, &dest, &quick(), &mut |l| lines.push(l.to_string())).expect("fetch");
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
        let e = fetch_http(&url, &d.path().join("f"), &quick(), &mut |_| {}).expect_err("fails");
        let m = e.to_string();
        assert!(m.contains(&url) && m.contains("3 attempts"), "{m}");
    }

    #[test]
    fn progress_format() {
        assert_eq!(progress_line(1048576, Some(4194304), 1.0), "fetch: 1.0/4.0 MiB (25%) 1.0 MiB/s");
        assert_eq!(progress_line(0, None, 0.0), "fetch: 0.0 MiB 0.0 MiB/s");
    }
}
