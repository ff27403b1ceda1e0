//! Outage drills: a dependency of the gateway goes away under load and comes back, and
//! the gateway keeps its promises throughout without being restarted.
//! - PostgreSQL (a private cluster) restarted: requests answer a clean 503 meanwhile, succeed
//!   again afterwards, and no task is lost or made twice;
//! - a provider answering 5xx, or hanging: traffic fails over, its circuit opens, and closes
//!   again once it recovers;
//! - Redis (a private server) killed and started empty: the configured `on_redis_error`
//!   policy holds, and limiting resumes when it is back;
//! - the webhook receiver down: deliveries keep to the retry schedule and every event is
//!   delivered once it is back.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use omnigate::config::{Config, RedisErrorPolicy};
use omnigate::domain::Model;
use omnigate::health::Circuit;
use omnigate::store::now_ms;
use serde_json::{json, Value};
use sqlx::Row;
use support::app::{config, Db, TestApp, TestDb};
use support::drill::{eventually, CreateLoad, PgStop, PrivatePostgres, PrivateRedis};
use support::faults::{Behaviour, FaultyUpstream};
use support::proxy::TcpProxy;
use support::receiver::Receiver;
use support::sim::{Script, Sim, SimDialect};

const MODELS: &[Model] = &[Model::KlingV3Omni];
const WAIT: Duration = Duration::from_secs(60);

fn task_body(job: usize) -> Value {
    json!({"model": "kling-v3-omni", "prompt": format!("outage drill job {job}"),
           "aspect_ratio": "16:9", "duration": 5})
}

/// `(id, state, provider, created_at)` of every task, oldest first.
/// Read through the gateway's own pool, so a moment without a free connection (the drill
/// keeps it busy) is waited out rather than taken for a failure.
async fn tasks(app: &TestApp) -> Vec<(String, String, String, i64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        match sqlx::query("SELECT id, state, provider, created_at FROM tasks ORDER BY created_at")
            .fetch_all(app.gateway().store.pool())
            .await
        {
            Ok(rows) => {
                return rows
                    .iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
                    .collect()
            }
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = ?e, "reading the tasks failed; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reading the tasks: {e}"),
        }
    }
}

async fn wait_all_completed(app: &TestApp) -> Vec<(String, String, String, i64)> {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = tasks(app).await;
        if all.iter().all(|t| t.1 == "completed" || t.1 == "failed") {
            let failed: Vec<_> = all.iter().filter(|t| t.1 != "completed").collect();
            assert!(failed.is_empty(), "tasks failed: {failed:?}");
            return all;
        }
        assert!(Instant::now() < deadline, "tasks never finished");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every upstream task at `sim` names a distinct task of ours (Kling's `external_task_id`).
fn each_upstream_task_once(sim: &Sim) {
    let ids: Vec<String> = sim
        .created_bodies()
        .iter()
        .map(|b| b["external_task_id"].as_str().unwrap().to_string())
        .collect();
    let distinct: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "an upstream task was made twice");
}

/// PostgreSQL is restarted by its operator (`pg_ctl stop -m fast`, then start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_under_load_answers_503_then_recovers_losing_nothing() {
    postgres_outage(PgStop::Fast).await
}

/// PostgreSQL crashes (`pg_ctl stop -m immediate`) and recovers from its log on start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_under_load_answers_503_then_recovers_losing_nothing() {
    postgres_outage(PgStop::Immediate).await
}

