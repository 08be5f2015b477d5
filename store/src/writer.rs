//! The writer thread: moves appended records to their segment files, syncs them, and announces
//! the synced position. One round covers everything appended since the last one, so the size
//! of a batch follows the load: while one fdatasync runs, the next batch accumulates.
//!
//! Every chunk knows its offset in its segment, so a round is a set of positioned writes
//! (`pwrite`), which makes a retry idempotent. A failed write or sync (a full disk) marks the
//! store failed: waiting confirms are refused and new publishes are turned away, while every
//! byte not yet covered by a successful sync is kept, rewritten at its offset and synced again
//! every [`RETRY_AFTER`] until a round succeeds. (After a failed fsync the kernel may have
//! dropped the dirty pages, so the data is rewritten, not merely re-synced.)

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};
use warren_core::journal::SyncState;

use crate::{segment_path, Chunk, Deletion, Shared, SEGMENT_MAGIC};

/// How long the writer waits before retrying after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Segment files the writer has open, by number.
type Files = BTreeMap<u64, File>;

pub(crate) fn run(shared: Arc<Shared>) {
    let dir = shared.config.dir.clone();
    let mut files = Files::new();
    // Taken from the store and not yet covered by a successful sync: rewritten (at the same
    // offsets) and synced again after a failure, so a failed fsync is never trusted.
    let mut pending: Vec<Chunk> = Vec::new();
    // A segment was created since the last successful sync of the directory.
    let mut directory_dirty = false;
    let mut unsynced_publishes = 0u64;
    let mut deletable: Vec<Deletion> = Vec::new();
    let mut synced = 0;
    loop {
        let (target, stopping) = {
            let mut state = shared.lock();
            // A failed store retries even with nothing left to write (deleted segments may have
            // taken the unwritable bytes with them): the round's success clears the failure.
            while state.chunks.is_empty()
                && state.to_delete.is_empty()
                && !state.stopping
                && pending.is_empty()
                && !state.failed
            {
                state.writer_idle = true;
                state = shared.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.writer_idle = false;
            deletable.append(&mut state.to_delete);
            unsynced_publishes += std::mem::take(&mut state.pending_publishes);
            pending.append(&mut state.chunks);
            (state.appended, state.stopping)
        };
        match write_and_sync(&dir, &mut files, &pending, &mut directory_dirty) {
            Ok(()) => {
                pending.clear();
                shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
                shared.stats.synced_publishes.fetch_add(std::mem::take(&mut unsynced_publishes), Ordering::Relaxed);
                synced = target;
                // Announced before the failed flag clears, so nothing appended in between is
                // judged against a stale failure.
                shared.sync_state.send_replace(SyncState { synced, failed: false });
                if std::mem::replace(&mut shared.lock().failed, false) {
                    info!(dir = %dir.display(), "message store writes again");
                }
                // Only the segment being appended to stays open.
                while files.len() > 1 {
                    files.pop_first();
                }
                delete_segments(&dir, &mut deletable, &mut files, &shared);
            }
            Err(error) => {
                if !std::mem::replace(&mut shared.lock().failed, true) {
                    error!(dir = %dir.display(), %error, "message store cannot write; refusing persistent publishes");
                }
                shared.sync_state.send_replace(SyncState { synced, failed: true });
                // Emptied segments go even now: that is how a full disk gets room again as
                // consumers drain the backlog. Deleting one before the removals that emptied it
                // are on disk is safe: a crash then loses only messages that were settled. Not
                // so for one whose removals of older segments' messages were copied forward:
                // the copies must be on disk first, so those wait for a successful round.
                let (now, later): (Vec<Deletion>, Vec<Deletion>) =
                    deletable.drain(..).partition(|deletion| !deletion.after_sync);
                deletable = later;
                let mut now = now;
                pending.retain(|chunk| !now.iter().any(|deletion| deletion.segment == chunk.segment));
                delete_segments(&dir, &mut now, &mut files, &shared);
                deletable.append(&mut now);
                // A failed fsync may have dropped the dirty pages: reopen and rewrite.
                files.clear();
                if stopping {
                    return;
                }
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        }
        if stopping && shared.lock().chunks.is_empty() {
            return;
        }
    }
}

/// Writes every chunk at its offset in its segment, then syncs each file written to (and the
/// directory, after a segment was created).
fn write_and_sync(dir: &Path, files: &mut Files, chunks: &[Chunk], directory_dirty: &mut bool) -> std::io::Result<()> {
    let mut touched = Vec::new();
    for chunk in chunks {
        let file = match files.entry(chunk.segment) {
            std::collections::btree_map::Entry::Occupied(entry) => entry.into_mut(),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let (file, created) = open_segment(dir, chunk.segment)?;
                *directory_dirty |= created;
                entry.insert(file)
            }
        };
        file.write_all_at(&chunk.bytes, chunk.offset)?;
        if touched.last() != Some(&chunk.segment) {
            touched.push(chunk.segment);
        }
    }
    for segment in touched {
        if let Some(file) = files.get(&segment) {
            file.sync_data()?;
        }
    }
    if *directory_dirty {
        File::open(dir)?.sync_all()?;
        *directory_dirty = false;
    }
    Ok(())
}

/// Opens a segment for writing, creating it if needed; a file without its magic yet gets it.
/// Returns whether it was created.
fn open_segment(dir: &Path, number: u64) -> std::io::Result<(File, bool)> {
    let path = segment_path(dir, number);
    let file = OpenOptions::new().create(true).write(true).truncate(false).open(&path)?;
    let length = file.metadata()?.len();
    if length < SEGMENT_MAGIC.len() as u64 {
        file.write_all_at(SEGMENT_MAGIC, 0)?;
    }
    Ok((file, length == 0))
}

/// Deletes segments that hold nothing live, after the records that emptied them are synced.
fn delete_segments(dir: &Path, deletions: &mut Vec<Deletion>, files: &mut Files, shared: &Shared) {
    let mut failed = Vec::new();
    for deletion in deletions.drain(..) {
        let number = deletion.segment;
        files.remove(&number);
        shared.reader.forget(number);
        let path = segment_path(dir, number);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                shared.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                // Tried again after the next round: the store has already let it go.
                warn!(file = %path.display(), %error, "cannot delete an emptied segment; will retry");
                failed.push(deletion);
            }
        }
    }
    *deletions = failed;
}
