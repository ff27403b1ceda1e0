//! The crash drill, on PostgreSQL and on SQLite: the real `omnigate` binary under load
//! (many concurrent creates against two provider simulators, every task calling back a
//! webhook receiver) is killed with SIGKILL and started again on the same database, more
//! than once. Afterwards: every job a client sent ended as exactly one task, every task
//! answered is terminal, every event of a finished task reached the receiver, no upstream
//! task was created twice, and no concurrency slot or budget reservation is left held.
//!
//! Scale, from the environment (CI runs the defaults; the benchmark runs it large):
//! - `OMNIGATE_DRILL_TASKS` (200): creates in all;
//! - `OMNIGATE_DRILL_CLIENTS` (16): clients sending them at once;
//! - `OMNIGATE_DRILL_KILLS` (2): times the gateway is killed and restarted under load.
//!
//! e.g. `OMNIGATE_DRILL_TASKS=1000 OMNIGATE_DRILL_CLIENTS=32 OMNIGATE_DRILL_KILLS=3
//! cargo test --test drill_crash -- --nocapture` (the figures are printed at the end).

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use omnigate::domain::Model;
use omnigate::store::{KeyChange, Store};
use serde_json::{json, Value};
use sqlx::Row;
use support::app::{config, Db, TestDb};
use support::drill::{free_port, scale, CreateLoad, GatewayProcess};
use support::receiver::Receiver;
use support::sim::{Script, Sim, SimDialect};

const MODELS: &[Model] = &[Model::KlingV3Omni];
/// Kling's dialect looks a task up by our id after a crash; apimodels cannot, so an
/// interrupted submit there follows `unknown_submit = "fail"`.
const PROVIDERS: [&str; 2] = ["kkiai", "apimodels"];
/// How long the drill may take to settle: past the submit lease of a task whose
/// submitter was killed (request timeout + 30 s), when the reconciler settles it, and
/// longer for a large drill.
fn settle_within(tasks: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(50) * tasks as u32
}

fn body(job: usize, callback: &str) -> Value {
    json!({
        "model": "kling-v3-omni",
        "prompt": format!("drill job {job}"),
        "aspect_ratio": "16:9",
        "duration": 5,
        "callback_url": callback,
        "callback_events": ["in_progress", "completed", "failed"],
        "routing": {"providers": [PROVIDERS[job % PROVIDERS.len()]]},
    })
}

