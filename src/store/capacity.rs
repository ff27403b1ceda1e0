//! Provider slots: the count of tasks each capped provider is running, held in one row per
//! provider so that every gateway process sharing the database keeps the same cap. A slot
//! is taken by a conditional UPDATE just before a capped provider is called and given back
//! in the transaction that ends the task (`limits::release`), so a crash cannot leak one.
//! Providers without a cap never take a slot: their creates cost no statement here.

use sqlx::{Any, Row, Transaction};

use super::{affected, now_ms, Store};

/// "No cap" in `provider_capacity`: the conditions then hold without a NULL branch.
const NO_CAP: i64 = i64::MAX;
/// The per-minute window.
const MINUTE_MS: i64 = 60_000;

/// A provider's capacity as the store holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderCapacity {
    pub provider: String,
    /// `max_in_flight`, if set.
    pub configured_cap: Option<i64>,
    /// `max_submits_per_minute`, if set.
    pub per_minute: Option<i64>,
    pub in_flight: i64,
    /// The cap in force: lowered after a capacity refusal, else the configured one.
    pub effective_cap: Option<i64>,
    /// Until then (Unix ms) the provider counts as full after a capacity refusal.
    pub cooldown_until: i64,
    /// Capacity refusals seen since the row was made.
    pub refusals: i64,
    /// The per-minute window: when it began (Unix ms) and the submits in it.
    pub minute_start: i64,
    pub minute_submits: i64,
}

impl ProviderCapacity {
    /// Slots free now (None: no cap). A provider cooling down after a refusal with
    /// nothing running has none until the cool-down ends.
    pub fn room(&self, now: i64) -> Option<i64> {
        let this_minute = self.per_minute.map(|max| {
            if self.minute_start <= now - MINUTE_MS {
                max
            } else {
                (max - self.minute_submits).max(0)
            }
        });
        match (self.in_flight_room(now), this_minute) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn in_flight_room(&self, now: i64) -> Option<i64> {
        let cap = match (self.configured_cap, self.effective_cap) {
            (Some(c), Some(e)) => c.min(e),
            (Some(c), None) => c,
            // No cap on tasks in flight: full only while cooling down after a refusal.
            (None, _) => return (self.cooldown_until > now).then_some(0),
        };
        // Lowered to nothing: one probe once the cool-down has passed (see `take_slot`).
        if cap == 0 && self.in_flight == 0 {
            return Some(i64::from(self.cooldown_until <= now));
        }
        Some((cap - self.in_flight).max(0))
    }
}

/// A cap as configured: what `register_capacity` writes for one provider.
#[derive(Debug, Clone)]
pub struct ConfiguredCap {
    pub provider: String,
    pub max_in_flight: Option<u32>,
    pub max_submits_per_minute: Option<u32>,
}

impl ConfiguredCap {
    pub fn is_capped(&self) -> bool {
        self.max_in_flight.is_some() || self.max_submits_per_minute.is_some()
    }
}

/// Gives back `provider`'s slot in the transaction ending a task, and (after a refusal's
/// cool-down) raises its effective cap by one: the additive increase.
pub(super) async fn release_slot(
    tx: &mut Transaction<'_, Any>,
    provider: &str,
    now: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "UPDATE provider_capacity SET in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END, \
         effective_cap = CASE WHEN effective_cap IS NULL OR cooldown_until > $2 THEN effective_cap \
           WHEN effective_cap + 1 >= configured_cap THEN NULL ELSE effective_cap + 1 END \
         WHERE provider = $1",
    )
    .bind(provider)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Store {
    /// Wakes this process's dispatcher when `ended` (a task's `HOLD_COLUMNS` as it ended,
    /// committed) held a provider's slot, or its end `unparked` a task of its key.
    pub(super) fn wake_if_slot_freed(&self, ended: Option<&sqlx::any::AnyRow>, unparked: bool) {
        let held = ended
            .and_then(|r| r.try_get::<Option<String>, _>("slot_provider").ok())
            .flatten()
            .is_some();
        if held || unparked {
            self.wake_dispatcher();
        }
    }

    /// Wakes this process's dispatcher, noting when (if no earlier wake still waits).
    pub(super) fn wake_dispatcher(&self) {
        use std::sync::atomic::Ordering;
        let _ =
            self.slot_freed_at
                .compare_exchange(0, now_ms(), Ordering::AcqRel, Ordering::Acquire);
        self.slot_freed.notify_one();
    }

    /// Writes each provider's configured caps (a gateway's start). Counts in flight and
    /// refusal state are kept: other processes share them.
    pub async fn register_capacity(&self, caps: &[ConfiguredCap]) -> anyhow::Result<()> {
        for c in caps {
            let cap = c.max_in_flight.map_or(NO_CAP, i64::from);
            let per_minute = c.max_submits_per_minute.map_or(NO_CAP, i64::from);
            sqlx::query(
                "INSERT INTO provider_capacity (provider, configured_cap, per_minute) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider) DO UPDATE SET configured_cap = $2, per_minute = $3",
            )
            .bind(&c.provider)
            .bind(cap)
            .bind(per_minute)
            .execute(&self.writes)
            .await?;
        }
        Ok(())
    }

    /// Takes a slot of `provider` for task `id` held by claim `token`, if the provider has
    /// room under its cap, its effective cap and its per-minute limit (a provider with only
    /// a per-minute limit has no effective cap to lower: a refusal's cool-down stops it). False (nothing
    /// taken) when it has none or the claim was lost. A task already holding this
    /// provider's slot keeps it (a resubmit after an unknown outcome).
    pub async fn take_slot(&self, id: &str, token: &str, provider: &str) -> anyhow::Result<bool> {
        let now = now_ms();
        let mut tx = self.writes.begin().await?;
        let took = affected(
            sqlx::query(
                "UPDATE provider_capacity SET in_flight = in_flight + 1, \
                 minute_start = CASE WHEN minute_start <= $2 THEN $3 ELSE minute_start END, \
                 minute_submits = CASE WHEN minute_start <= $2 THEN 1 ELSE minute_submits + 1 END \
                 WHERE provider = $1 AND in_flight < configured_cap \
                 AND (effective_cap IS NULL OR in_flight < effective_cap \
                      OR (in_flight = 0 AND cooldown_until <= $3)) \
                 AND (minute_start <= $2 OR minute_submits < per_minute) \
                 AND (configured_cap < $4 OR cooldown_until <= $3)",
            )
            .bind(provider)
            .bind(now - MINUTE_MS)
            .bind(now)
            .bind(NO_CAP)
            .execute(&mut *tx)
            .await?,
        );
        if !took {
            tx.rollback().await?;
            return Ok(false);
        }
        let held = affected(
            sqlx::query(
                "UPDATE tasks SET slot_provider = $2 WHERE id = $1 AND lease_owner = $3 AND slot_provider IS NULL",
            )
            .bind(id)
            .bind(provider)
            .bind(token)
            .execute(&mut *tx)
            .await?,
        );
        if !held {
            tx.rollback().await?;
            return self.holds_slot(id, token, provider).await;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn holds_slot(&self, id: &str, token: &str, provider: &str) -> anyhow::Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 AS one FROM tasks WHERE id = $1 AND lease_owner = $2 AND slot_provider = $3",
        )
        .bind(id)
        .bind(token)
        .bind(provider)
        .fetch_optional(&self.writes)
        .await?
        .is_some())
    }

