//! Runs the Python clients in tests/ (real third-party libraries, installed by
//! tests/prepare.sh) and reads what they report.

use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use super::receiver::Received;

/// Runs `tests/{script}` with `args` off the async runtime; panics naming `packages`
/// (the pip packages it needs) if it fails. Returns its last non-empty output line as JSON.
pub async fn run_script(script: &str, args: Vec<String>, packages: &str) -> Value {
    let path = format!("{}/tests/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(path)
            .args(&args)
            .output()
            .expect("python3 runs (tests/prepare.sh installs the packages)")
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{script} failed (pip install {packages}):\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let last = out
        .stdout
        .split(|b| *b == b'\n')
        .rfind(|l| !l.is_empty())
        .unwrap_or_default();
    serde_json::from_slice(last).expect("the script's JSON line")
}

/// A captured webhook delivery verified by the stock `standardwebhooks` Python package
/// (a machine without it fails the test rather than skipping the check); returns what
/// the script prints.
pub fn verify_with_python(secret: &str, r: &Received) -> String {
    let headers: HashMap<&str, &str> = ["webhook-id", "webhook-timestamp", "webhook-signature"]
        .into_iter()
        .map(|h| (h, r.header(h)))
        .collect();
    let input = json!({"secret": secret, "headers": headers,
                       "body": String::from_utf8(r.body.clone()).unwrap()});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/verify_webhook.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 runs (CI installs it with the standardwebhooks package)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused the delivery (pip install standardwebhooks): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
