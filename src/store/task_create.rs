//! Creating a task outside the batched hot path (`task_writes.rs`): with an idempotency
//! key or the key's limits to take, in one transaction; and the idempotency keys' upkeep.

use sqlx::{Any, Row, Transaction};

use super::limits;
use super::task_events::record_status;
use super::task_record::{IdempotencyClaim, Inserted, NewTask, TaskState};
use super::task_writes::{NewTaskRow, INSERT_TASK_INTO, NEW_TASK_ROW};
use super::{affected, now_ms, Store};

/// Takes `claim.key` for `task_id` unless a live holder has it. A racing request blocks on
/// the key's primary key until the first commits, then finds it taken.
async fn take_idempotency_key(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    task_id: &str,
    claim: &IdempotencyClaim,
    now: i64,
) -> anyhow::Result<bool> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND expires_at <= $3",
    )
    .bind(api_key_id)
    .bind(&claim.key)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    let taken = sqlx::query(
        "INSERT INTO idempotency_keys (api_key_id, key, request_hash, task_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (api_key_id, key) DO NOTHING",
    )
    .bind(api_key_id)
    .bind(&claim.key)
    .bind(&claim.request_hash)
    .bind(task_id)
    .bind(now)
    .bind(claim.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok(affected(taken))
}

impl Store {
    /// Writes a new task in `submitting`, holding it for its submitter. With an
    /// idempotency claim, the key is taken in the same transaction: if another request
    /// already holds it, nothing is written and that request's task is returned instead.
    pub async fn insert_task(
        &self,
        t: &NewTask,
        idempotency: Option<&IdempotencyClaim>,
    ) -> anyhow::Result<Inserted> {
        let row = NewTaskRow::of(t)?;
        if idempotency.is_none() && t.holds.is_empty() {
            return self.hot_writes.create(row).await;
        }
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        if let Some(claim) = idempotency {
            if !take_idempotency_key(&mut tx, &t.api_key_id, &t.id, claim, now).await? {
                tx.rollback().await?;
                return self
                    .find_idempotency_key(&t.api_key_id, claim)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("idempotency key taken, then gone"));
            }
        }
        let taken = match limits::take(&mut tx, &t.api_key_id, &t.holds, now).await? {
            Ok(taken) => taken,
            Err(refusal) => {
                tx.rollback().await?;
                return Ok(Inserted::Refused(refusal));
            }
        };
        let sql = format!("{INSERT_TASK_INTO}{NEW_TASK_ROW}");
        row.bind(sqlx::query(&sql), now, "", taken.holds_slot, taken.reserved)
            .execute(&mut *tx)
            .await?;
        record_status(&mut tx, &t.id, TaskState::Submitting, now).await?;
        tx.commit().await?;
        Ok(if taken.waits_for_slot {
            Inserted::WaitsForSlot { created_at: now }
        } else {
            Inserted::New { created_at: now }
        })
    }

    /// The live holder of an idempotency key, if any.
    pub async fn find_idempotency_key(
        &self,
        api_key_id: &str,
        claim: &IdempotencyClaim,
    ) -> anyhow::Result<Option<Inserted>> {
        let row = sqlx::query(
            "SELECT task_id, request_hash FROM idempotency_keys \
             WHERE api_key_id = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(api_key_id)
        .bind(&claim.key)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(Inserted::Existing {
                task_id: r.try_get("task_id")?,
                same_body: r.try_get::<String, _>("request_hash")? == claim.request_hash,
            })
        })
        .transpose()
    }

    /// Frees a key whose task never reached a provider, so that a retry can create one.
    pub async fn release_idempotency_key(
        &self,
        api_key_id: &str,
        key: &str,
        task_id: &str,
    ) -> anyhow::Result<()> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE api_key_id = $1 AND key = $2 AND task_id = $3",
        )
        .bind(api_key_id)
        .bind(key)
        .bind(task_id)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    /// Forgets idempotency keys past their window. Returns how many.
    pub async fn prune_idempotency_keys(&self) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                .bind(now_ms())
                .execute(&self.writes)
                .await?
                .rows_affected(),
        )
    }
}
