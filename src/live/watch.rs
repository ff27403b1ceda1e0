//! Who in this process watches which task, and the wake-up when its mark changes.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::store::TaskMark;

/// Watched tasks by id: the last mark seen and a channel that ticks on each change.
#[derive(Default)]
pub struct Watchers {
    inner: Mutex<HashMap<String, Watched>>,
}

struct Watched {
    mark: TaskMark,
    changed: watch::Sender<u64>,
}

impl Watchers {
    /// Watches task `id`, last read as `mark`: the receiver ticks when a check finds the
    /// task's mark different (from `mark`, or from the one a later check saw).
    pub fn watch(&self, id: &str, mark: TaskMark) -> watch::Receiver<u64> {
        let mut all = lock(&self.inner);
        match all.get_mut(id) {
            Some(w) => {
                let rx = w.changed.subscribe();
                if w.mark != mark {
                    // This reader saw another mark than the check last did: let the next
                    // check compare against the older of the two by ticking now.
                    w.changed.send_modify(|n| *n += 1);
                }
                rx
            }
            None => {
                let (changed, rx) = watch::channel(0);
                all.insert(id.to_string(), Watched { mark, changed });
                rx
            }
        }
    }

    /// The ids still watched; entries nobody listens to any more are dropped.
    pub fn ids(&self) -> Vec<String> {
        let mut all = lock(&self.inner);
        all.retain(|_, w| w.changed.receiver_count() > 0);
        all.keys().cloned().collect()
    }

    /// What a check found: each watched task whose mark changed wakes its watchers. A task
    /// no longer found (never, for tasks are not deleted) wakes them too.
    pub fn saw(&self, marks: Vec<(String, TaskMark)>) {
        let mut all = lock(&self.inner);
        for (id, mark) in marks {
            if let Some(w) = all.get_mut(&id) {
                if w.mark != mark {
                    w.mark = mark;
                    w.changed.send_modify(|n| *n += 1);
                }
            }
        }
    }

    /// How many tasks are watched (for tests and metrics).
    pub fn len(&self) -> usize {
        lock(&self.inner).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(updated_at: i64, state: &str) -> TaskMark {
        TaskMark {
            updated_at,
            state: state.into(),
            progress: 0,
            deleted: false,
        }
    }

    #[test]
    fn a_changed_mark_wakes_the_watchers_and_the_same_one_does_not() {
        let w = Watchers::default();
        let mut rx = w.watch("vgt_1", mark(1, "queued"));
        w.saw(vec![("vgt_1".into(), mark(1, "queued"))]);
        assert!(!rx.has_changed().unwrap());
        w.saw(vec![("vgt_1".into(), mark(2, "in_progress"))]);
        assert!(rx.has_changed().unwrap());
        rx.mark_unchanged();
        w.saw(vec![("vgt_1".into(), mark(2, "in_progress"))]);
        assert!(!rx.has_changed().unwrap());
    }

    #[test]
    fn a_watch_nobody_holds_is_forgotten() {
        let w = Watchers::default();
        let rx = w.watch("vgt_1", mark(1, "queued"));
        assert_eq!(w.ids(), vec!["vgt_1".to_string()]);
        drop(rx);
        assert!(w.ids().is_empty());
    }
}
