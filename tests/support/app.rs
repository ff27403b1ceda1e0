//! Starts the real gateway on port 0 against a fresh database of its own: a new
//! PostgreSQL database per test, or a new SQLite file.

use std::time::{Duration, Instant};

use omnigate::app::{self, RunningApp};
use omnigate::config::{Config, ProviderConfig, SandboxMode};
use reqwest::StatusCode;
use serde_json::Value;
use sqlx::Connection;

pub const PG_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    Postgres,
    Sqlite,
}

/// A database that exists only for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(kind: Db) -> TestDb {
        match kind {
            Db::Postgres => {
                let name = format!("omnigate_test_{}", uuid::Uuid::new_v4().simple());
                let mut conn = sqlx::PgConnection::connect(PG_ADMIN_URL)
                    .await
                    .expect("PostgreSQL on 127.0.0.1:5432 (user postgres, trust auth)");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                TestDb {
                    url: format!("postgres://postgres@127.0.0.1:5432/{name}"),
                    _dir: None,
                }
            }
            Db::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("omnigate.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                }
            }
        }
    }
}

impl TestDb {
    /// A database the test made some other way (a private server's).
    pub fn existing(url: String) -> TestDb {
        TestDb { url, _dir: None }
    }
}

pub fn config(db: &TestDb, providers: Vec<(String, ProviderConfig)>) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen = "127.0.0.1:0".parse().unwrap();
    cfg.database.url = db.url.clone();
    cfg.database.max_connections = 5;
    cfg.poller.tick_ms = 50;
    // Longer than a simulator call (2 s timeout), short enough that a killed gateway's
    // claims run out within a test.
    cfg.poller.lease_secs = 3;
    cfg.sandbox.enabled = SandboxMode::Never;
    // The submit path as it is without the admission queue (a full provider answers 503
    // at once, a capacity refusal is retried in the next round): tests/capacity.rs turns
    // the queue on with `with_queue`.
    cfg.queue.default_max_wait_secs = 0;
    cfg.queue.refusal_cooldown_secs = 0;
    cfg.providers = providers.into_iter().collect();
    cfg
}

/// `config` with the admission queue on as configured by default, except a shorter tick.
pub fn with_queue(mut cfg: Config) -> Config {
    let defaults = omnigate::queue::QueueConfig::default();
    cfg.queue.default_max_wait_secs = defaults.default_max_wait_secs;
    cfg.queue.refusal_cooldown_secs = defaults.refusal_cooldown_secs;
    cfg.queue.tick_ms = 50;
    cfg
}

pub struct TestApp {
    pub app: Option<RunningApp>,
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
}

impl TestApp {
    /// Starts the gateway with `config` and issues it one API key.
    pub async fn start(config: Config) -> TestApp {
        init_tracing();
        let app = app::start(config).await.expect("gateway starts");
        let key = app
            .gateway
            .store
            .create_api_key("test")
            .await
            .expect("create key")
            .secret;
        TestApp {
            base: format!("http://{}", app.addr),
            app: Some(app),
            key,
            client: reqwest::Client::new(),
        }
    }

    pub async fn spawn(db: &TestDb, providers: Vec<(String, ProviderConfig)>) -> TestApp {
        TestApp::start(config(db, providers)).await
    }

    /// Starts a second gateway process-alike on the same config (same database).
    pub async fn restart_with(config: Config, key: String) -> TestApp {
        let app = app::start(config).await.expect("gateway restarts");
        TestApp {
            base: format!("http://{}", app.addr),
            app: Some(app),
            key,
            client: reqwest::Client::new(),
        }
    }

    pub fn gateway(&self) -> &omnigate::gateway::Gateway {
        &self.app.as_ref().expect("running").gateway
    }

    /// Issues another API key named `name` and returns its secret.
    pub async fn issue_key(&self, name: &str) -> String {
        self.gateway()
            .store
            .create_api_key(name)
            .await
            .expect("create key")
            .secret
    }

    /// Issues a key as the admin API does, with its webhook signing secret.
    pub async fn issue_signing_key(&self, name: &str) -> omnigate::store::IssuedKey {
        self.gateway()
            .store
            .issue_key(name, &omnigate::store::KeyChange::default())
            .await
            .expect("issue key")
    }

    /// Stops the gateway abruptly, as a crash would.
    pub fn kill(&mut self) {
        if let Some(app) = self.app.take() {
            app.kill();
        }
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.post_as(&self.key, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .expect("request reaches the gateway");
        read(resp).await
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.get_as(&self.key, path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (StatusCode, Value) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(key)
            .send()
            .await
            .expect("request reaches the gateway");
        read(resp).await
    }

    pub async fn create(&self, body: &Value) -> Value {
        let (status, task) = self.post("/v1/video/generations", body).await;
        assert_eq!(status, StatusCode::ACCEPTED, "create answered {task}");
        task
    }

    /// Reads the task until it reaches a terminal status (or panics after `within`).
    pub async fn wait_terminal(&self, id: &str, within: Duration) -> Value {
        self.wait_terminal_as(&self.key, id, within).await
    }

    /// `wait_terminal` for a task of another key.
    pub async fn wait_terminal_as(&self, key: &str, id: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let (status, task) = self
                .get_as(key, &format!("/v1/video/generations/{id}"))
                .await;
            assert_eq!(status, StatusCode::OK, "read answered {task}");
            if matches!(
                task["status"].as_str(),
                Some("completed" | "failed" | "cancelled")
            ) {
                return task;
            }
            assert!(
                Instant::now() < deadline,
                "task {id} did not finish in {within:?}: {task}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The statuses a task went through, in order, from its `status_history`.
pub fn history(task: &Value) -> Vec<String> {
    task["status_history"]
        .as_array()
        .map(|changes| {
            changes
                .iter()
                .filter_map(|c| c["status"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

async fn read(resp: reqwest::Response) -> (StatusCode, Value) {
    let status = resp.status();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Runs one async scenario on PostgreSQL and on SQLite, as two tests.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::support::app::Db::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::support::app::Db::Sqlite).await
            }
        }
    )*};
}

/// Gateway logs go to the test's captured output, shown when a test fails.
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "omnigate=info".into()),
        )
        .with_test_writer()
        .try_init();
}
