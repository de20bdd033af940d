//! The command line against the real binary: every command over HTTP and HTTPS, paging,
//! exit statuses per kind of failure, and the timeout.

mod common;

use std::time::{Duration, Instant};

use common::{call, cli, cli_code, closed_port, eventually, serving, sink};
use http::Method;
use serde_json::{Value, json};

/// Pages of dead letters, one message's commands, subscribers listed and removed, and an exit
/// status per kind of failure, against the real binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_pages_shows_messages_and_exits_by_kind_of_failure() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let url = b.url.clone();
    let run = move |args: Vec<String>, stdin: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_code(&url, &args, stdin)
        })
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let u = |path: &str| format!("{}{path}", b.url);
    let settings = r#"{"retry": {"max_attempts": 1}, "retention": {"dead": "1h"}}"#;
    call(Method::PUT, &u("/v1/queues/pages"), &[], settings).await;
    let sub = json!({"endpoint": closed_port()}).to_string();
    let added = call(Method::POST, &u("/v1/queues/pages/subscribers"), &[], sub).await;
    let sub_id = added.json()["id"].to_string();
    let entries: Vec<Value> = (0..130).map(|n| json!({"body": format!("m{n}")})).collect();
    let batch = json!({"messages": entries}).to_string();
    let ids = call(
        Method::POST,
        &u("/v1/queues/pages/messages/batch"),
        &[],
        batch,
    )
    .await
    .json()["ids"]
        .clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let page = call(
            Method::GET,
            &u("/v1/queues/pages/dead-letters?limit=1000"),
            &[],
            "",
        )
        .await;
        if page.json()["dead_letters"].as_array().unwrap().len() == 130 {
            break;
        }
        assert!(Instant::now() < deadline, "not all dead");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list = |extra: &[&str]| {
        let mut args = a(&["dead-letters", "list", "pages"]);
        args.extend(extra.iter().map(|s| s.to_string()));
        run(args, "")
    };
    let (code, out, _) = list(&[]).await.unwrap();
    let page: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, page["dead_letters"].as_array().unwrap().len()),
        (0, 100)
    );
    let next = page["next"].as_str().unwrap().to_owned();
    let (_, out, _) = list(&["--after", &next]).await.unwrap();
    let rest: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rest["dead_letters"].as_array().unwrap().len(), 30);
    let (_, out, _) = list(&["--limit", "7"]).await.unwrap();
    let small: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(small["dead_letters"].as_array().unwrap().len(), 7);
    let (code, out, _) = list(&["--all", "--limit", "50"]).await.unwrap();
    let all: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, all["dead_letters"].as_array().unwrap().len()),
        (0, 130)
    );
    assert!(all["next"].is_null());

    let first = ids[0].as_str().unwrap().to_owned();
    let (code, out, _) = run(a(&["message", "show", "pages", &first]), "")
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["state"],
        "dead"
    );
    let (code, out, _) = run(a(&["message", "body", "pages", &first]), "")
        .await
        .unwrap();
    assert_eq!((code, out.as_str()), (0, "m0"));
    let (code, _, _) = run(a(&["message", "discard", "pages", &first]), "")
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(a(&["message", "show", "pages", &first]), "")
        .await
        .unwrap();
    assert_eq!(code, 3, "not found: {err}");

    let (code, out, _) = run(a(&["subscribers", "list", "pages"]), "").await.unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["subscribers"][0]["id"].to_string(),
        sub_id
    );
    let (code, _, _) = run(a(&["subscribers", "remove", "pages", &sub_id]), "")
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (code, _, _) = run(a(&["subscribers", "remove", "pages", &sub_id]), "")
        .await
        .unwrap();
    assert_eq!(code, 3, "removed already");

    // Exit statuses by kind: refused (4), not found (3), a local mistake (1), usage (2),
    // unreachable (6).
    let (code, _, err) = run(a(&["subscribe", "pages", "ftp://nowhere"]), "")
        .await
        .unwrap();
    assert_eq!(code, 4, "{err}");
    let (code, _, _) = run(a(&["publish", "nope"]), "x").await.unwrap();
    assert_eq!(code, 3);
    let (code, _, err) = run(a(&["publish", "pages"]), "").await.unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("--allow-empty"), "{err}");
    let (code, out, _) = run(a(&["publish", "pages", "--allow-empty"]), "")
        .await
        .unwrap();
    assert_eq!(code, 0, "{out}");
    let (code, _, _) = run(a(&["message", "show", "pages"]), "").await.unwrap();
    assert_eq!(code, 2);
    let down = closed_port();
    let (code, _, err) = tokio::task::spawn_blocking(move || {
        cli_code(down.trim_end_matches("/hook"), &["queue", "list"], "")
    })
    .await
    .unwrap();
    assert_eq!(code, 5, "unreachable: {err}");
    assert!(err.contains("is the broker running"), "{err}");
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let (sink_url, got) = sink().await;
    let url = b.url.clone();
    let run = move |args: Vec<String>, stdin: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&url, &args, stdin)
        })
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    let (ok, out, _) = run(
        a(&[
            "queue",
            "create",
            "cli",
            "--settings",
            r#"{"retry": {"max_attempts": 2}}"#,
        ]),
        "",
    )
    .await
    .unwrap();
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["settings"]["retry"]["max_attempts"],
        2
    );
    let (ok, _, _) = run(a(&["subscribe", "cli", &sink_url]), "").await.unwrap();
    assert!(ok);
    let (ok, out, _) = run(
        a(&["publish", "cli", "--content-type", "text/plain"]),
        "from stdin",
    )
    .await
    .unwrap();
    assert!(ok);
    let parent = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body_file = dir.path().join("body.txt");
    std::fs::write(&body_file, "from a file").unwrap();
    let (ok, out, _) = run(
        a(&[
            "publish",
            "cli",
            "--parent",
            &parent,
            body_file.to_str().unwrap(),
        ]),
        "",
    )
    .await
    .unwrap();
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["parent"],
        parent.as_str()
    );
    eventually("both delivered", || got.lock().unwrap().len() == 2).await;
    assert_eq!(got.lock().unwrap()[1].1, "from a file");
    let (ok, out, _) = run(a(&["queue", "list"]), "").await.unwrap();
    assert!(ok && out.contains("\"cli\""));
    let (ok, out, _) = run(a(&["dead-letters", "list", "cli"]), "").await.unwrap();
    assert!(ok && out.contains("\"dead_letters\""));
    let (ok, out, _) = run(a(&["dead-letters", "redrive", "cli"]), "")
        .await
        .unwrap();
    assert!(ok && out.contains("\"redriven\": 0"), "{out}");
    let (ok, _, err) = run(a(&["queue", "show", "nope"]), "").await.unwrap();
    assert!(!ok);
    assert!(
        err.contains("404") && err.contains("does not exist"),
        "{err}"
    );
    let (ok, _, _) = run(a(&["queue", "delete", "cli"]), "").await.unwrap();
    assert!(ok);

    // Why a child waits: its parent's subscriber is down.
    let settings = r#"{"retry": {"initial_backoff": "1h", "max_backoff": "1h"}}"#;
    let (ok, _, _) = run(a(&["queue", "create", "why", "--settings", settings]), "")
        .await
        .unwrap();
    assert!(ok);
    let down = closed_port();
    let (ok, out, _) = run(
        a(&["subscribe", "why", &down, "--batch-max-messages", "10"]),
        "",
    )
    .await
    .unwrap();
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["batch"]["max_messages"],
        10
    );
    let id = |out: &str| {
        serde_json::from_str::<Value>(out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (_, out, _) = run(a(&["publish", "why"]), "order").await.unwrap();
    let order = id(&out);
    let (_, out, _) = run(a(&["publish", "why", "--parent", &order]), "payment")
        .await
        .unwrap();
    let payment = id(&out);
    let deadline = Instant::now() + Duration::from_secs(20);
    let why = loop {
        let (ok, out, err) = run(a(&["explain", "why", &payment]), "").await.unwrap();
        assert!(ok, "{err}");
        let why: Value = serde_json::from_str(&out).unwrap();
        if why["blockers"][0]["reason"] == "retry_scheduled" {
            break why;
        }
        assert!(Instant::now() < deadline, "never explained: {why}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(why["verdict"], "waiting_for_parent");
    assert_eq!(why["root_blocker"], order.as_str());
    let pending = &why["blockers"][0]["pending"][0];
    assert_eq!(pending["endpoint"], down.as_str());
    assert_eq!(pending["attempts"], 1);
    assert!(!pending["last_error"].as_str().unwrap().is_empty());
    assert!(pending["next_attempt_at"].is_string());
    assert_eq!(why["next_change_at"], pending["next_attempt_at"]);
    let (ok, out, _) = run(a(&["lineage", "why", &order, "--down", "1"]), "")
        .await
        .unwrap();
    assert!(ok);
    let g: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(g["nodes"].as_array().unwrap().len(), 2);
    assert_eq!(g["edges"][0]["from"], order.as_str());
    assert_eq!(g["edges"][0]["to"], payment.as_str());
    assert_eq!(g["truncated"], false);
    let (ok, _, err) = run(a(&["lineage", "why", &order, "--limit", "0"]), "")
        .await
        .unwrap();
    assert!(!ok && err.contains("400") && err.contains("limit"), "{err}");
    // Nothing in the order's subtree is dead yet: a subtree redrive, even a dry run, says so.
    let (ok, _, err) = run(
        a(&[
            "dead-letters",
            "redrive",
            "why",
            "--message",
            &order,
            "--subtree",
            "--dry-run",
        ]),
        "",
    )
    .await
    .unwrap();
    assert!(!ok && err.contains("409"), "{err}");
    assert!(b.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_gives_up_at_its_timeout() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let (ok, _, err) =
        tokio::task::spawn_blocking(move || cli(&url, &["--timeout", "1", "queue", "list"], ""))
            .await
            .unwrap();
    assert!(!ok);
    assert!(
        err.contains("no answer") && err.contains("--timeout"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    drop(silent);
}

/// Tables for people, `-q` for scripts, a deletion that asks, completion scripts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_ids_safe_deletes_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let url = b.url.clone();
    let run = move |args: Vec<String>, stdin: &'static str| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_code(&url, &args, stdin)
        })
    };
    let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let down = closed_port();
    let (code, _, _) = run(a(&["queue", "create", "t"]), "").await.unwrap();
    assert_eq!(code, 0);
    let (code, out, _) = run(
        a(&["-o", "table", "subscribe", "t", &down, "--rate-limit", "5"]),
        "",
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("rate_limit.per_second: 5"), "{out}");
    // -q: the id alone, to capture; the table: the id alone too.
    let (code, id, _) = run(a(&["publish", "t", "-q"]), "one").await.unwrap();
    assert_eq!(code, 0);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 36, "{id:?}");
    let (_, plain, _) = run(a(&["-o", "table", "publish", "t"]), "two")
        .await
        .unwrap();
    assert_eq!(plain.trim().len(), 36, "{plain:?}");
    let (_, table, _) = run(a(&["-o", "table", "queue", "list"]), "").await.unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("DELIVERING"),
        "{table}"
    );
    assert!(lines[1].starts_with("t "), "{table}");
    let (_, names, _) = run(a(&["queue", "list", "-q"]), "").await.unwrap();
    assert_eq!(names.trim(), "t");
    let (_, subs, _) = run(a(&["-o", "table", "subscribers", "list", "t"]), "")
        .await
        .unwrap();
    assert!(
        subs.lines().next().unwrap().starts_with("ID") && subs.contains(&down),
        "{subs}"
    );
    // Messages listed a page at a time, or all; by state.
    for body in ["a", "b", "c"] {
        run(a(&["publish", "t", "--delay", "1h"]), body)
            .await
            .unwrap();
    }
    let (code, page, err) = run(a(&["message", "list", "t", "--limit", "2", "-q"]), "")
        .await
        .unwrap();
    assert_eq!((code, page.lines().count()), (0, 2), "{page}");
    assert!(err.contains("--after"), "says more follow: {err}");
    let (_, all, _) = run(
        a(&["message", "list", "t", "--limit", "2", "--all", "-q"]),
        "",
    )
    .await
    .unwrap();
    assert_eq!(all.lines().count(), 5, "{all}");
    let scheduled = a(&[
        "-o",
        "table",
        "message",
        "list",
        "t",
        "--state",
        "scheduled",
    ]);
    let (_, scheduled, _) = run(scheduled, "").await.unwrap();
    let lines: Vec<&str> = scheduled.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{scheduled}"
    );
    assert_eq!(lines.len(), 4, "a header and the 3 scheduled: {scheduled}");
    let (_, shown, _) = run(a(&["-o", "table", "message", "show", "t", &id]), "")
        .await
        .unwrap();
    assert!(
        shown.contains(&format!("id: {id}")) && shown.contains("deliveries:"),
        "{shown}"
    );
    // The queue holds two undelivered messages: not deleted without --yes (no terminal here).
    let (code, _, err) = run(a(&["queue", "delete", "t"]), "").await.unwrap();
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("5 messages") && err.contains("--yes"), "{err}");
    let (code, _, _) = run(a(&["queue", "show", "t"]), "").await.unwrap();
    assert_eq!(code, 0, "still there");
    let (code, _, _) = run(a(&["queue", "delete", "t", "--yes"]), "")
        .await
        .unwrap();
    assert_eq!(code, 0);
    let (code, _, _) = run(a(&["queue", "show", "t"]), "").await.unwrap();
    assert_eq!(code, 3);
    // An empty queue goes without asking.
    run(a(&["queue", "create", "empty"]), "").await.unwrap();
    let (code, _, _) = run(a(&["queue", "delete", "empty"]), "").await.unwrap();
    assert_eq!(code, 0);
    // Completion scripts name the commands.
    let (code, script, _) = run(a(&["completion", "bash"]), "").await.unwrap();
    assert_eq!(code, 0);
    assert!(script.contains("rotate-secret") && script.contains("dead-letters"));
    let (code, _, _) = run(a(&["completion", "tcsh"]), "").await.unwrap();
    assert_eq!(code, 2, "not a shell it knows");
    assert!(b.terminate().success());
}

