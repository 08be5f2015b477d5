//! Durability against a real broker process: confirmed persistent messages survive `kill -9`,
//! a crash during recovery, and damage at the tail of the log; delivered-but-unacked ones come
//! back flagged redelivered; TTL and dead-lettering still apply after recovery.

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, QueueDeclareOptions};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;

use common::{confirm_channel, connect, next_delivery, open_channel, Broker};

fn persistent() -> BasicProperties {
    BasicProperties::default().with_delivery_mode(2)
}

/// Publishes a persistent message through the default exchange and waits for its confirm.
async fn publish_persistent(channel: &lapin::Channel, queue: &str, body: &[u8]) {
    channel
        .basic_publish("", queue, BasicPublishOptions::default(), body, persistent())
        .await
        .expect("publish")
        .await
        .expect("confirm");
}

/// How many messages a durable queue holds (a passive declare, which also shows it exists).
async fn stored_count(broker: &Broker, queue: &str) -> u32 {
    let connection = connect(broker).await;
    let channel = open_channel(&connection).await;
    let passive = QueueDeclareOptions { passive: true, ..durable() };
    let declared = channel.queue_declare(queue, passive, FieldTable::default()).await.expect("the queue is there");
    declared.message_count()
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions { durable: true, ..QueueDeclareOptions::default() }
}

async fn declare_durable(broker: &Broker, name: &str, arguments: FieldTable) {
    let connection = connect(broker).await;
    let channel = open_channel(&connection).await;
    channel.queue_declare(name, durable(), arguments).await.expect("declare a durable queue");
    connection.close(200, "bye").await.expect("close");
}

