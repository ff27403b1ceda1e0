//! The default latency table: creates at fixed rates and saturation, status reads and a
//! sustained run, for the fake upstream called directly, through nginx, and through
//! omnigate on each store.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::Connection;
use tokio::process::Command;

use super::children::{free_port, log_file, wait_http, Proc};
use super::disk::Fsyncs;
use super::gateway::{create_task, start_omnigate, Database, Omnigate, CREATE_BODY};
use super::oha::{oha, Load, Target};
use super::table::{cell, machine, print_rows};
use super::{RunArgs, StoreKind};

/// The default mode: creates at fixed rates and at saturation against the fake upstream
/// directly and through nginx, then against omnigate on each store (with status reads
/// and a sustained run), and the table comparing them.
pub(crate) async fn run(
    args: &RunArgs,
    dir: &Path,
    upstream_proc: Proc,
    upstream: u16,
    fsyncs: &Fsyncs,
) -> anyhow::Result<()> {
    let (nginx_proc, nginx) = start_nginx(args, dir, upstream).await?;
    let mut columns = Vec::new();
    for (name, port) in [("direct", upstream), ("nginx", nginx)] {
        eprintln!("  {name}: creates at fixed rates and saturation");
        let mut col = Column {
            name: name.into(),
            ..Column::default()
        };
        let t = Target {
            url: format!("http://127.0.0.1:{port}/api/v1/video/generations"),
            key: None,
            expect: 200,
            post: true,
        };
        measure_creates(args, &mut col, &t).await?;
        col.rss_mib = if name == "nginx" {
            nginx_proc.peak_rss_mib()
        } else {
            upstream_proc.peak_rss_mib()
        };
        columns.push(col);
    }
    nginx_proc.stop().await;
    for &kind in &args.stores {
        columns.push(measure_omnigate(args, kind, dir, upstream).await?);
    }
    upstream_proc.stop().await;
    print_table(args, &columns);
    println!("{fsyncs}");
    Ok(())
}

pub(crate) async fn start_nginx(
    args: &RunArgs,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<(Proc, u16)> {
    let port = free_port()?;
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("logs"))?;
    // One process (no master) so that stopping the child stops nginx; keep-alive to the
    // upstream as omnigate's HTTP client has.
    let conf = format!(
        "daemon off;\nmaster_process off;\nerror_log {p}/logs/error.log warn;\npid {p}/nginx.pid;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {p}/body;\n  proxy_temp_path {p}/proxy;\n\
           fastcgi_temp_path {p}/fastcgi;\n  uwsgi_temp_path {p}/uwsgi;\n  scgi_temp_path {p}/scgi;\n\
           upstream fake {{ server 127.0.0.1:{upstream}; keepalive 64; }}\n\
           server {{\n    listen 127.0.0.1:{port};\n    location / {{\n      proxy_pass http://fake;\n\
               proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n    }}\n  }}\n}}\n",
        p = prefix.display()
    );
    let conf_path = prefix.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let child = Command::new(&args.nginx)
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf_path)
        .stdout(log_file(dir, "nginx")?)
        .stderr(log_file(dir, "nginx-stderr")?)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", args.nginx.display()))?;
    let proc = Proc {
        name: "nginx",
        child,
    };
    wait_http(
        &format!("http://127.0.0.1:{port}/api/v1/video/generations?task_id=x"),
        Duration::from_secs(10),
    )
    .await
    .context("nginx")?;
    Ok((proc, port))
}

/// One column of the table.
#[derive(Default)]
pub(crate) struct Column {
    pub(crate) name: String,
    pub(crate) at_rate: Vec<(u32, Load)>,
    pub(crate) saturation: Option<Load>,
    pub(crate) sustained: Option<(f64, f64)>,
    pub(crate) reads: Option<Load>,
    pub(crate) rss_mib: Option<f64>,
    pub(crate) errors: u64,
}

pub(crate) async fn measure_creates(
    args: &RunArgs,
    col: &mut Column,
    t: &Target<'_>,
) -> anyhow::Result<()> {
    // A short warm-up fills connection pools and caches, and shows the target answers.
    let warm = oha(args, t, 1, Some(50)).await?;
    if warm.ok_per_sec == 0.0 {
        bail!("{} answered no {} during the warm-up", t.url, t.expect);
    }
    for &rate in &args.rates {
        let l = oha(args, t, args.rate_secs, Some(rate)).await?;
        col.errors += l.errors;
        col.at_rate.push((rate, l));
    }
    let sat = oha(args, t, args.sat_secs, None).await?;
    col.errors += sat.errors;
    col.saturation = Some(sat);
    Ok(())
}

pub(crate) async fn measure_omnigate(
    args: &RunArgs,
    kind: StoreKind,
    dir: &Path,
    upstream: u16,
) -> anyhow::Result<Column> {
    let db = Database::create(args, kind, dir, "run").await?;
    let result = async {
        let og = start_omnigate(args, &db, dir, upstream, false).await?;
        let mut col = Column {
            name: kind.label().into(),
            ..Column::default()
        };
        let create = Target {
            url: format!("{}/v1/video/generations", og.base),
            key: Some(&og.key),
            expect: 202,
            post: true,
        };
        eprintln!("  {}: creates at fixed rates and saturation", col.name);
        measure_creates(args, &mut col, &create).await?;
        let read = reads(args, &og, &db).await?;
        col.errors += read.errors;
        col.reads = Some(read);
        eprintln!(
            "  {}: sustained run, {} s in {} s slices",
            col.name, args.sustain_secs, args.slice_secs
        );
        let slices = (args.sustain_secs / args.slice_secs.max(1)).max(2);
        let mut rates = Vec::new();
        for _ in 0..slices {
            let l = oha(args, &create, args.slice_secs, None).await?;
            col.errors += l.errors;
            rates.push(l.ok_per_sec);
        }
        col.sustained = Some((rates[0], *rates.last().unwrap_or(&0.0)));
        eprintln!("    slices (creates/s): {rates:.0?}");
        col.rss_mib = og.proc.peak_rss_mib();
        og.proc.stop().await;
        Ok(col)
    }
    .await;
    db.drop_it(args).await;
    result
}

