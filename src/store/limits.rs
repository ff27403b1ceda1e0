//! A key's in-flight slots, budget and spend, taken in the transaction that writes a task
//! and given back in the transaction that ends it: the counts can never drift from the
//! tasks, whatever crashes in between.
//!
//! `key_spend` holds every key's spend per period, budget or not: each task names its
//! period when it is written (the key's `budget_period`, month unless set) and the
//! transaction that ends it settles its cost there. Creates of keys without limits pay
//! nothing for this (no statement, no round trip); only the end of a task does. The tasks
//! table stays the source of truth: a period's `spent_micros` is the settled cost of the
//! key's tasks created in it, which is what the usage report sums, and `resync` rebuilds
//! the row from the tasks when a key's budget or period changes.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};
use time::{Date, OffsetDateTime, Time};

use super::keys::BudgetPeriod;
use super::to_micros;

/// What a new task must hold before it is written.
#[derive(Debug, Clone, Default)]
pub struct Holds {
    /// The key's limit on unfinished tasks.
    pub max_in_flight: Option<u32>,
    /// The kind of period the task's spend counts in: its key's budget period.
    pub spend_period: BudgetPeriod,
    /// The key's budget, and the amount this task reserves of it (the most any candidate
    /// could bill, so that neither a failover nor the provider's figure can overspend).
    pub budget: Option<Budget>,
    /// At its `max_in_flight`, the key's task is written anyway, holding no slot, to wait
    /// in the queue for one (a create that may wait), instead of being refused.
    pub wait_for_slot: bool,
}

/// What a new task took in the transaction that writes it.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Taken {
    pub holds_slot: bool,
    /// Micros reserved of the key's budget.
    pub reserved: Option<i64>,
    /// The key was at its `max_in_flight` and the task waits for a slot (`wait_for_slot`).
    pub waits_for_slot: bool,
}

