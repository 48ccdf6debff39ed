//! ABC (revenue share 80 / 15 / 5 %) and XYZ (variation of monthly revenue) classes of the
//! clients who ordered, for the monthly report.

use std::collections::BTreeMap;

use crate::domain::abc;
use crate::store::ClientMonth;

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
/// (≤ 10 % / ≤ 25 % / more) over `months` months, from the won revenue per client and month
/// (`month` counted from the oldest, 0-based; the database sums it, see
/// [`crate::store::Store::won_by_client_month`]).
pub(crate) fn abc_xyz(sums: &[ClientMonth], months: usize) -> AbcXyz {
    let mut monthly: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for s in sums.iter().filter(|s| s.month < months) {
        monthly
            .entry(s.client.as_str())
            .or_insert_with(|| vec![0.0; months])[s.month] += s.revenue;
    }
    let totals: Vec<(String, f64)> = monthly
        .iter()
        .map(|(k, v)| (k.to_string(), v.iter().sum()))
        .collect();
    let classes = abc::abc(&totals);
    let mut out = AbcXyz {
        months,
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

/// One won deal, reduced to what ABC/XYZ needs: what the report read before the database
/// summed per client and month, kept to check that sum against.
#[cfg(test)]
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WonRow {
    /// `company:ID`, else `contact:ID`, else `deal:ID` (a client the CRM never named).
    pub(crate) client: String,
    pub(crate) closed_at: crate::domain::Ts,
    pub(crate) amount: f64,
}

/// The revenue per client and local month (`months`, oldest first) of won deals, summed in
/// Rust row by row: the reference [`crate::store::Store::won_by_client_month`] is checked
/// against.
#[cfg(test)]
pub(crate) fn monthly_sums(
    won: &[WonRow],
    months: &[chrono::NaiveDate],
    tz: chrono_tz::Tz,
) -> Vec<ClientMonth> {
    use chrono::Datelike;
    let index: std::collections::HashMap<(i32, u32), usize> = months
        .iter()
        .enumerate()
        .map(|(i, m)| ((m.year(), m.month()), i))
        .collect();
    let mut sums: BTreeMap<(&str, usize), f64> = BTreeMap::new();
    for w in won {
        let local = w.closed_at.with_timezone(&tz);
        if let Some(i) = index.get(&(local.year(), local.month())) {
            *sums.entry((w.client.as_str(), *i)).or_default() += w.amount;
        }
    }
    sums.into_iter()
        .map(|((client, month), revenue)| ClientMonth {
            client: client.to_string(),
            month,
            revenue,
        })
        .collect()
}
