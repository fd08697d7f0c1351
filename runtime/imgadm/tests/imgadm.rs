//! `imgadm` as server setup runs it (the built binary, `$IMGADM_DIR` in a
//! temporary directory), and the ping check against a local HTTP server.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::thread;

use imgadm::sources::{HttpPing, Ping};

struct Run {
    stdout: String,
    stderr: String,
    code: i32,
}

fn imgadm(dir: &Path, args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_imgadm")).args(args).env("IMGADM_DIR", dir).output().expect("run");
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let r = imgadm(dir, args);
    assert_eq!(r.code, 0, "imgadm {args:?}: {}", r.stderr);
    r.stdout
}

/// Serves `n` requests on 127.0.0.1 with the given status line and body;
/// sends each request's head (request line and headers) back to the test.
fn serve(n: usize, status: &'static str, body: &'static str) -> (String, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for _ in 0..n {
            let Ok((mut s, _)) = l.accept() else { return };
            let mut head = String::new();
            let mut r = BufReader::new(s.try_clone().expect("clone"));
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head);
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, rx)
}

#[test]
fn joysetup_setup_imgadm_sequence() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("imgadm");
    let conf = dir.join("imgadm.conf");
    // `imgadm list -H` on a fresh node: nothing listed, default config written.
    assert_eq!(ok(&dir, &["list", "-H"]), "");
    let text = std::fs::read_to_string(&conf).expect("conf");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    assert_eq!(v["sources"], serde_json::json!([{"url": "https://images.smartos.org", "type": "imgapi"}]));
    assert_eq!(v["upgradedToVer"], "3.0.0");
    // joysetup then sets userAgentExtra with `json -e` (simulated here).
    let mut v2 = v.clone();
    v2["userAgentExtra"] = "server/564dfd57-1dd4-6fc0-d973-4f137ee12afe".into();
    std::fs::write(&conf, serde_json::to_string_pretty(&v2).expect("ser")).expect("w");
    // for srv in $(imgadm sources); do imgadm sources -f -d "$srv"; done
    let listed = ok(&dir, &["sources"]);
    assert_eq!(listed, "https://images.smartos.org\n");
    for srv in listed.split_whitespace() {
        assert_eq!(ok(&dir, &["sources", "-f", "-d", srv]), format!("Deleted \"imgapi\" image source \"{srv}\"\n"));
    }
    assert_eq!(ok(&dir, &["sources"]), "");
    // imgadm sources -f -a "http://${CONFIG_imgapi_domain:?}"
    assert_eq!(
        ok(&dir, &["sources", "-f", "-a", "http://imgapi.us-east-1.example.com"]),
        "Added \"imgapi\" image source \"http://imgapi.us-east-1.example.com\"\n"
    );
    assert_eq!(ok(&dir, &["sources"]), "http://imgapi.us-east-1.example.com\n");
    assert_eq!(
        ok(&dir, &["sources", "-j"]),
        "[\n  {\n    \"url\": \"http://imgapi.us-east-1.example.com\",\n    \"type\": \"imgapi\"\n  }\n]\n"
    );
    // Unknown keys and userAgentExtra survive the edits.
    let v3: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&conf).expect("r")).expect("json");
    assert_eq!(v3["userAgentExtra"], "server/564dfd57-1dd4-6fc0-d973-4f137ee12afe");
    assert_eq!(v3["dockerImportSkipUuids"], true);
    // Running setup again changes nothing.
    assert_eq!(
        ok(&dir, &["sources", "-f", "-a", "http://imgapi.us-east-1.example.com/"]),
        "Already have \"imgapi\" image source \"http://imgapi.us-east-1.example.com\", no change\n"
    );
    assert_eq!(ok(&dir, &["sources", "-d", "http://gone"]), "Do not have image source \"http://gone\", no change\n");
    assert_eq!(ok(&dir, &["list"]), "UUID  NAME  VERSION  OS  TYPE  PUB\n");
    assert_eq!(ok(&dir, &["list", "-j"]), "[]\n");
}

#[test]
fn add_checks_the_source_unless_forced() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    std::fs::write(dir.join("imgadm.conf"), "{\"sources\": [], \"userAgentExtra\": \"server/abc\"}").expect("w");
    let (url, heads) = serve(1, "200 OK", "{\"ping\": \"pong\", \"imgapi\": true}");
    assert_eq!(ok(dir, &["sources", "-a", &url]), format!("Added \"imgapi\" image source \"{url}\"\n"));
    let head = heads.recv().expect("request");
    assert!(head.starts_with("GET /ping HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("user-agent: imgadm/"), "{head}");
    assert!(head.contains(" server/abc\r\n"), "{head}");

    // Something that is not an IMGAPI.
    let (url, _h) = serve(1, "200 OK", "{\"ping\": \"pong\"}");
    let r = imgadm(dir, &["sources", "-a", &url]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("did not answer as an IMGAPI"), "{}", r.stderr);
    assert!(r.stderr.contains("or add it without this check with -f"), "{}", r.stderr);
    // ...is added with -f, without any request.
    assert_eq!(ok(dir, &["sources", "-f", "-a", &url]), format!("Added \"imgapi\" image source \"{url}\"\n"));
    assert_eq!(ok(dir, &["sources"]).lines().count(), 2);

    // Bad input is refused with what to fix.
    let r = imgadm(dir, &["sources", "-f", "-a", "imgapi.example.com"]);
    assert!(r.code == 1 && r.stderr.contains("is not a usable image source URL"), "{}", r.stderr);
    let r = imgadm(dir, &["sources", "-f", "-a", "http://x", "-t", "docker"]);
    assert!(r.code == 1 && r.stderr.contains("source type \"docker\" is not supported"), "{}", r.stderr);
    let r = imgadm(dir, &["sources", "-a", "https://images.example.com"]);
    assert!(r.code == 1 && r.stderr.contains("no TLS support"), "{}", r.stderr);
}

#[test]
fn ping_failures_are_explained() {
    let p = HttpPing::default();
    let (url, _h) = serve(1, "404 Not Found", "{}");
    let e = p.ping(&url, "t").expect_err("404");
    assert!(e.contains("answered HTTP 404"), "{e}");
    let (url, _h) = serve(1, "200 OK", "<html>hi</html>");
    let e = p.ping(&url, "t").expect_err("html");
    assert!(e.contains("not with JSON: <html>hi</html>"), "{e}");
    // Nothing listening.
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let e = p.ping(&format!("http://127.0.0.1:{port}"), "t").expect_err("refused");
    assert!(e.starts_with(&format!("GET http://127.0.0.1:{port}/ping:")), "{e}");
    let (url, _h) = serve(1, "200 OK", "{\"imgapi\": true}");
    assert_eq!(p.ping(&format!("{url}/"), "t"), Ok(()));
}

#[test]
fn broken_config_says_what_to_do() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::write(tmp.path().join("imgadm.conf"), "{oops").expect("w");
    let r = imgadm(tmp.path(), &["sources"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("is not valid") && r.stderr.contains("remove it"), "{}", r.stderr);
    // The file is left alone.
    assert_eq!(std::fs::read_to_string(tmp.path().join("imgadm.conf")).expect("r"), "{oops");
}
