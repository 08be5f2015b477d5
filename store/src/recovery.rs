//! Recovery: reading the segments back at start.
//!
//! Segments are read in order and each record's checksum is verified. The first record that is
//! torn (runs past the end of its file) or corrupt (bad checksum, bad length, does not decode)
//! ends its segment, with a warning naming the file and the offset. In the last segment that is
//! a crash's torn tail, and the file is cut there. In an earlier one it is damage, not a crash
//! (later segments were written after it), so the file is left as it is for inspection; the scan
//! goes on with the next segment either way. Records are then applied in log order: a publish
//! makes the message live in its queues, a delivery marks it redelivered there, a removal
//! ends it there. What is still live is handed to the caller per queue, in publish (id) order,
//! as references: bodies stay on disk, so a backlog larger than memory can be recovered.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::warn;
use warren_core::journal::JournalRef;
use warren_core::name::{QueueName, VhostName};
use warren_core::queue::Recovered;

use crate::record::{self, Summary, RECORD_BODY_MAX, RECORD_HEADER_BYTES};
use crate::{now_ms, Removal, Segment, StoreError, SEGMENT_EXTENSION, SEGMENT_MAGIC};

/// What a start found in the store.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Live messages per queue, in publish order.
    pub queues: HashMap<(VhostName, QueueName), Vec<Recovered>>,
    pub report: RecoveryReport,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: usize,
    pub records: u64,
    /// (message, queue) pairs still live.
    pub live: u64,
    /// Files cut short, and the offset they were cut at.
    pub cut: Vec<(PathBuf, u64)>,
    /// Earlier segments with damage, and the offset their scan stopped at (left unmodified).
    pub skipped: Vec<(PathBuf, u64)>,
}

/// The read buffer of the scan.
const READ_BUFFER_BYTES: usize = 256 << 10;

pub(crate) struct Scanned {
    pub segments: Vec<Segment>,
    pub next_segment: u64,
    pub next_id: u64,
    pub recovery: Recovery,
}

/// A message's state in one queue: (interned queue, delivered, live).
type QueueState = (u32, bool, bool);

/// A message found in the log, with its state in each queue. Entries sit in one `Vec` in id
/// order (ids grow along the log), found by binary search: one large allocation, which goes
/// back to the system when recovery ends, rather than millions of small ones.
struct Entry {
    /// Index of its segment in the scan.
    segment: usize,
    reference: JournalRef,
    published_ms: u64,
    priority: Option<u8>,
    ttl_ms: Option<u64>,
    body_bytes: u32,
    /// Its first queue inline (most messages have one), the others beside.
    first: QueueState,
    others: Vec<QueueState>,
}

impl Entry {
    fn queues(&self) -> impl Iterator<Item = &QueueState> {
        std::iter::once(&self.first).chain(self.others.iter())
    }

    fn queues_mut(&mut self) -> impl Iterator<Item = &mut QueueState> {
        std::iter::once(&mut self.first).chain(self.others.iter_mut())
    }
}

/// (vhost, queue) names, each stored once however many messages name it.
#[derive(Default)]
struct Queues {
    index: HashMap<(VhostName, QueueName), u32>,
    names: Vec<(VhostName, QueueName)>,
}

impl Queues {
    fn intern(&mut self, vhost: &VhostName, queue: QueueName) -> u32 {
        let key = (vhost.clone(), queue);
        if let Some(index) = self.index.get(&key) {
            return *index;
        }
        let index = self.names.len() as u32;
        self.names.push(key.clone());
        self.index.insert(key, index);
        index
    }

    fn find(&self, vhost: &VhostName, queue: &QueueName) -> Option<u32> {
        self.index.get(&(vhost.clone(), queue.clone())).copied()
    }
}