/// The README's walk through the command line, command by command, against a real broker and
/// a real subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_walkthrough_runs() {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("<!-- cli-walkthrough -->\n```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the README has the walk-through");
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let (sink_url, got) = sink().await;
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_syncbrok"))
        .parent()
        .unwrap()
        .to_owned();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut script = String::from("set -euo pipefail\n");
    for line in block.lines() {
        // Each command echoed first, so that a failure names it.
        script.push_str(&format!(
            "echo \"+ {}\" >&2\n{line}\n",
            line.replace('"', "\\\"").replace('$', "\\$")
        ));
    }
    let url = b.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("bash")
            .arg("-c")
            .arg(script)
            .env("PATH", path)
            .env("SYNCBROK_URL", url)
            .env("SINK", sink_url)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("scheduled"), "{stdout}");
    assert!(stdout.contains("\"name\": \"orders\""), "-o json: {stdout}");
    eventually("parent and child delivered", || {
        got.lock().unwrap().len() >= 2
    })
    .await;
    assert!(b.terminate().success());
}

/// `syncbrok tail` sees a delivery and a dead letter as they happen, each a JSON line with
/// `-o json`; a queue that does not exist is exit code 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_shows_deliveries_and_dead_letters_as_they_happen() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let hook = common::hook_server(|req: hyper::Request<hyper::body::Incoming>| async move {
        use http_body_util::BodyExt;
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut answer = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
        if &body[..] == b"bad" {
            *answer.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
        }
        answer
    })
    .await;
    let u = |p: &str| format!("{}{p}", b.url);
    common::queue_with(&b.url, "q", r#"{"retry": {"max_attempts": 1}}"#, &[&hook]).await;

    let mut tail = std::process::Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["--url", &b.url, "-o", "json", "tail", "q", "--count", "4"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut watching = String::new();
    BufReader::new(tail.stderr.take().unwrap())
        .read_line(&mut watching)
        .unwrap();
    assert!(watching.starts_with("watching queue q"), "{watching:?}");
    let ok = call(Method::POST, &u("/v1/queues/q/messages"), &[], "ok")
        .await
        .json();
    let bad = call(Method::POST, &u("/v1/queues/q/messages"), &[], "bad")
        .await
        .json();
    let out = tail.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut seen: Vec<(String, String)> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            (
                v["event"].as_str().unwrap().to_owned(),
                v["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let (ok, bad) = (ok["id"].as_str().unwrap(), bad["id"].as_str().unwrap());
    let mut want: Vec<(String, String)> = [
        ("dead_lettered", bad),
        ("delivered", ok),
        ("published", ok),
        ("published", bad),
    ]
    .iter()
    .map(|(e, id)| (e.to_string(), id.to_string()))
    .collect();
    want.sort();
    assert_eq!(seen, want);

    let (code, _, err) = cli_code(&b.url, &["tail", "nope", "--count", "1"], "");
    assert_eq!(code, 3, "{err}");

    // A watcher does not hold the shutdown up: its stream ends when the broker stops.
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_syncbrok"))
        .args(["--url", &b.url, "tail", "q"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut watching = String::new();
    BufReader::new(watcher.stderr.take().unwrap())
        .read_line(&mut watching)
        .unwrap();
    let stopping = Instant::now();
    assert!(b.terminate().success());
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "the broker waited for its watcher"
    );
    watcher.wait().unwrap();
}

/// `publish --ndjson` publishes a batch with parents by line; queue names and message ids are
/// checked as the command line is read (exit 2, in the CLI's words); `message explain` is
/// `explain`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_batches_and_arguments_checked_in_the_clis_words() {
    let dir = tempfile::tempdir().unwrap();
    let b = serving(dir.path(), &[]);
    let down = closed_port();
    assert!(cli(&b.url, &["queue", "create", "q"], "").0);
    assert!(cli(&b.url, &["subscribe", "q", &down], "").0);
    let lines = "{\"body\": \"order\"}\n\n{\"body\": \"check\"}\n{\"body\": \"pay\", \"parent_indexes\": [0, 1], \"type\": \"payment\"}\n";
    let (code, out, err) = cli_code(&b.url, &["publish", "q", "--ndjson", "-"], lines);
    assert_eq!(code, 0, "{err}");
    let ids: Vec<String> = serde_json::from_str::<Value>(&out).unwrap()["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);
    let (_, out, _) = cli_code(&b.url, &["message", "show", "q", &ids[2]], "");
    let m: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(m["parents"], json!([ids[0], ids[1]]));
    assert_eq!(m["type"], "payment");
    let (code, out, err) = cli_code(&b.url, &["message", "explain", "q", &ids[2]], "");
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["verdict"],
        "waiting_for_parent"
    );

    let (code, _, err) = cli_code(&b.url, &["publish", "q", "--ndjson", "-"], "{}\n[]\n");
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("line 2"), "{err}");
    let (code, _, err) = cli_code(&b.url, &["publish", "bad name", "-"], "x");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a queue name is 1 to 128"), "{err}");
    let (code, _, err) = cli_code(&b.url, &["message", "show", "q", "nope"], "");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("a message id is the UUID"), "{err}");
    let (code, _, err) = cli_code(&b.url, &["publish", "q", "--parent", "x", "-"], "body");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--parent"), "{err}");
    assert!(b.terminate().success());
}

/// `serve` and `sink` are no clients: their help shows none of the client flags, which every
/// client command's does; their own mistakes are usage errors (exit 2).
#[test]
fn serve_and_sink_show_no_client_flags() {
    let help = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_syncbrok"))
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    for command in ["serve", "sink"] {
        let (code, text) = help(&[command, "--help"]);
        assert_eq!(code, Some(0));
        assert!(
            text.contains(&format!("Usage: syncbrok {command}")),
            "{text}"
        );
        for flag in ["--url", "--token", "--cacert", "--output", "--quiet"] {
            assert!(
                !text.contains(flag),
                "{command} --help shows {flag}:\n{text}"
            );
        }
        assert_eq!(help(&[command, "--bogus"]).0, Some(2));
    }
    let (_, text) = help(&["publish", "--help"]);
    assert!(
        text.contains("--url") && text.contains("--timeout"),
        "{text}"
    );
}
