//! The sales funnel of the period: the deals created in it, step by step through the stages
//! of their most used pipeline.

use std::collections::{BTreeMap, HashMap};

use crate::domain::*;

use super::{Period, Snapshot};

/// One step of a pipeline's funnel.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FunnelStep {
    pub(crate) stage: String,
    /// Deals of the period that reached this stage (are in it, in a later one, or won).
    pub(crate) reached: usize,
    /// Share of the previous step's deals that reached this one, %.
    pub(crate) from_previous_pct: Option<f64>,
}

/// The funnel of the deals created in `period` in their most used pipeline: (pipeline id, steps).
///
/// The mirror holds each deal's current stage, not its history, so "reached" means "is in this
/// stage or a later one, or won"; a lost deal counts at the first stage only (where it was lost
/// is not known).
pub fn funnel(s: &Snapshot, period: &Period) -> Option<(String, Vec<FunnelStep>)> {
    let deals: Vec<&Deal> = s
        .deals
        .iter()
        .filter(|d| period.contains(d.created_at))
        .collect();
    let mut per_pipeline: BTreeMap<&str, usize> = BTreeMap::new();
    for d in &deals {
        *per_pipeline.entry(d.pipeline_id.as_str()).or_default() += 1;
    }
    let (pipeline, _) = per_pipeline
        .iter()
        .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))?;
    let mut stages: Vec<&Stage> = s
        .stages
        .iter()
        .filter(|st| st.pipeline_id == *pipeline && st.semantics == Semantics::Open)
        .collect();
    stages.sort_by_key(|st| st.sort);
    if stages.is_empty() {
        return None;
    }
    let rank: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, st)| (st.id.as_str(), i))
        .collect();
    let mut reached = vec![0usize; stages.len() + 1];
    for d in deals.iter().filter(|d| d.pipeline_id == *pipeline) {
        let upto = match d.semantics {
            Semantics::Won => stages.len(),
            Semantics::Lost => 0,
            Semantics::Open => rank.get(d.stage_id.as_str()).copied().unwrap_or(0),
        };
        for r in reached.iter_mut().take(upto + 1) {
            *r += 1;
        }
    }
    let won_label = s
        .stages
        .iter()
        .find(|st| st.pipeline_id == *pipeline && st.semantics == Semantics::Won)
        .map_or_else(|| "WON".to_string(), |st| st.name.clone());
    let names: Vec<String> = stages
        .iter()
        .map(|st| st.name.clone())
        .chain(std::iter::once(won_label))
        .collect();
    let steps = names
        .into_iter()
        .zip(reached.iter())
        .enumerate()
        .map(|(i, (stage, n))| FunnelStep {
            stage,
            reached: *n,
            from_previous_pct: (i > 0 && reached[i - 1] > 0)
                .then(|| *n as f64 * 100.0 / reached[i - 1] as f64),
        })
        .collect();
    Some((pipeline.to_string(), steps))
}
