//! ABC (revenue share 80 / 15 / 5 %) and XYZ (variation of monthly revenue) classes of the
//! clients who ordered, for the monthly report.

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
///
/// Tens of thousands of clients over a big mirror: their monthly revenues lie in one flat
/// buffer, clients in key order, and one sort by revenue serves both the ABC shares and the
/// list; sums add up in the same order as key-ordered maps would add them.
pub(crate) fn abc_xyz(sums: &[ClientMonth], months: usize) -> AbcXyz {
    let mut rows: Vec<&ClientMonth> = sums.iter().filter(|s| s.month < months).collect();
    // Stable: two sums of one client and month add up in the order given.
    rows.sort_by(|a, b| a.client.cmp(&b.client).then(a.month.cmp(&b.month)));
    let mut keys: Vec<&str> = Vec::new();
    let mut monthly: Vec<f64> = Vec::new();
    for s in rows {
        if keys.last() != Some(&s.client.as_str()) {
            keys.push(&s.client);
            monthly.resize(monthly.len() + months, 0.0);
        }
        let first = (keys.len() - 1) * months;
        monthly[first + s.month] += s.revenue;
    }
    let of = |i: usize| &monthly[i * months..(i + 1) * months];
    let totals: Vec<f64> = (0..keys.len()).map(|i| of(i).iter().sum()).collect();
    // By revenue, the largest first; ties by key, so the order never depends on the input.
    let mut by_revenue: Vec<usize> = (0..keys.len()).collect();
    by_revenue.sort_by(|a, b| {
        totals[*b]
            .total_cmp(&totals[*a])
            .then_with(|| keys[*a].cmp(keys[*b]))
    });
    let sorted = abc::abc_sorted(
        by_revenue.iter().map(|i| totals[*i]),
        abc::total(totals.iter().copied()),
    );
    let mut classes = vec![abc::Abc::C; keys.len()];
    for (i, c) in by_revenue.iter().zip(sorted) {
        classes[*i] = c;
    }
    let mut out = AbcXyz {
        months,
        ..AbcXyz::default()
    };
    let mut clients: Vec<Option<ClientClass>> = Vec::with_capacity(keys.len());
    for (i, key) in keys.iter().enumerate() {
        let (a, revenue) = (classes[i], totals[i]);
        let x = abc::xyz(of(i)).unwrap_or(abc::Xyz::Z);
        out.counts[a as usize][x as usize] += 1;
        out.revenue[a as usize][x as usize] += revenue;
        clients.push(Some(ClientClass {
            client: key.to_string(),
            revenue,
            abc: a,
            xyz: x,
        }));
    }
    out.clients = by_revenue
        .iter()
        .filter_map(|i| clients.get_mut(*i).and_then(Option::take))
        .collect();
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
    let mut sums: std::collections::BTreeMap<(&str, usize), f64> = Default::default();
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