async fn kill_9_under_load_loses_no_task_event_slot_or_reservation(kind: Db) {
    let tasks = scale("OMNIGATE_DRILL_TASKS", 200);
    let clients = scale("OMNIGATE_DRILL_CLIENTS", 16);
    let kills = scale("OMNIGATE_DRILL_KILLS", 2);
    let db = TestDb::new(kind).await;
    let kkiai = Sim::start(SimDialect::Kkiai).await;
    let apimodels = Sim::start(SimDialect::Apimodels).await;
    for sim in [&kkiai, &apimodels] {
        // A few polls each, so that every kill finds tasks at every stage.
        sim.set_script(Script {
            queued_polls: 2,
            processing_polls: 2,
            ..Script::default()
        });
    }
    let receiver = Receiver::start().await;

    let port = free_port();
    let mut cfg = config(
        &db,
        vec![
            ("kkiai".into(), kkiai.provider_config(MODELS, 0.1)),
            ("apimodels".into(), apimodels.provider_config(MODELS, 0.1)),
        ],
    );
    cfg.server.listen = ([127, 0, 0, 1], port).into();
    cfg.database.max_connections = 10;
    cfg.webhooks.allow_private_targets = true;
    cfg.webhooks.tick_ms = 50;
    cfg.webhooks.request_timeout_secs = 1.0;
    cfg.webhooks.lease_secs = 3;
    cfg.webhooks.retry_schedule_secs = vec![0.0, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];
    // The providers call back on the gateway, which is down now and then: the backstop
    // polls must carry those tasks.
    cfg.webhooks.public_base_url = Some(format!("http://127.0.0.1:{port}"));
    cfg.webhooks.callback_poll_interval_secs = 0.5;
    cfg.log.filter = "warn".into();

    let store = Store::connect(&db.url, 2).await.expect("store connects");
    let key = store
        .issue_key(
            "drill",
            &KeyChange {
                max_in_flight: Some(Some(100_000)),
                budget_usd: Some(Some(1_000_000.0)),
                ..KeyChange::default()
            },
        )
        .await
        .expect("issue a key");
    let mut gateway = GatewayProcess::start(cfg).await;

    let callback = receiver.url();
    let load = CreateLoad::start(&gateway.base, &key.key, tasks, clients, move |job| {
        body(job, &callback)
    });
    let mut downtimes = Vec::new();
    for kill in 1..=kills {
        load.wait_accepted(tasks * kill / (kills + 1), settle_within(tasks))
            .await;
        let killed = Instant::now();
        gateway.kill();
        // Clients meet a closed port for a moment, as during a real restart.
        tokio::time::sleep(Duration::from_millis(300)).await;
        gateway.restart().await;
        downtimes.push(killed.elapsed());
    }
    let restarted = Instant::now();
    let answers = load.finish(settle_within(tasks)).await;
    assert!(answers.unclean.is_empty(), "{:?}", answers.unclean);
    assert_eq!(answers.accepted.len(), tasks, "every job was answered");
    assert!(answers.transport_errors > 0, "the clients met the crashes");

    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&db.url).await.unwrap();
    wait_all_terminal(&pool, &gateway, settle_within(tasks)).await;
    let settled_after = restarted.elapsed();
    let rows = task_rows(&pool).await;

    // Each job is one task, whatever crash it crossed: its retries replayed it.
    let answered: BTreeSet<&String> = answers.accepted.values().collect();
    assert_eq!(answered.len(), tasks, "no two jobs share a task");
    assert_eq!(
        rows.len(),
        tasks,
        "no job made a second task: {}\nanswers: {:?} {:?}\n{}",
        jobs_with_more_than_one_task(&pool).await,
        answers.statuses,
        answers.refusal_codes,
        gateway.log_tail()
    );
    for id in answered {
        let row = &rows[id.as_str()];
        assert!(
            row.state == "completed" || row.state == "failed",
            "{id}: {row:?}"
        );
    }
    let completed = rows.values().filter(|r| r.state == "completed").count();
    let unknown: Vec<&TaskRow> = rows
        .values()
        .filter(|r| r.state == "failed")
        .inspect(|r| {
            // The one failure a crash may cause: apimodels cannot be asked whether an
            // interrupted submit reached it, and the policy is never to pay twice.
            assert_eq!(
                (r.provider.as_str(), r.error_code.as_deref()),
                ("apimodels", Some("submit_outcome_unknown")),
                "{r:?}"
            );
        })
        .collect();

    no_upstream_task_twice(&kkiai, &apimodels, &rows, unknown.len());
    let repeats = every_event_delivered(&pool, &receiver, &rows, settle_within(tasks)).await;
    let ids: Vec<&String> = answers.accepted.values().collect();
    every_answered_task_reads_finished(&gateway, &key.key, &ids).await;
    nothing_left_held(&pool, &key.info.id).await;

    println!(
        "crash drill ({kind:?}): {tasks} tasks from {clients} clients, {kills} kill -9 + restart \
         (down {downtimes:?} each); {completed} completed, {} failed as submit_outcome_unknown; \
         all terminal {settled_after:?} after the last restart; {} transport errors and \
         503s {:?} seen by clients; upstream tasks kkiai {} / apimodels {}; {} webhook \
         requests received, {repeats} of them repeats",
        unknown.len(),
        answers.transport_errors,
        answers.refusal_codes,
        kkiai.created_count(),
        apimodels.created_count(),
        receiver.received().len(),
    );
    assert!(gateway.starts() == kills + 1);
}
on_both_stores!(kill_9_under_load_loses_no_task_event_slot_or_reservation);

