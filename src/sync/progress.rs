//! Progress of a long first sync on the terminal: records read per kind and the rate.

/// Progress of a long read: a live line on a terminal, a log line every 20 pages otherwise.
pub(super) struct Progress {
    bar: Option<indicatif::ProgressBar>,
    source: &'static str,
    entity: &'static str,
}

impl Progress {
    pub(super) fn new(source: &'static str, entity: &'static str) -> Self {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {prefix} {msg} [{elapsed}, {per_sec}]",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.set_prefix(format!("{source} {entity}"));
            b
        });
        Progress {
            bar,
            source,
            entity,
        }
    }

    pub(super) fn update(&self, saved: usize, pages: usize) {
        match &self.bar {
            Some(b) => {
                b.set_position(saved as u64);
                b.set_message(format!("{saved} records, {pages} pages"));
            }
            None if pages.is_multiple_of(20) => {
                tracing::info!(
                    source = self.source,
                    entity = self.entity,
                    saved,
                    pages,
                    "sync in progress"
                );
            }
            None => {}
        }
    }

    pub(super) fn finish(&self, saved: usize, pages: usize) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        tracing::debug!(
            source = self.source,
            entity = self.entity,
            saved,
            pages,
            "entity synced"
        );
    }
}
