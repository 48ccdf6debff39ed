//! Page-number paging that survives deletions between pages.
//!
//! amoCRM lists by page number (`page=N`, 250 a page) and offers no id range filter
//! (`filter[id]` takes a list of ids only), so keyset paging as on Bitrix24 is not available.
//! With page numbers, deleting a record that an earlier page already returned moves every later
//! record back one place: the record at the next page boundary lands on the page already read
//! and is never returned. Nothing in the answers shows the gap.
//!
//! What does show it is the events log: every deletion is a `*_deleted` event. So a pass that
//! read more than one page asks, at its end, for deletion events of its kind since the run
//! started (one request, a 204 when nothing was deleted, which is the usual case). When there
//! were deletions, the pass is not done: it goes back to the page where the first deleted
//! record was read (from the in-memory [`Trace`] of the last id of every page) and reads on from
//! there, which re-reads each boundary record the shift could have hidden. That re-read is a
//! new run, checked the same way, up to [`MAX_REPAIRS`] times.
//!
//! The position in the cursor carries the page, the first page of the current run and the run's
//! start, so a pass resumed after a restart still checks (without a trace it goes back to page 1).
//!
//! An account without the API filtering add-on reads its changes newest first (see
//! `super::AmoCrm::fetch_page`); such a pass is marked `n` in its position, and a deletion sends
//! it back to page 1: ids say nothing about where a record sits in that order, and the pass is
//! short (it ends at the cursor).

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::domain::EntityKind;

use super::PAGE_LIMIT;

/// Re-reads after deletions within one pass; past this the pass ends with a warning.
pub(crate) const MAX_REPAIRS: u32 = 5;

/// Where a pass stands: the page to read, the first page of the current run and when the run
/// started (unix seconds; deletions from then on may have shifted the pages read since).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PagePos {
    pub(crate) page: u32,
    pub(crate) first: u32,
    /// `None` for a position written before runs were tracked (plain page number).
    pub(crate) started: Option<i64>,
    /// A pass newest first by `updated_at` (an account without the filtering add-on).
    pub(crate) newest_first: bool,
}

impl PagePos {
    /// The first page of a fresh pass.
    pub(crate) fn start(now: i64) -> Self {
        PagePos {
            page: 1,
            first: 1,
            started: Some(now),
            newest_first: false,
        }
    }

    /// The first page of a fresh pass newest first.
    pub(crate) fn start_newest_first(now: i64) -> Self {
        PagePos {
            newest_first: true,
            ..Self::start(now)
        }
    }

    /// Reads `[n]PAGE/FIRST@STARTED`, or a bare page number; `None` for anything else.
    pub(crate) fn parse(s: &str) -> Option<Self> {
        let (newest_first, s) = match s.strip_prefix('n') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (pages, started) = match s.split_once('@') {
            Some((p, t)) => (p, Some(t.parse::<i64>().ok()?)),
            None => (s, None),
        };
        let (page, first) = match pages.split_once('/') {
            Some((p, f)) => (p.parse::<u32>().ok()?, f.parse::<u32>().ok()?),
            None => (pages.parse::<u32>().ok()?, 1),
        };
        (page >= 1 && first >= 1 && first <= page).then_some(PagePos {
            page,
            first,
            started,
            newest_first,
        })
    }

    pub(crate) fn next_page(self) -> Self {
        PagePos {
            page: self.page + 1,
            ..self
        }
    }

    /// Only a run that read two pages or more can have skipped a record.
    pub(crate) fn spans_pages(self) -> bool {
        self.page > self.first
    }
}

impl std::fmt::Display for PagePos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.newest_first {
            f.write_str("n")?;
        }
        match self.started {
            Some(t) => write!(f, "{}/{}@{t}", self.page, self.first),
            None => write!(f, "{}/{}", self.page, self.first),
        }
    }
}

