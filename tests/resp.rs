//! The `resp` protocol plugin with real Redis clients (`redis-cli` from Debian's redis-tools;
//! redis-py is in the interop suite): pub/sub over `amq.topic` in both directions with MQTT and
//! AMQP, lists as durable queues that survive `kill -9`, logins, and bad input.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use common::logins::{build_plugins, resp_port};
use common::Broker;

const RESP_CONFIG: &str = "[plugins]\nload = [\"resp\"]\n[plugins.resp]\nport = 0\nbind = \"127.0.0.1\"\n";

/// Starts a broker with the plugin and returns it with the RESP port, read from its log.
fn start() -> (Broker, u16) {
    build_plugins();
    let broker = Broker::start_with_config(RESP_CONFIG);
    let port = resp_port(&broker);
    (broker, port)
}

/// Runs `redis-cli -p <port> <args>` and returns its output, trimmed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "--no-auth-warning"])
        .args(args)
        .output()
        .expect("run redis-cli (Debian's redis-tools)");
    assert!(output.status.success(), "redis-cli {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim_end().to_owned()
}

fn as_guest<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["--user", "guest", "--pass", "guest"];
    all.extend_from_slice(args);
    all
}

/// A `redis-cli SUBSCRIBE`/`PSUBSCRIBE` in the background, its output lines on a channel.
struct Subscriber {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Subscriber {
    fn start(port: u16, args: &[&str]) -> Subscriber {
        let mut child = Command::new("redis-cli")
            .args(["-p", &port.to_string(), "--no-auth-warning", "--user", "guest", "--pass", "guest"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run redis-cli");
        let stdout = child.stdout.take().expect("piped stdout");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Subscriber { child, lines }
    }

    /// The next `count` output lines.
    fn next_lines(&self, count: usize) -> Vec<String> {
        (0..count)
            .map(|_| self.lines.recv_timeout(Duration::from_secs(10)).expect("a line from redis-cli within 10 s"))
            .collect()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn mqtt_client(broker: &Broker, id: &str) -> (AsyncClient, rumqttc::EventLoop) {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.mqtt_port());
    options.set_credentials("guest", "guest");
    AsyncClient::new(options, 16)
}

#[test]
fn redis_cli_logs_in_and_gets_redis_errors() {
    let (_broker, port) = start();
    assert_eq!(redis_cli(port, &["PING"]), "PONG");
    assert_eq!(redis_cli(port, &["PUBLISH", "a", "b"]), "NOAUTH Authentication required.");
    assert_eq!(
        raw_exchange(port, b"AUTH guest nope\r\nQUIT\r\n"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n"
    );
    assert_eq!(raw_exchange(port, b"AUTH guest guest\r\nQUIT\r\n"), "+OK\r\n+OK\r\n");
    assert_eq!(redis_cli(port, &["-a", "guest", "ECHO", "hi"]), "hi", "AUTH <password> is the default user, guest");
    assert_eq!(redis_cli(port, &as_guest(&["GET", "x"])), "ERR unknown command 'get', with args beginning with: 'x'");
    assert_eq!(
        redis_cli(port, &as_guest(&["PUBLISH", "only-channel"])),
        "ERR wrong number of arguments for 'publish' command"
    );
    assert!(redis_cli(port, &as_guest(&["PSUBSCRIBE", "news*"])).contains("is not an AMQP topic pattern"));
}

#[tokio::test]
async fn lists_are_fifo_queues_with_blocking_pops() {
    let (broker, port) = start();
    assert_eq!(redis_cli(port, &as_guest(&["RPUSH", "jobs", "one", "two"])), "2");
    assert_eq!(redis_cli(port, &as_guest(&["LPUSH", "jobs", "three"])), "3");
    assert_eq!(redis_cli(port, &as_guest(&["LLEN", "jobs"])), "3");
    assert_eq!(redis_cli(port, &as_guest(&["BLPOP", "jobs", "1"])), "jobs\none");
    assert_eq!(redis_cli(port, &as_guest(&["BRPOP", "other", "jobs", "1"])), "jobs\ntwo");
    assert_eq!(redis_cli(port, &as_guest(&["LPOP", "jobs"])), "three");
    assert_eq!(redis_cli(port, &as_guest(&["LPOP", "jobs"])), "");

    // An empty list: the pop waits for its timeout, then answers nil.
    let started = Instant::now();
    assert_eq!(redis_cli(port, &as_guest(&["BLPOP", "jobs", "0.5"])), "");
    assert!(started.elapsed() >= Duration::from_millis(450), "waited {:?}", started.elapsed());

    // A blocked pop is served by a push from another client.
    let waiter = std::thread::spawn(move || redis_cli(port, &as_guest(&["BLPOP", "late", "10"])));
    wait_for_consumer(&broker, "late").await;
    assert_eq!(redis_cli(port, &as_guest(&["RPUSH", "late", "arrived"])), "1");
    assert_eq!(waiter.join().expect("the waiting client"), "late\narrived");
}

#[tokio::test]
async fn amqp_to_resp_subscribe_and_mqtt_to_resp_psubscribe() {
    let (broker, port) = start();
    let exact = Subscriber::start(port, &["SUBSCRIBE", "sensors.kitchen.temp"]);
    assert_eq!(exact.next_lines(3), ["subscribe", "sensors.kitchen.temp", "1"]);
    let pattern = Subscriber::start(port, &["PSUBSCRIBE", "sensors.*.temp"]);
    assert_eq!(pattern.next_lines(3), ["psubscribe", "sensors.*.temp", "1"]);

    // AMQP publishes to amq.topic with the channel as routing key.
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    channel
        .basic_publish(
            "amq.topic",
            "sensors.kitchen.temp",
            BasicPublishOptions::default(),
            b"21.5",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("published");
    assert_eq!(exact.next_lines(3), ["message", "sensors.kitchen.temp", "21.5"]);
    assert_eq!(pattern.next_lines(4), ["pmessage", "sensors.*.temp", "sensors.kitchen.temp", "21.5"]);

    // MQTT's `a/b/c` is the channel `a.b.c`.
    let (client, mut events) = mqtt_client(&broker, "resp-mqtt-publisher");
    client.publish("sensors/hall/temp", QoS::AtLeastOnce, false, "19.0").await.expect("queue the publish");
    common::within("the PUBACK", async {
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = events.poll().await.expect("MQTT event") {
                break;
            }
        }
    })
    .await;
    assert_eq!(pattern.next_lines(4), ["pmessage", "sensors.*.temp", "sensors.hall.temp", "19.0"]);
    assert!(exact.lines.recv_timeout(Duration::from_millis(300)).is_err(), "the exact subscriber saw no hall reading");
}

#[tokio::test]
async fn resp_to_mqtt_and_resp_to_amqp_publish() {
    let (broker, port) = start();
    let (client, mut events) = mqtt_client(&broker, "resp-mqtt-subscriber");
    client.subscribe("alerts/#", QoS::AtMostOnce).await.expect("queue the subscribe");
    common::within("the SUBACK", async {
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.expect("MQTT event") {
                break;
            }
        }
    })
    .await;
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    common::declare_queue(&channel, "alerts-log").await;
    common::bind(&channel, "alerts-log", "amq.topic", "alerts.#").await;

    // PUBLISH answers how many queues the message reached: the MQTT session's and alerts-log.
    assert_eq!(redis_cli(port, &as_guest(&["PUBLISH", "alerts.fire", "evacuate"])), "2");
    let publish = common::within("the MQTT delivery", async {
        loop {
            if let Event::Incoming(Packet::Publish(publish)) = events.poll().await.expect("MQTT event") {
                break publish;
            }
        }
    })
    .await;
    assert_eq!(publish.topic, "alerts/fire");
    assert_eq!(&publish.payload[..], b"evacuate");
    let got = common::get_no_ack(&channel, "alerts-log").await.expect("the AMQP queue has it");
    assert_eq!(got.delivery.data, b"evacuate");
    assert_eq!(got.delivery.routing_key.as_str(), "alerts.fire");
}

#[test]
fn pushed_messages_survive_kill_9() {
    let (broker, port) = start();
    let values: Vec<String> = (0..50).map(|n| format!("job-{n}")).collect();
    let mut args = vec!["RPUSH", "durable-jobs"];
    args.extend(values.iter().map(String::as_str));
    assert_eq!(redis_cli(port, &as_guest(&args)), "50");
    // The reply came after the fsync: kill -9 straight away.
    let broker = broker.crash_and_restart();
    let port = resp_port(&broker);
    assert_eq!(redis_cli(port, &as_guest(&["LLEN", "durable-jobs"])), "50");
    for value in &values {
        assert_eq!(redis_cli(port, &as_guest(&["LPOP", "durable-jobs"])), *value);
    }
}

/// Waits until a queue has a consumer: a blocked pop is waiting on it.
async fn wait_for_consumer(broker: &Broker, queue: &str) {
    let connection = common::connect(broker).await;
    common::poll_until("a blocked pop waiting", Duration::from_secs(10), || async {
        // A passive declare of a queue that does not exist yet closes its channel: a new one each time.
        let Ok(channel) = connection.create_channel().await else { return false };
        let declared = channel.queue_declare(queue, common::passive(), lapin::types::FieldTable::default()).await;
        declared.is_ok_and(|declared| declared.consumer_count() >= 1)
    })
    .await;
}

/// Sends raw bytes and returns what the plugin answers before it closes the connection.
fn raw_exchange(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(bytes).expect("send");
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn malformed_and_oversized_input_gets_a_protocol_error_and_a_close() {
    let (_broker, port) = start();
    assert_eq!(raw_exchange(port, b"*x\r\n"), "-ERR Protocol error: invalid multibulk length\r\n");
    assert_eq!(raw_exchange(port, b"*1\r\n:5\r\n"), "-ERR Protocol error: expected '$', got ':'\r\n");
    // A bulk larger than the 16 MiB bound is refused from its header, before any body arrives.
    assert_eq!(
        raw_exchange(port, b"*2\r\n$4\r\nPING\r\n$99999999\r\n"),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // Before AUTH, commands are small: a large bulk is refused from its header.
    assert_eq!(raw_exchange(port, b"*2\r\n$4\r\nECHO\r\n$20000\r\n"), "-ERR Protocol error: invalid bulk length\r\n");
    // An inline command, as telnet sends it, still works; QUIT closes.
    assert_eq!(raw_exchange(port, b"PING\r\nQUIT\r\n"), "+PONG\r\n+OK\r\n");
    // The plugin and the broker are still serving.
    assert_eq!(redis_cli(port, &["PING"]), "PONG");
}
