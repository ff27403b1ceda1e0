//! The README's quick start, as a newcomer follows it: the real binary started with a copy
//! of the example config and nothing else, its first key and webhook secret read from the
//! log, and the README's try-it block run as written by bash and curl.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);

/// The shell block under the README's `<!-- try-it -->` marker.
fn try_it_block() -> String {
    let readme = include_str!("../README.md");
    let after = readme
        .split_once("<!-- try-it -->")
        .expect("README has a <!-- try-it --> marker")
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block right after the marker");
    body.split_once("\n```")
        .expect("the block ends")
        .0
        .to_string()
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The gateway's JSON log lines, read on a thread so a test can wait on them with a bound.
fn log_lines(child: &mut Child) -> Receiver<Value> {
    let (tx, rx) = channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            if tx.send(value).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads log lines (keeping each) until one whose message starts with `prefix`.
fn wait_for(lines: &Receiver<Value>, seen: &mut Vec<Value>, prefix: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no log line starting {prefix:?}; saw {seen:#?}"));
        seen.push(line.clone());
        if message(&line).starts_with(prefix) {
            return line;
        }
    }
}

fn message(line: &Value) -> &str {
    line["fields"]["message"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_works_as_written_on_a_copy_of_the_example_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/omnigate.example.toml"),
        dir.path().join("config/omnigate.toml"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_omnigate"))
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env("OMNIGATE_LOG__FORMAT", "json")
        .env("OMNIGATE_SERVER__LISTEN", "127.0.0.1:0")
        .env("OMNIGATE_SANDBOX__TASK_SECONDS", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = log_lines(&mut child);
    let _child = KillOnDrop(child);

    let mut seen = Vec::new();
    let first_key = wait_for(&lines, &mut seen, "SANDBOX MODE: created a first API key");
    let words: Vec<&str> = message(&first_key).split_whitespace().collect();
    let key = words
        .iter()
        .find(|w| w.starts_with("og_"))
        .expect("the key");
    let secret = words
        .iter()
        .find(|w| w.starts_with("whsec_"))
        .expect("the webhook secret is printed with the key");
    let addr = wait_for(&lines, &mut seen, "omnigate listening")["fields"]["addr"]
        .as_str()
        .unwrap()
        .to_string();

    let script = try_it_block()
        .replace("KEY=og_...", &format!("KEY={key}"))
        .replace("localhost:8080", &addr);
    let run = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .output(),
    )
    .await
    .expect("the try-it block finishes")
    .unwrap();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.first(), Some(&"202"), "{out}");
    assert_eq!(printed.get(1), Some(&"\"status\":\"completed\""), "{out}");
    assert!(
        printed.get(2).is_some_and(|l| l.contains(".webm")),
        "the video's URL: {out}"
    );

    // The secret printed is the key's signing secret.
    let db = sqlx::SqlitePool::connect(&format!("sqlite://{}/omnigate.db", dir.path().display()))
        .await
        .unwrap();
    let stored: String = sqlx::query_scalar("SELECT webhook_secret FROM api_keys")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(&stored, secret);

    // A newcomer's first task leaves a clean log: no warning but the sandbox's own notices.
    while let Ok(line) = lines.try_recv() {
        seen.push(line);
    }
    let warnings: Vec<&Value> = seen
        .iter()
        .filter(|l| l["level"] != "INFO" && l["level"] != "DEBUG")
        .filter(|l| !message(l).starts_with("SANDBOX MODE"))
        .collect();
    assert!(warnings.is_empty(), "{warnings:#?}");
}
