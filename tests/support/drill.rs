//! The moving parts of the fault drills: the real `omnigate` binary as a child process
//! that a test can `kill -9` and start again on the same port and database, and private
//! PostgreSQL and Redis servers that a test can stop and start without touching the
//! machine's shared ones. Every child is stopped when its guard is dropped, however the
//! test ends.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnigate::config::{Config, Credential};
use serde_json::Value;

/// A free port of 127.0.0.1 for a server the drill stops and starts again on the same
/// port. It is drawn below Linux's ephemeral range (32768-60999): while the server is
/// down, no outgoing connection and no listener on port 0 (every other test's) can be
/// handed it.
pub fn free_port() -> u16 {
    use rand::Rng;
    for _ in 0..1000 {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000-32000");
}

/// A drill's size from the environment variable `name`, else `default` (CI runs the
/// default; the benchmark sets the variable to run the same drill large).
pub fn scale(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Waits until `check` holds, or panics naming `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The real `omnigate` binary serving `config` (written to a TOML file) on a fixed port,
/// so a client and the providers' callbacks find it again after a restart.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub base: String,
    child: Option<Child>,
    config_path: PathBuf,
    log_path: PathBuf,
    env: Vec<(String, String)>,
    starts: usize,
    _dir: tempfile::TempDir,
}

/// The env var a drill passes the admin token in (`admin.token_env`).
const ADMIN_TOKEN_ENV: &str = "OMNIGATE_DRILL_ADMIN_TOKEN";

impl GatewayProcess {
    /// Writes `config` (on a free port unless it names one; provider credentials and the
    /// admin token passed through the environment, as in production) and starts the
    /// gateway; returns once `/readyz` answers 200.
    pub async fn start(mut config: Config) -> GatewayProcess {
        if config.server.listen.port() == 0 {
            config.server.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
        }
        let env = secrets_to_env(&mut config);
        let dir = tempfile::tempdir().expect("a temp dir for the gateway");
        let config_path = dir.path().join("omnigate.toml");
        let toml = toml::to_string(&config).expect("the config serializes to TOML");
        std::fs::write(&config_path, toml).expect("write the gateway's config");
        let addr = config.server.listen;
        let mut gateway = GatewayProcess {
            addr,
            base: format!("http://{addr}"),
            child: None,
            log_path: dir.path().join("omnigate.log"),
            config_path,
            env,
            starts: 0,
            _dir: dir,
        };
        gateway.restart().await;
        gateway
    }

    /// Starts the process again on the same config, port and database (after `kill`).
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "the gateway is still running");
        self.starts += 1;
        // Appended, so the log of every run is kept for a failure message.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open the gateway's log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_omnigate"));
        // The environment's own settings must not override the drill's config file.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("OMNIGATE_") || name == "RUST_LOG" {
                command.env_remove(name.as_ref());
            }
        }
        let child = command
            .arg("--config")
            .arg(&self.config_path)
            .args(["serve"])
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("start the omnigate binary");
        self.child = Some(child);
        self.wait_ready().await;
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = client
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the gateway exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "the gateway was not ready in 30 s:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: no drain, no flush, whatever was in flight is cut.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std's `Child::kill` sends SIGKILL on Unix.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// How many times the process was started.
    pub fn starts(&self) -> usize {
        self.starts
    }

    /// The value for `Authorization` on `/admin/*`.
    pub fn admin_auth(&self) -> String {
        let token = self
            .env
            .iter()
            .find(|(k, _)| k == ADMIN_TOKEN_ENV)
            .map(|(_, v)| v.clone())
            .expect("the drill config has an admin token");
        format!("Bearer {token}")
    }

    /// Everything the gateway logged (every run).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The last lines the gateway logged, for a failure message.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Moves every credential out of `config` into environment variables it names (a
/// `Secret` is never serialized), and gives the admin API a fresh token.
fn secrets_to_env(config: &mut Config) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (i, provider) in config.providers.values_mut().enumerate() {
        match std::mem::take(&mut provider.credential) {
            Credential::Bearer(key) => {
                let name = format!("OMNIGATE_DRILL_PROVIDER_{i}_KEY");
                env.push((name.clone(), key.expose().to_string()));
                provider.api_key_env = Some(name);
            }
            Credential::KlingJwt {
                access_key,
                secret_key,
            } => {
                let (ak, sk) = (
                    format!("OMNIGATE_DRILL_PROVIDER_{i}_AK"),
                    format!("OMNIGATE_DRILL_PROVIDER_{i}_SK"),
                );
                env.push((ak.clone(), access_key.expose().to_string()));
                env.push((sk.clone(), secret_key.expose().to_string()));
                provider.access_key_env = Some(ak);
                provider.secret_key_env = Some(sk);
            }
            Credential::Missing => {}
        }
    }
    config.admin.token = None;
    config.admin.token_env = Some(ADMIN_TOKEN_ENV.into());
    env.push((
        ADMIN_TOKEN_ENV.into(),
        format!("drill-admin-{}", uuid::Uuid::new_v4().simple()),
    ));
    env
}

/// Runs `program` as the PostgreSQL owner: postgres refuses to run as root, so as root
/// it goes through `runuser -u postgres`.
fn as_postgres_owner(program: &str) -> Command {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--", program]);
        cmd
    } else {
        Command::new(program)
    }
}

/// The directory of PostgreSQL's server programs (`initdb`, `pg_ctl`), newest version.
fn postgres_bin_dir() -> PathBuf {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<u32> = std::fs::read_dir(root)
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort_unstable();
    match versions.last() {
        Some(v) => root.join(v.to_string()).join("bin"),
        // Elsewhere: whatever is on the PATH.
        None => PathBuf::new(),
    }
}

/// How [`PrivatePostgres::stop`] stops the server (`pg_ctl stop -m ...`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgStop {
    Fast,
    Immediate,
}

/// A PostgreSQL cluster of the test's own, in a temp dir, on a free port of 127.0.0.1: it
/// can be stopped and started while other tests keep using the machine's server.
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    bin: PathBuf,
    running: bool,
}

impl PrivatePostgres {
    /// `initdb` (trust auth, superuser `postgres`) and start.
    pub fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("a temp dir for PostgreSQL");
        // The cluster belongs to the postgres user when we are root.
        let _ = Command::new("chown")
            .args(["postgres:", dir.path().to_str().expect("utf-8 temp path")])
            .status();
        let pg = PrivatePostgres {
            port: free_port(),
            bin: postgres_bin_dir(),
            dir,
            running: false,
        };
        let out = as_postgres_owner(pg.program("initdb").as_str())
            .args([
                "-D",
                pg.data_dir().as_str(),
                "-U",
                "postgres",
                "-A",
                "trust",
            ])
            .args(["--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut pg = pg;
        pg.start_again();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server: `Fast` as an operator's restart does (open sessions are cut, the
    /// server shuts down cleanly), `Immediate` as a crash (the next start recovers from
    /// the write-ahead log).
    pub fn stop(&mut self, how: PgStop) {
        let mode = match how {
            PgStop::Fast => "fast",
            PgStop::Immediate => "immediate",
        };
        self.pg_ctl(&["stop", "-m", mode, "-w"]);
        self.running = false;
    }

    /// Starts it again on the same port and data; returns once it accepts connections.
    pub fn start_again(&mut self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("postgres.log");
        self.pg_ctl(&[
            "start",
            "-w",
            "-t",
            "30",
            "-o",
            &options,
            "-l",
            log.to_str().expect("utf-8 temp path"),
        ]);
        self.running = true;
    }

    fn pg_ctl(&self, args: &[&str]) {
        let out = as_postgres_owner(self.program("pg_ctl").as_str())
            .args(["-D", self.data_dir().as_str()])
            .args(args)
            .stdin(Stdio::null())
            // pg_ctl's server inherits these; a pipe would be held open forever.
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run pg_ctl");
        assert!(out.success(), "pg_ctl {args:?} failed ({out})");
    }

    fn program(&self, name: &str) -> String {
        self.bin.join(name).display().to_string()
    }

    fn data_dir(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = as_postgres_owner(self.program("pg_ctl").as_str())
                .args(["-D", self.data_dir().as_str(), "stop", "-m", "immediate"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A `redis-server` of the test's own (no persistence) on a free port of 127.0.0.1.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub async fn start() -> PrivateRedis {
        let mut redis = PrivateRedis {
            port: free_port(),
            child: None,
        };
        redis.start_again().await;
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL): its connections drop, new ones are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a fresh, empty server on the same port; returns once it accepts connections.
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "Redis is still running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        eventually(Duration::from_secs(10), "redis-server listening", || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        })
        .await;
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// What the clients of a [`CreateLoad`] were answered.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    /// Job number -> the id of the task its create was answered with (202, or a replay).
    pub accepted: BTreeMap<usize, String>,
    /// Every HTTP answer, by status.
    pub statuses: BTreeMap<u16, usize>,
    /// The `error.code` of each 503 and 429, by code.
    pub refusal_codes: BTreeMap<String, usize>,
    /// Requests that got no HTTP answer (connection refused or cut).
    pub transport_errors: usize,
    /// Answers that are neither a task nor a clean, retryable refusal (503 or 429 with a
    /// JSON error body and `Retry-After`): status and body.
    pub unclean: Vec<String>,
}

struct LoadShared {
    base: String,
    key: String,
    jobs: usize,
    next_job: AtomicUsize,
    body: Box<dyn Fn(usize) -> Value + Send + Sync>,
    answers: Mutex<Answers>,
}

/// Clients creating `jobs` tasks, `clients` at a time. Each job has its own
/// `Idempotency-Key` and is sent again with it after a transport error, a 503 or a 429
/// until it is answered with a task, as a careful client would: a job that crossed a
/// crash must still end as exactly one task.
pub struct CreateLoad {
    shared: Arc<LoadShared>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// The tasks a [`CreateLoad`] was answered with so far, as it goes on.
#[derive(Clone)]
pub struct Answered(Arc<LoadShared>);

impl Answered {
    pub fn task_ids(&self) -> Vec<String> {
        let answers = self.0.answers.lock().unwrap();
        answers.accepted.values().cloned().collect()
    }
}

/// A careful client's pause before it sends a refused job again.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

impl CreateLoad {
    pub fn start(
        base: &str,
        key: &str,
        jobs: usize,
        clients: usize,
        body: impl Fn(usize) -> Value + Send + Sync + 'static,
    ) -> CreateLoad {
        let shared = Arc::new(LoadShared {
            base: base.to_string(),
            key: key.to_string(),
            jobs,
            next_job: AtomicUsize::new(0),
            body: Box::new(body),
            answers: Mutex::default(),
        });
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("load client");
        let workers = (0..clients)
            .map(|_| tokio::spawn(run_client(shared.clone(), client.clone())))
            .collect();
        CreateLoad { shared, workers }
    }

    /// Jobs answered with a task so far.
    pub fn accepted(&self) -> usize {
        self.answers().accepted.len()
    }

    pub fn answers(&self) -> Answers {
        self.shared.answers.lock().unwrap().clone()
    }

    pub async fn wait_accepted(&self, n: usize, within: Duration) {
        eventually(within, &format!("{n} creates answered"), || async {
            self.accepted() >= n
        })
        .await;
    }

    /// A handle on the tasks answered so far, for another task to follow.
    pub fn answered(&self) -> Answered {
        Answered(self.shared.clone())
    }

    /// Hands out no new job: the clients end once their current one is answered.
    pub fn stop(&self) {
        self.shared
            .next_job
            .fetch_max(self.shared.jobs, Ordering::Relaxed);
    }

    /// Waits for every job to be answered (panics after `within`).
    pub async fn finish(self, within: Duration) -> Answers {
        let all = futures::future::join_all(self.workers);
        let ended = tokio::time::timeout(within, all).await;
        let answers = self.shared.answers.lock().unwrap().clone();
        assert!(
            ended.is_ok(),
            "the load did not end in {within:?}: {} of {} jobs answered",
            answers.accepted.len(),
            self.shared.jobs
        );
        answers
    }
}

async fn run_client(shared: Arc<LoadShared>, client: reqwest::Client) {
    loop {
        let job = shared.next_job.fetch_add(1, Ordering::Relaxed);
        if job >= shared.jobs {
            return;
        }
        let body = (shared.body)(job);
        let idempotency_key = format!("drill-job-{job}");
        loop {
            let sent = client
                .post(format!("{}/v1/video/generations", shared.base))
                .bearer_auth(&shared.key)
                .header("idempotency-key", &idempotency_key)
                .json(&body)
                .send()
                .await;
            let resp = match sent {
                Ok(resp) => resp,
                Err(_) => {
                    shared.answers.lock().unwrap().transport_errors += 1;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp.headers().contains_key("retry-after");
            let text = resp.text().await.unwrap_or_default();
            if record(&shared, job, status, retry_after, &text) {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Records one answer; true when the job is done with (answered, or given up as unclean).
fn record(shared: &LoadShared, job: usize, status: u16, retry_after: bool, text: &str) -> bool {
    let answer: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let mut answers = shared.answers.lock().unwrap();
    *answers.statuses.entry(status).or_default() += 1;
    match status {
        200 | 202 if answer["id"].is_string() => {
            let id = answer["id"].as_str().unwrap_or_default().to_string();
            answers.accepted.insert(job, id);
            true
        }
        429 | 503 if retry_after && answer["error"]["code"].is_string() => {
            let code = answer["error"]["code"].as_str().unwrap_or_default();
            *answers.refusal_codes.entry(code.to_string()).or_default() += 1;
            false
        }
        _ => {
            answers.unclean.push(format!("{status} {text}"));
            true
        }
    }
}
