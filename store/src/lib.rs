//! Warren's message store: the journal persistent messages on durable queues are written to.
//!
//! One append-only log per broker, cut into numbered segment files. Every record carries a
//! CRC-32 of its body. Appending only encodes into a memory buffer under a short lock; one
//! writer thread moves the buffer to the current segment and fsyncs (fdatasync) it, then
//! announces the new synced position. Everything appended while one sync runs is covered by
//! the next one, so batches grow with load and no timer is involved (group commit).
//!
//! Each segment counts the (message, queue) pairs that are still live in it. A removal record
//! decrements the count of the segment holding the message's publish record. Segments are
//! deleted from the head of the log, once the oldest ones hold nothing live, so disk use
//! follows the backlog.
//!
//! # Layout
//! - `reader`: reading publish records back for queues that page.
//! - `record`: record kinds and their byte layout.
//! - `recovery`: reading the segments back at start.
//! - `writer`: the thread that writes and syncs.

mod reader;
mod record;
mod recovery;
mod writer;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use warren_core::journal::{Journal, JournalRef, JournalUnavailable, Lsn, SyncState};
use warren_core::name::{QueueName, VhostName};
use warren_core::Message;

pub use recovery::{Recovery, RecoveryReport};

/// Every segment file starts with these bytes: the format's name and version.
pub const SEGMENT_MAGIC: &[u8; 8] = b"WRNLOG\x00\x01";
/// The file name extension of segments.
pub const SEGMENT_EXTENSION: &str = "wlog";
/// Default size at which the current segment is closed and a new one started.
pub const SEGMENT_BYTES_DEFAULT: u64 = 16 << 20;

#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The directory holding the segments.
    pub dir: PathBuf,
    /// A segment is closed once it holds this many bytes.
    pub segment_bytes: u64,
    /// Confirm messages as soon as they are appended, before they are synced: faster, but a
    /// crash can lose what was confirmed in the last moments. Off by default.
    pub confirm_before_sync: bool,
}

impl StoreConfig {
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig { dir: dir.into(), segment_bytes: SEGMENT_BYTES_DEFAULT, confirm_before_sync: false }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("message store {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl StoreError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
        move |source| StoreError::Io { path: path.to_owned(), source }
    }
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Completed fsyncs of segment data.
    pub syncs: AtomicU64,
    /// Publish records covered by completed fsyncs.
    pub synced_publishes: AtomicU64,
    /// Segment files deleted because nothing in them was live.
    pub segments_deleted: AtomicU64,
}

/// Bytes waiting to be written to one segment, at a known offset.
#[derive(Debug)]
struct Chunk {
    segment: u64,
    /// Where `bytes` start in the segment file.
    offset: u64,
    bytes: Vec<u8>,
}

/// A segment as the store tracks it.
#[derive(Debug)]
struct Segment {
    number: u64,
    /// The ids that can be in it, `first_id..end_id`: ids are assigned in log order, so each
    /// segment holds a range (`end_id` is `u64::MAX` while it is the current one).
    first_id: u64,
    end_id: u64,
    /// (message, queue) pairs published in it and not yet removed.
    live: u64,
    /// Its removal records of messages in older segments, by the older segment's number.
    /// While such a segment is on disk, these records must survive somewhere: deleting this
    /// segment with them would bring those messages back at the next recovery. So an emptied
    /// segment with such records is either kept, or has them copied forward first.
    removals: BTreeMap<u64, Vec<Removal>>,
}

/// A segment to delete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Deletion {
    segment: u64,
    /// Records were copied forward from it: delete it only after a successful sync, never on
    /// the failure path (where emptied segments otherwise go at once to free a full disk).
    after_sync: bool,
}

/// A removal record, as kept to be copied forward.
#[derive(Clone, Debug)]
struct Removal {
    id: u64,
    vhost: VhostName,
    queue: QueueName,
}

impl Segment {
    fn new(number: u64, first_id: u64) -> Segment {
        Segment { number, first_id, end_id: u64::MAX, live: 0, removals: BTreeMap::new() }
    }

    fn remember(&mut self, older: u64, removal: Removal) {
        self.removals.entry(older).or_default().push(removal);
    }
}

#[derive(Debug)]
struct State {
    /// Appended, not yet written, in log order.
    chunks: Vec<Chunk>,
    /// Publish records among the chunks.
    pending_publishes: u64,
    /// The log position after the last append.
    appended: Lsn,
    next_id: u64,
    /// The segment appends go to, and its size so far (written and pending).
    current: u64,
    current_bytes: u64,
    /// Segments on disk or about to be, oldest first; the last is the current one.
    segments: VecDeque<Segment>,
    /// Segments to delete once the pending chunks are written.
    to_delete: Vec<Deletion>,
    /// The writer waits for work.
    writer_idle: bool,
    /// Writing failed; appends of new messages are refused until a retry succeeds.
    failed: bool,
    stopping: bool,
}