impl Holds {
    /// Nothing to take: the key has neither limit.
    pub fn is_empty(&self) -> bool {
        self.max_in_flight.is_none() && self.budget.is_none()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub limit_usd: f64,
    pub period: BudgetPeriod,
    pub reserve_usd: f64,
}

/// Why a key may not start another task now.
#[derive(Debug, Clone, PartialEq)]
pub enum LimitRefusal {
    Concurrency {
        max_in_flight: u32,
    },
    Budget {
        limit_usd: f64,
        committed_usd: f64,
        needed_usd: f64,
        period: BudgetPeriod,
    },
}

/// Unix milliseconds at which the UTC calendar period holding `now_ms` began.
pub fn period_start(period: BudgetPeriod, now_ms: i64) -> i64 {
    let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let day = match period {
        BudgetPeriod::Day => now.date(),
        BudgetPeriod::Month => {
            Date::from_calendar_date(now.year(), now.month(), 1).unwrap_or(now.date())
        }
    };
    let start = day.with_time(Time::MIDNIGHT).assume_utc();
    (start.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The columns of `tasks` that say what a task holds, for `release`.
pub(super) const HOLD_COLUMNS: &str =
    "api_key_id, holds_slot, budget_period_start, reserved_micros, cost_final_micros, cost_estimated_micros, \
     slot_provider";

/// Takes a slot and reserves budget for a task about to be written in `tx`. On a refusal
/// nothing is taken and the caller rolls back.
pub(super) async fn take(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    holds: &Holds,
    now: i64,
) -> anyhow::Result<Result<Taken, LimitRefusal>> {
    let mut reserved = None;
    if let Some(b) = holds.budget {
        let needed = to_micros(b.reserve_usd);
        if let Err(refusal) = reserve(tx, api_key_id, b, needed, now).await? {
            return Ok(Err(refusal));
        }
        reserved = Some(needed);
    }
    if let Some(max) = holds.max_in_flight {
        let took = sqlx::query(
            "UPDATE api_keys SET in_flight = in_flight + 1 WHERE id = $1 AND in_flight < $2",
        )
        .bind(api_key_id)
        .bind(i64::from(max))
        .execute(&mut **tx)
        .await?
        .rows_affected()
            > 0;
        if !took && !holds.wait_for_slot {
            return Ok(Err(LimitRefusal::Concurrency { max_in_flight: max }));
        }
        return Ok(Ok(Taken {
            holds_slot: took,
            reserved,
            waits_for_slot: !took,
        }));
    }
    Ok(Ok(Taken {
        reserved,
        ..Taken::default()
    }))
}

/// Makes the key's row for the period starting at `start`, if it has none yet.
async fn ensure_spend_row(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    start: i64,
) -> anyhow::Result<()> {
    sqlx::query(
        "INSERT INTO key_spend (api_key_id, period_start) VALUES ($1, $2) \
         ON CONFLICT (api_key_id, period_start) DO NOTHING",
    )
    .bind(api_key_id)
    .bind(start)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Adds `needed` to the period's reservations if it fits the budget with what is already
/// spent and reserved.
async fn reserve(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    b: Budget,
    needed: i64,
    now: i64,
) -> anyhow::Result<Result<(), LimitRefusal>> {
    let start = period_start(b.period, now);
    ensure_spend_row(tx, api_key_id, start).await?;
    // The conditional update re-checks the sum under the row lock: concurrent creates
    // cannot both fit into the same remainder.
    let fits = sqlx::query(
        "UPDATE key_spend SET reserved_micros = reserved_micros + $3 \
         WHERE api_key_id = $1 AND period_start = $2 AND reserved_micros + spent_micros + $3 <= $4",
    )
    .bind(api_key_id)
    .bind(start)
    .bind(needed)
    .bind(to_micros(b.limit_usd))
    .execute(&mut **tx)
    .await?
    .rows_affected()
        > 0;
    if fits {
        return Ok(Ok(()));
    }
    let row = sqlx::query(
        "SELECT reserved_micros + spent_micros AS committed FROM key_spend \
         WHERE api_key_id = $1 AND period_start = $2",
    )
    .bind(api_key_id)
    .bind(start)
    .fetch_one(&mut **tx)
    .await?;
    Ok(Err(LimitRefusal::Budget {
        limit_usd: b.limit_usd,
        committed_usd: row.try_get::<i64, _>("committed")? as f64 / 1_000_000.0,
        needed_usd: b.reserve_usd,
        period: b.period,
    }))
}

/// What an ending task is charged, in micros: nothing unless it completed; then what the
/// provider reported (or, without a figure, the estimate), but never more than the task
/// reserved of its key's budget. Returns (charge, the provider's figure).
fn charge(row: &AnyRow, completed: bool) -> anyhow::Result<(i64, Option<i64>)> {
    if !completed {
        return Ok((0, None));
    }
    let cost: Option<i64> = row.try_get("cost_final_micros")?;
    let estimate: Option<i64> = row.try_get("cost_estimated_micros")?;
    let reported = cost.or(estimate).unwrap_or_default();
    let reserved: Option<i64> = row.try_get("reserved_micros")?;
    Ok((reserved.map_or(reported, |r| reported.min(r)), cost))
}

/// Gives back what an ending task held, in the transaction that ends it: its slot, and its
/// reservation, and settles its charge (see `charge`) into its key's spend for the task's
/// period, budget or not (`completed`: it completed; otherwise it failed and costs
/// nothing). `row` is the ended task's `HOLD_COLUMNS`. True when it gave back a slot of
/// the key's `max_in_flight` (the caller unparks the key's next waiting task: `unpark_one`).
pub(super) async fn release(
    tx: &mut Transaction<'_, Any>,
    task_id: &str,
    row: &AnyRow,
    completed: bool,
) -> anyhow::Result<bool> {
    let api_key_id: String = row.try_get("api_key_id")?;
    let holds_slot: i64 = row.try_get("holds_slot")?;
    // NULL once released, and for tasks written before every task named its period.
    let period: Option<i64> = row.try_get("budget_period_start")?;
    // The provider's slot (`capacity.rs`), in the same transaction: a crash between the
    // task's end and the slot's return cannot happen.
    let provider_slot: Option<String> = row.try_get("slot_provider")?;
    if let Some(provider) = &provider_slot {
        super::capacity::release_slot(tx, provider, super::now_ms()).await?;
        sqlx::query("UPDATE tasks SET slot_provider = NULL WHERE id = $1")
            .bind(task_id)
            .execute(&mut **tx)
            .await?;
    }
    if holds_slot == 0 && period.is_none() {
        return Ok(false);
    }
    let (charged, reported) = charge(row, completed)?;
    if let Some(start) = period {
        let reserved = row
            .try_get::<Option<i64>, _>("reserved_micros")?
            .unwrap_or_default();
        if reserved != 0 || charged != 0 {
            sqlx::query(
                "INSERT INTO key_spend (api_key_id, period_start, reserved_micros, spent_micros) \
                 VALUES ($1, $2, 0, $4) ON CONFLICT (api_key_id, period_start) DO UPDATE SET \
                 reserved_micros = key_spend.reserved_micros - $3, \
                 spent_micros = key_spend.spent_micros + excluded.spent_micros",
            )
            .bind(&api_key_id)
            .bind(start)
            .bind(reserved)
            .bind(charged)
            .execute(&mut **tx)
            .await?;
        }
    }
    // After key_spend, as in `take`: the two rows are always locked in the same order, so
    // a create and a task ending at once cannot deadlock.
    if holds_slot != 0 {
        sqlx::query(
            "UPDATE api_keys SET in_flight = in_flight - 1 WHERE id = $1 AND in_flight > 0",
        )
        .bind(&api_key_id)
        .execute(&mut **tx)
        .await?;
    }
    // The charge replaces the provider's figure as the task's final cost, which stays
    // beside it: an operator sees where a reservation under-estimated.
    sqlx::query(
        "UPDATE tasks SET holds_slot = 0, budget_period_start = NULL, \
         cost_final_micros = CASE WHEN $2 = 1 THEN $3 ELSE cost_final_micros END, \
         provider_reported_micros = COALESCE($4, provider_reported_micros) WHERE id = $1",
    )
    .bind(task_id)
    .bind(i64::from(completed))
    .bind(charged)
    .bind(reported)
    .execute(&mut **tx)
    .await?;
    Ok(holds_slot != 0)
}

/// Rebuilds key `api_key_id`'s spend row for the current `period` from the tasks table,
/// in the admin transaction that gives the key a budget or changes its period: what was
/// spent before the budget counts, whatever the key's period was when it was spent, and
/// its unfinished tasks now settle into this period.
pub(super) async fn resync(
    tx: &mut Transaction<'_, Any>,
    api_key_id: &str,
    period: BudgetPeriod,
    now: i64,
) -> anyhow::Result<()> {
    let start = period_start(period, now);
    sqlx::query(
        "UPDATE tasks SET budget_period_start = $2 WHERE api_key_id = $1 AND created_at >= $2 \
         AND budget_period_start IS NOT NULL AND state NOT IN ('completed', 'failed', 'cancelled')",
    )
    .bind(api_key_id)
    .bind(start)
    .execute(&mut **tx)
    .await?;
    ensure_spend_row(tx, api_key_id, start).await?;
    sqlx::query(
        "UPDATE key_spend SET \
         spent_micros = (SELECT CAST(COALESCE(SUM(cost_final_micros), 0) AS BIGINT) FROM tasks \
           WHERE api_key_id = $1 AND created_at >= $2 AND state = 'completed'), \
         reserved_micros = (SELECT CAST(COALESCE(SUM(reserved_micros), 0) AS BIGINT) FROM tasks \
           WHERE api_key_id = $1 AND budget_period_start = $2 AND state NOT IN ('completed', 'failed', 'cancelled')) \
         WHERE api_key_id = $1 AND period_start = $2",
    )
    .bind(api_key_id)
    .bind(start)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods_start_at_utc_midnight_of_the_day_or_the_first_of_the_month() {
        // 2026-11-26 14:59:41 UTC
        let now = 1_795_705_181_000;
        assert_eq!(period_start(BudgetPeriod::Day, now), 1_795_651_200_000);
        assert_eq!(period_start(BudgetPeriod::Month, now), 1_793_491_200_000);
    }
}
