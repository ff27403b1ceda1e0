//! Health statistics and API keys held in memory stay faithful to the database across
//! gateway processes: two real gateways on one database see the same counts, the same
//! circuit and the same revocation as the stored rows say.

mod support;

use std::time::Duration;

use omnigate::config::HealthConfig;
use omnigate::domain::Model;
use omnigate::health::{Circuit, Health, Phase};
use omnigate::providers::ErrorKind;
use omnigate::store::{Store, KEY_CACHE_TTL};
use sqlx::Row;
use support::app::{config, Db, TestApp, TestDb};
use support::sim::{Sim, SimDialect};

/// Only the failure rate can open the circuit: half of at least ten outcomes.
fn rate_only() -> HealthConfig {
    HealthConfig {
        consecutive_failures: 1000,
        failure_rate: 0.5,
        min_samples: 10,
        window_secs: 60,
        cooldown_secs: 30.0,
    }
}

async fn record(h: &Health, outcome: Result<(), ErrorKind>, n: usize) {
    for _ in 0..n {
        h.record("up", Phase::Submit, outcome, None, Duration::from_millis(5))
            .await
            .unwrap();
    }
}

async fn circuit(h: &Health) -> (Circuit, Option<f64>) {
    let snap = h.snapshot().await.unwrap();
    let p = snap.get("up").expect("up has history");
    (p.circuit, p.success_rate)
}

/// (ok, failed) of `up` as stored, summed over every process's buckets.
async fn stored_counts(store: &Store) -> (i64, i64) {
    let row = sqlx::query(
        "SELECT CAST(COALESCE(SUM(ok), 0) AS BIGINT) AS ok, \
         CAST(COALESCE(SUM(failed), 0) AS BIGINT) AS failed \
         FROM provider_health_buckets WHERE provider = 'up'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    (row.get("ok"), row.get("failed"))
}

async fn stored_circuit(store: &Store) -> String {
    sqlx::query_scalar("SELECT state FROM provider_circuits WHERE provider = 'up'")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

/// A gateway config with one provider named `up` (the outcomes are recorded directly).
async fn up(db: &TestDb) -> (omnigate::config::Config, Sim) {
    let sim = Sim::start(SimDialect::Apimodels).await;
    let cfg = config(
        db,
        vec![("up".into(), sim.provider_config(&[Model::KlingV3Omni], 0.1))],
    );
    (cfg, sim)
}

async fn two_gateways_count_outcomes_together_and_agree_with_the_stored_rows(db: Db) {
    let db = TestDb::new(db).await;
    let (mut cfg, _sim) = up(&db).await;
    cfg.health = rate_only();
    let one = TestApp::start(cfg.clone()).await;
    let two = TestApp::restart_with(cfg, one.key.clone()).await;
    let (a, b) = (&one.gateway().health, &two.gateway().health);
    let store = &one.gateway().store;

    record(a, Ok(()), 6).await;
    a.flush().await.unwrap();
    b.sync().await.unwrap();
    // Two sees one's six successes: five failures of its own are 5 of 11, under half...
    record(b, Err(ErrorKind::Retryable), 5).await;
    assert_eq!(circuit(b).await.0, Circuit::Closed);
    // ...and the sixth makes 6 of 12, which opens the circuit for both.
    record(b, Err(ErrorKind::Retryable), 1).await;
    assert_eq!(stored_circuit(store).await, "open");
    // Both write their counters, then both read everyone's.
    for h in [a, b] {
        h.flush().await.unwrap();
    }
    for h in [a, b] {
        h.sync().await.unwrap();
    }

    let (ok, failed) = stored_counts(store).await;
    assert_eq!((ok, failed), (6, 6));
    let stored_rate = ok as f64 / (ok + failed) as f64;
    let stored_decision = if ok + failed >= 10 && failed as f64 >= 0.5 * (ok + failed) as f64 {
        Circuit::Open
    } else {
        Circuit::Closed
    };
    for h in [a, b] {
        assert_eq!(circuit(h).await, (stored_decision, Some(stored_rate)));
        let report = h.report(&["up".into()]).await.unwrap().remove(0);
        assert_eq!(report.samples, ok + failed);
        assert_eq!(report.circuit, "open");
    }
}

async fn counters_are_written_once_however_often_they_are_flushed(db: Db) {
    let db = TestDb::new(db).await;
    let store = Store::connect(&db.url, 2).await.unwrap();
    let h = Health::new(store.clone(), rate_only());
    record(&h, Ok(()), 3).await;
    assert_eq!(stored_counts(&store).await, (0, 0), "nothing written yet");
    h.flush().await.unwrap();
    h.flush().await.unwrap();
    record(&h, Ok(()), 2).await;
    h.sync().await.unwrap();
    h.sync().await.unwrap();
    assert_eq!(stored_counts(&store).await, (5, 0));
}

async fn a_gateway_flushes_its_counters_when_it_shuts_down(db: Db) {
    let db = TestDb::new(db).await;
    let (cfg, _sim) = up(&db).await;
    let mut one = TestApp::start(cfg).await;
    let store = one.gateway().store.clone();
    record(&one.gateway().health, Err(ErrorKind::BadRequest), 4).await;
    one.app.take().unwrap().shutdown().await;
    assert_eq!(stored_counts(&store).await, (4, 0));
}

async fn a_revoked_key_stops_working_on_every_process_within_the_cache_ttl(db: Db) {
    let db = TestDb::new(db).await;
    let (one, two) = (
        Store::connect(&db.url, 2).await.unwrap(),
        Store::connect(&db.url, 2).await.unwrap(),
    );
    let key = one.create_api_key("soon-revoked").await.unwrap();
    assert!(one.authenticate(&key.secret).await.unwrap().is_some());
    assert!(two.authenticate(&key.secret).await.unwrap().is_some());
    sqlx::query("UPDATE api_keys SET revoked_at = 1 WHERE id = $1")
        .bind(&key.id)
        .execute(one.pool())
        .await
        .unwrap();
    // Until the TTL runs out the remembered key is trusted without a lookup...
    assert!(one.authenticate(&key.secret).await.unwrap().is_some());
    tokio::time::sleep(KEY_CACHE_TTL + Duration::from_millis(100)).await;
    // ...and after it, neither process accepts it.
    assert!(one.authenticate(&key.secret).await.unwrap().is_none());
    assert!(two.authenticate(&key.secret).await.unwrap().is_none());
}

on_both_stores!(
    two_gateways_count_outcomes_together_and_agree_with_the_stored_rows,
    counters_are_written_once_however_often_they_are_flushed,
    a_gateway_flushes_its_counters_when_it_shuts_down,
    a_revoked_key_stops_working_on_every_process_within_the_cache_ttl,
);
