//! The journal: where persistent messages on durable queues are written before they are
//! confirmed. The core decides what is written (a publish entering durable queues, a delivery,
//! a message leaving a queue for good); the store behind this trait decides how. The core
//! itself never touches a file, and a broker without a journal keeps everything in memory.

use std::fmt;
use std::sync::{Arc, OnceLock};

use tokio::sync::watch;

use crate::message::Message;
use crate::name::{QueueName, VhostName};

/// A position in the journal: everything appended before it is covered once it is synced.
pub type Lsn = u64;

/// Where the journal's durability stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncState {
    /// Every record below this position is on disk (fsync'd).
    pub synced: Lsn,
    /// Writing has failed (a full disk, say): records past `synced` may never reach the disk,
    /// so what waits for them is refused rather than confirmed.
    pub failed: bool,
}

impl SyncState {
    /// Whether a publish appended at `lsn` is confirmed (`Some(true)`), refused (`Some(false)`)
    /// or still waiting (`None`).
    pub fn outcome(&self, lsn: Lsn) -> Option<bool> {
        if lsn <= self.synced {
            Some(true)
        } else if self.failed {
            Some(false)
        } else {
            None
        }
    }
}

/// The journal refuses new records (its disk is full or failing).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the message store cannot write")]
pub struct JournalUnavailable;

/// A message's place in the journal, given when it is appended: enough to refer to it in later
/// records, to wait for it, and to read it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalRef {
    /// The id its later records (deliveries, removals) refer to.
    pub id: u64,
    /// The log position just after its record: synced past it, it is on disk.
    pub lsn: Lsn,
    /// Where its publish record lies: segment number, byte offset and length.
    pub segment: u64,
    pub offset: u64,
    pub length: u32,
}

/// The durable log of persistent messages. Appends only buffer; durability is announced
/// through [`Journal::sync_state`]. Records must reach the disk in the order they were
/// appended, so that a message's publish record always precedes its acks.
pub trait Journal: Send + Sync + fmt::Debug {
    /// Appends a persistent message that enters the durable `queues` of `vhost`.
    fn publish(
        &self,
        vhost: &VhostName,
        queues: &[&QueueName],
        message: &Message,
    ) -> Result<JournalRef, JournalUnavailable>;

    /// Reads messages back (for queues that keep only references to long backlogs), in the
    /// order asked; `None` for one whose record is damaged or gone (logged by the journal).
    /// `Err` when the journal cannot read now (an I/O error): nothing is lost, try later. Only
    /// records already synced may be read.
    fn read(&self, references: &[JournalRef]) -> Result<Vec<Option<Message>>, JournalUnavailable>;

    /// Everything below this position is synced (and so can be read back).
    fn synced(&self) -> Lsn;

    /// Whether confirms wait for the sync (false when the operator chose to confirm before
    /// it).
    fn confirms_wait(&self) -> bool;

    /// Records that message `id` was handed to a consumer of `queue` (so a recovery marks it
    /// redelivered).
    fn delivered(&self, vhost: &VhostName, queue: &QueueName, id: u64);

    /// Records that message `id` left `queue` for good: acked, expired, dropped, purged.
    fn removed(&self, vhost: &VhostName, queue: &QueueName, id: u64);

    /// The journal's durability, to wait on before releasing confirms.
    fn sync_state(&self) -> watch::Receiver<SyncState>;

    /// Position of the last record appended: syncing up to it covers everything so far.
    fn appended(&self) -> Lsn;
}

/// The journal a broker, its vhosts and queues share, set once by the server before any
/// definition is restored.
#[derive(Clone, Default)]
pub struct JournalSlot(Arc<OnceLock<Arc<dyn Journal>>>);

impl JournalSlot {
    pub fn set(&self, journal: Arc<dyn Journal>) {
        let _ = self.0.set(journal);
    }

    pub fn get(&self) -> Option<&Arc<dyn Journal>> {
        self.0.get()
    }
}

impl fmt::Debug for JournalSlot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.get() {
            Some(journal) => write!(f, "JournalSlot({journal:?})"),
            None => f.write_str("JournalSlot(none)"),
        }
    }
}

/// Whether a record appended at `lsn` is synced, as `sync` last saw it; with no journal,
/// everything is.
pub fn is_synced(sync: Option<&watch::Receiver<SyncState>>, lsn: Lsn) -> bool {
    sync.is_none_or(|sync| sync.borrow().outcome(lsn) == Some(true))
}

/// Waits for the journal's sync state to change; never returns without a journal.
pub async fn changed(sync: Option<&mut watch::Receiver<SyncState>>) -> Result<(), watch::error::RecvError> {
    match sync {
        Some(sync) => sync.changed().await,
        None => std::future::pending().await,
    }
}

/// Tracks confirms that wait for the journal, in the order they must be released. Adapters
/// keep one per confirm stream (a channel or a session): an outcome that
/// needs no sync still waits behind earlier ones that do, so confirms never overtake.
#[derive(Debug)]
pub struct ConfirmQueue<T> {
    waiting: std::collections::VecDeque<(Option<Lsn>, T)>,
}

impl<T> Default for ConfirmQueue<T> {
    fn default() -> Self {
        ConfirmQueue { waiting: std::collections::VecDeque::new() }
    }
}

impl<T> ConfirmQueue<T> {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Adds an outcome that can go out once `lsn` (if any) is synced.
    pub fn push(&mut self, lsn: Option<Lsn>, item: T) {
        self.waiting.push_back((lsn, item));
    }

    /// Takes, in order, every item that can go out under `state`, with whether its record was
    /// synced (`true`) or the journal failed first (`false`); items needing no sync are `true`.
    pub fn release(&mut self, state: SyncState, mut out: impl FnMut(T, bool)) {
        while let Some((lsn, _)) = self.waiting.front() {
            let outcome = match lsn {
                None => true,
                Some(lsn) => match state.outcome(*lsn) {
                    Some(outcome) => outcome,
                    None => return,
                },
            };
            let (_, item) = self.waiting.pop_front().expect("front checked");
            out(item, outcome);
        }
    }
}
