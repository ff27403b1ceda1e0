//! The capacity bench's table and its picture of a burst.

use super::figures::{key_of, learn_lags, percentile, Fairness};
use super::{
    count_state, BurstFigures, CrashFigures, FlatFigures, Params, KEYS, RESELLER_CAP, SPILL_CAP,
};
use crate::{machine, print_rows, RunArgs};

fn ms_pair(values: &[f64]) -> String {
    format!(
        "{:.0} / {:.0} ({})",
        percentile(values, 50.0),
        percentile(values, 99.0),
        values.len()
    )
}

fn pct(v: f64) -> String {
    format!("{:.1}%", v * 100.0)
}

fn burst_rows(b: &BurstFigures, rows: &mut Vec<(String, Vec<String>)>) {
    let row = |label: &str, measured: String, target: &str| {
        (format!("  {label}"), vec![measured, target.to_string()])
    };
    let created = b.created.iter().filter(|c| c.ok).count();
    let waited = b.created.iter().filter(|c| c.waited).count();
    rows.push((
        format!(
            "{} gateway(s){}: {created} tasks, {waited} waited, {:.0} s",
            b.gateways,
            if b.gateways > 1 {
                ", creates split between them"
            } else {
                ""
            },
            b.secs
        ),
        vec![String::new(), String::new()],
    ));
    rows.push(row(
        "cap violations seen by the fakes",
        b.violations().to_string(),
        "0",
    ));
    rows.push(row(
        "most running at once, reseller / spill",
        format!("{} / {}", b.reseller.most_running, b.spill.most_running),
        &format!("<= {RESELLER_CAP} / {SPILL_CAP}"),
    ));
    rows.push(row(
        "utilization while tasks wait, reseller / spill",
        format!(
            "{} / {}",
            pct(b.utilization(&b.reseller)),
            pct(b.utilization(&b.spill))
        ),
        ">= 95%",
    ));
    let one = b.gateways == 1;
    rows.push(row(
        "dispatch latency p50 / p99 (ms) (pairs)",
        ms_pair(&b.dispatch_latencies()),
        if one { "<= 100 / <= 1000" } else { "" },
    ));
    rows.push(row(
        "end -> omnigate learns, p50 / p99 (ms): reseller",
        ms_pair(&learn_lags(&b.reseller)),
        "",
    ));
    rows.push(row(
        "end -> omnigate learns, p50 / p99 (ms): spill",
        ms_pair(&learn_lags(&b.spill)),
        "",
    ));
    rows.push(row(
        "started on the pricier provider (spill)",
        b.spill.tasks.len().to_string(),
        "",
    ));
    let started = b.started();
    let all = Fairness::measure(&KEYS, &b.created, &started);
    rows.push(row(
        "starts a / b / c while all three wait",
        all.cell(),
        "equal",
    ));
    rows.push(row(
        "  furthest share from equal; Jain's index",
        format!("{:+.0}%; {:.3}", all.worst_share() * 100.0, all.jain()),
        "within 10%; >= 0.95",
    ));
    let ab = Fairness::measure(&KEYS[..2], &b.created, &started);
    rows.push(row("starts a / b while both wait", ab.cell(), "equal"));
    rows.push(row(
        "  furthest share from equal; Jain's index",
        format!("{:+.0}%; {:.3}", ab.worst_share() * 100.0, ab.jain()),
        "within 10%; >= 0.95",
    ));
    let last = |key: &str| {
        started
            .iter()
            .filter(|(l, _)| key_of(l) == key)
            .map(|(_, at)| *at)
            .fold(0.0, f64::max)
    };
    rows.push(row(
        "last start of c / b / a (s)",
        format!("{:.1} / {:.1} / {:.1}", last("c"), last("b"), last("a")),
        "c long before a",
    ));
    rows.push(row(
        "tasks completed / created; lost",
        format!(
            "{} / {created}; {}",
            count_state(&b.states, "completed"),
            b.lost()
        ),
        "all; 0",
    ));
}

