//! ABC and XYZ classes of clients.
//!
//! ABC by share of revenue: the clients that together bring the first 80 % are A, the next 15 %
//! B, the rest C (a client that crosses a boundary belongs to the class it starts in). XYZ by the
//! coefficient of variation of monthly revenue: ≤ 10 % X, ≤ 25 % Y, else Z.

use std::collections::HashMap;
use std::hash::Hash;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Abc {
    A,
    B,
    C,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Xyz {
    X,
    Y,
    Z,
}

/// ABC class of each key by its revenue. Keys with no revenue are C.
pub(crate) fn abc<K: Clone + Eq + Hash + Ord>(revenue: &[(K, f64)]) -> HashMap<K, Abc> {
    let total = total(revenue.iter().map(|(_, r)| *r));
    let mut sorted: Vec<&(K, f64)> = revenue.iter().collect();
    // Ties broken by key so the result never depends on input order.
    sorted.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let classes = abc_sorted(sorted.iter().map(|(_, r)| *r), total);
    sorted
        .into_iter()
        .zip(classes)
        .map(|((k, _), c)| (k.clone(), c))
        .collect()
}

/// The total the ABC shares are taken of: the revenues added in the order given, negative
/// ones as none.
pub(crate) fn total(revenue: impl IntoIterator<Item = f64>) -> f64 {
    revenue.into_iter().map(|r| r.max(0.0)).sum()
}

/// ABC classes of revenues sorted from the largest, `total` being their [`total`]: for a
/// caller that has them sorted already and needs no map from keys.
pub(crate) fn abc_sorted(sorted: impl IntoIterator<Item = f64>, total: f64) -> Vec<Abc> {
    let mut before = 0.0;
    sorted
        .into_iter()
        .map(|r| {
            let class = if total <= 0.0 || r <= 0.0 {
                Abc::C
            } else if before / total < 0.80 {
                Abc::A
            } else if before / total < 0.95 {
                Abc::B
            } else {
                Abc::C
            };
            before += r.max(0.0);
            class
        })
        .collect()
}

/// XYZ class from monthly revenues (months without revenue included as 0).
pub(crate) fn xyz(monthly: &[f64]) -> Option<Xyz> {
    if monthly.is_empty() {
        return None;
    }
    let n = monthly.len() as f64;
    let mean = monthly.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return Some(Xyz::Z);
    }
    let var = monthly.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    let cv = var.sqrt() / mean;
    Some(if cv <= 0.10 {
        Xyz::X
    } else if cv <= 0.25 {
        Xyz::Y
    } else {
        Xyz::Z
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abc_by_hand() {
        // Total 1000: a 500 (0→50 %) A, b 300 (50→80 %) A, c 100 (80→90 %) B,
        // d 60 (90→96 %) B, e 40 (96→100 %) C, f 0 C.
        let r = [
            ("a", 500.0),
            ("b", 300.0),
            ("c", 100.0),
            ("d", 60.0),
            ("e", 40.0),
            ("f", 0.0),
        ];
        let c = abc(&r);
        assert_eq!(
            ["a", "b", "c", "d", "e", "f"].map(|k| c[k]),
            [Abc::A, Abc::A, Abc::B, Abc::B, Abc::C, Abc::C]
        );
    }

    #[test]
    fn xyz_by_hand() {
        assert_eq!(xyz(&[100.0, 100.0, 100.0]), Some(Xyz::X));
        // mean 100, deviations ±20 → cv 0.2
        assert_eq!(xyz(&[80.0, 120.0]), Some(Xyz::Y));
        assert_eq!(xyz(&[0.0, 200.0]), Some(Xyz::Z));
        assert_eq!(xyz(&[]), None);
    }
}
