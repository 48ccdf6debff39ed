//! ABC (revenue share 80 / 15 / 5 %) and XYZ (variation of monthly revenue) classes of the
//! clients who ordered, for the monthly report.

use std::collections::{BTreeMap, HashMap};

use chrono::{Datelike, NaiveDate};
use chrono_tz::Tz;

use crate::domain::abc;
use crate::store::WonRow;

/// A client's ABC/XYZ class over the analysis months.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClientClass {
    pub client: String,
    pub(crate) revenue: f64,
    pub abc: abc::Abc,
    pub xyz: abc::Xyz,
}

/// The 3×3 ABC/XYZ matrix: counts and revenue per cell, plus each client's class.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct AbcXyz {
    /// `[abc][xyz]`: clients.
    pub counts: [[usize; 3]; 3],
    /// `[abc][xyz]`: revenue.
    pub revenue: [[f64; 3]; 3],
    pub clients: Vec<ClientClass>,
    pub months: usize,
}

/// ABC by revenue share (80/15/5) and XYZ by the coefficient of variation of monthly revenue
/// (≤ 10 % / ≤ 25 % / more) over the local months `months` (oldest first), from won deals.
pub(crate) fn abc_xyz(won: &[WonRow], months: &[NaiveDate], tz: Tz) -> AbcXyz {
    let index: HashMap<(i32, u32), usize> = months
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.year(), m.month()), i))
        .collect();
    let mut monthly: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for w in won {
        let local = w.closed_at.with_timezone(&tz);
        let Some(i) = index.get(&(local.year(), local.month())) else {
            continue;
        };
        monthly
            .entry(w.client.as_str())
            .or_insert_with(|| vec![0.0; months.len()])[*i] += w.amount;
    }
    let totals: Vec<(String, f64)> = monthly
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().sum()))
        .collect();
    let classes = abc::abc(&totals);
    let mut out = AbcXyz {
        months: months.len(),
        ..AbcXyz::default()
    };
    for (client, revenue) in totals {
        let a = classes[&client];
        let x = abc::xyz(&monthly[client.as_str()]).unwrap_or(abc::Xyz::Z);
        out.counts[a as usize][x as usize] += 1;
        out.revenue[a as usize][x as usize] += revenue;
        out.clients.push(ClientClass {
            client,
            revenue,
            abc: a,
            xyz: x,
        });
    }
    out.clients.sort_by(|a, b| {
        b.revenue
            .total_cmp(&a.revenue)
            .then(a.client.cmp(&b.client))
    });
    out
}
