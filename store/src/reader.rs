//! Reading publish records back, for queues that keep only references to a long backlog.
//!
//! A queue asks for its next run of messages at once. References to records that lie close
//! together in one segment (a queue's messages usually do) are read with one positioned read
//! covering them all, so streaming a backlog costs a read per run, not per message, and the
//! kernel's read-ahead sees a sequential pattern.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tracing::warn;
use warren_core::journal::{JournalRef, JournalUnavailable};
use warren_core::Message;

use crate::record::{self, Record, RECORD_HEADER_BYTES};
use crate::segment_path;

/// The largest span one read covers.
const SPAN_BYTES_MAX: u64 = 4 << 20;
/// The largest gap (other records) a read may cover to join two runs.
const GAP_BYTES_MAX: u64 = 64 << 10;
/// Segment files kept open for reading; beyond this the cache starts over.
const OPEN_FILES_MAX: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Reader {
    files: Mutex<HashMap<u64, Arc<File>>>,
}

impl Reader {
    pub fn read(&self, dir: &Path, references: &[JournalRef]) -> Result<Vec<Option<Message>>, JournalUnavailable> {
        let mut messages = Vec::with_capacity(references.len());
        let mut start = 0;
        while start < references.len() {
            let first = references[start];
            let mut end = start + 1;
            let mut span_end = first.offset + u64::from(first.length);
            while let Some(next) = references.get(end) {
                let joins = next.segment == first.segment
                    && next.offset >= span_end
                    && next.offset - span_end <= GAP_BYTES_MAX
                    && next.offset + u64::from(next.length) - first.offset <= SPAN_BYTES_MAX;
                if !joins {
                    break;
                }
                span_end = next.offset + u64::from(next.length);
                end += 1;
            }
            let run = &references[start..end];
            match self.read_span(dir, first.segment, first.offset, span_end) {
                Ok(bytes) => {
                    for reference in run {
                        let at = (reference.offset - first.offset) as usize;
                        messages.push(decode(&bytes[at..at + reference.length as usize], reference, dir));
                    }
                }
                Err(error) => {
                    let file = segment_path(dir, first.segment);
                    warn!(file = %file.display(), offset = first.offset, %error, "cannot read stored messages back");
                    // A segment that is gone (or shorter than its records) is damage: those
                    // messages are lost. Any other error may pass: nothing is given up.
                    let damage =
                        matches!(error.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::UnexpectedEof);
                    if !damage {
                        return Err(JournalUnavailable);
                    }
                    messages.extend(run.iter().map(|_| None));
                }
            }
            start = end;
        }
        Ok(messages)
    }

    /// Closes a deleted segment's file, so its space is freed.
    pub fn forget(&self, segment: u64) {
        self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&segment);
    }

    fn read_span(&self, dir: &Path, segment: u64, from: u64, to: u64) -> std::io::Result<Vec<u8>> {
        let file = self.file(dir, segment)?;
        let mut bytes = vec![0; (to - from) as usize];
        file.read_exact_at(&mut bytes, from)?;
        Ok(bytes)
    }

    fn file(&self, dir: &Path, segment: u64) -> std::io::Result<Arc<File>> {
        let mut files = self.files.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(file) = files.get(&segment) {
            return Ok(file.clone());
        }
        let file = Arc::new(File::open(segment_path(dir, segment))?);
        if files.len() >= OPEN_FILES_MAX {
            files.clear();
        }
        files.insert(segment, file.clone());
        Ok(file)
    }
}

/// Checks and decodes one publish record read back.
fn decode(bytes: &[u8], reference: &JournalRef, dir: &Path) -> Option<Message> {
    let damaged = |why: &str| {
        let file = segment_path(dir, reference.segment);
        warn!(file = %file.display(), offset = reference.offset, why, "a stored message cannot be read back");
        None
    };
    if bytes.len() < RECORD_HEADER_BYTES {
        return damaged("short record");
    }
    let length = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
    let crc = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
    let body = &bytes[RECORD_HEADER_BYTES..];
    if length != body.len() || crc32fast::hash(body) != crc {
        return damaged("checksum mismatch");
    }
    match record::decode(body) {
        Ok(Record::Publish { id, mut message, .. }) if id == reference.id => {
            message.journal = Some(*reference);
            Some(*message)
        }
        _ => damaged("not the publish record expected"),
    }
}
