//! Per-key rate limits over HTTP, on the real PostgreSQL and the real Redis of this
//! machine (127.0.0.1:6379): where each bucket refuses and when it recovers, the RateLimit
//! header fields, one limit across two gateway processes sharing Redis, the in-process
//! limiter of a single instance, and what happens while Redis cannot answer.
//! Every test writes under a Redis prefix of its own, so tests run in parallel.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnigate::config::{Config, RedisErrorPolicy, SandboxMode};
use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::Connection;
use support::app::{config, Db, TestApp, TestDb};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const REDIS: &str = "redis://127.0.0.1:6379";
const CREATES: &str = "/v1/video/generations";

/// A gateway on the sandbox upstream with the given limiter settings.
fn gateway_config(db: &TestDb, redis_url: Option<String>, prefix: &str) -> Config {
    let mut cfg = config(db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.limits.redis_url = redis_url;
    cfg.limits.redis_prefix = prefix.to_string();
    cfg
}

fn fresh_prefix() -> String {
    format!("omnigate-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Issues a new key with the given limit columns (`rpm = 60, burst = 2`), set in the
/// database directly, before the key is ever used.
async fn key_with(app: &TestApp, db: &TestDb, limits: &str) -> String {
    let key = app
        .gateway()
        .store
        .create_api_key("limited")
        .await
        .expect("create key");
    let mut conn = sqlx::PgConnection::connect(&db.url)
        .await
        .expect("connect to the test database");
    sqlx::query(&format!("UPDATE api_keys SET {limits} WHERE id = $1"))
        .bind(&key.id)
        .execute(&mut conn)
        .await
        .expect("set the key's limits");
    key.secret
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<u64> {
        self.headers.get(name).map(|v| {
            v.to_str()
                .unwrap()
                .parse()
                .expect("a number of seconds or calls")
        })
    }

    /// RateLimit-Limit, -Remaining, -Reset.
    fn rate(&self) -> (u64, u64, u64) {
        let get = |name| {
            self.header(name)
                .unwrap_or_else(|| panic!("{name} missing on {}: {}", self.status, self.body))
        };
        (
            get("ratelimit-limit"),
            get("ratelimit-remaining"),
            get("ratelimit-reset"),
        )
    }

    fn has_rate_headers(&self) -> bool {
        ["ratelimit-limit", "ratelimit-remaining", "ratelimit-reset"]
            .iter()
            .any(|h| self.headers.contains_key(*h))
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or_default()
    }
}

async fn call(app: &TestApp, key: &str, method: Method, path: &str) -> Answer {
    let mut req = app
        .client
        .request(method.clone(), format!("{}{path}", app.base))
        .bearer_auth(key);
    if method == Method::POST {
        req = req.json(&json!({
            "model": "kling-v3-omni",
            "prompt": "a lighthouse at dusk",
            "aspect_ratio": "16:9",
            "duration": 5
        }));
    }
    let resp = req.send().await.expect("the gateway answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

async fn create(app: &TestApp, key: &str) -> Answer {
    call(app, key, Method::POST, CREATES).await
}

async fn read(app: &TestApp, key: &str) -> Answer {
    call(app, key, Method::GET, CREATES).await
}

fn assert_refused(a: &Answer, what: &str) {
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    assert_eq!(a.code(), "rate_limited");
    assert_eq!(a.body["error"]["type"], "rate_limit_error");
    let message = a.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(what),
        "the message names the limit: {message}"
    );
    assert!(a.header("retry-after").is_some_and(|s| s >= 1));
    assert_eq!(a.rate().1, 0, "nothing remains when refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_create_limit_refuses_past_its_burst_and_recovers_after_its_interval() {
    let db = TestDb::new(Db::Postgres).await;
    let app = TestApp::start(gateway_config(&db, Some(REDIS.into()), &fresh_prefix())).await;
    // 30 a minute: one call comes back every 2 s; two may come at once.
    let key = key_with(&app, &db, "rpm = 30, burst = 2").await;

    let first = create(&app, &key).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let (limit, remaining, reset) = first.rate();
    assert_eq!((limit, remaining), (2, 1));
    assert!(
        (1..=2).contains(&reset),
        "one call's worth back within 2 s: {reset}"
    );
    assert_eq!(
        first.headers["ratelimit-policy"].to_str().unwrap(),
        "30;w=60;burst=2"
    );

    let second = create(&app, &key).await;
    assert_eq!(second.status, StatusCode::ACCEPTED, "{}", second.body);
    let (_, remaining, reset) = second.rate();
    assert_eq!(remaining, 0);
    assert!(
        (3..=4).contains(&reset),
        "two calls' worth back within 4 s: {reset}"
    );

    let refused = create(&app, &key).await;
    assert_refused(&refused, "30 per minute, 2 at once");
    let retry = refused.header("retry-after").unwrap();
    assert!(
        (1..=2).contains(&retry),
        "the next call is 2 s after the first: {retry}"
    );

    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    let again = create(&app, &key).await;
    assert_eq!(
        again.status,
        StatusCode::ACCEPTED,
        "after Retry-After: {}",
        again.body
    );
    assert_eq!(
        again.rate().1,
        0,
        "one call came back, and this one used it"
    );
    assert_eq!(
        create(&app, &key).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_have_their_own_bucket_and_unlimited_keys_carry_no_rate_headers() {
    let db = TestDb::new(Db::Postgres).await;
    let app = TestApp::start(gateway_config(&db, Some(REDIS.into()), &fresh_prefix())).await;
    let key = key_with(&app, &db, "rpm = 6, burst = 1, read_rpm = 3").await;

    assert_eq!(create(&app, &key).await.status, StatusCode::ACCEPTED);
    assert_refused(&create(&app, &key).await, "creates");

    // The spent create bucket does not touch the reads: 3 at once, counting down.
    let mut remaining = Vec::new();
    for path in [CREATES, "/v1/video/generations/vgt_missing", CREATES] {
        let a = call(&app, &key, Method::GET, path).await;
        assert!(a.status == StatusCode::OK || a.status == StatusCode::NOT_FOUND);
        let (limit, left, _) = a.rate();
        assert_eq!(limit, 3, "the read burst is the read rpm");
        remaining.push(left);
    }
    assert_eq!(remaining, [2, 1, 0], "every /v1 read counts, a 404 too");
    let refused = read(&app, &key).await;
    assert_refused(&refused, "reads");
    assert!(
        refused.header("retry-after").unwrap() >= 19,
        "3 a minute: the next read in about 20 s"
    );

    // A key with no limits of its own, and no defaults configured: not limited, no headers.
    let free = app.key.clone();
    for _ in 0..5 {
        let a = read(&app, &free).await;
        assert_eq!(a.status, StatusCode::OK);
        assert!(!a.has_rate_headers(), "{:?}", a.headers);
    }
    let anonymous = read(&app, "og_not_a_key").await;
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    assert!(!anonymous.has_rate_headers());
    assert!(
        call(&app, &key, Method::GET, "/healthz").await.status == StatusCode::OK,
        "outside /v1 nothing is limited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_defaults_limit_keys_without_their_own_numbers() {
    let db = TestDb::new(Db::Postgres).await;
    let mut cfg = gateway_config(&db, None, &fresh_prefix());
    cfg.limits.default_rpm = Some(6);
    cfg.limits.default_burst = Some(1);
    cfg.limits.default_read_rpm = Some(2);
    let app = TestApp::start(cfg).await;
    let own = key_with(&app, &db, "read_rpm = 100").await;

    assert_eq!(create(&app, &app.key).await.rate(), (1, 0, 10));
    assert_refused(&create(&app, &app.key).await, "6 per minute, 1 at once");
    assert_eq!(read(&app, &app.key).await.rate().0, 2);
    assert_eq!(read(&app, &app.key).await.status, StatusCode::OK);
    assert_refused(&read(&app, &app.key).await, "2 per minute");

    let a = read(&app, &own).await;
    assert_eq!(a.rate().0, 100, "a key's own number wins over the default");
    assert_eq!(
        create(&app, &own).await.rate().0,
        1,
        "the create default still applies"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_processes_sharing_redis_enforce_one_limit() {
    let db = TestDb::new(Db::Postgres).await;
    let cfg = gateway_config(&db, Some(REDIS.into()), &fresh_prefix());
    let a = TestApp::start(cfg.clone()).await;
    let b = TestApp::restart_with(cfg, a.key.clone()).await;
    // 6 a minute (one back every 10 s), 3 at once, over both processes together.
    let key = key_with(&a, &db, "rpm = 6, burst = 3").await;

    let mut remaining = Vec::new();
    for app in [&a, &b, &a] {
        let answer = create(app, &key).await;
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        remaining.push(answer.rate().1);
    }
    assert_eq!(remaining, [2, 1, 0], "one count across both processes");
    assert_refused(&create(&b, &key).await, "6 per minute");
    assert_refused(&create(&a, &key).await, "6 per minute");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_process_limits_on_its_own() {
    let db = TestDb::new(Db::Postgres).await;
    let cfg = gateway_config(&db, None, &fresh_prefix());
    let a = TestApp::start(cfg.clone()).await;
    let b = TestApp::restart_with(cfg, a.key.clone()).await;
    let key = key_with(&a, &db, "rpm = 30, burst = 2").await;

    for _ in 0..2 {
        assert_eq!(create(&a, &key).await.status, StatusCode::ACCEPTED);
    }
    let refused = create(&a, &key).await;
    assert_refused(&refused, "30 per minute");
    // The single-instance limiter: another process has its own full burst.
    let other = create(&b, &key).await;
    assert_eq!(other.status, StatusCode::ACCEPTED, "{}", other.body);
    assert_eq!(other.rate().1, 1);

    let retry = refused.header("retry-after").unwrap();
    tokio::time::sleep(Duration::from_secs(retry) + Duration::from_millis(100)).await;
    assert_eq!(
        create(&a, &key).await.status,
        StatusCode::ACCEPTED,
        "recovered after Retry-After"
    );
}

/// A port of 127.0.0.1 where nothing listens.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_open_by_default_and_counts_the_failures() {
    let db = TestDb::new(Db::Postgres).await;
    let url = format!("redis://{}", closed_port().await);
    let cfg = gateway_config(&db, Some(url), &fresh_prefix());
    assert_eq!(cfg.limits.on_redis_error, RedisErrorPolicy::FailOpen);
    let app = TestApp::start(cfg).await;
    let key = key_with(&app, &db, "rpm = 1, burst = 1, read_rpm = 1").await;

    for _ in 0..3 {
        let a = read(&app, &key).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(!a.has_rate_headers(), "nothing was counted");
    }
    let limits = &app.gateway().limits;
    assert_eq!(
        limits.backend_failures(),
        1,
        "Redis was asked once; the calls after it skipped Redis"
    );
    assert_eq!(limits.bypassed(), 2);
    assert!(limits.backend_down());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_redis_fails_closed_when_configured() {
    let db = TestDb::new(Db::Postgres).await;
    let url = format!("redis://{}", closed_port().await);
    let mut cfg = gateway_config(&db, Some(url), &fresh_prefix());
    cfg.limits.on_redis_error = RedisErrorPolicy::FailClosed;
    let app = TestApp::start(cfg).await;
    let key = key_with(&app, &db, "read_rpm = 100").await;

    let a = read(&app, &key).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.code(), "rate_limiter_unavailable");
    assert!(a.header(RETRY_AFTER.as_str()).is_some());
    assert_eq!(
        read(&app, &app.key).await.status,
        StatusCode::OK,
        "a key without limits needs no limiter"
    );
}

/// A TCP proxy to the real Redis that a test can cut (open connections closed, new ones
/// closed at once) or stall (open and new connections kept, never answered), then restore.
#[derive(Clone)]
struct RedisProxy {
    addr: SocketAddr,
    state: Arc<Mutex<(Mode, CancellationToken)>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Forward,
    Cut,
    Stall,
}

impl RedisProxy {
    async fn start() -> RedisProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = RedisProxy {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new((Mode::Forward, CancellationToken::new()))),
        };
        let p = proxy.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (mode, period) = p.state.lock().unwrap().clone();
                if mode == Mode::Cut {
                    continue;
                }
                let p2 = p.clone();
                tokio::spawn(async move {
                    if mode == Mode::Stall {
                        period.cancelled().await;
                        return;
                    }
                    let Ok(mut server) = TcpStream::connect("127.0.0.1:6379").await else {
                        return;
                    };
                    tokio::select! {
                        _ = period.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
                    }
                    // Stalled: the connection stays open, and nothing comes back on it.
                    let (mode, period) = p2.state.lock().unwrap().clone();
                    if mode == Mode::Stall {
                        period.cancelled().await;
                    }
                });
            }
        });
        proxy
    }

    /// Ends every connection of the current mode and switches to `mode`.
    fn set(&self, mode: Mode) {
        let mut state = self.state.lock().unwrap();
        state.1.cancel();
        *state = (mode, CancellationToken::new());
    }
}

async fn redis_cut_mid_test_follows_the_policy_and_recovers_without_restart(
    policy: RedisErrorPolicy,
) {
    let db = TestDb::new(Db::Postgres).await;
    let proxy = RedisProxy::start().await;
    let mut cfg = gateway_config(
        &db,
        Some(format!("redis://{}", proxy.addr)),
        &fresh_prefix(),
    );
    cfg.limits.on_redis_error = policy;
    let app = TestApp::start(cfg).await;
    // 6 at once, one back every 10 s: longer than the outage below.
    let key = key_with(&app, &db, "read_rpm = 6").await;

    assert_eq!(read(&app, &key).await.rate().1, 5);
    proxy.set(Mode::Cut);
    let during = read(&app, &key).await;
    match policy {
        RedisErrorPolicy::FailOpen => {
            assert_eq!(during.status, StatusCode::OK, "{}", during.body);
            assert!(!during.has_rate_headers());
        }
        RedisErrorPolicy::FailClosed => {
            assert_eq!(during.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(during.code(), "rate_limiter_unavailable");
        }
    }
    assert!(app.gateway().limits.backend_failures() >= 1);

    proxy.set(Mode::Forward);
    let deadline = Instant::now() + Duration::from_secs(10);
    let back = loop {
        let a = read(&app, &key).await;
        if a.has_rate_headers() {
            break a;
        }
        assert!(Instant::now() < deadline, "the limiter never reconnected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(back.status, StatusCode::OK);
    let (limit, remaining, _) = back.rate();
    assert_eq!(limit, 6);
    assert_eq!(
        remaining, 4,
        "the count kept in Redis survived the outage, and calls during it were not counted"
    );
    assert!(!app.gateway().limits.backend_down());
}

mod redis_cut_mid_test {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_open() {
        redis_cut_mid_test_follows_the_policy_and_recovers_without_restart(
            RedisErrorPolicy::FailOpen,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_closed() {
        redis_cut_mid_test_follows_the_policy_and_recovers_without_restart(
            RedisErrorPolicy::FailClosed,
        )
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_delays_a_call_by_at_most_the_timeout() {
    let db = TestDb::new(Db::Postgres).await;
    let proxy = RedisProxy::start().await;
    let mut cfg = gateway_config(
        &db,
        Some(format!("redis://{}", proxy.addr)),
        &fresh_prefix(),
    );
    cfg.limits.redis_timeout_ms = 200;
    cfg.limits.on_redis_error = RedisErrorPolicy::FailClosed;
    let app = TestApp::start(cfg).await;
    let key = key_with(&app, &db, "read_rpm = 100").await;
    assert_eq!(read(&app, &key).await.status, StatusCode::OK);

    proxy.set(Mode::Stall);
    for _ in 0..3 {
        let started = Instant::now();
        let a = read(&app, &key).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "a stalled Redis held the call for {:?}",
            started.elapsed()
        );
    }
}

/// With Redis hung, only the first call waits for `redis_timeout_ms`: the calls after it
/// skip Redis for `redis_skip_ms` and get the policy at once. Then one call probes, and
/// once Redis answers again the limits are enforced again.
async fn a_hung_redis_costs_one_timeout_per_window_not_one_per_call(policy: RedisErrorPolicy) {
    const CALLS: u64 = 20;
    let db = TestDb::new(Db::Postgres).await;
    let proxy = RedisProxy::start().await;
    let mut cfg = gateway_config(
        &db,
        Some(format!("redis://{}", proxy.addr)),
        &fresh_prefix(),
    );
    cfg.limits.redis_timeout_ms = 200;
    // Longer than the calls below take, so that none of them is a probe.
    cfg.limits.redis_skip_ms = 5_000;
    cfg.limits.on_redis_error = policy;
    let app = TestApp::start(cfg).await;
    let key = key_with(&app, &db, "read_rpm = 6").await;
    assert_eq!(read(&app, &key).await.rate().1, 5);

    proxy.set(Mode::Stall);
    let started = Instant::now();
    for _ in 0..CALLS {
        let a = read(&app, &key).await;
        match policy {
            RedisErrorPolicy::FailOpen => {
                assert_eq!(a.status, StatusCode::OK, "{}", a.body);
                assert!(!a.has_rate_headers());
            }
            RedisErrorPolicy::FailClosed => assert_eq!(a.code(), "rate_limiter_unavailable"),
        }
    }
    let limits = &app.gateway().limits;
    assert_eq!(limits.backend_failures(), 1, "one call waited for Redis");
    assert_eq!(limits.bypassed(), CALLS - 1, "the others did not ask it");
    assert!(limits.backend_down());
    assert!(
        started.elapsed() < Duration::from_millis(200) * 10,
        "{CALLS} calls took {:?}",
        started.elapsed()
    );

    proxy.set(Mode::Forward);
    let deadline = Instant::now() + Duration::from_secs(15);
    let back = loop {
        let a = read(&app, &key).await;
        if a.has_rate_headers() {
            break a;
        }
        assert!(Instant::now() < deadline, "the limiter never came back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let (limit, remaining, _) = back.rate();
    assert_eq!(limit, 6, "counted in Redis again");
    // One call back every 10 s: the window may have given one back.
    assert!((4..=5).contains(&remaining), "{remaining}");
    assert!(!limits.backend_down());
}

mod hung_redis_skipped {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_open() {
        a_hung_redis_costs_one_timeout_per_window_not_one_per_call(RedisErrorPolicy::FailOpen).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn fail_closed() {
        a_hung_redis_costs_one_timeout_per_window_not_one_per_call(RedisErrorPolicy::FailClosed)
            .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_down_at_start_is_used_once_it_answers() {
    let db = TestDb::new(Db::Postgres).await;
    let proxy = RedisProxy::start().await;
    proxy.set(Mode::Cut);
    let mut cfg = gateway_config(
        &db,
        Some(format!("redis://{}", proxy.addr)),
        &fresh_prefix(),
    );
    cfg.limits.on_redis_error = RedisErrorPolicy::FailClosed;
    let app = TestApp::start(cfg).await;
    let key = key_with(&app, &db, "read_rpm = 6").await;
    assert_eq!(
        read(&app, &key).await.code(),
        "rate_limiter_unavailable",
        "the gateway started without Redis"
    );

    proxy.set(Mode::Forward);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = read(&app, &key).await;
        if a.status == StatusCode::OK {
            assert_eq!(a.rate().0, 6, "counted in Redis");
            break;
        }
        assert_eq!(a.code(), "rate_limiter_unavailable");
        assert!(Instant::now() < deadline, "the limiter never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_and_governor_decide_alike_and_redis_keys_expire() {
    use omnigate::limits::{Bucket, MemoryLimiter, Quota, RateLimiter, RedisLimiter};

    let prefix = fresh_prefix();
    let redis = RedisLimiter::connect(REDIS, prefix.clone(), Duration::from_millis(500))
        .await
        .unwrap();
    let memory = MemoryLimiter::new();
    // One back every second, three at once.
    let quota = Quota::new(60, 3);
    let mut seen = Vec::new();
    for _ in 0..5 {
        let r = redis.check("key_a", Bucket::Create, quota).await.unwrap();
        let m = memory.check("key_a", Bucket::Create, quota).await.unwrap();
        assert_eq!(r, m, "call {}", seen.len() + 1);
        seen.push((r.allowed, r.remaining, r.reset_secs, r.retry_after_secs));
    }
    assert_eq!(
        seen,
        [
            (true, 2, 1, 0),
            (true, 1, 2, 0),
            (true, 0, 3, 0),
            (false, 0, 3, 1),
            (false, 0, 3, 1)
        ]
    );
    assert!(
        redis
            .check("key_a", Bucket::Read, quota)
            .await
            .unwrap()
            .allowed,
        "the read bucket is apart"
    );

    // The bucket's key lives only until the bucket would be full again.
    let mut conn = redis::Client::open(REDIS)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("{prefix}key_a:create"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=3000).contains(&ttl), "PTTL {ttl} ms");
}