    /// Gives back a slot the provider does not use after all (it refused the task, so it
    /// does not have it): no additive increase, nothing finished there.
    pub async fn give_back_slot(&self, id: &str, token: &str) -> anyhow::Result<()> {
        let mut tx = self.writes.begin().await?;
        let held: Option<Option<String>> = sqlx::query_scalar(
            "SELECT slot_provider FROM tasks WHERE id = $1 AND lease_owner = $2",
        )
        .bind(id)
        .bind(token)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(Some(provider)) = held {
            let cleared = sqlx::query(
                "UPDATE tasks SET slot_provider = NULL WHERE id = $1 AND lease_owner = $2 AND slot_provider = $3",
            )
            .bind(id)
            .bind(token)
            .bind(&provider)
            .execute(&mut *tx)
            .await?;
            if affected(cleared) {
                sqlx::query(
                    "UPDATE provider_capacity SET in_flight = CASE WHEN in_flight > 0 THEN in_flight - 1 ELSE 0 END \
                     WHERE provider = $1",
                )
                .bind(&provider)
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// A capacity refusal from `provider`: it is full. Its effective cap drops to what it
    /// runs now besides the refused task (which still holds its slot, about to be given
    /// back) and stays there for `cooldown_ms`; an uncapped provider just counts as full
    /// until then.
    pub async fn capacity_refused(
        &self,
        provider: &str,
        refused_held_slot: bool,
        cooldown_ms: i64,
    ) -> anyhow::Result<()> {
        let now = now_ms();
        sqlx::query(
            "UPDATE provider_capacity SET refusals = refusals + 1, cooldown_until = $2, \
             effective_cap = CASE WHEN configured_cap = $4 THEN NULL \
               WHEN in_flight - $3 < 0 THEN 0 ELSE in_flight - $3 END \
             WHERE provider = $1",
        )
        .bind(provider)
        .bind(now + cooldown_ms)
        .bind(i64::from(refused_held_slot))
        .bind(NO_CAP)
        .execute(&self.writes)
        .await?;
        Ok(())
    }

    /// Every provider's capacity row.
    pub async fn capacity(&self) -> anyhow::Result<Vec<ProviderCapacity>> {
        let rows = sqlx::query(
            "SELECT provider, configured_cap, per_minute, in_flight, effective_cap, cooldown_until, refusals, \
             minute_start, minute_submits FROM provider_capacity ORDER BY provider",
        )
        .fetch_all(&self.pool)
        .await?;
        let cap = |v: i64| (v != NO_CAP).then_some(v);
        rows.iter()
            .map(|r| {
                Ok(ProviderCapacity {
                    provider: r.try_get("provider")?,
                    configured_cap: cap(r.try_get("configured_cap")?),
                    per_minute: cap(r.try_get("per_minute")?),
                    in_flight: r.try_get("in_flight")?,
                    effective_cap: r.try_get("effective_cap")?,
                    cooldown_until: r.try_get("cooldown_until")?,
                    refusals: r.try_get("refusals")?,
                    minute_start: r.try_get("minute_start")?,
                    minute_submits: r.try_get("minute_submits")?,
                })
            })
            .collect()
    }
}