/// PostgreSQL is stopped while clients create and read tasks, and started again three
/// seconds later on the same port. Meanwhile every answer is a task or a clean 503
/// `store_unavailable`; afterwards requests succeed on the same gateway process, every
/// job is one completed task, and no upstream task was made twice.
async fn postgres_outage(how: PgStop) {
    let mut pg = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut cfg = config(
        &TestDb::existing(pg.url()),
        vec![("up".into(), sim.provider_config(MODELS, 0.1))],
    );
    cfg.database.acquire_timeout_secs = 1.0;
    cfg.poller.max_backoff_secs = 1.0;
    let app = TestApp::start(cfg).await;
    let jobs = 150;
    let load = CreateLoad::start(&app.base, &app.key, jobs, 8, task_body);
    let reads = ReadLoad::start(&app, &load, 4);

    load.wait_accepted(jobs / 3, WAIT).await;
    tokio::task::block_in_place(|| pg.stop(how));
    let stopped = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let seen_during = load.answers();
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(
        (status.as_u16(), ready["error"]["code"].as_str()),
        (503, Some("not_ready")),
        "{ready}"
    );
    tokio::task::block_in_place(|| pg.start_again());
    let started = Instant::now();
    let accepted_at_start = load.accepted();
    eventually(WAIT, "a create answered after the restart", || async {
        load.accepted() > accepted_at_start
    })
    .await;
    let recovered_in = started.elapsed();
    eventually(WAIT, "ready again", || async {
        app.get("/readyz").await.0 == 200
    })
    .await;

    let answers = load.finish(WAIT).await;
    let read_statuses = reads.finish().await;
    assert!(answers.unclean.is_empty(), "{:?}", answers.unclean);
    assert_eq!(answers.accepted.len(), jobs);
    assert!(
        seen_during.refusal_codes.get("store_unavailable") > Some(&0),
        "clients met the outage: {seen_during:?}"
    );
    assert_eq!(
        answers.refusal_codes.keys().collect::<Vec<_>>(),
        ["store_unavailable"],
        "{answers:?}"
    );
    assert_eq!(
        read_statuses.keys().collect::<Vec<_>>(),
        ["200", "503 store_unavailable"],
        "reads met the outage, and nothing else: {read_statuses:?}"
    );
    let all = wait_all_completed(&app).await;
    assert_eq!(all.len(), jobs, "one task per job");
    assert_eq!(sim.created_count(), jobs);
    each_upstream_task_once(&sim);
    println!(
        "postgres drill ({how:?}): {jobs} jobs, PostgreSQL down {:?}; first create answered {recovered_in:?} \
         after it was back; creates answered {:?} (503s by code {:?}), reads {read_statuses:?}",
        started - stopped,
        answers.statuses,
        answers.refusal_codes
    );
}

/// The reads of [`ReadLoad`], in turn, each of a task if it needs one: every one answers
/// 200 while the store is up.
type Read = fn(Option<&String>) -> Option<String>;
const READS: [Read; 6] = [
    |id| Some(format!("/v1/video/generations/{}", id?)),
    |id| Some(format!("/v1/video/generations/{}/events", id?)),
    |_| Some("/v1/video/generations?limit=5".into()),
    |id| Some(format!("/v1/videos/{}", id?)),
    |_| Some("/v1/videos?limit=5".into()),
    |_| Some("/v1/usage?group_by=day".into()),
];

/// Clients reading the tasks answered so far, and lists of them, one read after another
/// until stopped; each answer counted as "200" or "<status> <code>".
struct ReadLoad {
    stop: tokio_util::sync::CancellationToken,
    workers: Vec<tokio::task::JoinHandle<BTreeMap<String, usize>>>,
}