#[derive(Debug)]
struct TaskRow {
    state: String,
    provider: String,
    provider_task_id: Option<String>,
    error_code: Option<String>,
}

async fn task_rows(pool: &sqlx::AnyPool) -> BTreeMap<String, TaskRow> {
    sqlx::query("SELECT id, state, provider, provider_task_id, error_code FROM tasks")
        .fetch_all(pool)
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get("id"),
                TaskRow {
                    state: r.get("state"),
                    provider: r.get("provider"),
                    provider_task_id: r.get("provider_task_id"),
                    error_code: r.get("error_code"),
                },
            )
        })
        .collect()
}

/// Each job whose prompt is on more than one task, with those tasks' ends and attempts.
async fn jobs_with_more_than_one_task(pool: &sqlx::AnyPool) -> String {
    let mut attempts: BTreeMap<String, Vec<(String, String, Option<String>)>> = BTreeMap::new();
    for a in sqlx::query("SELECT task_id, provider, outcome, error_code FROM task_attempts")
        .fetch_all(pool)
        .await
        .unwrap()
    {
        attempts.entry(a.get("task_id")).or_default().push((
            a.get("provider"),
            a.get("outcome"),
            a.get("error_code"),
        ));
    }
    let tasks = sqlx::query(
        "SELECT id, request, state, error_code, error_message FROM tasks ORDER BY created_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut by_prompt: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for task in tasks {
        let id: String = task.get("id");
        let state: String = task.get("state");
        let code: Option<String> = task.get("error_code");
        let message: Option<String> = task.get("error_message");
        let request: String = task.get("request");
        let prompt = serde_json::from_str::<Value>(&request).unwrap()["prompt"].to_string();
        let tried = attempts.get(&id);
        by_prompt.entry(prompt).or_default().push(format!(
            "{id} {state} {code:?} {message:?} attempts {tried:?}"
        ));
    }
    by_prompt
        .into_iter()
        .filter(|(_, tasks)| tasks.len() > 1)
        .map(|(prompt, tasks)| format!("\n{prompt}:\n  {}", tasks.join("\n  ")))
        .collect()
}

