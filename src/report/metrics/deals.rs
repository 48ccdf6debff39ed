//! The deal figures of a period from the deals summed per local day: the database sums them for
//! the reports (see [`crate::store::Store::deal_sums`]); [`deal_sums`] sums deal records the
//! same way, for the weekly funnel's window and for a whole-mirror snapshot.

use std::collections::BTreeMap;

use crate::domain::*;
use crate::store::{ClosedSum, DealSums};

/// The deals created and the deals closed won or lost in `[bounds[0], bounds[last])`, summed
/// per bucket `[bounds[i], bounds[i + 1])`, from deal records, as of `cut` (see
/// [`crate::store::Store::deal_sums`]).
pub(crate) fn deal_sums(deals: &[Deal], bounds: &[Ts], cut: Ts) -> DealSums {
    let buckets = bounds.len().saturating_sub(1);
    let bucket = |t: Ts| -> Option<usize> {
        let (first, end) = (bounds.first()?, bounds.last()?);
        (*first <= t && t < *end).then(|| bounds[1..buckets].partition_point(|b| *b <= t))
    };
    let mut created = vec![0; buckets];
    let mut closed: BTreeMap<(usize, Option<String>, bool), ClosedSum> = BTreeMap::new();
    for d in deals {
        let created_in = (d.created_at < cut).then(|| bucket(d.created_at)).flatten();
        if let Some(i) = created_in {
            created[i] += 1;
        }
        let won = match d.semantics {
            Semantics::Won => true,
            Semantics::Lost => false,
            Semantics::Open => continue,
        };
        let Some((at, i)) = d
            .closed_at
            .filter(|c| *c < cut || created_in.is_some())
            .and_then(|c| Some((c, bucket(c)?)))
        else {
            continue;
        };
        let sum = closed
            .entry((i, d.responsible_id.clone(), won))
            .or_insert_with(|| ClosedSum {
                bucket: i,
                responsible_id: d.responsible_id.clone(),
                won,
                deals: 0,
                amount: 0.0,
                days: 0,
            });
        sum.deals += 1;
        sum.amount += d.amount;
        sum.days += (at.date_naive() - d.created_at.date_naive()).num_days();
    }
    DealSums {
        bounds: bounds.to_vec(),
        created,
        closed: closed.into_values().collect(),
    }
}

/// Whether bucket `i` of `sums` lies in `period` (buckets are local days, periods whole days).
pub(super) fn in_period(sums: &DealSums, i: usize, period: &super::Period) -> bool {
    sums.bounds.get(i).is_some_and(|t| period.contains(*t))
}