#[derive(Debug)]
struct Shared {
    config: StoreConfig,
    state: Mutex<State>,
    work: Condvar,
    sync_state: watch::Sender<SyncState>,
    stats: StoreStats,
    /// Reads records back for paged queues; told when a segment is deleted.
    reader: reader::Reader,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock is held leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The message store. Dropping it writes and syncs what is pending, then stops the writer.
#[derive(Debug)]
pub struct Store {
    shared: Arc<Shared>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl Store {
    /// Opens the store in `config.dir` (created if missing), reading back every segment. The
    /// messages found are handed back in [`Recovery`], for the caller to put into their queues
    /// (or to discard with [`Store::removed`] when the queue no longer exists).
    pub fn open(config: StoreConfig) -> Result<(Arc<Store>, Recovery), StoreError> {
        std::fs::create_dir_all(&config.dir).map_err(StoreError::io(&config.dir))?;
        let scanned = recovery::scan(&config.dir)?;
        let current = scanned.next_segment;
        let mut segments: VecDeque<Segment> = scanned.segments.into();
        if let Some(last) = segments.back_mut() {
            last.end_id = scanned.next_id;
        }
        segments.push_back(Segment::new(current, scanned.next_id));
        let state = State {
            chunks: Vec::new(),
            pending_publishes: 0,
            appended: 0,
            next_id: scanned.next_id,
            current,
            current_bytes: SEGMENT_MAGIC.len() as u64,
            segments,
            to_delete: Vec::new(),
            writer_idle: false,
            failed: false,
            stopping: false,
        };
        let shared = Arc::new(Shared {
            config,
            state: Mutex::new(state),
            work: Condvar::new(),
            sync_state: watch::channel(SyncState::default()).0,
            stats: StoreStats::default(),
            reader: reader::Reader::default(),
        });
        {
            let mut state = shared.lock();
            Self::collect_dead_segments(&shared.config, &mut state);
        }
        let thread_shared = shared.clone();
        let writer = std::thread::Builder::new()
            .name("warren-store".into())
            .spawn(move || writer::run(thread_shared))
            .map_err(StoreError::io(&shared.config.dir))?;
        let store = Arc::new(Store { shared, writer: Mutex::new(Some(writer)) });
        Ok((store, scanned.recovery))
    }

    pub fn stats(&self) -> &StoreStats {
        &self.shared.stats
    }

    /// Waits until everything appended so far is synced (or writing has failed).
    pub async fn sync(&self) -> SyncState {
        let target = self.appended();
        let mut receiver = self.shared.sync_state.subscribe();
        let state = receiver.wait_for(|state| state.synced >= target || state.failed).await.map(|state| *state);
        state.unwrap_or(SyncState { synced: 0, failed: true })
    }

    /// Appends `encode`'s record, wakes the writer if it sleeps, and returns where the record
    /// went (segment, offset) and the log position after it.
    fn append(&self, state: &mut State, encode: impl FnOnce(&mut Vec<u8>)) -> (u64, u64, Lsn) {
        self.roll_if_full(state);
        let place = Self::append_unrolled(state, encode);
        self.wake_writer(state);
        place
    }

    /// Wakes the writer if it sleeps (only then: a busy store costs no wake-up syscalls).
    fn wake_writer(&self, state: &mut State) {
        if state.writer_idle {
            state.writer_idle = false;
            self.shared.work.notify_one();
        }
    }

    /// Appends a record to the current segment as it is (no roll, no wake-up).
    fn append_unrolled(state: &mut State, encode: impl FnOnce(&mut Vec<u8>)) -> (u64, u64, Lsn) {
        let segment = state.current;
        let chunk = match state.chunks.last_mut() {
            Some(chunk) if chunk.segment == segment => chunk,
            _ => {
                let offset = state.current_bytes;
                state.chunks.push(Chunk { segment, offset, bytes: Vec::with_capacity(64 << 10) });
                state.chunks.last_mut().expect("just pushed")
            }
        };
        let before = chunk.bytes.len();
        encode(&mut chunk.bytes);
        let written = (chunk.bytes.len() - before) as u64;
        state.current_bytes += written;
        state.appended += written;
        (segment, state.current_bytes - written, state.appended)
    }

    /// Starts a new segment when the current one is full. Called before every record (removals
    /// alone must roll too, or a drain without publishes would grow one segment without end);
    /// a new segment's `first_id` is the next id to be assigned, so every id in it is at least
    /// that.
    fn roll_if_full(&self, state: &mut State) {
        if state.current_bytes >= self.shared.config.segment_bytes {
            self.roll(state);
        }
    }

    /// Closes the current segment and starts the next.
    fn roll(&self, state: &mut State) {
        state.current += 1;
        state.current_bytes = SEGMENT_MAGIC.len() as u64;
        if let Some(last) = state.segments.back_mut() {
            last.end_id = state.next_id;
        }
        state.segments.push_back(Segment::new(state.current, state.next_id));
        Self::collect_dead_segments(&self.shared.config, state);
    }

    /// Moves segments that hold nothing live (and are not the current one) to the delete list,
    /// oldest first. One whose removal records refer to older segments still on disk has those
    /// records copied into the current segment first, if they are few (at most a quarter of a
    /// segment, which bounds the rewriting a long-lived message can cause); otherwise it waits
    /// for those segments to go. So a long-lived message pins its own segment, not the log
    /// after it.
    fn collect_dead_segments(config: &StoreConfig, state: &mut State) {
        let current = state.current;
        // What one pass may copy, all deletions together.
        let mut budget = config.segment_bytes / 4;
        let mut index = 0;
        while index < state.segments.len() {
            let segment = &state.segments[index];
            if segment.number == current || segment.live != 0 {
                index += 1;
                continue;
            }
            let present = |number: &u64| state.segments.binary_search_by_key(number, |s| s.number).is_ok();
            let pinned: Vec<u64> = segment.removals.keys().copied().filter(present).collect();
            let carried: u64 = pinned
                .iter()
                .flat_map(|older| &segment.removals[older])
                .map(|removal| record::removed_bytes(&removal.vhost, &removal.queue))
                .sum();
            if carried > budget {
                index += 1;
                continue;
            }
            budget -= carried;
            let mut segment = state.segments.remove(index).expect("index is in range");
            // Its copies must be on disk before its file goes.
            state.to_delete.push(Deletion { segment: segment.number, after_sync: carried > 0 });
            for other in &mut state.segments {
                other.removals.remove(&segment.number);
            }
            for older in pinned {
                for removal in segment.removals.remove(&older).unwrap_or_default() {
                    Self::append_unrolled(state, |out| {
                        record::encode_removed(out, removal.id, &removal.vhost, &removal.queue)
                    });
                    if let Some(current) = state.segments.back_mut() {
                        current.remember(older, removal);
                    }
                }
            }
        }
    }
}

/// The index of the segment holding message `id`, if it is still on disk.
fn segment_of(segments: &VecDeque<Segment>, id: u64) -> Option<usize> {
    let index = segments.partition_point(|segment| segment.first_id <= id).checked_sub(1)?;
    (id < segments[index].end_id).then_some(index)
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as u64)
}

impl Journal for Store {
    fn publish(
        &self,
        vhost: &VhostName,
        queues: &[&QueueName],
        message: &Message,
    ) -> Result<JournalRef, JournalUnavailable> {
        let published_ms = now_ms();
        let mut state = self.shared.lock();
        if state.failed || state.stopping {
            return Err(JournalUnavailable);
        }
        // Roll first, so a new segment's first id is this one.
        self.roll_if_full(&mut state);
        let id = state.next_id;
        state.next_id += 1;
        // No second roll: the id belongs to the segment it was assigned in, even if copies made
        // in the roll above filled that segment already.
        let (segment, offset, lsn) = Self::append_unrolled(&mut state, |out| {
            record::encode_publish(out, id, published_ms, vhost, queues, message)
        });
        self.wake_writer(&mut state);
        let length = (state.current_bytes - offset) as u32;
        state.pending_publishes += 1;
        if let Some(segment) = state.segments.back_mut() {
            segment.live += queues.len() as u64;
        }
        Ok(JournalRef { id, lsn, segment, offset, length })
    }