/// What this process saw of a kind's current pass: the last id of each page read, the
/// deletions already repaired and how many repairs the pass made.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    last_ids: BTreeMap<u32, u64>,
    repaired: HashSet<u64>,
    repairs: u32,
}

impl Trace {
    pub(crate) fn saw_page(&mut self, page: u32, ids: impl IntoIterator<Item = u64>) {
        if let Some(last) = ids.into_iter().max() {
            self.last_ids.insert(page, last);
        }
    }

    /// The deleted ids not repaired yet; marks them repaired.
    pub(crate) fn take_new(&mut self, deleted: &[u64]) -> Vec<u64> {
        deleted
            .iter()
            .copied()
            .filter(|id| self.repaired.insert(*id))
            .collect()
    }

    /// The page to re-read from after `deleted` went: the page where the smallest of them was
    /// (or would have been) read, moved back by one page per full page of deletions, since
    /// that many deletions shift a boundary record back across pages. Page 1 without a trace.
    /// `None` once the pass has used up its repairs.
    pub(crate) fn restart_page(&mut self, deleted: &[u64]) -> Option<u32> {
        let min = deleted.iter().copied().min()?;
        if self.repairs >= MAX_REPAIRS {
            return None;
        }
        self.repairs += 1;
        let page = self
            .last_ids
            .iter()
            .find(|(_, last)| **last >= min)
            .map_or(1, |(p, _)| *p);
        let back = u32::try_from(deleted.len() / PAGE_LIMIT as usize).unwrap_or(u32::MAX);
        Some(page.saturating_sub(back).max(1))
    }
}

/// Traces of the passes under way, by kind.
#[derive(Default)]
pub(crate) struct Traces(std::sync::Mutex<HashMap<EntityKind, Trace>>);

impl Traces {
    pub(crate) fn with<R>(&self, kind: EntityKind, f: impl FnOnce(&mut Trace) -> R) -> R {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(all.entry(kind).or_default())
    }

    /// Forgets a kind's trace (a new pass begins).
    pub(crate) fn reset(&self, kind: EntityKind) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&kind);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_accept_bare_pages() {
        let p = PagePos {
            page: 3,
            first: 2,
            started: Some(1_700_000_000),
            newest_first: false,
        };
        assert_eq!(PagePos::parse(&p.to_string()), Some(p));
        let n = PagePos::start_newest_first(1_700_000_000).next_page();
        assert_eq!(n.to_string(), "n2/1@1700000000");
        assert_eq!(PagePos::parse(&n.to_string()), Some(n));
        assert_eq!(
            PagePos::parse("4"),
            Some(PagePos {
                page: 4,
                first: 1,
                started: None,
                newest_first: false,
            })
        );
        for bad in ["0", "x", "2/3@1", "2/1@x", "", "n", "nn1"] {
            assert_eq!(PagePos::parse(bad), None, "{bad:?}");
        }
        assert!(!PagePos::start(1).spans_pages());
        assert!(PagePos::start(1).next_page().spans_pages());
    }

    #[test]
    fn restart_goes_back_to_the_page_of_the_first_deletion() {
        let mut t = Trace::default();
        t.saw_page(1, 1..=250);
        t.saw_page(2, 251..=500);
        t.saw_page(3, 501..=600);
        assert_eq!(t.take_new(&[300, 420]), vec![300, 420]);
        assert_eq!(t.take_new(&[300]), Vec::<u64>::new(), "repaired once");
        assert_eq!(t.restart_page(&[420, 300]), Some(2));
        // A page's worth of deletions can move a boundary record back a whole page.
        let many: Vec<u64> = (520..=770).collect();
        assert_eq!(t.restart_page(&many), Some(2));
        assert_eq!(Trace::default().restart_page(&[5]), Some(1), "no trace");
        for _ in 2..MAX_REPAIRS {
            assert!(t.restart_page(&[1]).is_some());
        }
        assert_eq!(t.restart_page(&[1]), None, "repairs are bounded");
    }
}
