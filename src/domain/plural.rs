//! Number agreement for messages: «1 действие», «2 действия», «5 действий».

/// The Russian form of a noun after `n`: `one` for 1, 21, 31…; `few` for 2–4, 22–24…; `many`
/// for 0, 5–20, 25–30…
pub(crate) fn ru<'a>(n: u64, one: &'a str, few: &'a str, many: &'a str) -> &'a str {
    match (n % 10, n % 100) {
        (_, 11..=14) => many,
        (1, _) => one,
        (2..=4, _) => few,
        _ => many,
    }
}

/// The English form: `one` for 1, else `other`.
pub(crate) fn en<'a>(n: u64, one: &'a str, other: &'a str) -> &'a str {
    if n == 1 { one } else { other }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn russian_agreement() {
        let f = |n| ru(n, "действие", "действия", "действий");
        assert_eq!(f(1), "действие");
        assert_eq!(f(2), "действия");
        assert_eq!(f(4), "действия");
        assert_eq!(f(5), "действий");
        assert_eq!(f(11), "действий");
        assert_eq!(f(12), "действий");
        assert_eq!(f(21), "действие");
        assert_eq!(f(22), "действия");
        assert_eq!(f(0), "действий");
        assert_eq!(f(111), "действий");
        assert_eq!(f(101), "действие");
    }
}
