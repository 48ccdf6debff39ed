-- The install marker: one row naming this installation. The same id is kept in the file
-- `install-id` in data_dir, so a database that is lost, emptied or swapped for another one is
-- recognised at start instead of being taken for a fresh install (which would repeat every
-- task, message and report the ledger remembers). A backup carries the id, so a restored copy
-- matches the file again.
CREATE TABLE install (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    install_id TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