pub(super) fn print_capacity(
    args: &RunArgs,
    p: &Params,
    one: &BurstFigures,
    two: &BurstFigures,
    crash: &CrashFigures,
    flat: &[FlatFigures],
) {
    println!(
        "\nomnigate-bench --capacity, {}; PostgreSQL, pool {}; fake reseller (Kling dialect, \
         refuses with 1303) capped at {RESELLER_CAP}, spill (modellix dialect, refuses with 429) \
         at {SPILL_CAP}; {} s per task; bursts a {} then b {} and c {}",
        machine(),
        args.pool,
        p.task_secs,
        p.bursts[0],
        p.bursts[1],
        p.bursts[2]
    );
    let mut rows = Vec::new();
    burst_rows(one, &mut rows);
    burst_rows(two, &mut rows);
    let row = |label: &str, measured: String, target: &str| {
        (format!("  {label}"), vec![measured, target.to_string()])
    };
    rows.push((
        format!(
            "kill -9 mid-burst, one gateway, reseller alone: {} tasks, {:.0} s",
            crash.created, crash.secs
        ),
        vec![String::new(), String::new()],
    ));
    rows.push(row(
        "started when killed; restarted in (s)",
        format!("{}; {:.1}", crash.killed_after, crash.restart_secs),
        "",
    ));
    rows.push(row(
        "tasks not completed (lost)",
        crash.lost.to_string(),
        "0",
    ));
    rows.push(row(
        "tasks accepted twice by the fake; never submitted",
        format!("{}; {}", crash.twice, crash.never_seen),
        "0; 0",
    ));
    rows.push(row(
        "second submits refused as a known external_task_id",
        crash.duplicate_ids.to_string(),
        "",
    ));
    rows.push(row(
        "cap violations seen by the fake",
        crash.violations.to_string(),
        "0",
    ));
    rows.push((
        "a long queue against an empty one (reseller alone)".into(),
        vec![String::new(), String::new()],
    ));
    for f in flat {
        rows.push(row(
            &format!("{} waiting: create that waits p50 / p99 (ms)", f.waiting),
            ms_pair(&f.create_ms),
            "flat",
        ));
        rows.push(row(
            &format!("{} waiting: dispatch latency p50 / p99 (ms)", f.waiting),
            ms_pair(&f.dispatch_ms),
            "flat",
        ));
    }
    print_rows("", &["measured".into(), "target".into()], &rows);
}

/// The one-gateway burst as the fakes saw it: starts per key, tasks running and tasks
/// waiting in omnigate, in even slices of the run.
pub(super) fn print_picture(b: &BurstFigures, task_secs: f64) {
    let started = b.started();
    let end = b
        .reseller
        .tasks
        .iter()
        .chain(&b.spill.tasks)
        .map(|t| t.end)
        .fold(0.0, f64::max);
    let span = end - b.started;
    let slice = ((span / 24.0 / task_secs).ceil() * task_secs).max(task_secs / 2.0);
    let waiting_at = |t: f64| {
        let entered = b.created.iter().filter(|c| c.waited && c.at <= t).count();
        let left = b
            .created
            .iter()
            .filter(|c| c.waited && started.get(&c.label).is_some_and(|s| *s <= t))
            .count();
        entered.saturating_sub(left)
    };
    let running_at = |t: f64| {
        b.reseller
            .tasks
            .iter()
            .chain(&b.spill.tasks)
            .filter(|x| x.start <= t && x.end > t)
            .count()
    };
    let most_waiting = (0..=(span / slice) as usize)
        .map(|i| waiting_at(b.started + (i + 1) as f64 * slice))
        .max()
        .unwrap_or(1)
        .max(1);
    println!(
        "\nA burst, as the fakes saw it (one gateway; each row {slice:.1} s; running at the \
         row's end of {} slots; # = tasks waiting in omnigate)",
        RESELLER_CAP + SPILL_CAP
    );
    println!("  t (s)    starts a    b    c  running  waiting");
    let mut from = b.started;
    while from < end {
        let to = from + slice;
        let starts = |key: &str| {
            started
                .iter()
                .filter(|(l, at)| key_of(l) == key && **at >= from && **at < to)
                .count()
        };
        let waiting = waiting_at(to);
        let bar = "#".repeat((waiting * 40).div_ceil(most_waiting));
        println!(
            "  {:>5.1}  {:>10} {:>4} {:>4}  {:>7}  {waiting:>7} {bar}",
            from - b.started,
            starts("a"),
            starts("b"),
            starts("c"),
            running_at(to),
        );
        from = to;
    }
}
