//! A full disk comes back: on a small tmpfs the test mounts, the broker is filled until
//! publishing answers 507; deleting the queue is still recorded (it may use the space kept
//! back), reclaiming then runs on its own (it has to: nothing else can be written), and
//! publishing works again. Needs to mount a tmpfs (root, as in CI here); says so and does
//! nothing where that is not allowed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs mounted on a temporary directory, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs { dir })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn request(url: &str, head: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(url.strip_prefix("http://").unwrap()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!(
            "{head}\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn deleting_a_queue_on_a_full_disk_frees_it() {
    let Some(fs) = Tmpfs::mount(4 * 1024 * 1024) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let config = fs.dir.path().join("syncbrok.yml");
    std::fs::write(
        &config,
        "storage:\n  segment_bytes: 262144\n  reclaim_interval: 100ms\n",
    )
    .unwrap();
    let b = common::spawn(
        &fs.dir.path().join("data"),
        &["--config".as_ref(), config.as_os_str()],
        Stdio::null(),
    );
    assert_eq!(request(&b.url, "PUT /v1/queues/a HTTP/1.1", b""), 201);
    // A subscriber that is down: every message stays owed, and on disk.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let sub = format!(r#"{{"endpoint": "http://{down}/"}}"#);
    assert_eq!(
        request(
            &b.url,
            "POST /v1/queues/a/subscribers HTTP/1.1",
            sub.as_bytes()
        ),
        201
    );
    let body = vec![b'x'; 32 * 1024];
    let mut accepted = 0;
    loop {
        match request(&b.url, "POST /v1/queues/a/messages HTTP/1.1", &body) {
            201 => accepted += 1,
            507 => break,
            other => panic!("publish answered {other}"),
        }
        assert!(accepted < 1000, "the 4 MiB disk never filled");
    }
    assert!(accepted > 10, "{accepted}");
    // To the brim: smaller and smaller bodies, until even a tiny one does not fit.
    for size in [4096, 512, 64, 1] {
        let small = vec![b'y'; size];
        for _ in 0..10_000 {
            match request(&b.url, "POST /v1/queues/a/messages HTTP/1.1", &small) {
                201 => {}
                507 => break,
                other => panic!("publish answered {other}"),
            }
        }
    }
    assert_eq!(request(&b.url, "PUT /v1/queues/other HTTP/1.1", b""), 507);
    // Full: the deletion still goes in, and then the disk comes back.
    assert_eq!(request(&b.url, "DELETE /v1/queues/a HTTP/1.1", b""), 204);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut created = false;
    loop {
        if !created {
            created = request(&b.url, "PUT /v1/queues/b HTTP/1.1", b"") == 201;
        }
        if created && request(&b.url, "POST /v1/queues/b/messages HTTP/1.1", &body) == 201 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the disk stayed full after the deletion"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // And stays usable: as much goes in again as before.
    for _ in 0..accepted / 2 {
        assert_eq!(
            request(&b.url, "POST /v1/queues/b/messages HTTP/1.1", &body),
            201
        );
    }
    assert!(b.terminate().success());
}
