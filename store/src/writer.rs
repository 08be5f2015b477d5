//! The writer thread: moves appended records to their segment files, syncs them, and announces
//! the synced position. One round covers everything appended since the last one, so the size
//! of a batch follows the load: while one fdatasync runs, the next batch accumulates.
//!
//! A failed write or sync (a full disk) marks the store failed: waiting confirms are refused and
//! new publishes are turned away, while the unwritten bytes are kept and retried every
//! [`RETRY_AFTER`] until a round succeeds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};
use warren_core::journal::SyncState;

use crate::{segment_path, Chunk, Shared, SEGMENT_MAGIC};

/// How long the writer waits before retrying after a failure.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The segment file being appended to.
struct OpenSegment {
    number: u64,
    file: File,
}

pub(crate) fn run(shared: Arc<Shared>) {
    let dir = shared.config.dir.clone();
    let mut open: Option<OpenSegment> = None;
    // Left over from a failed round, written before anything newer.
    let mut unwritten: Vec<Chunk> = Vec::new();
    let mut unsynced_publishes = 0u64;
    let mut deletable: Vec<u64> = Vec::new();
    let mut synced = 0;
    loop {
        let (chunks, target, stopping) = {
            let mut state = shared.lock();
            while state.chunks.is_empty() && state.to_delete.is_empty() && !state.stopping && unwritten.is_empty() {
                state.writer_idle = true;
                state = shared.work.wait(state).unwrap_or_else(|poisoned| poisoned.into_inner());
            }
            state.writer_idle = false;
            deletable.append(&mut state.to_delete);
            unsynced_publishes += std::mem::take(&mut state.pending_publishes);
            (std::mem::take(&mut state.chunks), state.appended, state.stopping)
        };
        unwritten.extend(chunks);
        match write_and_sync(&dir, &mut open, &mut unwritten) {
            Ok(()) => {
                shared.stats.syncs.fetch_add(1, Ordering::Relaxed);
                shared.stats.synced_publishes.fetch_add(std::mem::take(&mut unsynced_publishes), Ordering::Relaxed);
                let was_failed = std::mem::replace(&mut shared.lock().failed, false);
                if was_failed {
                    info!(dir = %dir.display(), "message store writes again");
                }
                synced = target;
                shared.sync_state.send_replace(SyncState { synced, failed: false });
                delete_segments(&dir, &mut deletable, &mut open, &shared);
            }
            Err(error) => {
                let was_failed = std::mem::replace(&mut shared.lock().failed, true);
                if !was_failed {
                    error!(dir = %dir.display(), %error, "message store cannot write; refusing persistent publishes");
                }
                shared.sync_state.send_replace(SyncState { synced, failed: true });
                // Emptied segments go even now: that is how a full disk gets room again as
                // consumers drain the backlog. Deleting one before the removals that emptied it
                // are on disk is safe: a crash then loses only messages that were settled.
                unwritten.retain(|chunk| !deletable.contains(&chunk.segment));
                delete_segments(&dir, &mut deletable, &mut open, &shared);
                if stopping {
                    return;
                }
                std::thread::sleep(RETRY_AFTER);
                continue;
            }
        }
        if stopping && unwritten.is_empty() {
            let state = shared.lock();
            if state.chunks.is_empty() {
                return;
            }
        }
    }
}

/// Writes every chunk (removing what was written, so a failure leaves only the rest) and
/// syncs the files written to.
fn write_and_sync(dir: &Path, open: &mut Option<OpenSegment>, chunks: &mut Vec<Chunk>) -> std::io::Result<()> {
    let mut created = false;
    let mut finished: Vec<File> = Vec::new();
    let mut written_chunks = 0;
    let result = (|| {
        for chunk in chunks.iter_mut() {
            if open.as_ref().map(|open| open.number) != Some(chunk.segment) {
                let (file, new) = open_segment(dir, chunk.segment)?;
                created |= new;
                if let Some(previous) = open.replace(OpenSegment { number: chunk.segment, file }) {
                    finished.push(previous.file);
                }
            }
            let file = &mut open.as_mut().expect("opened above").file;
            while !chunk.bytes.is_empty() {
                match file.write(&chunk.bytes) {
                    Ok(0) => {
                        return Err(std::io::Error::new(std::io::ErrorKind::WriteZero, "segment write wrote nothing"))
                    }
                    Ok(count) => {
                        chunk.bytes.drain(..count);
                    }
                    Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(error) => return Err(error),
                }
            }
            written_chunks += 1;
        }
        for file in &finished {
            file.sync_data()?;
        }
        if let Some(open) = open.as_ref() {
            open.file.sync_data()?;
        }
        if created {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    chunks.drain(..written_chunks);
    result
}

/// Opens a segment for appending, creating it with its magic if needed. Returns whether it was
/// created.
fn open_segment(dir: &Path, number: u64) -> std::io::Result<(File, bool)> {
    let path = segment_path(dir, number);
    let mut file = OpenOptions::new().create(true).append(true).open(&path)?;
    let new = file.metadata()?.len() == 0;
    if new {
        file.write_all(SEGMENT_MAGIC)?;
    }
    Ok((file, new))
}

/// Deletes segments that hold nothing live, after the records that emptied them are synced.
fn delete_segments(dir: &Path, numbers: &mut Vec<u64>, open: &mut Option<OpenSegment>, shared: &Shared) {
    for number in numbers.drain(..) {
        if open.as_ref().is_some_and(|open| open.number == number) {
            // The last segment written to, before a roll to one with nothing written yet.
            *open = None;
        }
        let path = segment_path(dir, number);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                shared.stats.segments_deleted.fetch_add(1, Ordering::Relaxed);
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => warn!(file = %path.display(), %error, "cannot delete an emptied segment"),
        }
    }
}