/// Status reads of one finished task, as fast as they go: a client polling a task it has
/// not yet seen finish keeps reading it after. The fake upstream never finishes a task
/// (and polls are an hour apart), so the task created here is finished in the store as a
/// completion would (state, result, its status change).
pub(crate) async fn reads(args: &RunArgs, og: &Omnigate, db: &Database) -> anyhow::Result<Load> {
    let id = create_task(&reqwest::Client::new(), og, CREATE_BODY).await?;
    finish_in_store(db, &id).await?;
    let read = Target {
        url: format!("{}/v1/video/generations/{id}", og.base),
        key: Some(&og.key),
        expect: 200,
        post: false,
    };
    oha(args, &read, args.read_secs, None).await
}

/// Completes task `id` in the store, as the poller's completion writes it.
pub(crate) async fn finish_in_store(db: &Database, id: &str) -> anyhow::Result<()> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url).await?;
    let now = omnigate::store::now_ms();
    sqlx::query(
        "UPDATE tasks SET state = 'completed', progress = 100, \
         result = '[{\"url\":\"https://example.invalid/v.mp4\"}]', \
         completed_at = $2, updated_at = $2, lease_owner = NULL, lease_until = 0, \
         history_json = COALESCE(history_json, '') || '{\"status\":\"completed\",\"at\":' || $2 || '},' \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(&mut conn)
    .await
    .context("finishing the read task")?;
    sqlx::query(
        "INSERT INTO task_status_changes (task_id, status, at) VALUES ($1, 'completed', $2)",
    )
    .bind(id)
    .bind(now)
    .execute(&mut conn)
    .await?;
    Ok(())
}

pub(crate) fn print_table(args: &RunArgs, cols: &[Column]) {
    let nginx = cols.iter().find(|c| c.name == "nginx");
    let mut rows: Vec<(String, Vec<String>)> = Vec::new();
    for (i, &rate) in args.rates.iter().enumerate() {
        let at = |c: &Column| c.at_rate.get(i).map(|(_, l)| *l);
        rows.push((
            format!("create p50 @{rate}/s (ms)"),
            cols.iter()
                .map(|c| cell(at(c).map(|l| l.p50_ms), 2))
                .collect(),
        ));
        rows.push((
            format!("create p99 @{rate}/s (ms)"),
            cols.iter()
                .map(|c| cell(at(c).map(|l| l.p99_ms), 2))
                .collect(),
        ));
        let base = nginx.and_then(at);
        rows.push((
            format!("p99 overhead over nginx @{rate}/s (ms)"),
            cols.iter()
                .map(|c| {
                    if !c.name.starts_with("omnigate") {
                        return "-".into();
                    }
                    cell(at(c).zip(base).map(|(l, b)| l.p99_ms - b.p99_ms), 2)
                })
                .collect(),
        ));
    }
    rows.push((
        "saturation creates/s".into(),
        cols.iter()
            .map(|c| cell(c.saturation.map(|l| l.ok_per_sec), 0))
            .collect(),
    ));
    rows.push((
        format!("sustained creates/s, first {} s", args.slice_secs),
        cols.iter()
            .map(|c| cell(c.sustained.map(|s| s.0), 0))
            .collect(),
    ));
    rows.push((
        format!("sustained creates/s, last {} s", args.slice_secs),
        cols.iter()
            .map(|c| {
                c.sustained.map_or("-".into(), |(first, last)| {
                    format!("{last:.0} ({:+.0}%)", (last / first - 1.0) * 100.0)
                })
            })
            .collect(),
    ));
    rows.push((
        "status reads/s".into(),
        cols.iter()
            .map(|c| cell(c.reads.map(|l| l.ok_per_sec), 0))
            .collect(),
    ));
    rows.push((
        "peak RSS (MiB)".into(),
        cols.iter().map(|c| cell(c.rss_mib, 1)).collect(),
    ));
    rows.push((
        "errors (non-2xx, failed requests)".into(),
        cols.iter().map(|c| c.errors.to_string()).collect(),
    ));
    println!(
        "\nomnigate-bench, {}; {} connections, {} s per rate, {} s saturation, {} s sustained, pool {}",
        machine(),
        args.connections,
        args.rate_secs,
        args.sat_secs,
        args.sustain_secs,
        args.pool
    );
    let header: Vec<String> = cols.iter().map(|c| c.name.clone()).collect();
    print_rows("", &header, &rows);
    if let (Some(n), Some(pg)) = (nginx, cols.iter().find(|c| c.name == "omnigate PG")) {
        let worst = pg
            .at_rate
            .iter()
            .zip(&n.at_rate)
            .map(|((r, l), (_, b))| format!("@{r}/s {:.1}x", l.p99_ms / b.p99_ms))
            .collect::<Vec<_>>()
            .join(", ");
        println!("omnigate PG p99 / nginx p99: {worst}");
    }
}
