//! The pure part of `bench flows`: per-variant medians, the ratios to the baseline
//! (median of same-round ratios, which cancels load drifting between rounds, and the
//! ratio of medians), the 5% verdict and the Markdown table.

use serde::Serialize;

use super::{FailedTrial, Trial, Variant};
pub use crate::bench::forward::median;

/// Issue 7: flow events may cost at most 5% of forwarding throughput, so B / A >= 0.95.
pub const TARGET_RATIO: f64 = 0.95;

/// One variant over the rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub variant: Variant,
    pub description: &'static str,
    pub trials: usize,
    pub failed: usize,
    pub delivered_pps_median: f64,
    pub delivered_pps_min: f64,
    pub delivered_pps_max: f64,
    /// This variant's delivered pps over the baseline's in the same round, per round
    /// with both (round, ratio).
    pub same_round_ratios: Vec<(u32, f64)>,
    /// Median of `same_round_ratios`.
    pub same_round_ratio_median: Option<f64>,
    /// This variant's median over the baseline's median.
    pub ratio_of_medians: Option<f64>,
    pub new_flows_per_second_median: f64,
    pub new_flow_fraction_median: f64,
    /// Engine events emitted per second (median over trials).
    pub events_emitted_per_second_median: f64,
    /// Flow lines the subscriber read per second (median), for subscribed variants.
    pub events_delivered_per_second_median: Option<f64>,
    /// Summed over the trials' windows.
    pub events_emitted: u64,
    pub events_lost: u64,
    pub events_subscriber_lost: u64,
    pub lost_reports: u64,
    pub lost_reported: u64,
    pub parse_errors: u64,
    /// Over the whole trials (after the drain): the engine's lost events (worker queues
    /// and socket) and what the consumer was told of them.
    pub run_events_lost: u64,
    pub run_lost_reported: u64,
    /// Engine CPU (all threads) per second, median.
    pub engine_cpu_per_second_median: Option<f64>,
    pub bench_cpu_per_second_median: Option<f64>,
}

fn optional_median(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let v: Vec<f64> = values.flatten().collect();
    (!v.is_empty()).then(|| median(&v))
}

/// Per-variant rows in [`Variant::ALL`] order.
pub fn summarize(trials: &[Trial], failed: &[FailedTrial]) -> Vec<Summary> {
    let baseline_of = |round: u32| {
        trials
            .iter()
            .find(|t| t.variant == Variant::Baseline && t.round == round)
            .map(|t| t.delivered_pps)
            .filter(|pps| *pps > 0.0)
    };
    let mut rows: Vec<Summary> = Variant::ALL
        .iter()
        .map(|&variant| {
            let mine: Vec<&Trial> = trials.iter().filter(|t| t.variant == variant).collect();
            let of = |f: fn(&Trial) -> f64| mine.iter().map(|t| f(t)).collect::<Vec<f64>>();
            let delivered = of(|t| t.delivered_pps);
            let same_round_ratios: Vec<(u32, f64)> = mine
                .iter()
                .filter_map(|t| Some((t.round, t.delivered_pps / baseline_of(t.round)?)))
                .collect();
            let ratios: Vec<f64> = same_round_ratios.iter().map(|&(_, r)| r).collect();
            let sum = |f: fn(&Trial) -> u64| mine.iter().map(|t| f(t)).sum::<u64>();
            Summary {
                variant,
                description: variant.describe(),
                trials: mine.len(),
                failed: failed.iter().filter(|f| f.variant == variant).count(),
                delivered_pps_median: median(&delivered),
                delivered_pps_min: delivered.iter().copied().fold(f64::NAN, f64::min),
                delivered_pps_max: delivered.iter().copied().fold(f64::NAN, f64::max),
                same_round_ratio_median: (!ratios.is_empty()).then(|| median(&ratios)),
                same_round_ratios,
                ratio_of_medians: None,
                new_flows_per_second_median: median(&of(|t| t.new_flows_per_second)),
                new_flow_fraction_median: median(&of(|t| t.new_flow_fraction)),
                events_emitted_per_second_median: median(&of(|t| {
                    t.events.emitted as f64 / t.window_seconds
                })),
                events_delivered_per_second_median: optional_median(
                    mine.iter().map(|t| t.events_delivered_per_second),
                ),
                events_emitted: sum(|t| t.events.emitted),
                events_lost: sum(|t| t.events.lost),
                events_subscriber_lost: sum(|t| t.events.subscriber_lost),
                lost_reports: sum(|t| t.subscriber.map_or(0, |s| s.lost_reports)),
                lost_reported: sum(Trial::lost_reported),
                parse_errors: sum(|t| t.subscriber.map_or(0, |s| s.parse_errors)),
                run_events_lost: sum(|t| t.run_events_lost),
                run_lost_reported: sum(|t| t.run_lost_reported.unwrap_or(0)),
                engine_cpu_per_second_median: optional_median(
                    mine.iter().map(|t| t.engine_cpu_per_second),
                ),
                bench_cpu_per_second_median: optional_median(
                    mine.iter().map(|t| t.bench_cpu_per_second),
                ),
            }
        })
        .collect();
    let baseline = rows
        .iter()
        .find(|r| r.variant == Variant::Baseline && r.trials > 0)
        .map(|r| r.delivered_pps_median)
        .filter(|pps| *pps > 0.0);
    if let Some(baseline) = baseline {
        for row in rows.iter_mut().filter(|r| r.trials > 0) {
            row.ratio_of_medians = Some(row.delivered_pps_median / baseline);
        }
    }
    rows
}

