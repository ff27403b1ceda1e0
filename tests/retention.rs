//! Retention on both stores: the janitor's step deletes final webhook events (delivered,
//! failed, disabled) older than `retention.webhook_events_days` with their attempts,
//! keeps pending and recent ones, and deletes expired console sessions.

mod support;

use omnigate::config::SandboxMode;
use omnigate::store::now_ms;
use serde_json::json;
use sqlx::AnyPool;
use support::app::{config, Db, TestApp, TestDb};

const DAY_MS: i64 = 86_400_000;

/// One event of `task_id` in `state`, last due `age_days` ago, with two attempts.
async fn event(pool: &AnyPool, task_id: &str, seq: i64, state: &str, age_days: i64) -> String {
    let id = format!("msg_{}", uuid::Uuid::new_v4().simple());
    let due = now_ms() - age_days * DAY_MS;
    sqlx::query(
        "INSERT INTO webhook_events (id, task_id, api_key_id, seq, type, url, progress, \
         created_at, state, attempts, next_attempt_at) \
         VALUES ($1, $2, 'key_x', $3, 'video.generation.completed', 'https://hook.example/h', \
         100, $4, $5, 2, $4)",
    )
    .bind(&id)
    .bind(task_id)
    .bind(seq)
    .bind(due)
    .bind(state)
    .execute(pool)
    .await
    .unwrap();
    for at in [due - 1000, due] {
        sqlx::query(
            "INSERT INTO webhook_attempts (event_id, at, status_code, latency_ms) \
             VALUES ($1, $2, 500, 12)",
        )
        .bind(&id)
        .bind(at)
        .execute(pool)
        .await
        .unwrap();
    }
    id
}

async fn count(pool: &AnyPool, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql)
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn session(pool: &AnyPool, expires_in_ms: i64) -> String {
    let hash = uuid::Uuid::new_v4().simple().to_string();
    sqlx::query(
        "INSERT INTO console_sessions (token_hash, api_key_id, csrf_token, created_at, expires_at) \
         VALUES ($1, NULL, 'csrf', $2, $3)",
    )
    .bind(&hash)
    .bind(now_ms() - DAY_MS)
    .bind(now_ms() + expires_in_ms)
    .execute(pool)
    .await
    .unwrap();
    hash
}

async fn old_final_webhook_events_and_expired_sessions_are_deleted_and_the_rest_kept(db: Db) {
    let db = TestDb::new(db).await;
    let mut cfg = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    cfg.retention.webhook_events_days = 7;
    let app = TestApp::start(cfg).await;
    let task = app
        .create(
            &json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk",
                        "aspect_ratio": "16:9", "duration": 5}),
        )
        .await;
    let task_id = task["id"].as_str().unwrap();
    let pool = app.gateway().store.pool().clone();

    let mut gone = Vec::new();
    for (seq, state) in [(1, "delivered"), (2, "failed"), (3, "disabled")] {
        gone.push(event(&pool, task_id, seq, state, 8).await);
    }
    let kept = [
        event(&pool, task_id, 4, "pending", 30).await, // old but still being delivered
        event(&pool, task_id, 5, "delivered", 6).await, // final but recent
        event(&pool, task_id, 6, "failed", 1).await,
    ];
    let expired = session(&pool, -1000).await;
    let live = session(&pool, DAY_MS).await;

    omnigate::workers::janitor_once(app.gateway())
        .await
        .unwrap();

    let events = "SELECT COUNT(*) FROM webhook_events WHERE id = $1";
    let attempts = "SELECT COUNT(*) FROM webhook_attempts WHERE event_id = $1";
    for id in &gone {
        assert_eq!(count(&pool, events, id).await, 0, "{id} deleted");
        assert_eq!(
            count(&pool, attempts, id).await,
            0,
            "{id}'s attempts deleted"
        );
    }
    for id in &kept {
        assert_eq!(count(&pool, events, id).await, 1, "{id} kept");
        assert_eq!(count(&pool, attempts, id).await, 2, "{id}'s attempts kept");
    }
    let sessions = "SELECT COUNT(*) FROM console_sessions WHERE token_hash = $1";
    assert_eq!(count(&pool, sessions, &expired).await, 0, "expired session");
    assert_eq!(count(&pool, sessions, &live).await, 1, "live session");
}

/// More final events than one batch holds: one batch deletes at most `BATCH`, and the
/// next one the rest.
async fn a_backlog_larger_than_a_batch_is_deleted_in_batches(db: Db) {
    let db = TestDb::new(db).await;
    let mut cfg = config(&db, vec![]);
    cfg.sandbox.enabled = SandboxMode::Always;
    // The gateway's own janitor keeps events, so only the batches below delete them.
    cfg.retention.webhook_events_days = 0;
    let app = TestApp::start(cfg).await;
    let task = app
        .create(
            &json!({"model": "kling-v3-omni", "prompt": "a lighthouse at dusk",
                        "aspect_ratio": "16:9", "duration": 5}),
        )
        .await;
    let task_id = task["id"].as_str().unwrap();
    let pool = app.gateway().store.pool().clone();
    let n = i64::from(omnigate::workers::retention::BATCH) + 20;
    for seq in 0..n {
        event(&pool, task_id, seq, "delivered", 2).await;
    }
    let store = &app.gateway().store;
    let batch = omnigate::workers::retention::BATCH;
    let before = omnigate::store::now_ms();
    let first = store.prune_webhook_events(before, batch).await.unwrap();
    assert_eq!(first, u64::from(batch), "a batch is bounded");
    let second = store.prune_webhook_events(before, batch).await.unwrap();
    assert_eq!(first + second, n as u64);
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}

on_both_stores!(
    old_final_webhook_events_and_expired_sessions_are_deleted_and_the_rest_kept,
    a_backlog_larger_than_a_batch_is_deleted_in_batches,
);
