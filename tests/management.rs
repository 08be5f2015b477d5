//! The management HTTP API against a real broker: vhosts, users, permissions and policies
//! created at run time are used by clients at once and survive a restart; deletions too.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use lapin::options::{BasicPublishOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{json, Value};

use common::Broker;

/// One HTTP/1.1 request; returns the status and the body parsed as JSON (Null when empty).
fn http(addr: SocketAddr, method: &str, path: &str, auth: (&str, &str), body: Option<Value>) -> (u16, Value) {
    use base64::Engine;
    let mut stream = TcpStream::connect(addr).expect("connect to the HTTP port");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", auth.0, auth.1));
    let body = body.map(|body| body.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send the request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read the response");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line");
    let (_, content) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, serde_json::from_str(content).unwrap_or(Value::Null))
}

const GUEST: (&str, &str) = ("guest", "guest");

async fn connect_as(broker: &Broker, user: &str, password: &str, vhost: &str) -> lapin::Result<Connection> {
    let vhost = vhost.replace('/', "%2f");
    let uri = format!("amqp://{user}:{password}@{}/{vhost}", broker.amqp_addr);
    Connection::connect(&uri, ConnectionProperties::default()).await
}

#[tokio::test]
async fn vhosts_users_permissions_and_policies_survive_a_restart() {
    let broker = Broker::start();
    let api = broker.http_addr;
    assert_eq!(http(api, "PUT", "/api/vhosts/inventory", GUEST, None).0, 201);
    assert_eq!(http(api, "PUT", "/api/vhosts/inventory", GUEST, None).0, 204, "already there");
    let alice = json!({"password": "s3cret", "tags": ""});
    assert_eq!(http(api, "PUT", "/api/users/alice", GUEST, Some(alice)).0, 201);
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(http(api, "PUT", "/api/permissions/inventory/alice", GUEST, Some(all)).0, 201);
    let policy = json!({"pattern": "^tmp\\.", "definition": {"message-ttl": 100}, "apply-to": "queues"});
    assert_eq!(http(api, "PUT", "/api/policies/inventory/short", GUEST, Some(policy)).0, 201);

    // alice has no administrator tag: the API refuses her; a wrong password is refused too.
    assert_eq!(http(api, "GET", "/api/users", ("alice", "s3cret"), None).0, 401);
    assert_eq!(http(api, "GET", "/api/users", ("guest", "nope"), None).0, 401);
    // She can use her vhost over AMQP at once, but not `/`.
    connect_as(&broker, "alice", "s3cret", "inventory").await.expect("alice opens inventory");
    assert!(connect_as(&broker, "alice", "s3cret", "/").await.is_err());

    let broker = broker.restart();
    let api = broker.http_addr;
    let (status, vhosts) = http(api, "GET", "/api/vhosts", GUEST, None);
    assert_eq!(status, 200);
    let names: Vec<&str> = vhosts.as_array().expect("a list").iter().filter_map(|v| v["name"].as_str()).collect();
    assert_eq!(names, vec!["/", "inventory"]);
    let (_, user) = http(api, "GET", "/api/users/alice", GUEST, None);
    assert_eq!(user["hashing_algorithm"], "rabbit_password_hashing_sha256");
    assert!(user.get("password").is_none(), "no clear-text password is kept: {user}");
    let (status, permissions) = http(api, "GET", "/api/permissions/inventory/alice", GUEST, None);
    assert_eq!((status, permissions["write"].as_str()), (200, Some(".*")));
    let (_, policies) = http(api, "GET", "/api/policies/inventory", GUEST, None);
    assert_eq!(policies[0]["name"], "short");
    assert_eq!(policies[0]["definition"]["message-ttl"], 100);

    // The restored policy applies: a tmp. queue's messages expire after 100 ms.
    let connection = connect_as(&broker, "alice", "s3cret", "inventory").await.expect("alice again");
    let channel = connection.create_channel().await.expect("channel");
    channel.queue_declare("tmp.q", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    channel
        .basic_publish("", "tmp.q", BasicPublishOptions::default(), b"short-lived", BasicProperties::default())
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let passive = QueueDeclareOptions { passive: true, ..QueueDeclareOptions::default() };
    let queue = channel.queue_declare("tmp.q", passive, FieldTable::default()).await.expect("passive");
    assert_eq!(queue.message_count(), 0, "the policy's TTL applied after the restart");
    connection.close(200, "bye").await.expect("close");

    // Deletions are stored too.
    assert_eq!(http(api, "DELETE", "/api/users/alice", GUEST, None).0, 204);
    assert_eq!(http(api, "DELETE", "/api/policies/inventory/short", GUEST, None).0, 204);
    assert_eq!(http(api, "DELETE", "/api/users/alice", GUEST, None).0, 404);
    let broker = broker.restart();
    let api = broker.http_addr;
    assert_eq!(http(api, "GET", "/api/users/alice", GUEST, None).0, 404);
    assert!(connect_as(&broker, "alice", "s3cret", "inventory").await.is_err());
    let (_, policies) = http(api, "GET", "/api/policies", GUEST, None);
    assert_eq!(policies, json!([]));
    assert_eq!(http(api, "DELETE", "/api/vhosts/inventory", GUEST, None).0, 204);
    let broker = broker.restart();
    let (_, vhosts) = http(broker.http_addr, "GET", "/api/vhosts", GUEST, None);
    assert_eq!(vhosts, json!([{"name": "/"}]));
}

#[tokio::test]
async fn bad_requests_get_rabbitmqs_errors() {
    let broker = Broker::start();
    let api = broker.http_addr;
    let (status, body) = http(api, "GET", "/api/vhosts", ("nobody", "x"), None);
    assert_eq!((status, body["error"].as_str()), (401, Some("not_authorised")));
    // Permissions need an existing vhost and user, and valid patterns.
    let all = json!({"configure": ".*", "write": ".*", "read": ".*"});
    assert_eq!(http(api, "PUT", "/api/permissions/missing/guest", GUEST, Some(all.clone())).0, 400);
    assert_eq!(http(api, "PUT", "/api/permissions/%2F/nobody", GUEST, Some(all)).0, 400);
    let bad = json!({"configure": "(", "write": ".*", "read": ".*"});
    assert_eq!(http(api, "PUT", "/api/permissions/%2F/guest", GUEST, Some(bad)).0, 400);
    // A policy with an unknown key, or no pattern, is refused; so is a user without a password.
    let unknown = json!({"pattern": ".*", "definition": {"no-such-key": 1}});
    assert_eq!(http(api, "PUT", "/api/policies/%2F/p", GUEST, Some(unknown)).0, 400);
    assert_eq!(http(api, "PUT", "/api/policies/%2F/p", GUEST, Some(json!({"definition": {}}))).0, 400);
    assert_eq!(http(api, "PUT", "/api/users/bob", GUEST, Some(json!({"tags": ""}))).0, 400);
    assert_eq!(http(api, "GET", "/api/vhosts/missing", GUEST, None).0, 404);
    // The default vhost is named `/`, written %2F.
    assert_eq!(http(api, "GET", "/api/vhosts/%2F", GUEST, None).0, 200);
}

/// Runs `work` on a fresh channel and returns the reply code of the channel close it causes
/// (None if it succeeded).
async fn refused_with<F, Fut, T>(connection: &Connection, work: F) -> Option<u16>
where
    F: FnOnce(lapin::Channel) -> Fut,
    Fut: std::future::Future<Output = lapin::Result<T>>,
{
    let channel = connection.create_channel().await.expect("open a channel");
    work(channel).await.err().and_then(|error| common::reply_code(&error))
}

#[tokio::test]
async fn resource_permissions_are_enforced_over_amqp_mqtt_and_stomp() {
    use lapin::options::{BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions};

    let broker = Broker::start();
    let api = broker.http_addr;
    let bob = json!({"password": "bob-pass", "tags": ""});
    assert_eq!(http(api, "PUT", "/api/users/bob", GUEST, Some(bob)).0, 201);
    // bob may configure and read his own queues, write to them and to the default exchange,
    // and nothing on amq.topic.
    let permissions = json!({"configure": "^bob-", "write": "^(bob-.*|amq\\.default)$", "read": "^bob-"});
    assert_eq!(http(api, "PUT", "/api/permissions/%2F/bob", GUEST, Some(permissions)).0, 201);
    let connection = connect_as(&broker, "bob", "bob-pass", "/").await.expect("bob logs in");

    // AMQP: allowed operations work; the others close the channel with 403, as in RabbitMQ.
    let channel = connection.create_channel().await.expect("channel");
    channel.queue_declare("bob-inbox", QueueDeclareOptions::default(), FieldTable::default()).await.expect("declare");
    channel
        .basic_publish("", "bob-inbox", BasicPublishOptions::default(), b"hi", BasicProperties::default())
        .await
        .expect("publish to the default exchange");
    channel
        .basic_consume("bob-inbox", "c", BasicConsumeOptions::default(), FieldTable::default())
        .await
        .expect("consume");
    let declare_other = refused_with(&connection, |channel| async move {
        channel.queue_declare("alice-inbox", QueueDeclareOptions::default(), FieldTable::default()).await
    });
    assert_eq!(declare_other.await, Some(403), "configure on another's queue");
    let bind_topic = refused_with(&connection, |channel| async move {
        channel.queue_bind("bob-inbox", "amq.topic", "#", QueueBindOptions::default(), FieldTable::default()).await
    });
    assert_eq!(bind_topic.await, Some(403), "read on amq.topic");
    let declare_exchange = refused_with(&connection, |channel| async move {
        channel
            .exchange_declare(
                "x",
                lapin::ExchangeKind::Fanout,
                ExchangeDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
    });
    assert_eq!(declare_exchange.await, Some(403), "configure on an exchange");
    // A refused publish closes the channel asynchronously: the close reaches lapin's error hook.
    let channel = connection.create_channel().await.expect("channel");
    let (closed, mut close_code) = tokio::sync::mpsc::channel(1);
    channel.on_error(move |error| {
        let _ = closed.try_send(common::reply_code(&error));
    });
    channel
        .basic_publish("amq.topic", "a", BasicPublishOptions::default(), b"x", BasicProperties::default())
        .await
        .expect("the publish is sent");
    let code = common::within("the channel close", close_code.recv()).await;
    assert_eq!(code, Some(Some(403)), "write on amq.topic");

    // MQTT needs write on amq.topic to publish and read on it to subscribe: bob has neither.
    let mut mqtt = std::net::TcpStream::connect(broker.mqtt_addr).expect("connect to MQTT");
    mqtt.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let mut connect = vec![0x10, 0];
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0b1100_0010, 0, 60];
    for field in ["bob-mqtt", "bob", "bob-pass"] {
        variable.extend_from_slice(&(field.len() as u16).to_be_bytes());
        variable.extend_from_slice(field.as_bytes());
    }
    connect[1] = variable.len() as u8;
    connect.extend_from_slice(&variable);
    mqtt.write_all(&connect).expect("CONNECT");
    let mut connack = [0u8; 4];
    mqtt.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 0], "bob may connect");
    mqtt.write_all(&[0x82, 6, 0, 1, 0, 1, b'a', 1]).expect("SUBSCRIBE a at QoS 1");
    let mut suback = [0u8; 5];
    mqtt.read_exact(&mut suback).expect("SUBACK");
    assert_eq!(suback, [0x90, 3, 0, 1, 0x80], "the subscription is refused");
    mqtt.write_all(&[0x30, 5, 0, 1, b'a', b'h', b'i']).expect("PUBLISH");
    let mut rest = Vec::new();
    let closed = mqtt.read_to_end(&mut rest);
    assert!(
        closed.is_ok() && rest.is_empty(),
        "the publish closed the connection without a reply: {closed:?} {rest:?}"
    );

    // STOMP: a SEND to another's queue gets an ERROR.
    let mut stomp = std::net::TcpStream::connect(broker.stomp_addr).expect("connect to STOMP");
    stomp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:bob\npasscode:bob-pass\n\n\0SEND\ndestination:/queue/alice-inbox\n\nhi\0")
        .expect("send frames");
    let mut replies = String::new();
    let _ = stomp.read_to_string(&mut replies);
    assert!(replies.starts_with("CONNECTED"), "{replies}");
    assert!(
        replies.contains("ERROR")
            && replies.contains("access to queue 'alice-inbox' in vhost '/' refused for user 'bob'"),
        "{replies}"
    );

    // A durable topic subscription reads the queue it names: bob may not name guest's.
    let guest = common::connect(&broker).await;
    let guest_channel = guest.create_channel().await.expect("channel");
    guest_channel
        .exchange_declare(
            "bob-events",
            lapin::ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("an exchange bob may read");
    guest_channel
        .queue_declare("guest-work", QueueDeclareOptions { durable: true, ..Default::default() }, FieldTable::default())
        .await
        .expect("declare");
    let mut stomp = std::net::TcpStream::connect(broker.stomp_addr).expect("connect to STOMP");
    stomp.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\nhost:/\nlogin:bob\npasscode:bob-pass\n\n\0SUBSCRIBE\nid:1\ndestination:/exchange/bob-events/x\ndurable:true\nx-queue-name:guest-work\n\n\0")
        .expect("send frames");
    let mut replies = String::new();
    let _ = stomp.read_to_string(&mut replies);
    assert!(replies.contains("access to queue 'guest-work' in vhost '/' refused for user 'bob'"), "{replies}");

    // An alternate exchange bob may not write to, and a server-named queue (amq.gen-*, which
    // his configure pattern does not match), are refused like any other.
    let alternate = refused_with(&connection, |channel| async move {
        let mut arguments = FieldTable::default();
        arguments.insert("alternate-exchange".into(), lapin::types::AMQPValue::LongString("amq.topic".into()));
        channel
            .exchange_declare("bob-x", lapin::ExchangeKind::Fanout, ExchangeDeclareOptions::default(), arguments)
            .await
    });
    assert_eq!(alternate.await, Some(403), "write on the alternate exchange");
    let server_named = refused_with(&connection, |channel| async move {
        channel.queue_declare("", QueueDeclareOptions::default(), FieldTable::default()).await
    });
    assert_eq!(server_named.await, Some(403), "configure on amq.gen-");

    // An MQTT client id is no key to another user's session: guest's persistent session stays his.
    let mut guest_mqtt = mqtt_connect(broker.mqtt_addr, "shared-phone", "guest", "guest", false);
    guest_mqtt.write_all(&[0x82, 6, 0, 1, 0, 1, b'a', 1]).expect("SUBSCRIBE a at QoS 1");
    let mut suback = [0u8; 5];
    guest_mqtt.read_exact(&mut suback).expect("SUBACK");
    assert_eq!(suback, [0x90, 3, 0, 1, 1], "guest subscribes");
    drop(guest_mqtt);
    let mut taken = std::net::TcpStream::connect(broker.mqtt_addr).expect("connect to MQTT");
    taken.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    taken.write_all(&mqtt_connect_packet("shared-phone", "bob", "bob-pass", false)).expect("CONNECT");
    let mut connack = [0u8; 4];
    taken.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack, [0x20, 2, 0, 5], "not authorised for guest's session");
}

/// An MQTT 3.1.1 CONNECT with credentials.
fn mqtt_connect_packet(client_id: &str, user: &str, password: &str, clean_session: bool) -> Vec<u8> {
    let flags = 0b1100_0000 | if clean_session { 0b10 } else { 0 };
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 60];
    for field in [client_id, user, password] {
        variable.extend_from_slice(&(field.len() as u16).to_be_bytes());
        variable.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, variable.len() as u8];
    packet.extend_from_slice(&variable);
    packet
}

/// A connected MQTT client on a raw socket, its CONNACK read and checked.
fn mqtt_connect(addr: SocketAddr, client_id: &str, user: &str, password: &str, clean_session: bool) -> TcpStream {
    let mut stream = TcpStream::connect(addr).expect("connect to MQTT");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&mqtt_connect_packet(client_id, user, password, clean_session)).expect("CONNECT");
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).expect("CONNACK");
    assert_eq!(connack[3], 0, "{user} may connect as {client_id}");
    stream
}