impl ReadLoad {
    fn start(app: &TestApp, load: &CreateLoad, clients: usize) -> ReadLoad {
        let stop = tokio_util::sync::CancellationToken::new();
        let workers = (0..clients)
            .map(|first| {
                let (client, base, key) = (app.client.clone(), app.base.clone(), app.key.clone());
                let (answered, done) = (load.answered(), stop.clone());
                tokio::spawn(async move {
                    let mut seen = BTreeMap::new();
                    let mut n = first;
                    while !done.is_cancelled() {
                        n += 1;
                        let ids = answered.task_ids();
                        let id = ids.get(n / READS.len() % ids.len().max(1));
                        let Some(path) = READS[n % READS.len()](id) else {
                            continue;
                        };
                        let label = match client
                            .get(format!("{base}{path}"))
                            .bearer_auth(&key)
                            .send()
                            .await
                        {
                            Ok(resp) if resp.status() == 200 => "200".to_string(),
                            Ok(resp) => {
                                let status = resp.status().as_u16();
                                let body: Value = resp.json().await.unwrap_or(Value::Null);
                                let code = body["error"]["code"].as_str().unwrap_or("?");
                                format!("{status} {code}")
                            }
                            Err(e) => format!("no answer: {e}"),
                        };
                        *seen.entry(label).or_insert(0) += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    seen
                })
            })
            .collect();
        ReadLoad { stop, workers }
    }

    async fn finish(self) -> BTreeMap<String, usize> {
        self.stop.cancel();
        let mut all = BTreeMap::new();
        for worker in self.workers {
            for (label, n) in worker.await.unwrap() {
                *all.entry(label).or_insert(0) += n;
            }
        }
        all
    }
}

/// How long the primary's circuit stays open before a probe.
const COOLDOWN_MS: i64 = 1_000;

/// A provider that answers 5xx for a while, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_answering_5xx_is_failed_over_its_circuit_opening_then_closing() {
    provider_outage(Behaviour::Fail(503)).await
}

/// A provider that accepts connections and never answers for a while, then recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_provider_is_failed_over_its_circuit_opening_then_closing() {
    provider_outage(Behaviour::Hang).await
}

