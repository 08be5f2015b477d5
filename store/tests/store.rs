//! The store on a real directory: what is appended and synced comes back after a reopen, in
//! order and with its delivery state; damage at the tail is cut off; emptied segments go.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use warren_core::journal::Journal;
use warren_core::name::{ExchangeName, QueueName, VhostName};
use warren_core::properties::Properties;
use warren_core::topic::RoutingKey;
use warren_core::Message;
use warren_store::{Recovery, Store, StoreConfig, SEGMENT_EXTENSION};

fn message(body: &str, expiration: Option<&str>) -> Message {
    Message {
        exchange: ExchangeName::new(""),
        routing_key: RoutingKey::new("q"),
        properties: Properties {
            delivery_mode: Some(2),
            expiration: expiration.map(str::to_owned),
            ..Properties::default()
        },
        body: Bytes::copy_from_slice(body.as_bytes()),
        journal: None,
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("warren-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn open(dir: &Path, segment_bytes: u64) -> (Arc<Store>, Recovery) {
    let config = StoreConfig { segment_bytes, ..StoreConfig::new(dir) };
    Store::open(config).expect("store opens")
}

/// The recovered messages of `queue`, read back through the store, with their flags.
fn bodies(store: &Store, recovery: &Recovery, queue: &str) -> Vec<(String, bool)> {
    let key = (VhostName::new("/"), QueueName::new(queue));
    let Some(recovered) = recovery.queues.get(&key) else { return Vec::new() };
    let references: Vec<_> = recovered.iter().map(|recovered| recovered.reference).collect();
    let messages = store.read(&references).expect("the store reads");
    recovered
        .iter()
        .zip(messages)
        .map(|(recovered, message)| {
            let message = message.expect("a recovered message reads back");
            assert_eq!(message.body.len(), recovered.body_bytes as usize);
            (String::from_utf8(message.body.to_vec()).expect("utf-8"), recovered.redelivered)
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some(SEGMENT_EXTENSION))
        .collect();
    files.sort();
    files
}

#[tokio::test]
async fn synced_messages_come_back_in_order_with_their_delivery_state() {
    let dir = temp_dir("order");
    let vhost = VhostName::new("/");
    let (a, b) = (QueueName::new("a"), QueueName::new("b"));
    {
        let (store, recovery) = open(&dir, 1 << 20);
        assert!(recovery.queues.is_empty());
        let mut ids = Vec::new();
        for index in 0..5 {
            let journaled = store.publish(&vhost, &[&a, &b], &message(&format!("m{index}"), None)).expect("publish");
            ids.push(journaled.id);
        }
        // m0: acked in a, delivered in b. m1: delivered in a. m3: removed from both.
        store.removed(&vhost, &a, ids[0]);
        store.delivered(&vhost, &b, ids[0]);
        store.delivered(&vhost, &a, ids[1]);
        store.removed(&vhost, &a, ids[3]);
        store.removed(&vhost, &b, ids[3]);
        let state = store.sync().await;
        assert!(!state.failed && state.synced == store.appended());
        store.close();
    }
    let (store, recovery) = open(&dir, 1 << 20);
    let a_bodies = vec![("m1".to_owned(), true), ("m2".to_owned(), false), ("m4".to_owned(), false)];
    assert_eq!(bodies(&store, &recovery, "a"), a_bodies);
    let b_bodies =
        vec![("m0".to_owned(), true), ("m1".to_owned(), false), ("m2".to_owned(), false), ("m4".to_owned(), false)];
    assert_eq!(bodies(&store, &recovery, "b"), b_bodies);
    assert_eq!(recovery.report.live, 7);
    // The two queues share one stored copy of each message.
    let m1 = |queue: &str, index: usize| recovery.queues[&(vhost.clone(), QueueName::new(queue))][index].reference;
    assert_eq!(m1("a", 0), m1("b", 1));
    // Ids keep growing across restarts.
    let next = store.publish(&vhost, &[&a], &message("m5", None)).expect("publish");
    assert!(next.id > 5);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Publishes three messages, damages the last record with `damage`, and checks that the first
/// two come back, the damage is cut with a report naming the file, and the store works on.
async fn damaged_tail_is_cut(name: &str, damage: impl FnOnce(&Path)) {
    let dir = temp_dir(name);
    let vhost = VhostName::new("/");
    let queue = QueueName::new("a");
    {
        let (store, _) = open(&dir, 1 << 20);
        for body in ["first", "second", "third"] {
            store.publish(&vhost, &[&queue], &message(body, None)).expect("publish");
        }
        store.sync().await;
        store.close();
    }
    let files = segments(&dir);
    let last = files.last().expect("a segment").clone();
    let length_before = std::fs::metadata(&last).expect("meta").len();
    damage(&last);
    {
        let (store, recovery) = open(&dir, 1 << 20);
        assert_eq!(bodies(&store, &recovery, "a"), vec![("first".to_owned(), false), ("second".to_owned(), false)]);
        assert_eq!(recovery.report.cut.len(), 1, "{:?}", recovery.report);
        assert_eq!(recovery.report.cut[0].0, last);
        assert!(recovery.report.cut[0].1 < length_before);
        assert_eq!(std::fs::metadata(&last).expect("meta").len(), recovery.report.cut[0].1);
        store.publish(&vhost, &[&queue], &message("fourth", None)).expect("publish");
        store.sync().await;
        store.close();
    }
    let (store, recovery) = open(&dir, 1 << 20);
    let expected: Vec<(String, bool)> =
        ["first", "second", "fourth"].iter().map(|body| (body.to_string(), false)).collect();
    assert_eq!(bodies(&store, &recovery, "a"), expected);
    assert!(recovery.report.cut.is_empty());
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_truncated_last_record_is_cut_off() {
    damaged_tail_is_cut("truncated", |path| {
        let length = std::fs::metadata(path).expect("meta").len();
        let file = std::fs::OpenOptions::new().write(true).open(path).expect("open");
        file.set_len(length - 3).expect("truncate");
    })
    .await;
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_cut_off() {
    damaged_tail_is_cut("flipped", |path| {
        let mut bytes = std::fs::read(path).expect("read");
        let at = bytes.len() - 2;
        bytes[at] ^= 0x40;
        std::fs::write(path, bytes).expect("write");
    })
    .await;
}

#[tokio::test]
async fn emptied_segments_are_deleted_and_disk_follows_the_backlog() {
    let dir = temp_dir("segments");
    let vhost = VhostName::new("/");
    let queue = QueueName::new("a");
    let (store, _) = open(&dir, 4096);
    let body = "x".repeat(1000);
    let mut ids = Vec::new();
    for _ in 0..40 {
        ids.push(store.publish(&vhost, &[&queue], &message(&body, None)).expect("publish").id);
    }
    store.sync().await;
    let before = segments(&dir).len();
    assert!(before >= 8, "40 KB in 4 KB segments: {before}");
    for id in &ids[..36] {
        store.removed(&vhost, &queue, *id);
    }
    // One more round of the writer carries out the deletions.
    store.publish(&vhost, &[&queue], &message("tail", None)).expect("publish");
    store.sync().await;
    // Deletion follows the sync that covers the removals, just after it is announced.
    let mut after = segments(&dir).len();
    for _ in 0..200 {
        if after <= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        after = segments(&dir).len();
    }
    assert!(after <= 3, "{before} segments before, {after} after");
    store.close();
    let (store, recovery) = open(&dir, 4096);
    assert_eq!(bodies(&store, &recovery, "a").len(), 5);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_restart_resumes_after_a_crash_mid_recovery() {
    // Opening twice without closing in between (the first "crashed" after recovery) must give
    // the same messages both times.
    let dir = temp_dir("twice");
    let vhost = VhostName::new("/");
    let queue = QueueName::new("a");
    {
        let (store, _) = open(&dir, 1 << 20);
        for body in ["one", "two"] {
            store.publish(&vhost, &[&queue], &message(body, None)).expect("publish");
        }
        store.sync().await;
        store.close();
    }
    let first = {
        let (store, recovery) = open(&dir, 1 << 20);
        let bodies = bodies(&store, &recovery, "a");
        std::mem::forget(store);
        bodies
    };
    let (store, recovery) = open(&dir, 1 << 20);
    assert_eq!(first, bodies(&store, &recovery, "a"));
    assert_eq!(first.len(), 2);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn damage_in_an_earlier_segment_is_skipped_and_left_alone() {
    let dir = temp_dir("earlier");
    let vhost = VhostName::new("/");
    let queue = QueueName::new("a");
    {
        // About 1 KB per message, 2 KB segments: two messages per segment.
        let (store, _) = open(&dir, 2048);
        for index in 0..6 {
            store.publish(&vhost, &[&queue], &message(&format!("{index}{}", "x".repeat(1000)), None)).expect("publish");
        }
        store.sync().await;
        store.close();
    }
    let files = segments(&dir);
    assert!(files.len() >= 3, "{files:?}");
    let first = files[0].clone();
    let mut bytes = std::fs::read(&first).expect("read");
    let at = bytes.len() - 10;
    bytes[at] ^= 0x08;
    std::fs::write(&first, &bytes).expect("write");
    let (store, recovery) = open(&dir, 2048);
    let firsts: Vec<char> =
        bodies(&store, &recovery, "a").iter().map(|(body, _)| body.chars().next().expect("non-empty")).collect();
    // The damaged record (message 1) is skipped; every later segment is read.
    assert_eq!(firsts, vec!['0', '2', '3', '4', '5']);
    assert!(recovery.report.cut.is_empty());
    assert_eq!(recovery.report.skipped.len(), 1);
    assert_eq!(std::fs::read(&first).expect("read"), bytes, "an earlier segment is left as it is");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn removals_alone_roll_segments_so_a_drain_frees_the_disk() {
    let dir = temp_dir("drain");
    let vhost = VhostName::new("/");
    let queue = QueueName::new("a-queue-with-a-long-name-so-removals-take-room");
    let mut ids = Vec::new();
    {
        let (store, _) = open(&dir, 4096);
        for _ in 0..20 {
            ids.push(store.publish(&vhost, &[&queue], &message(&"y".repeat(1000), None)).expect("publish").id);
        }
        store.sync().await;
        store.close();
    }
    // After a restart, only removals: hundreds of them, many times a segment's size.
    let (store, _) = open(&dir, 4096);
    for _ in 0..50 {
        for id in &ids {
            store.delivered(&vhost, &queue, *id);
        }
    }
    for id in &ids {
        store.removed(&vhost, &queue, *id);
    }
    store.sync().await;
    let bytes_on_disk =
        || segments(&dir).iter().map(|path| std::fs::metadata(path).map_or(0, |meta| meta.len())).sum::<u64>();
    let mut left = bytes_on_disk();
    for _ in 0..200 {
        if left <= 3 * 4096 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        left = bytes_on_disk();
    }
    // The records of the drain itself were over 70 KB.
    assert!(left <= 3 * 4096, "{left} bytes of segments left after a full drain");
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_long_lived_message_pins_only_its_own_segment() {
    let dir = temp_dir("straggler");
    let vhost = VhostName::new("/");
    let (slow, fast) = (QueueName::new("slow"), QueueName::new("fast"));
    {
        let (store, _) = open(&dir, 4096);
        store.publish(&vhost, &[&slow], &message("straggler", None)).expect("publish");
        // A consumer one message behind: many removals land in the segment after their message's.
        let mut previous = None;
        for _ in 0..200 {
            let id = store.publish(&vhost, &[&fast], &message(&"f".repeat(1000), None)).expect("publish").id;
            if let Some(previous) = previous.replace(id) {
                store.removed(&vhost, &fast, previous);
            }
        }
        store.removed(&vhost, &fast, previous.expect("published"));
        store.publish(&vhost, &[&fast], &message("tail", None)).expect("publish");
        store.sync().await;
        let mut left = segments(&dir).len();
        for _ in 0..200 {
            if left <= 4 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            left = segments(&dir).len();
        }
        assert!(left <= 4, "200 KB published, all but two messages consumed: {left} segments left");
        store.close();
    }
    // Nothing consumed comes back: the removals that still matter were copied forward.
    let (store, recovery) = open(&dir, 4096);
    assert_eq!(bodies(&store, &recovery, "slow"), vec![("straggler".to_owned(), false)]);
    assert_eq!(bodies(&store, &recovery, "fast"), vec![("tail".to_owned(), false)]);
    store.close();
    let _ = std::fs::remove_dir_all(&dir);
}