/// The load target, judged on B / A.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// Median of B's same-round ratios to A (the verdict's number).
    pub medium_same_round: Option<f64>,
    pub medium_ratio_of_medians: Option<f64>,
    /// `medium_same_round >= TARGET_RATIO`; `None` without a pair of trials.
    pub met: Option<bool>,
    /// C lost events and the consumer was told of every one of them by the end of its
    /// trials (`None` when C did not overflow or did not run).
    pub overflow_reported: Option<bool>,
    /// C over its whole trials: events lost in the engine (worker queues and socket),
    /// and reported to the consumer.
    pub none_events_lost: u64,
    pub none_lost_reported: u64,
}

impl Target {
    pub fn describe(&self) -> String {
        let ratio = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"));
        let verdict = match self.met {
            Some(true) => "MET",
            Some(false) => "NOT MET",
            None => "not measured",
        };
        let overflow = match self.overflow_reported {
            Some(true) => "all reported",
            Some(false) => "NOT all reported",
            None => "none seen",
        };
        format!(
            "5% target (B/A >= {TARGET_RATIO}): {verdict}: B/A median of same-round ratios {}, \
             ratio of medians {}.\nOverflow at aggregation none (whole trials): {} events lost \
             in the engine (worker queues and socket), {} reported to the consumer: {overflow}.",
            ratio(self.medium_same_round),
            ratio(self.medium_ratio_of_medians),
            self.none_events_lost,
            self.none_lost_reported,
        )
    }
}

/// The verdict from the summary rows.
pub fn target(rows: &[Summary]) -> Target {
    let row = |v: Variant| rows.iter().find(|r| r.variant == v && r.trials > 0);
    let medium = row(Variant::Medium);
    let none = row(Variant::None);
    let medium_same_round = medium.and_then(|r| r.same_round_ratio_median);
    let (none_events_lost, none_lost_reported) =
        none.map_or((0, 0), |r| (r.run_events_lost, r.run_lost_reported));
    Target {
        medium_same_round,
        medium_ratio_of_medians: medium.and_then(|r| r.ratio_of_medians),
        met: medium_same_round.map(|r| r >= TARGET_RATIO),
        overflow_reported: (none_events_lost > 0).then_some(none_lost_reported >= none_events_lost),
        none_events_lost,
        none_lost_reported,
    }
}

fn mpps(pps: f64) -> String {
    if pps.is_finite() {
        format!("{:.3}", pps / 1e6)
    } else {
        "n/a".to_string()
    }
}

fn thousands(per_second: f64) -> String {
    if per_second.is_finite() {
        format!("{:.1}k", per_second / 1e3)
    } else {
        "n/a".to_string()
    }
}

