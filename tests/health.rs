//! Provider health on a real database (PostgreSQL and SQLite): the circuit breaker's
//! transitions, the single half-open probe shared by two gateway processes, the window
//! statistics, and the admin view over HTTP.

mod support;

use std::time::Duration;

use omnigate::config::{HealthConfig, SandboxMode, Secret};
use omnigate::health::{Circuit, Health, Phase, ProviderReport};
use omnigate::providers::ErrorKind;
use omnigate::store::Store;
use reqwest::StatusCode;
use serde_json::json;
use support::app::{config, Db, TestApp, TestDb};

const COOLDOWN: Duration = Duration::from_millis(300);

/// Three failures in a row, or half of at least six outcomes, open the circuit for 0.3 s.
fn rules() -> HealthConfig {
    HealthConfig {
        consecutive_failures: 3,
        failure_rate: 0.5,
        min_samples: 6,
        window_secs: 60,
        cooldown_secs: COOLDOWN.as_secs_f64(),
    }
}

async fn connect(db: &TestDb) -> Store {
    Store::connect(&db.url, 5).await.expect("store connects")
}

async fn health(db: &TestDb) -> Health {
    Health::new(connect(db).await, rules())
}

async fn outcome(h: &Health, provider: &str, phase: Phase, outcome: Result<(), ErrorKind>) {
    h.record(provider, phase, outcome, None, Duration::from_millis(10))
        .await
        .expect("outcome recorded");
}

async fn fail(h: &Health, provider: &str) {
    outcome(h, provider, Phase::Submit, Err(ErrorKind::Retryable)).await
}

async fn succeed(h: &Health, provider: &str) {
    outcome(h, provider, Phase::Submit, Ok(())).await
}

async fn circuit(h: &Health, provider: &str) -> Circuit {
    h.snapshot()
        .await
        .expect("snapshot")
        .get(provider)
        .map_or(Circuit::Closed, |p| p.circuit)
}

async fn report(h: &Health, provider: &str) -> ProviderReport {
    let mut reports = h.report(&[provider.to_string()]).await.expect("report");
    reports.pop().expect("one report per name")
}

/// Opens `provider`'s circuit and waits out the cool-down.
async fn half_open(h: &Health, provider: &str) {
    for _ in 0..3 {
        fail(h, provider).await;
    }
    assert_eq!(circuit(h, provider).await, Circuit::Open);
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert_eq!(circuit(h, provider).await, Circuit::HalfOpen);
}

async fn consecutive_failures_open_the_circuit(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    fail(&h, "up").await;
    fail(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Closed);
    assert!(h.try_claim_probe("up").await.unwrap());
    fail(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Open);
    assert!(!h.try_claim_probe("up").await.unwrap());
    let r = report(&h, "up").await;
    assert_eq!(r.circuit, "open");
    assert_eq!(r.consecutive_failures, 3);
    assert!(r.opened_until.is_some());
}

async fn refusals_that_are_the_requests_fault_count_as_the_provider_answering(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    for kind in [
        ErrorKind::BadRequest,
        ErrorKind::ContentPolicy,
        ErrorKind::NotFound,
    ] {
        for _ in 0..3 {
            outcome(&h, "up", Phase::Submit, Err(kind)).await;
        }
    }
    assert_eq!(circuit(&h, "up").await, Circuit::Closed);
    // ...and they end a run of real failures like any answer does.
    fail(&h, "up").await;
    fail(&h, "up").await;
    outcome(&h, "up", Phase::Submit, Err(ErrorKind::BadRequest)).await;
    fail(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Closed);
    let r = report(&h, "up").await;
    assert_eq!(r.samples, 13);
    assert_eq!(r.success_rate, Some(10.0 / 13.0));
    assert_eq!(r.consecutive_failures, 1);
}

async fn a_failure_rate_opens_the_circuit_once_the_window_has_enough_samples(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    for _ in 0..2 {
        succeed(&h, "up").await;
        fail(&h, "up").await;
    }
    succeed(&h, "up").await;
    assert_eq!(
        circuit(&h, "up").await,
        Circuit::Closed,
        "five samples are fewer than min_samples"
    );
    fail(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Open, "3 of 6 failed");
}

async fn failing_submits_open_the_circuit_even_while_polls_of_older_tasks_succeed(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    for _ in 0..3 {
        outcome(&h, "up", Phase::Poll, Ok(())).await;
        outcome(&h, "up", Phase::Submit, Err(ErrorKind::Billing)).await;
        outcome(&h, "up", Phase::Poll, Ok(())).await;
    }
    assert_eq!(circuit(&h, "up").await, Circuit::Open);
    outcome(&h, "up", Phase::Poll, Ok(())).await;
    assert_eq!(
        circuit(&h, "up").await,
        Circuit::Open,
        "a poll does not show that submits work again"
    );
}