async fn wait_all_terminal(pool: &sqlx::AnyPool, gateway: &GatewayProcess, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let open: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM tasks WHERE state NOT IN ('completed', 'failed')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if open == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{open} tasks still unfinished {within:?} after the load:\n{}",
            gateway.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Counted on the simulators: Kling's dialect carries our task id as `external_task_id`,
/// so each upstream task names its task; apimodels does not, so its count is held against
/// the tasks that recorded an upstream id, plus those whose submit was interrupted.
fn no_upstream_task_twice(
    kkiai: &Sim,
    apimodels: &Sim,
    rows: &BTreeMap<String, TaskRow>,
    interrupted: usize,
) {
    let external: Vec<String> = kkiai
        .created_bodies()
        .iter()
        .map(|b| {
            b["external_task_id"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let distinct: BTreeSet<&String> = external.iter().collect();
    assert_eq!(
        distinct.len(),
        external.len(),
        "a task was created twice at kkiai"
    );
    for id in &external {
        let row = rows
            .get(id)
            .unwrap_or_else(|| panic!("kkiai has {id}, we do not"));
        assert_eq!(row.state, "completed", "{id} reached kkiai: {row:?}");
    }
    let recorded = |provider: &str| {
        rows.values()
            .filter(|r| r.provider == provider && r.provider_task_id.is_some())
            .count()
    };
    assert_eq!(kkiai.created_count(), recorded("kkiai"));
    let made = apimodels.created_count();
    assert!(
        (recorded("apimodels")..=recorded("apimodels") + interrupted).contains(&made),
        "apimodels made {made} tasks for {} recorded and {interrupted} interrupted",
        recorded("apimodels")
    );
    let upstream_ids: Vec<&String> = rows
        .values()
        .filter_map(|r| r.provider_task_id.as_ref())
        .collect();
    let distinct: BTreeSet<&&String> = upstream_ids.iter().collect();
    assert_eq!(
        distinct.len(),
        upstream_ids.len(),
        "two tasks share an upstream task"
    );
    assert!(kkiai.rejections().is_empty(), "{:?}", kkiai.rejections());
    assert!(
        apimodels.rejections().is_empty(),
        "{:?}",
        apimodels.rejections()
    );
}

/// Every event of every task is delivered: the receiver holds each one, a task's in the
/// order they happened (first arrivals), and a terminal event for every task. Answers
/// how many deliveries were repeats (at least once: a crash between a receiver's 2xx and
/// its record sends the event again).
async fn every_event_delivered(
    pool: &sqlx::AnyPool,
    receiver: &Receiver,
    rows: &BTreeMap<String, TaskRow>,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let events = loop {
        let events: Vec<(String, String, String, String)> = sqlx::query_as(
            "SELECT id, task_id, type, state FROM webhook_events ORDER BY task_id, seq",
        )
        .fetch_all(pool)
        .await
        .unwrap();
        if events.iter().all(|e| e.3 == "delivered") {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "events not delivered: {:?}",
            events
                .iter()
                .filter(|e| e.3 != "delivered")
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let received = receiver.received();
    let mut first_arrival: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, r) in received.iter().enumerate() {
        first_arrival.entry(r.header("webhook-id")).or_insert(i);
    }
    let mut last_of_task: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, task, kind, _) in &events {
        let at = *first_arrival
            .get(id.as_str())
            .unwrap_or_else(|| panic!("{kind} of {task} never arrived"));
        if let Some(before) = last_of_task.insert(task, at) {
            assert!(
                before < at,
                "{kind} of {task} arrived before an earlier event"
            );
        }
    }
    let terminal: BTreeSet<String> = received
        .iter()
        .map(|r| r.json())
        .filter(|e| {
            matches!(
                e["type"].as_str(),
                Some("video.generation.completed" | "video.generation.failed")
            )
        })
        .filter_map(|e| e["data"]["id"].as_str().map(str::to_string))
        .collect();
    for id in rows.keys() {
        assert!(terminal.contains(id), "no terminal event for {id}");
    }
    received.len() - first_arrival.len()
}

/// The restarted gateway serves every answered task, finished.
async fn every_answered_task_reads_finished(gateway: &GatewayProcess, key: &str, ids: &[&String]) {
    let client = reqwest::Client::new();
    for id in ids {
        let task: Value = client
            .get(format!("{}/v1/video/generations/{id}", gateway.base))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            matches!(task["status"].as_str(), Some("completed" | "failed")),
            "{task}"
        );
    }
}

/// The key's counters are back to nothing held, and what it spent is what its completed
/// tasks cost.
async fn nothing_left_held(pool: &sqlx::AnyPool, key_id: &str) {
    let in_flight: i64 = sqlx::query_scalar("SELECT in_flight FROM api_keys WHERE id = $1")
        .bind(key_id)
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(in_flight, 0, "a concurrency slot leaked");
    let holding: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tasks WHERE holds_slot <> 0")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(holding, 0, "a finished task still holds a slot");
    let (reserved, spent): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(reserved_micros), 0) AS BIGINT), \
         CAST(COALESCE(SUM(spent_micros), 0) AS BIGINT) FROM key_spend WHERE api_key_id = $1",
    )
    .bind(key_id)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(reserved, 0, "a budget reservation leaked");
    let cost: i64 = sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(cost_final_micros), 0) AS BIGINT) FROM tasks \
         WHERE state = 'completed'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(spent, cost, "spent is what the completed tasks cost");
    assert!(spent > 0);
}
