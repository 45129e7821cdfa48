//! What a test recorder saw (feature `metrics`): the adapters' metric tests install
//! metrics-util's `DebuggingRecorder` and read Stockroom's metrics through [`Recorded`].

use std::collections::HashMap;
use std::sync::Mutex;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;
pub use metrics_util::MetricKind;

/// The process's test recorder, and what it has recorded so far. A snapshot drains the counters
/// and the histograms' samples, so they are summed here over every snapshot taken.
pub struct Recorded {
    snapshotter: Snapshotter,
    totals: Mutex<HashMap<CompositeKey, f64>>,
}

/// One series of a metric: its attributes (name, value) and its value.
pub type Series = (Vec<(String, String)>, f64);

impl Recorded {
    /// Installs a `DebuggingRecorder` as the process's recorder (a test binary may install one
    /// only) and gives Stockroom's metrics their descriptions.
    pub fn install() -> Self {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this test binary");
        stockroom_core::metrics::describe();
        Self {
            snapshotter,
            totals: Mutex::default(),
        }
    }

    /// Takes a snapshot and adds it to what was seen: counters and histograms' samples add up,
    /// a gauge takes the value it had. The recorder sets a gauge to 0 when a snapshot reads it,
    /// so take a snapshot once a test has set every gauge it checks.
    pub fn take(&self) {
        let mut totals = self.totals.lock().unwrap();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let total = totals.entry(key).or_default();
            match value {
                DebugValue::Counter(n) => *total += n as f64,
                DebugValue::Gauge(g) => *total = g.into_inner(),
                DebugValue::Histogram(samples) => *total += samples.len() as f64,
            }
        }
    }

    /// Every series of the metric `name` of `kind` as of the last [`take`](Self::take): a
    /// counter's count, a gauge's value, a histogram's number of samples.
    pub fn series(&self, kind: MetricKind, name: &str) -> Vec<Series> {
        let totals = self.totals.lock().unwrap();
        totals
            .iter()
            .filter(|(key, _)| key.kind() == kind && key.key().name() == name)
            .map(|(key, value)| {
                let labels = key
                    .key()
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect();
                (labels, *value)
            })
            .collect()
    }

    /// After a [`take`](Self::take), the sum over the series of `name` of `kind` whose
    /// attributes include every pair of `labels` (for counters and histograms).
    pub fn value(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.take();
        self.series(kind, name)
            .iter()
            .filter(|(attributes, _)| labels.iter().all(|(k, v)| has(attributes, k, v)))
            .map(|(_, value)| value)
            .sum()
    }
}

/// Whether `attributes` hold `name` = `value`.
pub fn has(attributes: &[(String, String)], name: &str, value: &str) -> bool {
    attributes.iter().any(|(k, v)| k == name && v == value)
}

/// The value of the attribute `name`, if `attributes` hold it.
pub fn attribute<'a>(attributes: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}
