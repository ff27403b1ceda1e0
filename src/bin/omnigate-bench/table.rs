//! Printing figures: the machine line every table starts with, cells, and markdown rows.

pub(crate) fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{date}, {cpus} CPUs ({model})")
}

pub(crate) fn cell(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.digits$}"),
        _ => "-".into(),
    }
}

pub(crate) fn print_rows(corner: &str, header: &[String], rows: &[(String, Vec<String>)]) {
    let first = rows
        .iter()
        .map(|r| r.0.len())
        .chain([corner.len()])
        .max()
        .unwrap_or(0);
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            rows.iter()
                .map(|r| r.1[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |label: &str, cells: &[String]| {
        let mut s = format!("| {label:<first$} |");
        for (c, w) in cells.iter().zip(&widths) {
            s.push_str(&format!(" {c:>w$} |"));
        }
        println!("{s}");
    };
    line(corner, header);
    let mut sep = format!("|{}|", "-".repeat(first + 2));
    for w in &widths {
        sep.push_str(&format!("{}:|", "-".repeat(w + 1)));
    }
    println!("{sep}");
    for (label, cells) in rows {
        line(label, cells);
    }
}
