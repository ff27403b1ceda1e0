//! Open status streams per key in this process (`live.max_streams`), and the gauge of all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts of open streams by key id.
pub struct StreamCounts {
    max: usize,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's place in the count, given back when dropped.
pub struct StreamSlot {
    key: String,
    open: Arc<Mutex<HashMap<String, usize>>>,
}

impl StreamCounts {
    pub fn new(max: usize) -> StreamCounts {
        StreamCounts {
            max,
            open: Arc::default(),
        }
    }

    /// A slot for one more stream of `key`, or None when it has `max_streams` open.
    pub fn open(&self, key: &str) -> Option<StreamSlot> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let n = open.entry(key.to_string()).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        crate::telemetry::metrics::stream_opened();
        Some(StreamSlot {
            key: key.to_string(),
            open: self.open.clone(),
        })
    }

    pub fn max(&self) -> usize {
        self.max
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
        crate::telemetry::metrics::stream_closed();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_at_most_max_streams_and_a_closed_one_frees_its_place() {
        let counts = StreamCounts::new(2);
        let a = counts.open("k1").unwrap();
        let _b = counts.open("k1").unwrap();
        assert!(counts.open("k1").is_none());
        assert!(counts.open("k2").is_some(), "another key has its own count");
        drop(a);
        assert!(counts.open("k1").is_some());
    }
}
