//! What the binary's black-box tests share: the real `syncbrok serve`, started on port 0.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

pub struct Broker {
    pub child: Child,
    pub url: String,
}

/// Starts `syncbrok serve` on a free port with `data` and the extra arguments, and waits for
/// it to listen. Its stderr goes where `stderr` says.
pub fn spawn(data: &std::path::Path, extra: &[&std::ffi::OsStr], stderr: Stdio) -> Broker {
    let mut child = Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(data)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("syncbrok listening on ")
        .unwrap_or_else(|| panic!("the broker did not start: {line:?}"))
        .to_owned();
    Broker { child, url }
}

impl Broker {
    pub fn terminate(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }

    /// SIGKILL, and what the broker wrote on stderr if it was piped.
    pub fn kill9(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = self.child.stderr.take() {
            let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
        }
        stderr
    }
}