/// Under steady creates, the cheaper provider goes bad: no client sees an error (creates
/// fail over to the dearer one), its circuit opens; when it recovers the circuit closes
/// after the cool-down and new tasks go to it again; every task completes.
async fn provider_outage(outage: Behaviour) {
    let db = TestDb::new(Db::Postgres).await;
    let (cheap, dear) = (
        Sim::start(SimDialect::Kkiai).await,
        Sim::start(SimDialect::Kkiai).await,
    );
    let faulty = FaultyUpstream::start(&cheap.base_url).await;
    let mut primary = cheap.provider_config(MODELS, 0.1);
    primary.base_url = faulty.base_url.clone();
    let mut cfg = config(
        &db,
        vec![
            ("primary".into(), primary),
            ("secondary".into(), dear.provider_config(MODELS, 0.2)),
        ],
    );
    // The production default pool: the test default (5) is sized for many small tests.
    cfg.database.max_connections = 10;
    cfg.health.consecutive_failures = 3;
    cfg.health.min_samples = 6;
    cfg.health.window_secs = 60;
    cfg.health.cooldown_secs = COOLDOWN_MS as f64 / 1000.0;
    cfg.poller.max_backoff_secs = 1.0;
    let app = TestApp::start(cfg).await;
    let circuit = || async {
        app.gateway()
            .health
            .snapshot()
            .await
            .expect("health snapshot")
            .get("primary")
            .map_or(Circuit::Closed, |p| p.circuit)
    };
    let load = CreateLoad::start(&app.base, &app.key, 100_000, 4, task_body);

    load.wait_accepted(10, WAIT).await;
    faulty.behave(outage);
    let outage_began = Instant::now();
    eventually(WAIT, "the primary's circuit opens", || async {
        circuit().await == Circuit::Open
    })
    .await;
    let opened_in = outage_began.elapsed();
    // Creates planned just before the circuit opened may still be on their way to it.
    load.wait_accepted(load.accepted() + 5, WAIT).await;
    let open_from = now_ms();
    load.wait_accepted(load.accepted() + 20, WAIT).await;
    let open_until = now_ms();

    faulty.behave(Behaviour::Forward);
    let recovered = Instant::now();
    eventually(WAIT, "the primary's circuit closes", || async {
        circuit().await == Circuit::Closed
    })
    .await;
    let closed_in = recovered.elapsed();
    let closed_from = now_ms();
    let accepted = load.accepted();
    load.wait_accepted(accepted + 20, WAIT).await;
    load.stop();
    let answers = load.finish(WAIT).await;

    assert!(answers.unclean.is_empty(), "{:?}", answers.unclean);
    assert_eq!(
        answers.statuses.keys().collect::<Vec<_>>(),
        [&202],
        "no client saw the outage: {answers:?}"
    );
    let all = wait_all_completed(&app).await;
    let on = |from: i64, until: i64| -> BTreeMap<&str, usize> {
        let mut by = BTreeMap::new();
        for t in all.iter().filter(|t| t.3 >= from && t.3 < until) {
            *by.entry(t.2.as_str()).or_insert(0) += 1;
        }
        by
    };
    let while_open = on(open_from, open_until);
    // While open, the primary gets one probe per cool-down at most (a hung probe stays
    // with it, in the reconciler's hands); everything else went to the secondary.
    let cooldowns = (open_until - open_from) / COOLDOWN_MS + 1;
    let probes = while_open.get("primary").copied().unwrap_or(0);
    assert!(
        probes as i64 <= cooldowns && while_open.get("secondary") > Some(&0),
        "while its circuit was open, traffic went to the secondary: {while_open:?}"
    );
    let after = on(closed_from, i64::MAX);
    assert!(
        after.get("primary") > Some(&0),
        "traffic went back to the primary: {after:?}"
    );
    assert!(faulty.counts().failed + faulty.counts().hung > 0);
    each_upstream_task_once(&cheap);
    each_upstream_task_once(&dear);
    println!(
        "provider drill ({outage:?}): circuit open {opened_in:?} into the outage, closed \
         {closed_in:?} after recovery; {} tasks, all completed; while open {while_open:?}, \
         after {after:?}; proxy {:?}",
        all.len(),
        faulty.counts()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_open_as_configured_and_limiting_resumes_when_it_returns() {
    redis_outage(RedisErrorPolicy::FailOpen).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_fails_closed_as_configured_and_limiting_resumes_when_it_returns() {
    redis_outage(RedisErrorPolicy::FailClosed).await
}

/// What the drill is in while a read is out.
const BEFORE: usize = 0;
const DOWN: usize = 1;
const BACK: usize = 2;
/// Between phases: answers then are not counted.
const CHANGING: usize = 3;

/// Reads from several clients at once, above the key's read limit, while the private Redis
/// is killed and started again empty: before, the limit holds (429s, rate headers); while
/// it is down, `policy` holds for every read; after, the limit holds again.
async fn redis_outage(policy: RedisErrorPolicy) {
    let db = TestDb::new(Db::Postgres).await;
    let mut redis = PrivateRedis::start().await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    let mut cfg: Config = config(&db, vec![("up".into(), sim.provider_config(MODELS, 0.1))]);
    cfg.limits.redis_url = Some(redis.url());
    cfg.limits.on_redis_error = policy;
    let app = TestApp::start(cfg).await;
    let key = app.gateway().store.create_api_key("limited").await.unwrap();
    sqlx::query("UPDATE api_keys SET read_rpm = 60 WHERE id = $1")
        .bind(&key.id)
        .execute(app.gateway().store.pool())
        .await
        .unwrap();

    let phase = Arc::new(AtomicUsize::new(BEFORE));
    let seen: Arc<Mutex<[BTreeMap<String, usize>; 3]>> = Arc::default();
    // How long each read took, by phase (a figure, not asserted).
    let took: Arc<Mutex<[Vec<Duration>; 3]>> = Arc::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let clients: Vec<_> = (0..4)
        .map(|_| {
            let (client, url, secret) = (
                app.client.clone(),
                format!("{}/v1/video/generations", app.base),
                key.secret.clone(),
            );
            let (phase, seen, stop) = (phase.clone(), seen.clone(), stop.clone());
            let took = took.clone();
            tokio::spawn(async move {
                while !stop.is_cancelled() {
                    let sent_in = phase.load(Ordering::SeqCst);
                    let sent_at = Instant::now();
                    let label = match client.get(&url).bearer_auth(&secret).send().await {
                        Ok(resp) => {
                            let limited = resp.headers().contains_key("ratelimit-limit");
                            let status = resp.status().as_u16();
                            let body: Value = resp.json().await.unwrap_or(Value::Null);
                            let code = body["error"]["code"].as_str().unwrap_or("-");
                            format!("{status} {code} rate-headers={limited}")
                        }
                        Err(e) => format!("no answer: {e}"),
                    };
                    if sent_in != CHANGING && phase.load(Ordering::SeqCst) == sent_in {
                        *seen.lock().unwrap()[sent_in].entry(label).or_insert(0) += 1;
                        took.lock().unwrap()[sent_in].push(sent_at.elapsed());
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect();
    let count = |p: usize, label: &str| -> usize {
        seen.lock().unwrap()[p]
            .iter()
            .filter(|(l, _)| l.starts_with(label))
            .map(|(_, n)| n)
            .sum()
    };

    eventually(WAIT, "the limit bites before the outage", || async {
        count(BEFORE, "429 rate_limited rate-headers=true") > 0
    })
    .await;
    phase.store(CHANGING, Ordering::SeqCst);
    redis.stop();
    phase.store(DOWN, Ordering::SeqCst);
    let down_since = Instant::now();
    eventually(WAIT, "reads during the outage", || async {
        count(DOWN, "") >= 50
    })
    .await;
    let down_for = down_since.elapsed();
    phase.store(CHANGING, Ordering::SeqCst);
    redis.start_again().await;
    let back = Instant::now();
    // The limiter dials a lost Redis again at most once a second.
    eventually(WAIT, "limiting resumes", || async {
        phase.load(Ordering::SeqCst) == BACK
            || app
                .client
                .get(format!("{}/v1/video/generations", app.base))
                .bearer_auth(&key.secret)
                .send()
                .await
                .is_ok_and(|r| r.headers().contains_key("ratelimit-limit"))
    })
    .await;
    let resumed_in = back.elapsed();
    phase.store(BACK, Ordering::SeqCst);
    eventually(WAIT, "the limit bites again", || async {
        count(BACK, "429 rate_limited rate-headers=true") > 0
    })
    .await;
    stop.cancel();
    for c in clients {
        c.await.unwrap();
    }

    let seen = seen.lock().unwrap().clone();
    let median = |p: usize| {
        let mut t = took.lock().unwrap()[p].clone();
        t.sort();
        t.get(t.len() / 2).copied().unwrap_or_default()
    };
    let labels = |p: usize| seen[p].keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        labels(BEFORE),
        [
            "200 - rate-headers=true",
            "429 rate_limited rate-headers=true"
        ],
        "{seen:?}"
    );
    let during = match policy {
        RedisErrorPolicy::FailOpen => "200 - rate-headers=false",
        RedisErrorPolicy::FailClosed => "503 rate_limiter_unavailable rate-headers=false",
    };
    assert_eq!(labels(DOWN), [during], "{seen:?}");
    assert!(
        labels(BACK)
            .iter()
            .all(|l| l.ends_with("rate-headers=true") && !l.starts_with('5')),
        "{seen:?}"
    );
    assert!(!app.gateway().limits.backend_down());
    println!(
        "redis drill ({policy:?}): down {down_for:?}, limiting resumed {resumed_in:?} after \
         Redis was back; answers before/down/after: {seen:?}; median read before/down/after \
         {:?} / {:?} / {:?}",
        median(BEFORE),
        median(DOWN),
        median(BACK)
    );
}

/// The receiver is unreachable while tasks finish and their events fall due, then comes
/// back: every attempt kept its scheduled wait after the one before, the failed ones are
/// recorded, and every event arrives, each task's in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_outage_keeps_deliveries_on_schedule_and_delivers_every_event_after() {
    let schedule = [0.0, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 60.0];
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Kkiai).await;
    sim.set_script(Script::default());
    let receiver = Receiver::start().await;
    let proxy = TcpProxy::start(receiver.base.trim_start_matches("http://").parse().unwrap()).await;
    let mut cfg = config(&db, vec![("up".into(), sim.provider_config(MODELS, 0.1))]);
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.retry_schedule_secs = schedule.to_vec();
    cfg.webhooks.tick_ms = 50;
    cfg.webhooks.request_timeout_secs = 1.0;
    cfg.webhooks.lease_secs = 3;
    let app = TestApp::start(cfg).await;
    let callback = format!("http://{}/hook", proxy.addr);

    proxy.cut();
    let cut = Instant::now();
    let jobs = 40;
    let load = CreateLoad::start(&app.base, &app.key, jobs, 8, move |job| {
        let mut body = task_body(job);
        body["callback_url"] = json!(callback);
        body["callback_events"] = json!(["in_progress", "completed"]);
        body
    });
    let answers = load.finish(WAIT).await;
    assert_eq!(answers.accepted.len(), jobs, "{answers:?}");
    wait_all_completed(&app).await;
    // Each task's first event has failed three times before the receiver returns (the
    // next one waits for it).
    let pool = app.gateway().store.pool().clone();
    eventually(WAIT, "every first event failed three times", || async {
        let fewest: i64 = sqlx::query_scalar(
            "SELECT CAST(COALESCE(MIN(attempts), 0) AS BIGINT) FROM webhook_events \
             WHERE type = 'video.generation.in_progress'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        fewest >= 3
    })
    .await;
    assert!(receiver.received().is_empty());
    proxy.restore();
    let restored_at = now_ms();
    let back = Instant::now();
    let events = 2 * jobs;
    eventually(WAIT, "every event delivered", || async {
        let delivered: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_events WHERE state = 'delivered'")
                .fetch_one(&pool)
                .await
                .unwrap();
        delivered as usize == events
    })
    .await;
    let all_in = back.elapsed();

    let attempts: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT event_id, at, status_code FROM webhook_attempts ORDER BY event_id, at",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut by_event: BTreeMap<&str, Vec<(i64, Option<i64>)>> = BTreeMap::new();
    for (event, at, status) in &attempts {
        by_event.entry(event).or_default().push((*at, *status));
    }
    assert_eq!(by_event.len(), events);
    for (event, tries) in &by_event {
        let (last, failed) = tries.split_last().unwrap();
        assert_eq!(last.1, Some(200), "{event}: {tries:?}");
        assert!(last.0 >= restored_at, "{event}: delivered after the outage");
        assert!(failed.iter().all(|t| t.1.is_none()), "{event}: {tries:?}");
        for (i, pair) in tries.windows(2).enumerate() {
            let waited = pair[1].0 - pair[0].0;
            // `at` is when an attempt ended; the wait runs from there, so the gap between
            // two ends is at least the scheduled wait (less a millisecond of rounding).
            let due = (schedule[i + 1] * 1000.0) as i64 - 1;
            assert!(waited >= due, "{event}: attempt {} came {waited} ms after the one before, the schedule says {due} ms", i + 2);
        }
    }
    let received = receiver.received();
    let mut per_task: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &received {
        let e = r.json();
        per_task
            .entry(e["data"]["id"].as_str().unwrap().to_string())
            .or_default()
            .push(e["type"].as_str().unwrap().to_string());
    }
    assert_eq!(per_task.len(), jobs);
    for (task, kinds) in &per_task {
        assert_eq!(
            kinds,
            &["video.generation.in_progress", "video.generation.completed"],
            "{task}"
        );
    }
    let most = by_event.values().map(Vec::len).max().unwrap();
    println!(
        "webhook drill: {jobs} tasks, {events} events; receiver down {:?}; all delivered \
         {all_in:?} after it returned; up to {most} attempts per event",
        back - cut
    );
}
