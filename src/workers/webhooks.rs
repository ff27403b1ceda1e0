//! Delivers client webhook events: claims due events under a lease token (so several
//! gateway processes never send the same attempt), sends each once, and records the
//! attempt and the event's next state with that token.

use std::collections::HashMap;

use futures::StreamExt;
use tracing::Instrument;

use crate::gateway::Gateway;
use crate::store::{lease_token, now_ms, EventNext, WebhookAttempt, WebhookEvent};
use crate::webhooks::{self, Outcome, WebhookClient};

/// Claims the due events and makes one attempt of each. Returns how many it claimed.
pub async fn deliver_once(gw: &Gateway, client: &WebhookClient) -> anyhow::Result<usize> {
    let cfg = &gw.config.webhooks;
    let lease_until = now_ms() + cfg.lease_secs as i64 * 1000;
    let token = lease_token(&gw.instance_id);
    let events = gw
        .store
        .claim_webhook_events(&token, lease_until, cfg.batch_size)
        .await?;
    let n = events.len();
    let secrets = &secrets_of(gw, &events).await?;
    futures::stream::iter(events)
        .for_each_concurrent(cfg.concurrency, |event| {
            let token = &token;
            let span = tracing::info_span!("webhook_delivery", event_id = %event.id, task_id = %event.task_id);
            async move {
                let signing = secrets.get(&event.api_key_id).map_or(&[][..], Vec::as_slice);
                if let Err(e) = deliver_event(gw, client, &event, token, lease_until, signing).await {
                    tracing::error!(event_id = %event.id, task_id = %event.task_id, error = ?e, "webhook attempt failed to record");
                }
            }
            .instrument(span)
        })
        .await;
    Ok(n)
}

async fn deliver_event(
    gw: &Gateway,
    client: &WebhookClient,
    event: &WebhookEvent,
    token: &str,
    lease_until: i64,
    secrets: &[String],
) -> anyhow::Result<()> {
    let cfg = &gw.config.webhooks;
    // An attempt starting now must end inside the claim, or another process could send
    // the same attempt; one that cannot waits for the next claim.
    let needed = (cfg.request_timeout_secs * 1000.0) as i64 + 1000;
    if now_ms() + needed > lease_until {
        gw.store.release_webhook_event(&event.id, token).await?;
        return Ok(());
    }
    let outcome = if gw
        .store
        .webhook_url_disabled(&event.api_key_id, &event.url)
        .await?
    {
        not_sent(
            "not sent: this URL answered 410 Gone to this key before",
            EventNext::Disabled,
        )
    } else {
        match gw.store.task(&event.task_id).await? {
            None => not_sent("not sent: the task no longer exists", EventNext::Failed),
            Some(task) => {
                let shape = gw.store.callback_shape(&task.id).await?;
                let body = serde_json::to_vec(&webhooks::payload_in(&shape, event, &task))?;
                webhooks::attempt(client, cfg, secrets, event, body).await
            }
        }
    };
    let Outcome { attempt, next } = outcome;
    let recorded = gw
        .store
        .finish_webhook_attempt(event, token, attempt.as_ref(), next)
        .await?;
    let status = attempt.as_ref().and_then(|a| a.status_code);
    let error = attempt.as_ref().and_then(|a| a.error.as_deref());
    tracing::info!(event_id = %event.id, task_id = %event.task_id, kind = %event.kind, ?status, ?error, ?next, recorded, "webhook attempt");
    Ok(())
}

/// The signing secrets of every key with an event in `events`, read once per step rather
/// than once per delivery.
async fn secrets_of(
    gw: &Gateway,
    events: &[WebhookEvent],
) -> anyhow::Result<HashMap<String, Vec<String>>> {
    let mut secrets = HashMap::new();
    for event in events {
        if !secrets.contains_key(&event.api_key_id) {
            let of_key = gw.store.webhook_secrets(&event.api_key_id).await?;
            secrets.insert(event.api_key_id.clone(), of_key);
        }
    }
    Ok(secrets)
}

fn not_sent(why: &str, next: EventNext) -> Outcome {
    Outcome {
        attempt: Some(WebhookAttempt {
            at: now_ms(),
            status_code: None,
            latency_ms: 0,
            error: Some(why.into()),
            response_excerpt: None,
        }),
        next,
    }
    .counted(None)
}

/// The `webhooks` loop, with the one client its deliveries share.
pub fn spawn(
    gw: std::sync::Arc<Gateway>,
    cancel: tokio_util::sync::CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let tick = std::time::Duration::from_millis(gw.config.webhooks.tick_ms);
    // Should the client fail to build (its TLS set-up), every step reports it, and so
    // does /healthz, instead of the whole gateway failing to start.
    let client = WebhookClient::new(&gw.config.webhooks).map_err(std::sync::Arc::new);
    super::spawn_loop("webhooks", tick, cancel, gw, move |gw| {
        let client = client.clone();
        async move {
            match client {
                Ok(client) => deliver_once(&gw, &client).await,
                Err(e) => Err(anyhow::anyhow!(
                    "the webhook HTTP client could not be built: {e:#}"
                )),
            }
        }
    })
}
