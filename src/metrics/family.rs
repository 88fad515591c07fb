//! One way to declare a family and render its samples.
//!
//! A family is a `const` beside its collector: `Family<Counter, 2>` is a counter with two
//! labels. The kind and the label count are in the type, so a collector cannot add a gauge
//! sample to a counter or forget a label value, and it names the family by its constant: a
//! misspelt family is a compile error, not a scrape-time panic.

use std::marker::PhantomData;

use prometheus::core::Desc;
use prometheus::proto::{self, LabelPair, Metric, MetricFamily, MetricType};

use super::NAMESPACE;

/// The kind of a family, as a type.
pub trait Kind {
    const TYPE: MetricType;
}

pub enum Counter {}
pub enum Gauge {}
pub enum Histogram {}

impl Kind for Counter {
    const TYPE: MetricType = MetricType::COUNTER;
}
impl Kind for Gauge {
    const TYPE: MetricType = MetricType::GAUGE;
}
impl Kind for Histogram {
    const TYPE: MetricType = MetricType::HISTOGRAM;
}

/// A metric family of kind `K` with `N` labels.
pub struct Family<K, const N: usize> {
    name: &'static str,
    help: &'static str,
    labels: [&'static str; N],
    /// Whether the name takes [`NAMESPACE`]: only the standard `process_*` names do not.
    namespaced: bool,
    kind: PhantomData<K>,
}

impl<K: Kind, const N: usize> Family<K, N> {
    /// `name` without the namespace.
    pub const fn new(name: &'static str, help: &'static str, labels: [&'static str; N]) -> Self {
        Family {
            name,
            help,
            labels,
            namespaced: true,
            kind: PhantomData,
        }
    }

    /// A name every exporter shares (`process_cpu_seconds_total`...): no namespace.
    pub const fn standard(
        name: &'static str,
        help: &'static str,
        labels: [&'static str; N],
    ) -> Self {
        Family {
            name,
            help,
            labels,
            namespaced: false,
            kind: PhantomData,
        }
    }

    pub fn name(&self) -> String {
        if self.namespaced {
            format!("{NAMESPACE}_{}", self.name)
        } else {
            self.name.to_owned()
        }
    }

    /// The descriptor a collector declares for this family.
    pub fn desc(&self) -> Desc {
        Desc::new(
            self.name(),
            self.help.to_owned(),
            self.labels.iter().map(|s| (*s).to_owned()).collect(),
            Default::default(),
        )
        .expect("valid metric descriptor")
    }

    /// An empty family to add samples to.
    pub fn samples(&self) -> Samples<K, N> {
        let mut mf = MetricFamily::default();
        mf.set_name(self.name());
        mf.set_help(self.help.to_owned());
        mf.set_field_type(K::TYPE);
        Samples {
            mf,
            labels: self.labels,
            kind: PhantomData,
        }
    }
}

impl Family<Counter, 0> {
    /// The family with its one sample.
    pub fn single(&self, value: f64) -> MetricFamily {
        let mut s = self.samples();
        s.add([], value);
        s.done()
    }
}

impl Family<Gauge, 0> {
    /// The family with its one sample.
    pub fn single(&self, value: f64) -> MetricFamily {
        let mut s = self.samples();
        s.set([], value);
        s.done()
    }
}

impl Family<Gauge, 1> {
    /// A state set (the OpenMetrics convention, as a gauge in the text format): one sample per
    /// state, labelled with the family's own name, 1 for `current` and 0 for the others.
    pub fn stateset<T: PartialEq + Into<&'static str>>(
        &self,
        states: impl IntoIterator<Item = T>,
        current: &T,
    ) -> MetricFamily {
        let mut s = self.samples();
        for state in states {
            let on = state == *current;
            s.set([state.into()], f64::from(u8::from(on)));
        }
        s.done()
    }
}

/// The samples of one family at one scrape.
pub struct Samples<K, const N: usize> {
    mf: MetricFamily,
    labels: [&'static str; N],
    kind: PhantomData<K>,
}

impl<K, const N: usize> Samples<K, N> {
    fn metric(&mut self, values: [&str; N]) -> &mut Metric {
        let pairs = self
            .labels
            .iter()
            .zip(values)
            .map(|(k, v)| {
                let mut p = LabelPair::default();
                p.set_name((*k).to_owned());
                p.set_value(v.to_owned());
                p
            })
            .collect();
        let mut m = Metric::default();
        m.set_label(pairs);
        let metrics = self.mf.mut_metric();
        metrics.push(m);
        metrics.last_mut().expect("just pushed")
    }

    pub fn is_empty(&self) -> bool {
        self.mf.get_metric().is_empty()
    }

    pub fn done(self) -> MetricFamily {
        self.mf
    }
}

impl<const N: usize> Samples<Counter, N> {
    pub fn add(&mut self, values: [&str; N], value: f64) -> &mut Self {
        let mut c = proto::Counter::default();
        c.set_value(value);
        self.metric(values).set_counter(c);
        self
    }
}

impl<const N: usize> Samples<Gauge, N> {
    pub fn set(&mut self, values: [&str; N], value: f64) -> &mut Self {
        let mut g = proto::Gauge::default();
        g.set_value(value);
        self.metric(values).set_gauge(g);
        self
    }
}

impl<const N: usize> Samples<Histogram, N> {
    /// `buckets`: (upper bound, non-cumulative count) without `+Inf`; `count` includes it.
    pub fn observe(
        &mut self,
        values: [&str; N],
        buckets: impl IntoIterator<Item = (f64, u64)>,
        count: u64,
        sum: f64,
    ) -> &mut Self {
        let mut h = proto::Histogram::default();
        let mut cumulative = 0;
        h.set_bucket(
            buckets
                .into_iter()
                .map(|(le, n)| {
                    cumulative += n;
                    let mut b = proto::Bucket::default();
                    b.set_upper_bound(le);
                    b.set_cumulative_count(cumulative);
                    b
                })
                .collect(),
        );
        h.set_sample_count(count);
        h.set_sample_sum(sum);
        self.metric(values).set_histogram(h);
        self
    }
}