/// The summary as a Markdown table (for docs/benchmarks.md).
pub fn markdown_table(rows: &[Summary]) -> String {
    let mut text = String::from(
        "| variant | delivered Mpps, median (min–max) | / A same round (median) | / A ratio of medians | new flows/s (share of frames) | events emitted/s | flows read/s | lost in worker queues | reported in Lost lines (lines) | not written to subscriber | trials |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
    );
    let ratio = |r: Option<f64>| r.map_or_else(|| "n/a".to_string(), |r| format!("{r:.3}"));
    for r in rows {
        let subscribed = r.variant.subscribes();
        text.push_str(&format!(
            "| {} | {} ({}–{}) | {} | {} | {} ({:.1}%) | {} | {} | {} | {} | {} | {}{} |\n",
            r.description,
            mpps(r.delivered_pps_median),
            mpps(r.delivered_pps_min),
            mpps(r.delivered_pps_max),
            ratio(r.same_round_ratio_median),
            ratio(r.ratio_of_medians),
            thousands(r.new_flows_per_second_median),
            r.new_flow_fraction_median * 100.0,
            thousands(r.events_emitted_per_second_median),
            r.events_delivered_per_second_median
                .map_or_else(|| "–".to_string(), thousands),
            r.events_lost,
            if subscribed {
                format!("{} ({})", r.lost_reported, r.lost_reports)
            } else {
                "–".to_string()
            },
            r.events_subscriber_lost,
            r.trials,
            if r.failed > 0 {
                format!(" ({} failed)", r.failed)
            } else {
                String::new()
            }
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::super::{EventCounters, SubscriberCounts};
    use super::*;
    use std::collections::BTreeMap;

    fn trial(variant: Variant, round: u32, pps: f64, emitted: u64, lost: u64) -> Trial {
        Trial {
            variant,
            round,
            lab: String::new(),
            window_seconds: 2.0,
            generator_pps: None,
            offered_pps: pps,
            delivered_packets: (pps * 2.0) as u64,
            delivered_pps: pps,
            engine_rx_pps: pps,
            new_flows_per_second: pps * 0.04,
            new_flow_fraction: 0.04,
            ct_evictions: 0,
            events: EventCounters {
                emitted,
                lost,
                subscriber_lost: 0,
            },
            subscriber: variant.subscribes().then_some(SubscriberCounts {
                flows: emitted,
                lost_reports: u64::from(lost > 0),
                lost_perf_ring: lost,
                ..SubscriberCounts::default()
            }),
            events_delivered_per_second: variant.subscribes().then_some(emitted as f64 / 2.0),
            agent: None,
            run_events_lost: lost,
            run_lost_reported: variant.subscribes().then_some(lost),
            engine_drops: BTreeMap::new(),
            engine_cpu_per_second: Some(1.0),
            bench_cpu_per_second: None,
            loadavg: String::new(),
        }
    }

    #[test]
    fn ratios_pair_rounds_and_compare_medians() {
        // Round 2 is slower for everyone (load): the same-round ratio cancels it.
        let trials = [
            trial(Variant::Baseline, 1, 1.0e6, 0, 0),
            trial(Variant::Medium, 1, 0.98e6, 80_000, 0),
            trial(Variant::None, 1, 0.5e6, 200_000, 800_000),
            trial(Variant::Baseline, 2, 0.5e6, 0, 0),
            trial(Variant::Medium, 2, 0.49e6, 40_000, 0),
            trial(Variant::Baseline, 3, 0.9e6, 0, 0),
            trial(Variant::Medium, 3, 0.6e6, 50_000, 0),
        ];
        let failed = [FailedTrial {
            variant: Variant::None,
            round: 2,
            error: "x".into(),
        }];
        let rows = summarize(&trials, &failed);
        assert_eq!(rows.len(), 3);
        let medium = &rows[1];
        assert_eq!(medium.variant, Variant::Medium);
        let ratios: Vec<f64> = medium.same_round_ratios.iter().map(|r| r.1).collect();
        assert!((ratios[0] - 0.98).abs() < 1e-12 && (ratios[1] - 0.98).abs() < 1e-12);
        assert!((ratios[2] - 0.6 / 0.9).abs() < 1e-12);
        assert!((medium.same_round_ratio_median.unwrap() - 0.98).abs() < 1e-12);
        // Medians: A 0.9e6, B 0.6e6.
        assert!((medium.ratio_of_medians.unwrap() - 0.6 / 0.9).abs() < 1e-12);
        assert_eq!(rows[0].ratio_of_medians, Some(1.0));
        assert_eq!(rows[2].trials, 1);
        assert_eq!(rows[2].failed, 1);
        assert_eq!(rows[2].events_lost, 800_000);
        assert_eq!(rows[2].lost_reported, 800_000);
        assert_eq!(medium.events_emitted, 170_000);
        assert_eq!(medium.events_delivered_per_second_median, Some(25_000.0));

        let verdict = target(&rows);
        assert_eq!(verdict.met, Some(true));
        assert_eq!(verdict.overflow_reported, Some(true));
        assert!(verdict
            .describe()
            .contains("MET: B/A median of same-round ratios 0.980"));
        assert!(verdict.describe().contains("ratio of medians 0.667"));

        let table = markdown_table(&rows);
        assert!(
            table.contains(
                "| B aggregation medium + subscriber | 0.600 (0.490–0.980) | 0.980 | 0.667 |"
            ),
            "{table}"
        );
        assert!(
            table.contains("| 800000 | 800000 (1) | 0 | 1 (1 failed) |"),
            "{table}"
        );
        assert!(
            table.contains(
                "| A events socket, no subscriber | 0.900 (0.500–1.000) | 1.000 | 1.000 |"
            ),
            "{table}"
        );
    }

    #[test]
    fn target_fails_below_ninety_five_percent_and_without_pairs() {
        let slow = [
            trial(Variant::Baseline, 1, 1.0e6, 0, 0),
            trial(Variant::Medium, 1, 0.94e6, 1, 0),
            trial(Variant::None, 1, 0.5e6, 10, 5),
        ];
        let rows = summarize(&slow, &[]);
        let verdict = target(&rows);
        assert_eq!(verdict.met, Some(false));
        assert!(verdict.describe().contains("NOT MET"));
        // C lost 5 and its subscriber read a Lost line of 5.
        assert_eq!(verdict.overflow_reported, Some(true));

        // Losses the subscriber never heard of are flagged.
        let mut silent = trial(Variant::None, 1, 0.5e6, 10, 5);
        silent.run_lost_reported = Some(4);
        let rows = summarize(&[slow[0].clone(), slow[1].clone(), silent], &[]);
        assert_eq!(target(&rows).overflow_reported, Some(false));

        // No baseline in the round: no ratio, no verdict.
        let unpaired = [trial(Variant::Medium, 1, 1.0e6, 1, 0)];
        let rows = summarize(&unpaired, &[]);
        assert_eq!(rows[1].same_round_ratio_median, None);
        assert_eq!(rows[1].ratio_of_medians, None);
        assert_eq!(target(&rows).met, None);
        assert_eq!(target(&rows).overflow_reported, None);
    }
}
