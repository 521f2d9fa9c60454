-- Last time each blob, blob link and manifest was stored or pushed again (Unix seconds). The
-- registry's garbage collector deletes only rows older than its grace period, so content a
-- push is still using is never collected.
ALTER TABLE registry_blobs ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registry_blob_links ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE registry_manifests ADD COLUMN touched_at INTEGER NOT NULL DEFAULT 0;

UPDATE registry_blobs SET touched_at = created_at;
UPDATE registry_blob_links SET touched_at = created_at;
UPDATE registry_manifests SET touched_at = created_at;