pub(crate) fn scan(dir: &Path) -> Result<Scanned, StoreError> {
    let mut numbered = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let path = entry.map_err(StoreError::io(dir))?.path();
        if path.extension().and_then(|extension| extension.to_str()) != Some(SEGMENT_EXTENSION) {
            continue;
        }
        if let Some(number) = path.file_stem().and_then(|stem| stem.to_str()).and_then(|stem| stem.parse::<u64>().ok())
        {
            numbered.push((number, path));
        }
    }
    numbered.sort();

    let mut report = RecoveryReport::default();
    let mut entries: Vec<Entry> = Vec::new();
    let mut queue_names = Queues::default();
    let mut segments: Vec<Segment> = Vec::new();
    let mut next_id = 1;
    let mut next_segment = 1;
    let last = numbered.last().map(|(number, _)| *number);
    for (number, path) in &numbered {
        next_segment = next_segment.max(number + 1);
        let file = File::open(path).map_err(StoreError::io(path))?;
        let file_bytes = file.metadata().map_err(StoreError::io(path))?.len();
        if file_bytes == 0 {
            // Created by a roll just before a crash, before its magic was written.
            std::fs::remove_file(path).map_err(StoreError::io(path))?;
            continue;
        }
        // Streamed record by record through one reused buffer: recovery's memory does not grow
        // with segment size.
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut magic = [0u8; SEGMENT_MAGIC.len()];
        if reader.read_exact(&mut magic).is_err() || &magic != SEGMENT_MAGIC {
            set_aside(path, file_bytes);
            continue;
        }
        let index = segments.len();
        if let Some(previous) = segments.last_mut() {
            previous.end_id = next_id;
        }
        segments.push(Segment::new(*number, next_id));
        report.segments += 1;
        let mut offset = SEGMENT_MAGIC.len() as u64;
        let mut body = Vec::new();
        while offset < file_bytes {
            let record = read_record(&mut reader, &mut body, file_bytes - offset)
                .and_then(|()| record::summarize(&body).ok().map(|summary| (body.len(), summary)));
            let Some((body_bytes, record)) = record else {
                damaged(path, offset, Some(*number) == last, &mut report)?;
                break;
            };
            let length = (RECORD_HEADER_BYTES + body_bytes) as u32;
            let place = Place { index, segment: *number, offset, length };
            offset += u64::from(length);
            report.records += 1;
            if let Some((holder, removal)) = apply(&mut entries, &mut queue_names, record, place, &mut next_id) {
                if holder != index {
                    let older = segments[holder].number;
                    segments[index].remember(older, removal);
                }
            }
        }
    }

    let now = now_ms();
    let mut queues: HashMap<(VhostName, QueueName), Vec<Recovered>> = HashMap::new();
    for entry in &entries {
        let age = Duration::from_millis(now.saturating_sub(entry.published_ms));
        for &(queue, delivered, live) in entry.queues() {
            if !live {
                continue;
            }
            segments[entry.segment].live += 1;
            report.live += 1;
            let recovered = Recovered {
                reference: entry.reference,
                body_bytes: entry.body_bytes,
                priority: entry.priority,
                ttl: entry.ttl_ms.map(Duration::from_millis),
                redelivered: delivered,
                age,
            };
            queues.entry(queue_names.names[queue as usize].clone()).or_default().push(recovered);
        }
    }
    Ok(Scanned { segments, next_segment, next_id, recovery: Recovery { queues, report } })
}

/// Reads the next record's body into `body`, if it is whole (within the `remaining` bytes of
/// the file) and its checksum matches.
fn read_record(reader: &mut impl Read, body: &mut Vec<u8>, remaining: u64) -> Option<()> {
    let mut header = [0u8; RECORD_HEADER_BYTES];
    reader.read_exact(&mut header).ok()?;
    let length = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if length > RECORD_BODY_MAX || (RECORD_HEADER_BYTES + length) as u64 > remaining {
        return None;
    }
    body.clear();
    body.resize(length, 0);
    reader.read_exact(body).ok()?;
    if body.capacity() > READ_BUFFER_BYTES && length < READ_BUFFER_BYTES {
        body.shrink_to(READ_BUFFER_BYTES);
    }
    (crc32fast::hash(body) == crc).then_some(())
}

