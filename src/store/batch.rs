//! Group commit: writes of the hot path that arrive together go to the database together.
//!
//! Every caller still waits for its own write to commit, so nothing is acknowledged before
//! it is durable. Concurrent callers share one statement and one commit: a database on a
//! small machine spends most of a single-row write on the statement and the commit, not on
//! the row. A write that arrives alone goes at once; nothing waits for company.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Mutex};

/// Writes of one kind, queued for `lanes` writers that each take whatever has queued up
/// (at most `max_batch`) and write it in one go.
pub(super) struct Coalescer<T, R> {
    queue: mpsc::Sender<Job<T, R>>,
}

struct Job<T, R> {
    item: T,
    reply: oneshot::Sender<anyhow::Result<R>>,
}

impl<T: Send + 'static, R: Send + 'static> Coalescer<T, R> {
    /// `write` takes a batch and answers one result per item, in order.
    pub fn start<F, Fut>(lanes: usize, max_batch: usize, write: F) -> Self
    where
        F: Fn(Vec<T>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<anyhow::Result<R>>> + Send + 'static,
    {
        let (queue, jobs) = mpsc::channel(lanes * max_batch * 4);
        let jobs = Arc::new(Mutex::new(jobs));
        let write = Arc::new(write);
        for _ in 0..lanes.max(1) {
            tokio::spawn(lane(jobs.clone(), write.clone(), max_batch.max(1)));
        }
        Coalescer { queue }
    }

    /// Queues `item` and waits for its write to commit (or fail).
    pub async fn write(&self, item: T) -> anyhow::Result<R> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { item, reply })
            .await
            .map_err(|_| anyhow::anyhow!("the store's writers have stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the store's writer stopped before answering"))?
    }
}

/// One writer: waits for a first job, takes what else is queued, writes the batch.
async fn lane<T, R, F, Fut>(
    jobs: Arc<Mutex<mpsc::Receiver<Job<T, R>>>>,
    write: Arc<F>,
    max_batch: usize,
) where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = Vec<anyhow::Result<R>>>,
{
    loop {
        let batch = {
            let mut queue = jobs.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batch
        };
        let (items, replies): (Vec<T>, Vec<_>) =
            batch.into_iter().map(|j| (j.item, j.reply)).unzip();
        let mut results = write(items).await.into_iter();
        for reply in replies {
            let result = results
                .next()
                .unwrap_or_else(|| Err(anyhow::anyhow!("a batched write gave no answer")));
            // The caller may have gone (its request was cancelled); the write stands.
            let _ = reply.send(result);
        }
    }
}

/// `$n` placeholders of a one-row template renumbered for row `row` of a multi-row
/// statement: `$n` becomes `$(first + row * per_row + n - 1)`.
pub(super) fn shift_placeholders(
    template: &str,
    first: usize,
    per_row: usize,
    row: usize,
) -> String {
    let mut out = String::with_capacity(template.len() + 8);
    let mut chars = template.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let start = i + 1;
        let mut end = start;
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_ascii_digit() {
                break;
            }
            end = j + 1;
            chars.next();
        }
        match template[start..end].parse::<usize>() {
            Ok(n) => out.push_str(&format!("${}", first + row * per_row + n - 1)),
            Err(_) => out.push('$'),
        }
    }
    out
}

/// `rows` copies of a one-row template, renumbered and joined by commas.
pub(super) fn value_rows(template: &str, first: usize, per_row: usize, rows: usize) -> String {
    (0..rows)
        .map(|row| shift_placeholders(template, first, per_row, row))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_renumbered_per_row() {
        assert_eq!(
            shift_placeholders("($1, 'x', $2, $2)", 1, 2, 0),
            "($1, 'x', $2, $2)"
        );
        assert_eq!(
            shift_placeholders("($1, 'x', $2, $2)", 1, 2, 1),
            "($3, 'x', $4, $4)"
        );
        assert_eq!(
            shift_placeholders("($1::text, $10)", 2, 10, 2),
            "($22::text, $31)"
        );
        assert_eq!(
            value_rows("($1, $2)", 1, 2, 3),
            "($1, $2), ($3, $4), ($5, $6)"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_batches_and_each_gets_its_own_answer() {
        let sizes = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = sizes.clone();
        let coalescer = Arc::new(Coalescer::start(1, 8, move |items: Vec<u32>| {
            seen.lock().unwrap().push(items.len());
            async move {
                // A write that takes a while, so that others queue behind it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                items
                    .into_iter()
                    .map(|i| {
                        if i == 13 {
                            Err(anyhow::anyhow!("bad {i}"))
                        } else {
                            Ok(i * 2)
                        }
                    })
                    .collect()
            }
        }));
        let call = |i: u32| {
            let c = coalescer.clone();
            tokio::spawn(async move { (i, c.write(i).await) })
        };
        // The first write keeps the only writer busy while the others queue up.
        let mut calls = vec![call(0)];
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        calls.extend((1..20).map(call));
        for call in calls {
            let (i, result) = call.await.unwrap();
            match i {
                13 => assert!(result.is_err()),
                _ => assert_eq!(result.unwrap(), i * 2),
            }
        }
        let sizes = sizes.lock().unwrap();
        assert_eq!(sizes.iter().sum::<usize>(), 20);
        assert_eq!(sizes[0], 1, "the first write waited for company: {sizes:?}");
        assert!(
            sizes.len() <= 4,
            "queued writes did not share batches: {sizes:?}"
        );
        assert!(
            sizes.iter().all(|&n| n <= 8),
            "a batch over the limit: {sizes:?}"
        );
    }
}