async fn an_open_circuit_refuses_probes_until_its_cool_down_has_passed(db: Db) {
    let db = TestDb::new(db).await;
    // A longer cool-down than the other tests': the checks made while it runs take several
    // round trips, which on a loaded machine can outlast 0.3 s.
    let cooldown = Duration::from_secs(3);
    let h = Health::new(
        connect(&db).await,
        HealthConfig {
            cooldown_secs: cooldown.as_secs_f64(),
            ..rules()
        },
    );
    for _ in 0..3 {
        fail(&h, "up").await;
    }
    tokio::time::sleep(COOLDOWN / 3).await;
    assert_eq!(circuit(&h, "up").await, Circuit::Open);
    assert!(!h.try_claim_probe("up").await.unwrap());
    // Late failures of calls sent before it opened do not extend the cool-down.
    let until = report(&h, "up").await.opened_until;
    fail(&h, "up").await;
    assert_eq!(report(&h, "up").await.opened_until, until);
    tokio::time::sleep(cooldown).await;
    assert_eq!(circuit(&h, "up").await, Circuit::HalfOpen);
    assert_eq!(report(&h, "up").await.circuit, "half_open");
}

async fn two_processes_racing_for_the_half_open_probe_get_exactly_one(db: Db) {
    let db = TestDb::new(db).await;
    let (one, two) = (health(&db).await, health(&db).await);
    half_open(&one, "up").await;
    let (a, b) = tokio::join!(one.try_claim_probe("up"), two.try_claim_probe("up"));
    assert!(
        a.unwrap() ^ b.unwrap(),
        "exactly one process claims the probe"
    );
    assert!(!one.try_claim_probe("up").await.unwrap());
    assert!(!two.try_claim_probe("up").await.unwrap());
    assert_eq!(circuit(&two, "up").await, Circuit::HalfOpen);
}

async fn concurrent_failures_from_two_processes_are_each_counted_once(db: Db) {
    let db = TestDb::new(db).await;
    let patient = HealthConfig {
        consecutive_failures: 1000,
        min_samples: 1000,
        ..rules()
    };
    let one = Health::new(connect(&db).await, patient.clone());
    let two = Health::new(connect(&db).await, patient);
    let burst = |h: Health| async move {
        let calls = (0..10).map(|_| fail(&h, "up"));
        futures::future::join_all(calls).await;
    };
    tokio::join!(
        tokio::spawn(burst(one.clone())),
        tokio::spawn(burst(two.clone()))
    )
    .0
    .unwrap();
    // The breaker row counts every failure at once; the window's samples are each process's
    // counters, which `report` sees once the other process has flushed them.
    two.flush().await.unwrap();
    let r = report(&one, "up").await;
    assert_eq!((r.consecutive_failures, r.samples), (20, 20));
}

async fn a_successful_probe_closes_the_circuit(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    half_open(&h, "up").await;
    assert!(h.try_claim_probe("up").await.unwrap());
    succeed(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Closed);
    assert!(h.try_claim_probe("up").await.unwrap());
    let r = report(&h, "up").await;
    assert_eq!((r.consecutive_failures, r.opened_until), (0, None));
}

async fn failures_from_before_a_close_do_not_reopen_the_circuit(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    // Six failures in the window: three that open the circuit, three late ones.
    for _ in 0..6 {
        fail(&h, "up").await;
    }
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert!(h.try_claim_probe("up").await.unwrap());
    succeed(&h, "up").await;
    fail(&h, "up").await;
    assert_eq!(
        circuit(&h, "up").await,
        Circuit::Closed,
        "the failure rate counts from the close, not over the whole window"
    );
}

async fn a_failed_probe_opens_the_circuit_for_another_cool_down(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    half_open(&h, "up").await;
    assert!(h.try_claim_probe("up").await.unwrap());
    fail(&h, "up").await;
    assert_eq!(circuit(&h, "up").await, Circuit::Open);
    assert!(!h.try_claim_probe("up").await.unwrap());
    tokio::time::sleep(COOLDOWN + Duration::from_millis(50)).await;
    assert_eq!(circuit(&h, "up").await, Circuit::HalfOpen);
    assert!(
        h.try_claim_probe("up").await.unwrap(),
        "the failed probe's claim is released with the new cool-down"
    );
}

async fn snapshot_gives_each_provider_its_window_success_rate(db: Db) {
    let db = TestDb::new(db).await;
    let h = health(&db).await;
    for _ in 0..3 {
        succeed(&h, "steady").await;
    }
    fail(&h, "steady").await;
    outcome(&h, "flaky", Phase::Poll, Err(ErrorKind::Timeout)).await;
    let snap = h.snapshot().await.unwrap();
    assert_eq!(snap["steady"].success_rate, Some(0.75));
    assert_eq!(snap["steady"].circuit, Circuit::Closed);
    assert_eq!(snap["flaky"].success_rate, Some(0.0));
    assert!(!snap.contains_key("unseen"));
}