    fn confirms_wait(&self) -> bool {
        !self.shared.config.confirm_before_sync
    }

    fn read(&self, references: &[JournalRef]) -> Result<Vec<Option<Message>>, JournalUnavailable> {
        self.shared.reader.read(&self.shared.config.dir, references)
    }

    fn synced(&self) -> Lsn {
        self.shared.sync_state.borrow().synced
    }

    fn delivered(&self, vhost: &VhostName, queue: &QueueName, id: u64) {
        let mut state = self.shared.lock();
        self.append(&mut state, |out| record::encode_delivered(out, id, vhost, queue));
    }

    fn removed(&self, vhost: &VhostName, queue: &QueueName, id: u64) {
        let mut state = self.shared.lock();
        self.append(&mut state, |out| record::encode_removed(out, id, vhost, queue));
        let emptied = match segment_of(&state.segments, id) {
            Some(index) => {
                let holder = state.segments[index].number;
                if holder != state.current {
                    let removal = Removal { id, vhost: vhost.clone(), queue: queue.clone() };
                    if let Some(current) = state.segments.back_mut() {
                        current.remember(holder, removal);
                    }
                }
                let segment = &mut state.segments[index];
                segment.live = segment.live.saturating_sub(1);
                (segment.live == 0).then_some(segment.number)
            }
            None => None,
        };
        if emptied == Some(state.current) && state.failed {
            // On a full disk only deletions make room, and the current segment is never
            // deleted: move on, so a drained one can go.
            self.roll(&mut state);
        }
        if emptied.is_some() {
            Self::collect_dead_segments(&self.shared.config, &mut state);
        }
    }

    fn sync_state(&self) -> watch::Receiver<SyncState> {
        self.shared.sync_state.subscribe()
    }

    fn appended(&self) -> Lsn {
        self.shared.lock().appended
    }
}

impl Store {
    /// Writes and syncs what is pending, then stops the writer; later publishes are refused.
    pub fn close(&self) {
        self.shared.lock().stopping = true;
        self.shared.work.notify_one();
        let writer = self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        if let Some(writer) = writer {
            let _ = writer.join();
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// A segment's file name: its number, zero-padded so names sort in log order.
pub fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.{SEGMENT_EXTENSION}"))
}
