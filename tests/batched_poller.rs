//! The batched poller: tasks are claimed, polled and rescheduled many at a time, and still
//! no task is queried twice within its poll interval, by one gateway or by two sharing a
//! database (each query's time counted on the simulator).

mod support;

use std::time::{Duration, Instant};

use omnigate::config::{Config, ProviderConfig};
use omnigate::domain::Model;
use support::app::{config, Db, TestApp, TestDb};
use support::fixtures::{plain, succeeds_after};
use support::sim::{Script, Sim, SimDialect};

const INTERVAL_MS: u64 = 1_000;
/// More tasks than one claim takes, so that every round is several batches.
const TASKS: usize = 24;
/// Queries of each task to wait for: the first moves it to in_progress (a per-task
/// write), the later ones find it still running (the batch write).
const QUERIES: usize = 4;

/// Tasks that stay in progress, their progress rising (Anyfast reports it), for far
/// longer than a test.
fn long_running() -> Script {
    succeeds_after(1, 50)
}

fn provider(sim: &Sim, base_url: &str) -> ProviderConfig {
    let mut p = sim.provider_config(&[Model::KlingV3Omni], 0.1);
    p.poll_interval_secs = INTERVAL_MS as f64 / 1000.0;
    p.base_url = base_url.into();
    p
}

/// Small claims and few polls at once, so that batches overlap and interleave.
fn batched(db: &TestDb, sim: &Sim, base_url: &str) -> Config {
    let mut cfg = config(db, vec![("sim".into(), provider(sim, base_url))]);
    cfg.poller.poll_batch_size = 5;
    cfg.poller.poll_concurrency = 3;
    cfg
}

/// Waits until every one of `tasks` tasks was queried at least `QUERIES` times; returns
/// each task's query times.
async fn queried_enough(sim: &Sim, tasks: usize) -> Vec<(String, Vec<u64>)> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = sim.query_times();
        if seen.len() >= tasks && seen.iter().all(|(_, t)| t.len() >= QUERIES) {
            return seen;
        }
        let counts: Vec<usize> = seen.iter().map(|(_, t)| t.len()).collect();
        assert!(
            Instant::now() < deadline,
            "not every task was queried {QUERIES} times within 60 s: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_never_twice_within_an_interval(seen: &[(String, Vec<u64>)]) {
    for (id, times) in seen {
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= INTERVAL_MS,
                "task {id} was queried twice within {INTERVAL_MS} ms: {times:?}"
            );
        }
    }
}

/// The batch write recorded what the polls saw: every task in progress, with the
/// progress of a poll after the first.
async fn assert_progress_recorded(app: &TestApp, ids: &[String]) {
    for id in ids {
        let (_, task) = app.get(&format!("/v1/video/generations/{id}")).await;
        assert_eq!(task["status"], "in_progress", "{task}");
        assert!(task["progress"].as_i64().unwrap_or(0) > 0, "{task}");
    }
}

async fn one_gateway_polls_each_task_at_most_once_per_interval(db: Db) {
    let db = TestDb::new(db).await;
    let sim = Sim::start(SimDialect::Anyfast).await;
    sim.set_script(long_running());
    let app = TestApp::start(batched(&db, &sim, &sim.base_url)).await;
    let mut ids = Vec::new();
    for _ in 0..TASKS {
        ids.push(
            app.create(&plain()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let seen = queried_enough(&sim, TASKS).await;
    assert_never_twice_within_an_interval(&seen);
    assert_progress_recorded(&app, &ids).await;
}
on_both_stores!(one_gateway_polls_each_task_at_most_once_per_interval);

/// Two gateways on one PostgreSQL database, each calling the simulator by another host
/// name so that the simulator can tell whose query it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_sharing_a_database_never_both_poll_a_task_in_one_interval() {
    let db = TestDb::new(Db::Postgres).await;
    let sim = Sim::start(SimDialect::Anyfast).await;
    sim.set_script(long_running());
    let port = sim.base_url.rsplit(':').next().unwrap().to_string();
    let a = TestApp::start(batched(&db, &sim, &sim.base_url)).await;
    let b_url = format!("http://localhost:{port}");
    let b = TestApp::restart_with(batched(&db, &sim, &b_url), a.key.clone()).await;
    let mut ids = Vec::new();
    for i in 0..TASKS {
        let via = if i % 2 == 0 { &a } else { &b };
        ids.push(
            via.create(&plain()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let seen = queried_enough(&sim, TASKS).await;
    assert_never_twice_within_an_interval(&seen);
    assert_progress_recorded(&a, &ids).await;
    let hosts = sim.query_header("host");
    let by = |host: &str| hosts.iter().filter(|h| h.as_deref() == Some(host)).count();
    let (from_a, from_b) = (
        by(&format!("127.0.0.1:{port}")),
        by(&format!("localhost:{port}")),
    );
    assert!(
        from_a > 0 && from_b > 0,
        "both gateways polled: {from_a} queries by one, {from_b} by the other"
    );
    assert_eq!(from_a + from_b, hosts.len(), "{hosts:?}");
}
