//! Recovery: reading the segments back at start.
//!
//! Segments are read in order and each record's checksum is verified. The first record that is
//! torn (runs past the end of its file) or corrupt (bad checksum, bad length, does not decode)
//! ends its segment, with a warning naming the file and the offset. In the last segment that is
//! a crash's torn tail, and the file is cut there. In an earlier one it is damage, not a crash
//! (later segments were written after it), so the file is left as it is for inspection; the scan
//! goes on with the next segment either way. Records are then applied in log order: a publish
//! makes the message live in its queues, a delivery marks it redelivered there, a removal
//! ends it there. What is still live is handed to the caller per queue, in publish (id) order.

use std::collections::{BTreeMap, HashMap};
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tracing::warn;
use warren_core::name::{QueueName, VhostName};
use warren_core::queue::Recovered;
use warren_core::Message;

use crate::record::{self, Record, RECORD_BODY_MAX, RECORD_HEADER_BYTES};
use crate::{now_ms, Segment, StoreError, SEGMENT_EXTENSION, SEGMENT_MAGIC};

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

pub(crate) struct Scanned {
    pub segments: Vec<Segment>,
    pub next_segment: u64,
    pub next_id: u64,
    pub recovery: Recovery,
}

/// A message read back, with its state in each queue.
struct Entry {
    segment: usize,
    published_ms: u64,
    vhost: VhostName,
    message: Box<Message>,
    /// Per queue: (name, delivered, live).
    queues: Vec<(QueueName, bool, bool)>,
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
    let mut entries: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut segments = Vec::new();
    let mut next_id = 1;
    let mut next_segment = 1;
    let last = numbered.last().map(|(number, _)| *number);
    for (number, path) in &numbered {
        next_segment = next_segment.max(number + 1);
        let bytes = std::fs::read(path).map_err(StoreError::io(path))?;
        if bytes.is_empty() {
            // Created by a roll just before a crash, before its magic was written.
            std::fs::remove_file(path).map_err(StoreError::io(path))?;
            continue;
        }
        if bytes.len() < SEGMENT_MAGIC.len() || &bytes[..SEGMENT_MAGIC.len()] != SEGMENT_MAGIC {
            set_aside(path, bytes.len());
            continue;
        }
        let index = segments.len();
        segments.push(Segment { number: *number, first_id: next_id, live: 0 });
        report.segments += 1;
        let mut offset = SEGMENT_MAGIC.len();
        while offset < bytes.len() {
            let record = record_at(&bytes, offset).and_then(|body| record::decode(body).ok().map(|r| (body.len(), r)));
            let Some((body_bytes, record)) = record else {
                damaged(path, offset as u64, Some(*number) == last, &mut report)?;
                break;
            };
            offset += RECORD_HEADER_BYTES + body_bytes;
            report.records += 1;
            apply(&mut entries, record, index, &mut next_id);
        }
    }

    let now = now_ms();
    let mut queues: HashMap<(VhostName, QueueName), Vec<Recovered>> = HashMap::new();
    for entry in entries.into_values() {
        let message = Arc::new(*entry.message);
        let age = Duration::from_millis(now.saturating_sub(entry.published_ms));
        for (queue, delivered, live) in entry.queues {
            if !live {
                continue;
            }
            segments[entry.segment].live += 1;
            report.live += 1;
            let recovered = Recovered { message: message.clone(), redelivered: delivered, age };
            queues.entry((entry.vhost.clone(), queue)).or_default().push(recovered);
        }
    }
    Ok(Scanned { segments, next_segment, next_id, recovery: Recovery { queues, report } })
}

/// The body of the record at `offset`, if it is whole and its checksum matches.
fn record_at(bytes: &[u8], offset: usize) -> Option<&[u8]> {
    let header = bytes.get(offset..offset + RECORD_HEADER_BYTES)?;
    let length = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if length > RECORD_BODY_MAX {
        return None;
    }
    let start = offset + RECORD_HEADER_BYTES;
    let body = bytes.get(start..start + length)?;
    (crc32fast::hash(body) == crc).then_some(body)
}

fn apply(entries: &mut BTreeMap<u64, Entry>, record: Record, segment: usize, next_id: &mut u64) {
    match record {
        Record::Publish { id, published_ms, vhost, queues, message } => {
            *next_id = (*next_id).max(id + 1);
            let queues = queues.into_iter().map(|queue| (queue, false, true)).collect();
            entries.insert(id, Entry { segment, published_ms, vhost, message, queues });
        }
        Record::Delivered { id, vhost, queue } => {
            if let Some(state) = queue_state(entries, id, &vhost, &queue) {
                state.1 = true;
            }
        }
        Record::Removed { id, vhost, queue } => {
            let Some(state) = queue_state(entries, id, &vhost, &queue) else { return };
            state.2 = false;
            if entries.get(&id).is_some_and(|entry| entry.queues.iter().all(|(_, _, live)| !live)) {
                entries.remove(&id);
            }
        }
    }
}

fn queue_state<'a>(
    entries: &'a mut BTreeMap<u64, Entry>,
    id: u64,
    vhost: &VhostName,
    queue: &QueueName,
) -> Option<&'a mut (QueueName, bool, bool)> {
    let entry = entries.get_mut(&id).filter(|entry| entry.vhost == *vhost)?;
    entry.queues.iter_mut().find(|(name, _, live)| name == queue && *live)
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
fn set_aside(path: &Path, length: usize) {
    let aside = path.with_extension("damaged");
    warn!(file = %path.display(), length, aside = %aside.display(), "message store: not a segment; set aside");
    if let Err(error) = std::fs::rename(path, &aside) {
        warn!(file = %path.display(), %error, "cannot set a damaged segment aside");
    }
}
