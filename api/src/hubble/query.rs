//! A [`GetFlowsRequest`] evaluated: filters, time window and the first/last
//! selection, one implementation for the agent's Hubble server and for
//! `sluice observe --input-file` (which applies the request locally).

use super::filter::CompiledFilter;
use super::{parse_time, Flow, GetFlowsRequest, OBSERVE_PROTOCOL_VERSION};

/// A request parsed once, for matching every flow of a buffer or a stream.
#[derive(Clone, Debug)]
pub struct FlowQuery {
    whitelist: Vec<CompiledFilter>,
    blacklist: Vec<CompiledFilter>,
    /// Only flows at or after this time (Unix ns).
    pub since_ns: Option<u64>,
    /// Only flows at or before this time (Unix ns).
    pub until_ns: Option<u64>,
    /// How many buffered flows (0: all).
    pub number: u64,
    /// The first `number` flows instead of the last.
    pub first: bool,
    /// Keep streaming new flows after the buffered ones.
    pub follow: bool,
}

impl GetFlowsRequest {
    /// Checks and parses the request. The error names the field that is
    /// wrong (`since`, `whitelist[1] source_ip`, ...).
    pub fn compile(&self) -> Result<FlowQuery, String> {
        if self.protocol != OBSERVE_PROTOCOL_VERSION {
            return Err(format!(
                "observe request protocol {} is not supported (this side speaks {})",
                self.protocol, OBSERVE_PROTOCOL_VERSION
            ));
        }
        if self.first && self.follow {
            return Err("observe request: first and follow cannot be combined".into());
        }
        let time = |field: &str, value: &Option<String>| {
            value
                .as_deref()
                .map(|t| parse_time(t).map_err(|e| format!("observe request {field}: {e}")))
                .transpose()
        };
        let since_ns = time("since", &self.since)?;
        let until_ns = time("until", &self.until)?;
        if let (Some(since), Some(until)) = (since_ns, until_ns) {
            if since > until {
                return Err("observe request: since is after until".into());
            }
        }
        let compile = |list: &str, filters: &[super::FlowFilter]| {
            filters
                .iter()
                .enumerate()
                .map(|(i, f)| f.compile().map_err(|e| format!("{list}[{i}]: {e}")))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(FlowQuery {
            whitelist: compile("whitelist", &self.whitelist)?,
            blacklist: compile("blacklist", &self.blacklist)?,
            since_ns,
            until_ns,
            number: self.number,
            first: self.first,
            follow: self.follow,
        })
    }
}

impl FlowQuery {
    /// Whether the flow passes the filters (any whitelist filter, when there
    /// are some, and no blacklist filter).
    pub fn matches_filters(&self, flow: &Flow) -> bool {
        (self.whitelist.is_empty() || self.whitelist.iter().any(|f| f.matches(flow)))
            && !self.blacklist.iter().any(|f| f.matches(flow))
    }

    /// Whether the flow's time is inside `[since, until]`. A flow whose
    /// time does not parse is outside any bounded window.
    pub fn in_window(&self, flow: &Flow) -> bool {
        if self.since_ns.is_none() && self.until_ns.is_none() {
            return true;
        }
        let Ok(t) = parse_time(&flow.time) else {
            return false;
        };
        self.since_ns.is_none_or(|s| t >= s) && self.until_ns.is_none_or(|u| t <= u)
    }

    /// Filters and time window.
    pub fn matches(&self, flow: &Flow) -> bool {
        self.in_window(flow) && self.matches_filters(flow)
    }

    /// Whether a followed stream is over: this flow is past `until`.
    pub fn past_until(&self, flow: &Flow) -> bool {
        match (self.until_ns, parse_time(&flow.time)) {
            (Some(until), Ok(t)) => t > until,
            _ => false,
        }
    }

    /// The buffered part of the answer: from `items` (oldest first; an item
    /// is a flow or something else, such as a lost-event report, for which
    /// `flow_of` gives `None`), the matching flows selected by
    /// `number`/`first`, oldest first. Other items are kept when they lie
    /// after the first selected flow and, for `first`, before the last one
    /// (a lost-events report inside the answer); all of them when `number`
    /// is 0.
    pub fn select<'a, T>(
        &self,
        items: &'a [T],
        flow_of: impl Fn(&T) -> Option<&Flow>,
    ) -> Vec<&'a T> {
        let matching: Vec<usize> = items
            .iter()
            .enumerate()
            .filter(|(_, item)| flow_of(item).is_some_and(|f| self.matches(f)))
            .map(|(i, _)| i)
            .collect();
        let n = usize::try_from(self.number).unwrap_or(usize::MAX);
        let chosen: Vec<usize> = if self.number == 0 {
            matching
        } else if self.first {
            matching.into_iter().take(n).collect()
        } else {
            let skip = matching.len().saturating_sub(n);
            matching.into_iter().skip(skip).collect()
        };
        let keep_other = |i: usize| match (chosen.first(), chosen.last()) {
            _ if self.number == 0 => true,
            (Some(&lo), Some(&hi)) => i > lo && (i < hi || !self.first),
            _ => false,
        };
        items
            .iter()
            .enumerate()
            .filter(|(i, item)| match flow_of(item) {
                Some(_) => chosen.binary_search(i).is_ok(),
                None => keep_other(*i),
            })
            .map(|(_, item)| item)
            .collect()
    }

    /// [`FlowQuery::select`] over plain flows.
    pub fn select_flows<'a>(&self, flows: &'a [Flow]) -> Vec<&'a Flow> {
        self.select(flows, |f| Some(f))
    }
}
