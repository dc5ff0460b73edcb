//! Prometheus text, read before and after a measured window: what grew in between.

use std::collections::BTreeMap;

/// One sample: a metric name and its labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: Vec<(String, String)>,
}

impl Series {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Samples by series.
pub type Samples = BTreeMap<Series, f64>;

/// Parses the text exposition format (histogram buckets are skipped: sums and counts suffice).
pub fn parse(text: &str) -> Samples {
    let mut samples = Samples::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = match line.rfind(' ') {
            Some(at) => (&line[..at], &line[at + 1..]),
            None => continue,
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.find('{') {
            Some(open) => (
                &series[..open],
                parse_labels(series[open + 1..].trim_end_matches('}')),
            ),
            None => (series, Vec::new()),
        };
        if name.ends_with("_bucket") {
            continue;
        }
        samples.insert(
            Series {
                name: name.to_owned(),
                labels,
            },
            value,
        );
    }
    samples
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().trim_start_matches(',').trim().to_owned();
        let after = &rest[eq + 1..];
        let Some(stripped) = after.strip_prefix('"') else {
            break;
        };
        let mut value = String::new();
        let mut chars = stripped.char_indices();
        let mut end = stripped.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        value.push(match next {
                            'n' => '\n',
                            other => other,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                other => value.push(other),
            }
        }
        labels.push((key, value));
        rest = &stripped[end..];
    }
    labels.sort();
    labels
}

/// `after - before` for every series of `after` (a series absent before counts from 0).
pub fn delta(before: &Samples, after: &Samples) -> Samples {
    after
        .iter()
        .map(|(series, value)| {
            (
                series.clone(),
                value - before.get(series).copied().unwrap_or(0.0),
            )
        })
        .collect()
}

/// Adds `more` into `into`.
pub fn add(into: &mut Samples, more: &Samples) {
    for (series, value) in more {
        *into.entry(series.clone()).or_insert(0.0) += value;
    }
}

/// The sum of the samples named `name` whose labels match every `(label, value)`.
pub fn sum(samples: &Samples, name: &str, matching: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| {
            series.name == name
                && matching
                    .iter()
                    .all(|(label, value)| series.label(label) == Some(value))
        })
        .map(|(_, value)| value)
        .sum()
}

/// The distinct values of `label` among the samples named `name`.
pub fn label_values(samples: &Samples, name: &str, label: &str) -> Vec<String> {
    let mut values: Vec<String> = samples
        .keys()
        .filter(|series| series.name == name)
        .filter_map(|series| series.label(label).map(str::to_owned))
        .collect();
    values.sort();
    values.dedup();
    values
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_and_differences() {
        let before = parse(
            "# HELP x y\ngospelib_entity_cache_total{result=\"hit\",subgraph=\"content\",type=\"Passage\"} 3\n\
             gospelib_x_bucket{le=\"0.1\"} 9\nplain 1.5\n",
        );
        let after = parse(
            "gospelib_entity_cache_total{result=\"hit\",subgraph=\"content\",type=\"Passage\"} 10\nplain 2\n",
        );
        let grown = delta(&before, &after);
        assert_eq!(
            sum(&grown, "gospelib_entity_cache_total", &[("result", "hit")]),
            7.0
        );
        assert_eq!(sum(&grown, "plain", &[]), 0.5);
        assert_eq!(
            label_values(&after, "gospelib_entity_cache_total", "type"),
            ["Passage"]
        );
        assert!(!before.keys().any(|s| s.name.ends_with("_bucket")));
    }

    #[test]
    fn label_values_may_hold_commas_and_quotes() {
        let samples = parse("m{a=\"x,y\",b=\"q\\\"z\"} 1\n");
        let series = samples.keys().next().unwrap();
        assert_eq!(series.label("a"), Some("x,y"));
        assert_eq!(series.label("b"), Some("q\"z"));
    }
}
