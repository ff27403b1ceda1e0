//! Usage reports: tasks, seconds of video and money per day, model, provider or status,
//! summed straight from the tasks table so they always match it.

use serde::Serialize;
use sqlx::Row;

use super::task_record::TaskState;
use super::Store;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Day,
    Model,
    Provider,
    Status,
}

impl GroupBy {
    pub fn parse(s: &str) -> Option<GroupBy> {
        Some(match s {
            "day" => GroupBy::Day,
            "model" => GroupBy::Model,
            "provider" => GroupBy::Provider,
            "status" => GroupBy::Status,
            _ => return None,
        })
    }

    /// Integer division buckets Unix milliseconds into UTC days on both databases.
    fn column(self) -> &'static str {
        match self {
            GroupBy::Day => "CAST((t.created_at / 86400000) AS BIGINT)",
            GroupBy::Model => "t.model",
            GroupBy::Provider => "COALESCE(t.provider, '')",
            GroupBy::Status => "t.state",
        }
    }
}

/// One group of a report.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct UsageRow {
    /// The day (`YYYY-MM-DD`, UTC), model, provider or status.
    pub group: String,
    /// The key, in reports over every key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    pub tasks: i64,
    pub seconds: i64,
    pub estimated_usd: f64,
    /// Settled cost of the completed tasks among them.
    pub final_usd: f64,
    /// What the providers reported for the completed tasks, in reports over every key
    /// (`/admin/usage`): above `final_usd` where a charge was clamped to its reservation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provider_reported_usd: Option<f64>,
}

impl Store {
    /// Usage of tasks created in [from, to) (Unix ms), of one key or (None) of every key.
    pub async fn usage(
        &self,
        key: Option<&str>,
        from: i64,
        to: i64,
        group_by: GroupBy,
    ) -> anyhow::Result<Vec<UsageRow>> {
        let group = group_by.column();
        let (per_key, key_filter) = match key {
            Some(_) => ("", "AND t.api_key_id = $3"),
            None => ("t.api_key_id, k.name, k.team, ", ""),
        };
        let sql = format!(
            "SELECT {per_key}{group} AS grp, COUNT(*) AS tasks, \
             CAST(COALESCE(SUM(t.billed_seconds), 0) AS BIGINT) AS seconds, \
             CAST(COALESCE(SUM(t.cost_estimated_micros), 0) AS BIGINT) AS estimated, \
             CAST(COALESCE(SUM(CASE WHEN t.state = 'completed' THEN t.cost_final_micros END), 0) AS BIGINT) AS settled, \
             CAST(COALESCE(SUM(CASE WHEN t.state = 'completed' THEN COALESCE(t.provider_reported_micros, t.cost_final_micros) END), 0) AS BIGINT) AS reported \
             FROM tasks t JOIN api_keys k ON k.id = t.api_key_id \
             WHERE t.created_at >= $1 AND t.created_at < $2 {key_filter} \
             GROUP BY {per_key}{group} ORDER BY {per_key}grp"
        );
        let mut q = sqlx::query(&sql).bind(from).bind(to);
        if let Some(key) = key {
            q = q.bind(key);
        }
        let rows = q.fetch_all(&self.pool).await?;
        let mut out: Vec<UsageRow> = Vec::with_capacity(rows.len());
        for r in &rows {
            let group = match group_by {
                GroupBy::Day => day_name(r.try_get::<i64, _>("grp")?),
                GroupBy::Status => TaskState::parse(&r.try_get::<String, _>("grp")?)?
                    .public()
                    .as_str()
                    .to_string(),
                _ => r.try_get("grp")?,
            };
            let row = UsageRow {
                group,
                key: key.is_none().then(|| r.try_get("api_key_id")).transpose()?,
                key_name: key.is_none().then(|| r.try_get("name")).transpose()?,
                team: if key.is_none() {
                    r.try_get("team")?
                } else {
                    None
                },
                tasks: r.try_get("tasks")?,
                seconds: r.try_get("seconds")?,
                estimated_usd: r.try_get::<i64, _>("estimated")? as f64 / 1e6,
                final_usd: r.try_get::<i64, _>("settled")? as f64 / 1e6,
                provider_reported_usd: key
                    .is_none()
                    .then(|| r.try_get::<i64, _>("reported"))
                    .transpose()?
                    .map(|m| m as f64 / 1e6),
            };
            // Internal states that read as one public status are summed into it.
            match out
                .iter_mut()
                .find(|o| o.group == row.group && o.key == row.key)
            {
                Some(o) => {
                    o.tasks += row.tasks;
                    o.seconds += row.seconds;
                    o.estimated_usd += row.estimated_usd;
                    o.final_usd += row.final_usd;
                    if let (Some(o), Some(r)) =
                        (&mut o.provider_reported_usd, row.provider_reported_usd)
                    {
                        *o += r;
                    }
                }
                None => out.push(row),
            }
        }
        Ok(out)
    }
}

fn day_name(days_since_epoch: i64) -> String {
    let date =
        time::Date::from_julian_day(2_440_588 + days_since_epoch as i32).unwrap_or(time::Date::MIN);
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_named_by_their_utc_date() {
        assert_eq!(super::day_name(0), "1970-01-01");
        assert_eq!(super::day_name(20_783), "2026-11-26");
    }
}