/// Where a record lies: its segment's index in the scan and number, offset and length.
struct Place {
    index: usize,
    segment: u64,
    offset: u64,
    length: u32,
}

/// Applies one record; for a removal of a message still known, returns the scan index of the
/// segment holding the message, and the removal.
fn apply(
    entries: &mut Vec<Entry>,
    names: &mut Queues,
    record: Summary,
    place: Place,
    next_id: &mut u64,
) -> Option<(usize, Removal)> {
    match record {
        Summary::Publish { id, published_ms, vhost, queues, priority, ttl_ms, body_bytes } => {
            *next_id = (*next_id).max(id + 1);
            let mut states = queues.into_iter().map(|queue| (names.intern(&vhost, queue), false, true));
            let first = states.next()?;
            let others = states.collect();
            // The position to wait for is long past: everything read back is on disk.
            let reference =
                JournalRef { id, lsn: 0, segment: place.segment, offset: place.offset, length: place.length };
            let entry =
                Entry { segment: place.index, reference, published_ms, priority, ttl_ms, body_bytes, first, others };
            match entries.binary_search_by_key(&id, |entry| entry.reference.id) {
                // Ids grow along the log, so this is a push; a repeated id replaces the first.
                Err(at) => entries.insert(at, entry),
                Ok(at) => entries[at] = entry,
            }
            None
        }
        Summary::Delivered { id, vhost, queue } => {
            if let Some(state) = queue_state(entries, names, id, &vhost, &queue) {
                state.1 = true;
            }
            None
        }
        Summary::Removed { id, vhost, queue } => {
            let holder =
                entries.binary_search_by_key(&id, |entry| entry.reference.id).ok().map(|at| entries[at].segment);
            if let Some(state) = queue_state(entries, names, id, &vhost, &queue) {
                state.2 = false;
            }
            holder.map(|holder| (holder, Removal { id, vhost, queue }))
        }
    }
}

fn queue_state<'a>(
    entries: &'a mut [Entry],
    names: &Queues,
    id: u64,
    vhost: &VhostName,
    queue: &QueueName,
) -> Option<&'a mut QueueState> {
    let wanted = names.find(vhost, queue)?;
    let at = entries.binary_search_by_key(&id, |entry| entry.reference.id).ok()?;
    entries[at].queues_mut().find(|(interned, _, live)| *interned == wanted && *live)
}

/// Ends a segment's scan at a torn or corrupt record. The last segment is cut there.
fn damaged(path: &Path, offset: u64, last: bool, report: &mut RecoveryReport) -> Result<(), StoreError> {
    if !last {
        warn!(file = %path.display(), offset, "message store: corrupt record in an earlier segment; \
              the rest of that segment is skipped and the file left as it is");
        report.skipped.push((path.to_owned(), offset));
        return Ok(());
    }
    warn!(file = %path.display(), offset, "message store: torn or corrupt record; cutting the segment there");
    let file = OpenOptions::new().write(true).open(path).map_err(StoreError::io(path))?;
    file.set_len(offset).map_err(StoreError::io(path))?;
    file.sync_all().map_err(StoreError::io(path))?;
    report.cut.push((path.to_owned(), offset));
    Ok(())
}

/// A file that is not a segment (no magic: a crash while creating it, or damage) is renamed
/// out of the way rather than read or deleted.
fn set_aside(path: &Path, length: u64) {
    let aside = path.with_extension("damaged");
    warn!(file = %path.display(), length, aside = %aside.display(), "message store: not a segment; set aside");
    if let Err(error) = std::fs::rename(path, &aside) {
        warn!(file = %path.display(), %error, "cannot set a damaged segment aside");
    }
}
