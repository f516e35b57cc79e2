//! Percentiles over every recorded value (exact: the values are kept, not binned).

use serde_json::{json, Value};

/// p50/p90/p99/max/mean of a set of microsecond values.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub count: usize,
    /// Median, in microseconds.
    pub p50: u32,
    /// 90th percentile.
    pub p90: u32,
    /// 99th percentile.
    pub p99: u32,
    /// Largest.
    pub max: u32,
    /// Mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `values` (sorted in place).
    #[allow(clippy::cast_precision_loss, clippy::cast_sign_loss)]
    pub fn of(mut values: Vec<u32>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_unstable();
        let n = values.len();
        // Nearest rank: the smallest value with at least p% of the values at or below it.
        let rank = |p: f64| values[((p * n as f64).ceil() as usize).clamp(1, n) - 1];
        Self {
            count: n,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            max: values[n - 1],
            mean: values.iter().map(|&v| f64::from(v)).sum::<f64>() / n as f64,
        }
    }

    /// As JSON, in milliseconds (`null`s when there were no values).
    pub fn json(&self) -> Value {
        let ms = |us: u32| f64::from(us) / 1000.0;
        if self.count == 0 {
            return json!({"count": 0, "p50": null, "p90": null, "p99": null, "max": null, "mean": null});
        }
        json!({
            "count": self.count, "p50": ms(self.p50), "p90": ms(self.p90), "p99": ms(self.p99),
            "max": ms(self.max), "mean": self.mean / 1000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Summary;

    #[test]
    fn nearest_rank() {
        let s = Summary::of((1..=100).collect());
        assert_eq!((s.p50, s.p90, s.p99, s.max), (50, 90, 99, 100));
        assert_eq!(Summary::of(vec![7]).p99, 7);
        assert_eq!(Summary::of(vec![]).count, 0);
    }
}