async fn report_shows_latency_percentiles_in_flight_tasks_and_the_last_error(db: Db) {
    let db = TestDb::new(db).await;
    let store = connect(&db).await;
    let h = Health::new(store.clone(), rules());
    for i in 1..=19 {
        let latency = Duration::from_millis(i * 10);
        h.record("up", Phase::Submit, Ok(()), None, latency)
            .await
            .unwrap();
    }
    let slow = Duration::from_millis(200);
    let failure = Err(ErrorKind::Retryable);
    h.record("up", Phase::Submit, failure, Some("502 Bad Gateway"), slow)
        .await
        .unwrap();
    // Poll latencies are not submit latencies.
    let poll = Duration::from_secs(5);
    h.record("up", Phase::Poll, Ok(()), None, poll)
        .await
        .unwrap();
    for (provider, state) in [
        ("up", "submitting"),
        ("up", "queued"),
        ("up", "in_progress"),
        ("up", "completed"),
        ("up", "failed"),
        ("other", "queued"),
    ] {
        insert_task(&store, provider, state).await;
    }

    let r = report(&h, "up").await;
    assert_eq!(r.provider, "up");
    assert_eq!(r.circuit, "closed");
    assert_eq!(
        (r.submit_latency_ms.p50, r.submit_latency_ms.p95),
        (Some(100), Some(190))
    );
    assert_eq!(r.samples, 21);
    assert_eq!(r.success_rate, Some(20.0 / 21.0));
    assert_eq!(r.in_flight_tasks, 3);
    let last = r.last_error.expect("last error");
    assert_eq!(last.code, "upstream_unavailable");
    assert_eq!(last.message.as_deref(), Some("502 Bad Gateway"));
    assert!(last.at > 0);

    let unseen = report(&h, "unseen").await;
    assert_eq!(unseen.circuit, "closed");
    assert_eq!((unseen.samples, unseen.in_flight_tasks), (0, 0));
    assert_eq!(unseen.success_rate, None);
    assert_eq!(unseen.submit_latency_ms.p50, None);
    assert!(unseen.last_error.is_none());
}

async fn pruning_removes_outcomes_older_than_the_window(db: Db) {
    let db = TestDb::new(db).await;
    let cfg = HealthConfig {
        window_secs: 3,
        ..rules()
    };
    let h = Health::new(connect(&db).await, cfg);
    succeed(&h, "up").await;
    assert_eq!(h.prune().await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(3100)).await;
    assert!(h.prune().await.unwrap() >= 1);
    assert_eq!(report(&h, "up").await.samples, 0);
}

async fn admin_providers_needs_the_admin_token_and_lists_every_provider(db: Db) {
    let db = TestDb::new(db).await;
    let mut cfg = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    let admin = "health-admin-token-0123456789abcdef";
    cfg.admin.token = Some(Secret::new(admin));
    let app = TestApp::start(cfg).await;
    let url = format!("{}/admin/providers", app.base);

    let anonymous = app.client.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let (status, body) = app.get_as(&app.key, "/admin/providers").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "an API key is not the admin token"
    );
    assert_eq!(body["error"]["code"], "invalid_admin_token");
    assert_eq!(body["error"]["message"], "invalid admin token");

    let (status, body) = app.get_as(admin, "/admin/providers").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["object"], "list");
    let names: Vec<&str> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["provider"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["sandbox-apimodels", "sandbox-kling", "sandbox-modellix"]
    );
    let first = &body["data"][0];
    assert_eq!(first["circuit"], "closed");
    assert_eq!(
        first["submit_latency_ms"],
        json!({"p50": null, "p95": null})
    );
    assert!(first.get("in_flight_tasks").is_some() && first.get("last_error").is_some());
}

/// A bare task row in `state`: only the columns the in-flight count reads matter here.
async fn insert_task(store: &Store, provider: &str, state: &str) {
    let key = store.create_api_key("health-test").await.unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, api_key_id, model, request, state, provider, created_at, updated_at, next_poll_at) \
         VALUES ($1, $2, 'kling-v3-omni', '{}', $3, $4, 0, 0, 0)",
    )
    .bind(format!("vgt_{}", uuid::Uuid::new_v4().simple()))
    .bind(key.id)
    .bind(state)
    .bind(provider)
    .execute(store.pool())
    .await
    .unwrap();
}

on_both_stores!(
    consecutive_failures_open_the_circuit,
    refusals_that_are_the_requests_fault_count_as_the_provider_answering,
    a_failure_rate_opens_the_circuit_once_the_window_has_enough_samples,
    failing_submits_open_the_circuit_even_while_polls_of_older_tasks_succeed,
    an_open_circuit_refuses_probes_until_its_cool_down_has_passed,
    two_processes_racing_for_the_half_open_probe_get_exactly_one,
    concurrent_failures_from_two_processes_are_each_counted_once,
    a_successful_probe_closes_the_circuit,
    failures_from_before_a_close_do_not_reopen_the_circuit,
    a_failed_probe_opens_the_circuit_for_another_cool_down,
    snapshot_gives_each_provider_its_window_success_rate,
    report_shows_latency_percentiles_in_flight_tasks_and_the_last_error,
    pruning_removes_outcomes_older_than_the_window,
    admin_providers_needs_the_admin_token_and_lists_every_provider,
);