/// Takes every message in `queue` (acking each), as bodies with their redelivered flags.
async fn consume_all(broker: &Broker, queue: &str, expected_at_least: usize) -> Vec<(String, bool)> {
    let connection = connect(broker).await;
    let channel = open_channel(&connection).await;
    channel.basic_qos(500, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume(queue, "drain", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut bodies = Vec::new();
    loop {
        let quiet = if bodies.len() < expected_at_least { Duration::from_secs(10) } else { Duration::from_millis(500) };
        let next = tokio::time::timeout(quiet, futures_lite::StreamExt::next(&mut consumer)).await;
        let Ok(Some(delivery)) = next else { break };
        let delivery = delivery.expect("delivery");
        bodies.push((String::from_utf8(delivery.data.clone()).expect("utf-8"), delivery.redelivered));
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    connection.close(200, "bye").await.expect("close");
    bodies
}

/// Publishes persistent messages on its own connection, with confirms, until the broker goes
/// away; records what was published and what was confirmed.
async fn publish_until_killed(
    broker_uri: String,
    publisher: usize,
    published: Arc<Mutex<Vec<String>>>,
    confirmed: Arc<Mutex<Vec<String>>>,
) {
    let Ok(connection) = lapin::Connection::connect(&broker_uri, lapin::ConnectionProperties::default()).await else {
        return;
    };
    let Ok(channel) = connection.create_channel().await else { return };
    if channel.confirm_select(Default::default()).await.is_err() {
        return;
    }
    let mut window = VecDeque::new();
    for index in 0.. {
        let body = format!("p{publisher}-{index}");
        published.lock().expect("lock").push(body.clone());
        let publish =
            channel.basic_publish("", "crash", BasicPublishOptions::default(), body.as_bytes(), persistent()).await;
        let Ok(confirm) = publish else { return };
        window.push_back((body, confirm));
        while window.len() > 64 {
            let (body, confirm) = window.pop_front().expect("non-empty");
            match confirm.await {
                Ok(Confirmation::Ack(_)) => confirmed.lock().expect("lock").push(body),
                Ok(_) => panic!("persistent publish to a durable queue was nacked"),
                Err(_) => return,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_messages_survive_kill_9_exactly_once() {
    let broker = Broker::start();
    declare_durable(&broker, "crash", FieldTable::default()).await;
    let published = Arc::new(Mutex::new(Vec::new()));
    let confirmed = Arc::new(Mutex::new(Vec::new()));
    let publishers: Vec<_> = (0..4)
        .map(|publisher| {
            tokio::spawn(publish_until_killed(broker.amqp_uri(), publisher, published.clone(), confirmed.clone()))
        })
        .collect();
    // Kill once a good number are confirmed, while all four are still publishing.
    common::poll_until("2000 confirms", Duration::from_secs(60), || {
        let confirmed = confirmed.clone();
        async move { confirmed.lock().expect("lock").len() >= 2000 }
    })
    .await;
    let broker = broker.crash_and_restart();
    for publisher in publishers {
        let _ = tokio::time::timeout(Duration::from_secs(10), publisher).await;
    }
    let confirmed: Vec<String> = confirmed.lock().expect("lock").clone();
    let published: HashSet<String> = published.lock().expect("lock").iter().cloned().collect();
    let received = consume_all(&broker, "crash", confirmed.len()).await;

    let mut seen = HashSet::new();
    for (body, redelivered) in &received {
        assert!(seen.insert(body.clone()), "{body} came back twice");
        assert!(published.contains(body), "{body} was never published");
        assert!(!redelivered, "{body} was never delivered before the crash, yet is flagged redelivered");
    }
    let missing: Vec<&String> = confirmed.iter().filter(|body| !seen.contains(*body)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} confirmed messages lost, e.g. {:?}",
        missing.len(),
        confirmed.len(),
        &missing[..missing.len().min(5)]
    );
    // Per publisher, messages come back in publish order.
    let mut last: HashMap<&str, u64> = HashMap::new();
    for (body, _) in &received {
        let (publisher, index) = body.split_once('-').expect("p<n>-<i>");
        let index: u64 = index.parse().expect("index");
        if let Some(previous) = last.insert(publisher, index) {
            assert!(index > previous, "{publisher}: {index} came after {previous}");
        }
    }
    assert!(broker.log_tail().contains("messages recovered"), "{}", broker.log_tail());
}

#[tokio::test]
async fn delivered_unacked_messages_come_back_redelivered_and_acked_ones_do_not() {
    let broker = Broker::start();
    declare_durable(&broker, "work", FieldTable::default()).await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    for index in 0..10 {
        let body = format!("m{index}");
        publish_persistent(&channel, "work", body.as_bytes()).await;
    }
    // A transient message on the durable queue does not survive.
    channel
        .basic_publish("", "work", BasicPublishOptions::default(), b"transient", BasicProperties::default())
        .await
        .expect("publish")
        .await
        .expect("confirm");
    channel.basic_qos(5, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume("work", "c", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut deliveries = Vec::new();
    for _ in 0..5 {
        deliveries.push(next_delivery(&mut consumer).await);
    }
    // No more deliveries (so acks free no credit for m5..), then ack m0 and m1; m2..m4 stay
    // delivered and unacked.
    channel.basic_cancel("c", Default::default()).await.expect("cancel");
    for delivery in &deliveries[..2] {
        delivery.ack(BasicAckOptions::default()).await.expect("ack");
    }
    // The acks and deliveries are recorded by the next sync, which follows at once; a confirmed
    // publish on another queue proves a sync has happened after them.
    declare_durable(&broker, "marker", FieldTable::default()).await;
    publish_persistent(&channel, "marker", b"x").await;
    let broker = broker.crash_and_restart();
    let received = consume_all(&broker, "work", 8).await;
    let expected: Vec<(String, bool)> = (2..10).map(|index| (format!("m{index}"), index < 5)).collect();
    assert_eq!(received, expected);
}

#[tokio::test]
async fn a_crash_during_recovery_then_a_second_restart_loses_nothing() {
    let broker = Broker::start();
    declare_durable(&broker, "big", FieldTable::default()).await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let body = vec![b'x'; 1024];
    let total = 20_000;
    let mut confirms = VecDeque::new();
    for _ in 0..total {
        let confirm = channel
            .basic_publish("", "big", BasicPublishOptions::default(), &body, persistent())
            .await
            .expect("publish");
        confirms.push_back(confirm);
        if confirms.len() > 256 {
            confirms.pop_front().expect("non-empty").await.expect("confirm");
        }
    }
    for confirm in confirms {
        assert!(matches!(confirm.await, Ok(Confirmation::Ack(_))));
    }
    let data_dir = broker.crash();
    // Start and kill at once, likely while it reads the log back; then start for real.
    for delay_ms in [5, 40] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_warren"))
            .args(["--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0"])
            .args(["--bind", "127.0.0.1"])
            .arg("--data-dir")
            .arg(&data_dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("kill -9");
        child.wait().expect("reap");
    }
    let broker = Broker::start_in(data_dir);
    assert_eq!(stored_count(&broker, "big").await, total);
    // And once more, after a clean recovery.
    let broker = broker.crash_and_restart();
    assert_eq!(stored_count(&broker, "big").await, total);
}

#[tokio::test]
async fn a_flipped_byte_in_the_last_record_is_cut_with_a_warning() {
    let broker = Broker::start();
    declare_durable(&broker, "damaged", FieldTable::default()).await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    for body in ["one", "two", "three"] {
        publish_persistent(&channel, "damaged", body.as_bytes()).await;
    }
    let data_dir = broker.crash();
    let messages = data_dir.join("messages");
    let mut segments: Vec<_> = std::fs::read_dir(&messages)
        .expect("messages dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "wlog"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment").clone();
    let mut bytes = std::fs::read(&last).expect("read");
    let at = bytes.len() - 3;
    bytes[at] ^= 0x01;
    std::fs::write(&last, &bytes).expect("write");

    let broker = Broker::start_in(data_dir);
    let received = consume_all(&broker, "damaged", 2).await;
    assert_eq!(received, vec![("one".to_owned(), false), ("two".to_owned(), false)]);
    let log = broker.log_tail();
    let file_name = last.file_name().expect("name").to_string_lossy().to_string();
    assert!(log.contains("torn or corrupt record") && log.contains(&file_name), "{log}");
}

#[tokio::test]
async fn ttl_and_dead_lettering_apply_after_recovery() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let mut arguments = FieldTable::default();
    arguments.insert(ShortString::from("x-message-ttl"), AMQPValue::LongInt(1500));
    arguments.insert(ShortString::from("x-dead-letter-exchange"), AMQPValue::LongString("".into()));
    arguments.insert(ShortString::from("x-dead-letter-routing-key"), AMQPValue::LongString("expired".into()));
    channel.queue_declare("short-lived", durable(), arguments).await.expect("declare");
    channel.queue_declare("expired", durable(), FieldTable::default()).await.expect("declare");
    publish_persistent(&channel, "short-lived", b"old").await;
    let data_dir = broker.crash();
    // Down for longer than the TTL: the message expires as soon as it is recovered.
    std::thread::sleep(Duration::from_millis(1600));
    let broker = Broker::start_in(data_dir);
    let received = consume_all(&broker, "expired", 1).await;
    assert_eq!(received, vec![("old".to_owned(), false)]);
    assert_eq!(stored_count(&broker, "short-lived").await, 0);
}

/// Mounts a small tmpfs for a broker's data directory, so the disk really fills up. Needs
/// root, or user namespaces: without root the test re-runs itself under `unshare -rm`, where it
/// is root of its own mount namespace.
struct SmallDisk {
    dir: std::path::PathBuf,
}

impl SmallDisk {
    fn mount(bytes: u64) -> Option<SmallDisk> {
        let dir = std::env::temp_dir().join(format!("warren-small-disk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the mount point");
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status();
        status.is_ok_and(|status| status.success()).then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.dir).stderr(std::process::Stdio::null()).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Runs this test binary's `test` alone inside a new user and mount namespace.
fn rerun_in_namespace(test: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let output = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount"])
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads", "1"])
        .env("WARREN_TEST_IN_NAMESPACE", "1")
        .output()
        .expect("run unshare");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "cannot mount a tmpfs: not root, and the test failed under `unshare -rm`:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn disk_full_nacks_publishes_damages_nothing_confirmed_and_recovers() {
    let Some(disk) = SmallDisk::mount(1 << 20) else {
        assert!(std::env::var_os("WARREN_TEST_IN_NAMESPACE").is_none(), "cannot mount a tmpfs in the namespace");
        return rerun_in_namespace("disk_full_nacks_publishes_damages_nothing_confirmed_and_recovers");
    };
    let data_dir = disk.dir.join("data");
    std::fs::create_dir_all(&data_dir).expect("data dir");
    std::fs::write(data_dir.join("warren.toml"), "[storage]\nsegment_bytes = 65536\n").expect("config");
    let broker = Broker::start_in(data_dir);
    declare_durable(&broker, "full", FieldTable::default()).await;
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let body = |index: usize| format!("{index:06}{}", "x".repeat(4090));
    let mut confirmed = Vec::new();
    let mut nacked = 0;
    for index in 0..2000 {
        let confirmation = channel
            .basic_publish("", "full", BasicPublishOptions::default(), body(index).as_bytes(), persistent())
            .await
            .expect("publish")
            .await
            .expect("confirmation");
        match confirmation {
            Confirmation::Ack(_) => confirmed.push(index),
            _ => {
                nacked += 1;
                if nacked == 5 {
                    break;
                }
            }
        }
    }
    assert_eq!(nacked, 5, "1 MiB filled without a nack ({} confirmed)", confirmed.len());
    assert!(confirmed.len() > 50, "only {} confirmed before the disk filled", confirmed.len());
    // The broker is up, and transient work goes on.
    let transient = confirm_channel(&connection).await;
    transient.queue_declare("scratch", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    common::publish_plain(&transient, "", "scratch", "still here").await;
    assert_eq!(common::drain_bodies(&transient, "scratch").await, vec!["still here".to_owned()]);

    // Everything confirmed is intact, in order. (A nacked message may be there too: a nack
    // says it might not have been stored, not that it was not.)
    let received = consume_all(&broker, "full", confirmed.len()).await;
    let indexes: Vec<usize> = received
        .iter()
        .map(|(body, _)| {
            assert_eq!(body.len(), 4096, "a damaged body");
            body[..6].parse().expect("index")
        })
        .collect();
    assert!(indexes.windows(2).all(|pair| pair[0] < pair[1]), "out of order: {indexes:?}");
    let received: HashSet<usize> = indexes.into_iter().collect();
    assert!(confirmed.iter().all(|index| received.contains(index)), "a confirmed message is missing");

    // Draining freed whole segments, so the store writes again.
    common::poll_until("a confirmed publish after draining", Duration::from_secs(15), || {
        let channel = channel.clone();
        async move {
            let confirm = channel
                .basic_publish("", "full", BasicPublishOptions::default(), b"after", persistent())
                .await
                .expect("publish")
                .await
                .expect("confirmation");
            matches!(confirm, Confirmation::Ack(_))
        }
    })
    .await;
    let broker = broker.crash_and_restart();
    let after = consume_all(&broker, "full", 1).await;
    assert!(after.iter().any(|(body, _)| body == "after"), "{after:?}");
    drop(broker);
    drop(disk);
}

/// The broker's resident memory, from /proc.
fn rss_kib(broker: &Broker) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", broker.child.id())).expect("proc status");
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).expect("value").parse().expect("number")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_larger_than_the_queue_memory_share_streams_from_disk_in_order() {
    // A 1 MiB memory share and a 64 MiB backlog.
    let broker = Broker::start_with_config("[storage]\nqueue_memory_bytes = 1048576\n");
    declare_durable(&broker, "backlog", FieldTable::default()).await;
    let baseline = rss_kib(&broker);
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let total = 64 * 1024;
    let body = |index: usize| format!("{index:08}{}", "b".repeat(1016));
    let mut confirms = VecDeque::new();
    for index in 0..total {
        let confirm = channel
            .basic_publish("", "backlog", BasicPublishOptions::default(), body(index).as_bytes(), persistent())
            .await
            .expect("publish");
        confirms.push_back(confirm);
        if confirms.len() > 512 {
            assert!(matches!(confirms.pop_front().expect("non-empty").await, Ok(Confirmation::Ack(_))));
        }
    }
    for confirm in confirms {
        assert!(matches!(confirm.await, Ok(Confirmation::Ack(_))));
    }
    let loaded = rss_kib(&broker);
    let backlog_kib = (total as u64 * 1024) / 1024;
    assert!(
        loaded - baseline < backlog_kib / 2,
        "RSS grew by {} KiB for a {backlog_kib} KiB backlog",
        loaded.saturating_sub(baseline)
    );
    drop(connection);

    // After a crash the backlog is recovered as references, not bodies.
    let broker = broker.crash_and_restart();
    let recovered = rss_kib(&broker);
    assert!(
        recovered.saturating_sub(baseline) < backlog_kib / 2,
        "RSS {recovered} KiB (from {baseline} KiB) after recovering a {backlog_kib} KiB backlog"
    );

    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    channel.basic_qos(1000, BasicQosOptions::default()).await.expect("qos");
    let mut consumer = channel
        .basic_consume("backlog", "stream", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let mut peak = 0;
    for expected in 0..total {
        let delivery = next_delivery(&mut consumer).await;
        assert_eq!(delivery.data, body(expected).into_bytes(), "message {expected}");
        if expected % 500 == 499 {
            delivery.ack(BasicAckOptions { multiple: true }).await.expect("ack");
            peak = peak.max(rss_kib(&broker));
        }
    }
    eprintln!("RSS KiB: baseline {baseline}, loaded {loaded}, recovered {recovered}, streaming peak {peak}");
    assert!(
        peak.saturating_sub(baseline) < backlog_kib / 2,
        "RSS {peak} KiB (from {baseline} KiB) while streaming a {backlog_kib} KiB backlog"
    );
}
