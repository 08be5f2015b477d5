//! MQTT 5 clients (rumqttc's v5 client) against a real `warren`: CONNACK, SUBACK and UNSUBACK
//! reason codes, publish and subscribe at QoS 0-2, AMQP to MQTT 5 and back, refused logins,
//! and session expiry deciding whether a session outlives its connection.

mod common;

use std::time::Duration;

use lapin::options::BasicPublishOptions;
use lapin::BasicProperties;
use rumqttc::v5::mqttbytes::v5::{ConnectProperties, ConnectReturnCode, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event, EventLoop, MqttOptions};

use common::{within, Broker};

fn options(broker: &Broker, client_id: &str) -> MqttOptions {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", broker.mqtt_port());
    options.set_credentials("guest", "guest");
    options.set_keep_alive(Duration::from_secs(30));
    options
}

/// Polls until a packet `pick` accepts arrives; connection errors fail the test.
async fn next<T>(events: &mut EventLoop, what: &str, mut pick: impl FnMut(Packet) -> Option<T>) -> T {
    within(what, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(packet)) => {
                    if let Some(found) = pick(packet) {
                        return found;
                    }
                }
                Ok(Event::Outgoing(_)) => {}
                Err(error) => panic!("{what}: connection error {error:?}"),
            }
        }
    })
    .await
}

/// Polls until the event loop reports an error: rumqttc reports a non-success reason code in a
/// SUBACK, UNSUBACK or PUBACK as one of its own.
async fn next_error(events: &mut EventLoop, what: &str) -> ConnectionError {
    within(what, async {
        loop {
            if let Err(error) = events.poll().await {
                return error;
            }
        }
    })
    .await
}

async fn connect(options: MqttOptions) -> (AsyncClient, EventLoop, bool) {
    let (client, mut events) = AsyncClient::new(options, 16);
    let connack = next(&mut events, "CONNACK", |packet| match packet {
        Packet::ConnAck(connack) => Some(connack),
        _ => None,
    })
    .await;
    assert_eq!(connack.code, ConnectReturnCode::Success);
    let properties = connack.properties.expect("an MQTT 5 CONNACK with properties");
    assert_eq!(properties.topic_alias_max, Some(64), "64 topic aliases offered");
    (client, events, connack.session_present)
}

#[tokio::test]
async fn mqtt5_clients_publish_and_subscribe_with_reason_codes() {
    let broker = Broker::start();
    let (subscriber, mut subscriber_events, _) = connect(options(&broker, "v5-subscriber")).await;
    subscriber.subscribe("v5/+/temp", QoS::ExactlyOnce).await.expect("queue SUBSCRIBE");
    let codes = next(&mut subscriber_events, "SUBACK", |packet| match packet {
        Packet::SubAck(ack) => Some(ack.return_codes),
        _ => None,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::ExactlyOnce)]);

    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-publisher")).await;
    // rumqttc sends only while its event loop is polled: poll it on its own task.
    let (acks, mut acked) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok(event) = publisher_events.poll().await {
            if let Event::Incoming(Packet::PubAck(_) | Packet::PubComp(_)) = event {
                let _ = acks.send(()).await;
            }
        }
    });
    for (qos, body) in [(QoS::AtMostOnce, "zero"), (QoS::AtLeastOnce, "one"), (QoS::ExactlyOnce, "two")] {
        publisher.publish("v5/kitchen/temp", qos, false, body).await.expect("queue PUBLISH");
        if qos != QoS::AtMostOnce {
            within("the acknowledgement", acked.recv()).await.expect("the publisher's event loop runs");
        }
        let publish = next(&mut subscriber_events, "the delivery", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        assert_eq!(
            (&publish.topic[..], &publish.payload[..], publish.qos),
            (&b"v5/kitchen/temp"[..], body.as_bytes(), qos)
        );
    }

    // AMQP to MQTT 5, through amq.topic.
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    channel
        .basic_publish(
            "amq.topic",
            "v5.hall.temp",
            BasicPublishOptions::default(),
            b"from-amqp",
            BasicProperties::default(),
        )
        .await
        .expect("publish")
        .await
        .expect("published");
    let publish = next(&mut subscriber_events, "the AMQP message", |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await;
    assert_eq!((&publish.topic[..], &publish.payload[..]), (&b"v5/hall/temp"[..], &b"from-amqp"[..]));

    subscriber.unsubscribe("v5/+/temp").await.expect("queue UNSUBSCRIBE");
    let reasons = next(&mut subscriber_events, "UNSUBACK", |packet| match packet {
        Packet::UnsubAck(ack) => Some(ack.reasons.len()),
        _ => None,
    })
    .await;
    assert_eq!(reasons, 1, "one reason code per filter");
}

#[tokio::test]
async fn mqtt5_wrong_password_gets_reason_code_134() {
    let broker = Broker::start();
    let mut options = options(&broker, "v5-wrong-password");
    options.set_credentials("guest", "nope");
    let (_client, mut events) = AsyncClient::new(options, 16);
    let error = next_error(&mut events, "the refusal").await;
    assert!(matches!(error, ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)), "{error:?}");
}

#[tokio::test]
async fn mqtt5_session_expiry_decides_whether_the_session_outlives_the_connection() {
    let broker = Broker::start();
    for (client_id, expiry, outlives) in [("v5-no-expiry", None, false), ("v5-expiry", Some(3600), true)] {
        let mut first = options(&broker, client_id);
        first.set_clean_start(false);
        first.set_connect_properties(ConnectProperties { session_expiry_interval: expiry, ..ConnectProperties::new() });
        let (client, mut events, _) = connect(first.clone()).await;
        client.subscribe("v5/expiry", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
        next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
        client.disconnect().await.expect("queue DISCONNECT");
        let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;
        // Poll until the broker has released the first connection's session.
        let mut present = !outlives;
        for _ in 0..50 {
            let (again, mut again_events, session_present) = connect(first.clone()).await;
            present = session_present;
            again.disconnect().await.expect("queue DISCONNECT");
            let _ = within("the disconnect", async { while again_events.poll().await.is_ok() {} }).await;
            if present == outlives {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(present, outlives, "{client_id}: session present after reconnecting");
    }
}

#[tokio::test]
async fn mqtt5_to_amqp_and_amqp_to_mqtt5_carry_properties() {
    use lapin::types::{AMQPValue, FieldTable, ShortString};
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = Broker::start();
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    common::declare_queue(&channel, "props-log").await;
    common::bind(&channel, "props-log", "amq.topic", "props.#").await;

    // MQTT 5 in, AMQP out.
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-props-publisher")).await;
    let properties = PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(60),
        topic_alias: None,
        response_topic: Some("replies/here".into()),
        correlation_data: Some(bytes::Bytes::from_static(b"abc")),
        user_properties: vec![("tenant".into(), "kitchen".into())],
        subscription_identifiers: Vec::new(),
        content_type: Some("application/json".into()),
    };
    publisher
        .publish_with_properties("props/in", QoS::AtLeastOnce, false, "{}", properties)
        .await
        .expect("queue PUBLISH");
    next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let got = common::get_no_ack(&channel, "props-log").await.expect("the AMQP queue has it");
    let amqp = &got.delivery.properties;
    assert_eq!(amqp.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
    assert_eq!(amqp.reply_to().as_ref().map(ShortString::as_str), Some("replies.here"));
    assert_eq!(amqp.correlation_id().as_ref().map(ShortString::as_str), Some("abc"));
    assert_eq!(amqp.expiration().as_ref().map(ShortString::as_str), Some("60000"), "message expiry is the TTL");
    let headers = amqp.headers().as_ref().expect("user properties are headers");
    assert!(
        matches!(headers.inner().get("tenant"), Some(AMQPValue::LongString(value)) if value.to_string() == "kitchen"),
        "{headers:?}"
    );
    assert!(
        matches!(headers.inner().get("x-mqtt-payload-format"), Some(AMQPValue::ShortShortUInt(1))),
        "the payload format indicator rides a header: {headers:?}"
    );

    // AMQP in, MQTT 5 out.
    let (subscriber, mut subscriber_events, _) = connect(options(&broker, "v5-props-subscriber")).await;
    subscriber.subscribe("props/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut subscriber_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let mut headers = FieldTable::default();
    headers.insert("source".into(), AMQPValue::LongString("amqp".into()));
    let amqp_properties = lapin::BasicProperties::default()
        .with_content_type("text/plain".into())
        .with_correlation_id("c-1".into())
        .with_reply_to("answers.here".into())
        .with_headers(headers);
    channel
        .basic_publish("amq.topic", "props.out", BasicPublishOptions::default(), b"hello", amqp_properties)
        .await
        .expect("publish")
        .await
        .expect("published");
    let publish = next(&mut subscriber_events, "the delivery", |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await;
    let properties = publish.properties.expect("an MQTT 5 PUBLISH with properties");
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(properties.correlation_data.as_deref(), Some(&b"c-1"[..]));
    assert_eq!(properties.response_topic.as_deref(), Some("answers/here"));
    assert!(properties.user_properties.contains(&("source".into(), "amqp".into())), "{:?}", properties.user_properties);
}

/// Polls for `quiet` and returns the PUBLISH packets that arrived.
async fn publishes_within(events: &mut EventLoop, quiet: Duration) -> Vec<rumqttc::v5::mqttbytes::v5::Publish> {
    let mut publishes = Vec::new();
    let deadline = tokio::time::Instant::now() + quiet;
    while let Ok(polled) = tokio::time::timeout_at(deadline, events.poll()).await {
        match polled {
            Ok(Event::Incoming(Packet::Publish(publish))) => publishes.push(publish),
            Ok(_) => {}
            Err(error) => panic!("connection error {error:?}"),
        }
    }
    publishes
}

async fn amqp_publish(channel: &lapin::Channel, key: &str, body: &[u8]) {
    channel
        .basic_publish(
            "amq.topic",
            key,
            BasicPublishOptions::default(),
            body,
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("published");
}

#[tokio::test]
async fn mqtt5_topic_aliases_receive_maximum_and_maximum_packet_size() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = Broker::start();
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;

    // Receive Maximum 2 and Maximum Packet Size 256, with acks left to the test.
    let mut limited = options(&broker, "v5-limited");
    limited.set_receive_maximum(Some(2)).set_max_packet_size(Some(256)).set_manual_acks(true);
    let (client, mut events, _) = connect(limited).await;
    client.subscribe("limits/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    amqp_publish(&channel, "limits.big", &[b'x'; 1024]).await;
    for index in 0..4 {
        amqp_publish(&channel, "limits.small", format!("small-{index}").as_bytes()).await;
    }
    let first = publishes_within(&mut events, Duration::from_millis(500)).await;
    let bodies: Vec<&[u8]> = first.iter().map(|publish| &publish.payload[..]).collect();
    assert_eq!(bodies, [&b"small-0"[..], b"small-1"], "the 1 KiB one is dropped; two in flight at most");
    client.ack(&first[0]).await.expect("queue PUBACK");
    let second = publishes_within(&mut events, Duration::from_millis(500)).await;
    assert_eq!(second.len(), 1, "one acknowledgement, one more delivery");
    assert_eq!(&second[0].payload[..], b"small-2");

    // A topic alias: set with the topic, then used with an empty topic.
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-aliases")).await;
    let aliased = |alias| PublishProperties {
        payload_format_indicator: None,
        message_expiry_interval: None,
        topic_alias: Some(alias),
        response_topic: None,
        correlation_data: None,
        user_properties: Vec::new(),
        subscription_identifiers: Vec::new(),
        content_type: None,
    };
    common::declare_queue(&channel, "alias-log").await;
    common::bind(&channel, "alias-log", "amq.topic", "aliases.#").await;
    for (topic, body) in [("aliases/kitchen", "first"), ("", "second")] {
        publisher
            .publish_with_properties(topic, QoS::AtLeastOnce, false, body, aliased(7))
            .await
            .expect("queue PUBLISH");
        next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    }
    for body in ["first", "second"] {
        let got = common::get_no_ack(&channel, "alias-log").await.expect("routed");
        assert_eq!((got.delivery.routing_key.as_str(), &got.delivery.data[..]), ("aliases.kitchen", body.as_bytes()));
    }
}

/// An MQTT 5 CONNECT as guest, with no properties, on a raw socket; returns it after CONNACK.
fn raw_v5_connect(broker: &Broker, client_id: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b1100_0010, 0, 60, 0];
    for field in [client_id, "guest", "guest"] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut stream = std::net::TcpStream::connect(broker.mqtt_addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&packet).expect("CONNECT");
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).expect("CONNACK header");
    assert_eq!(header[0], 0x20, "a CONNACK");
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).expect("CONNACK body");
    assert_eq!(rest[1], 0, "accepted");
    stream
}

#[test]
fn mqtt5_takeover_is_told_with_disconnect_reason_session_taken_over() {
    use std::io::Read;
    let broker = Broker::start();
    let mut first = raw_v5_connect(&broker, "v5-taken");
    let _second = raw_v5_connect(&broker, "v5-taken");
    let mut disconnect = [0u8; 4];
    first.read_exact(&mut disconnect).expect("a DISCONNECT before the close");
    assert_eq!(disconnect, [0xE0, 0x02, 0x8E, 0x00], "reason 0x8E, session taken over");
}

/// A persistent MQTT 5 client whose will waits `delay_seconds`; its connection is dropped
/// without DISCONNECT when the returned event loop goes.
async fn client_with_delayed_will(broker: &Broker, client_id: &str, delay_seconds: u32) -> (AsyncClient, EventLoop) {
    use rumqttc::v5::mqttbytes::v5::{LastWill, LastWillProperties};
    let mut options = options(broker, client_id);
    options.set_clean_start(false);
    options.set_connect_properties(ConnectProperties { session_expiry_interval: Some(60), ..ConnectProperties::new() });
    let properties = LastWillProperties {
        delay_interval: Some(delay_seconds),
        payload_format_indicator: None,
        message_expiry_interval: None,
        content_type: Some("text/plain".into()),
        response_topic: None,
        correlation_data: None,
        user_properties: vec![("why".into(), "gone".into())],
    };
    options.set_last_will(LastWill::new("wills/device", "gone", QoS::AtLeastOnce, false, Some(properties)));
    let (client, events, _) = connect(options).await;
    (client, events)
}

#[tokio::test]
async fn mqtt5_will_delay_waits_and_a_resumed_session_cancels_the_will() {
    let broker = Broker::start();
    let (watcher, mut watcher_events, _) = connect(options(&broker, "v5-will-watcher")).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut watcher_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;

    // Dropped without DISCONNECT: the will comes after its 1 s delay, not at once.
    let (client, events) = client_with_delayed_will(&broker, "v5-will-late", 1).await;
    drop((client, events));
    assert!(publishes_within(&mut watcher_events, Duration::from_millis(500)).await.is_empty(), "not before the delay");
    let wills = publishes_within(&mut watcher_events, Duration::from_millis(2500)).await;
    assert_eq!(wills.len(), 1, "the will after the delay");
    assert_eq!(&wills[0].payload[..], b"gone");
    let properties = wills[0].properties.as_ref().expect("the will's properties");
    assert_eq!(properties.content_type.as_deref(), Some("text/plain"));
    assert_eq!(properties.user_properties, [("why".to_owned(), "gone".to_owned())]);

    // Dropped, then the session resumed within the 2 s delay: no will.
    let (client, events) = client_with_delayed_will(&broker, "v5-will-back", 2).await;
    drop((client, events));
    // Whether or not the broker has seen the drop yet, the new connection takes the session.
    let (_back, _back_events) = client_with_delayed_will(&broker, "v5-will-back", 2).await;
    assert!(
        publishes_within(&mut watcher_events, Duration::from_millis(3000)).await.is_empty(),
        "the session came back"
    );
}

#[tokio::test]
async fn mqtt5_subscription_options_no_local_retain_as_published_and_retain_handling() {
    use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule};
    let broker = Broker::start();
    let (setter, mut setter_events, _) = connect(options(&broker, "v5-retainer")).await;
    setter.publish("opts/retained", QoS::AtLeastOnce, true, "kept").await.expect("queue PUBLISH");
    next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;

    let (client, mut events, _) = connect(options(&broker, "v5-options")).await;
    let filter = |path: &str, nolocal, preserve_retain, rule| Filter {
        path: path.into(),
        qos: QoS::AtLeastOnce,
        nolocal,
        preserve_retain,
        retain_forward_rule: rule,
    };
    // Retain handling 2: no retained message on subscribe.
    client
        .subscribe_many([filter("opts/retained", false, false, RetainForwardRule::Never)])
        .await
        .expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    assert!(publishes_within(&mut events, Duration::from_millis(300)).await.is_empty(), "retain handling 2");
    // Retain handling 1: only for a new subscription; this one exists, so nothing again.
    client
        .subscribe_many([filter("opts/retained", false, true, RetainForwardRule::OnNewSubscribe)])
        .await
        .expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    assert!(publishes_within(&mut events, Duration::from_millis(300)).await.is_empty(), "retain handling 1, not new");

    // Retain As Published: a live retained publish keeps its RETAIN flag for this subscription.
    setter.publish("opts/retained", QoS::AtLeastOnce, true, "again").await.expect("queue PUBLISH");
    next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let live = publishes_within(&mut events, Duration::from_millis(500)).await;
    assert_eq!(live.len(), 1);
    assert!(live[0].retain, "retain as published");

    // No Local: the client's own publishes skip its no-local subscription; others' do not.
    client
        .subscribe_many([filter("opts/chat", true, false, RetainForwardRule::OnEverySubscribe)])
        .await
        .expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    client.publish("opts/chat", QoS::AtLeastOnce, false, "mine").await.expect("queue PUBLISH");
    setter.publish("opts/chat", QoS::AtLeastOnce, false, "theirs").await.expect("queue PUBLISH");
    next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let chat = publishes_within(&mut events, Duration::from_millis(500)).await;
    let bodies: Vec<&[u8]> = chat.iter().map(|publish| &publish.payload[..]).collect();
    assert_eq!(bodies, [&b"theirs"[..]], "no local");
}

#[tokio::test]
async fn mqtt5_shared_subscriptions_split_messages_between_members() {
    let broker = Broker::start();
    let mut members = Vec::new();
    for id in ["v5-worker-a", "v5-worker-b"] {
        let (client, mut events, _) = connect(options(&broker, id)).await;
        client.subscribe("$share/workers/jobs/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
        let codes = next(&mut events, "SUBACK", |packet| match packet {
            Packet::SubAck(ack) => Some(ack.return_codes),
            _ => None,
        })
        .await;
        assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
        members.push((client, events));
    }
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    for index in 0..10 {
        amqp_publish(&channel, "jobs.build", format!("job-{index}").as_bytes()).await;
    }
    let mut received = Vec::new();
    let mut per_member = Vec::new();
    for (_, events) in &mut members {
        let publishes = publishes_within(events, Duration::from_millis(700)).await;
        per_member.push(publishes.len());
        received.extend(publishes.into_iter().map(|publish| String::from_utf8_lossy(&publish.payload).into_owned()));
    }
    received.sort();
    let mut expected: Vec<String> = (0..10).map(|index| format!("job-{index}")).collect();
    expected.sort();
    assert_eq!(received, expected, "each message to one member");
    assert!(per_member.iter().all(|count| *count > 0), "both members served: {per_member:?}");

    // The group's queue goes with its last member.
    for (client, events) in &mut members {
        client.unsubscribe("$share/workers/jobs/#").await.expect("queue UNSUBSCRIBE");
        next(events, "UNSUBACK", |packet| matches!(packet, Packet::UnsubAck(_)).then_some(())).await;
    }
    let channel = common::open_channel(&connection).await;
    let gone = channel
        .queue_declare("mqtt-shared-workers/jobs/#", common::passive(), lapin::types::FieldTable::default())
        .await;
    assert_eq!(gone.err().and_then(|error| common::reply_code(&error)), Some(404));
}

/// An HTTP request to the management API as guest; returns the status.
fn management(broker: &Broker, method: &str, path: &str, body: &str) -> u16 {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(broker.http_addr).expect("connect to HTTP");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("a status line")
}

#[tokio::test]
async fn mqtt5_puback_reason_codes_say_no_subscribers_and_not_authorised() {
    use rumqttc::v5::mqttbytes::v5::PubAckReason;
    let broker = Broker::start();
    let (client, mut events, _) = connect(options(&broker, "v5-reasons")).await;
    client.publish("nobody/listens", QoS::AtLeastOnce, false, "x").await.expect("queue PUBLISH");
    let reason = next(&mut events, "PUBACK", |packet| match packet {
        Packet::PubAck(ack) => Some(ack.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::NoMatchingSubscribers);
    client.subscribe("somebody/listens", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    client.publish("somebody/listens", QoS::AtLeastOnce, false, "x").await.expect("queue PUBLISH");
    let reason = next(&mut events, "PUBACK", |packet| match packet {
        Packet::PubAck(ack) => Some(ack.reason),
        _ => None,
    })
    .await;
    assert_eq!(reason, PubAckReason::Success);

    // A user without write on amq.topic: MQTT 5 refuses that PUBLISH and keeps the connection.
    assert_eq!(management(&broker, "PUT", "/api/users/reader", r#"{"password":"reader-pass","tags":""}"#), 201);
    let permissions = r#"{"configure":".*","write":"^mqtt-subscription-","read":".*"}"#;
    assert_eq!(management(&broker, "PUT", "/api/permissions/%2F/reader", permissions), 201);
    let mut reader = options(&broker, "v5-reader");
    reader.set_credentials("reader", "reader-pass");
    let (reader, mut reader_events, _) = connect(reader).await;
    reader.publish("any/topic", QoS::AtLeastOnce, false, "x").await.expect("queue PUBLISH");
    // rumqttc reports a failed PUBACK as an error of its own state machine, with the reason.
    let error = next_error(&mut reader_events, "the refused PUBACK").await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(rumqttc::v5::StateError::PubAckFail { reason: PubAckReason::NotAuthorized })
        ),
        "{error:?}"
    );
}

#[tokio::test]
async fn mqtt5_subscription_identifiers_come_back_on_deliveries() {
    use rumqttc::v5::mqttbytes::v5::SubscribeProperties;
    let broker = Broker::start();
    let (client, mut events, _) = connect(options(&broker, "v5-identifiers")).await;
    let properties = SubscribeProperties { id: Some(42), user_properties: Vec::new() };
    client.subscribe_with_properties("ids/#", QoS::AtLeastOnce, properties).await.expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    amqp_publish(&channel, "ids.one", b"tagged").await;
    let publish = next(&mut events, "the delivery", |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await;
    let properties = publish.properties.expect("properties with the identifier");
    assert_eq!(properties.subscription_identifiers, [42]);
}

#[tokio::test]
async fn mqtt5_clean_start_and_session_expiry_are_separate() {
    let broker = Broker::start();
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-separate-publisher")).await;
    // Clean Start with an expiry (paho's default on a first connect): the session still
    // outlives the connection.
    let mut first = options(&broker, "v5-separate");
    first.set_clean_start(true);
    first.set_connect_properties(ConnectProperties { session_expiry_interval: Some(60), ..ConnectProperties::new() });
    let (client, mut events, _) = connect(first).await;
    client.subscribe("separate/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    client.disconnect().await.expect("queue DISCONNECT");
    let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;
    publisher.publish("separate/while-away", QoS::AtLeastOnce, false, "kept").await.expect("queue PUBLISH");
    next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;

    // Clean Start off with no expiry: the existing session is resumed (and ends with this one).
    let mut again = options(&broker, "v5-separate");
    again.set_clean_start(false);
    let (_again, mut again_events, session_present) = connect(again).await;
    assert!(session_present, "resumed, not discarded");
    let publish = next(&mut again_events, "the message kept while away", |packet| match packet {
        Packet::Publish(publish) => Some(publish),
        _ => None,
    })
    .await;
    assert_eq!(&publish.payload[..], b"kept");

    // That session ends with its connection, so one that takes it over finds none.
    let mut taker = options(&broker, "v5-separate");
    taker.set_clean_start(false);
    taker.set_connect_properties(ConnectProperties { session_expiry_interval: Some(60), ..ConnectProperties::new() });
    let (_taker, _taker_events, session_present) = connect(taker).await;
    assert!(!session_present, "the session ended with the connection taken over");
}

/// An MQTT 5 CONNECT as guest with a QoS 1 will on `topic`, on a raw socket, after CONNACK.
fn raw_v5_connect_with_will(broker: &Broker, client_id: &str, topic: &str) -> std::net::TcpStream {
    use std::io::{Read, Write};
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b1100_1110, 0, 60, 0];
    let field = |body: &mut Vec<u8>, value: &[u8]| {
        body.extend_from_slice(&(value.len() as u16).to_be_bytes());
        body.extend_from_slice(value);
    };
    field(&mut body, client_id.as_bytes());
    body.push(0); // will properties: none
    field(&mut body, topic.as_bytes());
    field(&mut body, b"will");
    field(&mut body, b"guest");
    field(&mut body, b"guest");
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut stream = std::net::TcpStream::connect(broker.mqtt_addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&packet).expect("CONNECT");
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).expect("CONNACK header");
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).expect("CONNACK body");
    assert_eq!((header[0], rest[1]), (0x20, 0), "accepted");
    stream
}

#[tokio::test]
async fn mqtt5_disconnect_reason_decides_the_will() {
    use std::io::{Read, Write};
    let broker = Broker::start();
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    common::declare_queue(&channel, "wills-seen").await;
    common::bind(&channel, "wills-seen", "amq.topic", "reasons.#").await;

    // 0x04, "disconnect with will message": the will is published.
    let mut with_will = raw_v5_connect_with_will(&broker, "v5-reason-will", "reasons/with");
    with_will.write_all(&[0xE0, 0x01, 0x04]).expect("DISCONNECT 0x04");
    let mut rest = Vec::new();
    let _ = with_will.read_to_end(&mut rest);
    // 0x00 in the one-byte form: normal, the will is discarded.
    let mut normal = raw_v5_connect_with_will(&broker, "v5-reason-normal", "reasons/normal");
    normal.write_all(&[0xE0, 0x01, 0x00]).expect("DISCONNECT 0x00");
    let _ = normal.read_to_end(&mut rest);
    // A marker through the same exchange, after both.
    amqp_publish(&channel, "reasons.marker", b"marker").await;
    let mut keys = Vec::new();
    for _ in 0..2 {
        let got = common::get_no_ack(&channel, "wills-seen").await.expect("a message");
        keys.push(got.delivery.routing_key.to_string());
    }
    assert_eq!(keys, ["reasons.with", "reasons.marker"], "only the 0x04 disconnect's will");
}

#[test]
fn mqtt5_pubrec_for_an_unknown_id_is_answered_without_taking_the_id() {
    use std::io::{Read, Write};
    let broker = Broker::start();
    let mut client = raw_v5_connect(&broker, "v5-unknown-pubrec");
    client.write_all(&[0x50, 0x02, 0x00, 0x09]).expect("PUBREC 9");
    let mut pubrel = [0u8; 4];
    client.read_exact(&mut pubrel).expect("PUBREL");
    assert_eq!(pubrel, [0x62, 0x02, 0x00, 0x09]);
    // Still serving: PINGREQ, PINGRESP.
    client.write_all(&[0xC0, 0x00]).expect("PINGREQ");
    let mut pingresp = [0u8; 2];
    client.read_exact(&mut pingresp).expect("PINGRESP");
    assert_eq!(pingresp, [0xD0, 0x00]);
}

/// A raw MQTT 5 CONNECT (clean start off, the given session expiry); returns the stream and
/// CONNACK's session-present flag.
fn raw_v5_persistent(broker: &Broker, client_id: &str, expiry_seconds: u32) -> (std::net::TcpStream, bool) {
    use std::io::{Read, Write};
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b1100_0000, 0, 60, 5, 0x11];
    body.extend_from_slice(&expiry_seconds.to_be_bytes());
    for field in [client_id, "guest", "guest"] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    let mut packet = vec![0x10, body.len() as u8];
    packet.extend_from_slice(&body);
    let mut stream = std::net::TcpStream::connect(broker.mqtt_addr).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(&packet).expect("CONNECT");
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).expect("CONNACK header");
    let mut rest = vec![0u8; usize::from(header[1])];
    stream.read_exact(&mut rest).expect("CONNACK body");
    assert_eq!((header[0], rest[1]), (0x20, 0), "accepted");
    (stream, rest[0] & 1 == 1)
}

#[test]
fn mqtt5_a_disconnect_can_end_the_session() {
    use std::io::{Read, Write};
    let broker = Broker::start();
    for (client_id, disconnect, outlives) in [
        ("v5-ends-normally", vec![0xE0, 0x00], true),
        // Reason 0, properties: Session Expiry Interval 0.
        ("v5-ends-at-disconnect", vec![0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 0], false),
    ] {
        let (mut stream, _) = raw_v5_persistent(&broker, client_id, 600);
        // SUBSCRIBE id 1, no properties, one filter at QoS 1, so the session has a queue.
        let mut subscribe = vec![0x82, 0, 0, 1, 0, 0, 5];
        subscribe.extend_from_slice(b"ends/");
        subscribe.push(1);
        subscribe[1] = (subscribe.len() - 2) as u8;
        stream.write_all(&subscribe).expect("SUBSCRIBE");
        let mut suback = [0u8; 6];
        stream.read_exact(&mut suback).expect("SUBACK");
        stream.write_all(&disconnect).expect("DISCONNECT");
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let (_again, present) = raw_v5_persistent(&broker, client_id, 600);
        assert_eq!(present, outlives, "{client_id}");
    }
}

#[tokio::test]
async fn mqtt5_an_empty_client_id_is_assigned_one() {
    let broker = Broker::start();
    let (client, mut events) = AsyncClient::new(options(&broker, ""), 16);
    let connack = next(&mut events, "CONNACK", |packet| match packet {
        Packet::ConnAck(connack) => Some(connack),
        _ => None,
    })
    .await;
    let assigned = connack.properties.and_then(|properties| properties.assigned_client_identifier);
    assert!(assigned.as_deref().is_some_and(|id| id.starts_with("warren-")), "{assigned:?}");
    drop(client);
}

#[tokio::test]
async fn mqtt5_suback_and_unsuback_say_why() {
    let broker = Broker::start();
    let (client, mut events, _) = connect(options(&broker, "v5-unsuback-reasons")).await;
    client.unsubscribe("why/never").await.expect("queue UNSUBSCRIBE");
    // 0x11 is not an error in MQTT 5, but rumqttc reports any reason but Success as one.
    let error = next_error(&mut events, "the UNSUBACK").await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(rumqttc::v5::StateError::UnsubFail {
                reason: rumqttc::v5::mqttbytes::v5::UnsubAckReason::NoSubscriptionExisted
            })
        ),
        "{error:?}"
    );

    let (client, mut events, _) = connect(options(&broker, "v5-suback-reasons")).await;
    client.subscribe("why/#/bad", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    // rumqttc reports a failed SUBACK as an error of its own, with the reason code.
    let error = next_error(&mut events, "the refused SUBACK").await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(rumqttc::v5::StateError::SubFail {
                reason: SubscribeReasonCode::TopicFilterInvalid
            })
        ),
        "{error:?}"
    );
}

/// Reads until the broker closes, returning what it sent.
fn read_to_close(stream: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    rest
}

#[test]
fn mqtt5_bad_packets_get_their_own_disconnect_reasons() {
    use std::io::Write;
    let broker = Broker::start_with_config("[mqtt]\npacket_bytes_max = 1024\n");
    // Over the maximum packet size: 0x95, Packet too large.
    let mut client = raw_v5_connect(&broker, "v5-too-large");
    let mut publish = vec![0x30, 0x80, 0x10, 0, 1, b't', 0];
    publish.extend_from_slice(&[b'x'; 2045]);
    let _ = client.write_all(&publish);
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x95, 0x00], "Packet too large");
    // A topic alias never set: 0x94, Topic Alias invalid. PUBLISH QoS 0, empty topic, alias 7.
    let mut client = raw_v5_connect(&broker, "v5-bad-alias");
    client.write_all(&[0x30, 0x07, 0, 0, 3, 0x23, 0, 7, b'x']).expect("PUBLISH");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x94, 0x00], "Topic Alias invalid");
    // An alias over the maximum offered (64).
    let mut client = raw_v5_connect(&broker, "v5-alias-over");
    client.write_all(&[0x30, 0x08, 0, 1, b't', 3, 0x23, 0, 65, b'x']).expect("PUBLISH");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x94, 0x00], "Topic Alias invalid");
    // A wildcard in a topic name: 0x90, Topic Name invalid.
    let mut client = raw_v5_connect(&broker, "v5-wildcard-topic");
    client.write_all(&[0x30, 0x06, 0, 3, b'a', b'/', b'#', 0]).expect("PUBLISH");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x90, 0x00], "Topic Name invalid");
    // A malformed packet still gets 0x81: a PUBLISH whose topic is cut short.
    let mut client = raw_v5_connect(&broker, "v5-malformed");
    client.write_all(&[0x30, 0x02, 0, 9]).expect("PUBLISH");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x81, 0x00], "Malformed Packet");
    // A DISCONNECT that gives an expiry to a session that had none: 0x82, Protocol Error.
    let mut client = raw_v5_connect(&broker, "v5-expiry-from-nothing");
    client.write_all(&[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 5]).expect("DISCONNECT");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x82, 0x00], "Protocol Error");
    // Wrong reserved flags, 0x81, Malformed Packet (2.1.3): an UNSUBSCRIBE or a SUBSCRIBE
    // whose flags are not 0010, an AUTH whose flags are not 0000.
    for (client_id, packet) in [
        ("v5-unsubscribe-flags", &[0xA0, 0x06, 0, 1, 0, 0, 1, b'a'][..]),
        ("v5-subscribe-flags", &[0x80, 0x07, 0, 1, 0, 0, 1, b'a', 1][..]),
        ("v5-auth-flags", &[0xF1, 0x00][..]),
    ] {
        let mut client = raw_v5_connect(&broker, client_id);
        client.write_all(packet).expect("the packet");
        assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x81, 0x00], "{client_id}: Malformed Packet");
    }
    // AUTH without an Authentication Method in CONNECT: 0x82, Protocol Error (4.12).
    let mut client = raw_v5_connect(&broker, "v5-auth-unasked");
    client.write_all(&[0xF0, 0x00]).expect("AUTH");
    assert_eq!(read_to_close(&mut client), [0xE0, 0x02, 0x82, 0x00], "Protocol Error");
    // And nobody else was harmed.
    let _still = raw_v5_connect(&broker, "v5-after-bad-packets");
}

/// Enhanced authentication (an Authentication Method, 4.12) is not offered: CONNACK 0x8C, as
/// from Mosquitto without an auth plugin.
#[tokio::test]
async fn mqtt5_an_authentication_method_gets_connack_bad_authentication_method() {
    let broker = Broker::start();
    let mut client_options = options(&broker, "v5-scram");
    client_options.set_connect_properties(ConnectProperties {
        authentication_method: Some("SCRAM-SHA-1".into()),
        authentication_data: Some(bytes::Bytes::from_static(b"n,,n=user,r=nonce")),
        ..ConnectProperties::new()
    });
    let (_client, mut events) = AsyncClient::new(client_options, 16);
    let error = next_error(&mut events, "the refusal").await;
    assert!(
        matches!(error, ConnectionError::ConnectionRefused(ConnectReturnCode::BadAuthenticationMethod)),
        "{error:?}"
    );
}

#[tokio::test]
async fn mqtt5_message_expiry_counts_down_and_the_payload_format_is_forwarded() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    let broker = Broker::start();
    let mut subscriber_options = options(&broker, "v5-expiry-subscriber");
    subscriber_options.set_clean_start(false);
    subscriber_options
        .set_connect_properties(ConnectProperties { session_expiry_interval: Some(600), ..ConnectProperties::new() });
    let (subscriber, mut subscriber_events, _) = connect(subscriber_options.clone()).await;
    subscriber.subscribe("expiry/#", QoS::AtLeastOnce).await.expect("queue SUBSCRIBE");
    next(&mut subscriber_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    subscriber.disconnect().await.expect("queue DISCONNECT");
    let _ = within("the disconnect", async { while subscriber_events.poll().await.is_ok() {} }).await;

    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-expiry-publisher")).await;
    for (topic, expiry) in [("expiry/short", Some(10)), ("expiry/none", None)] {
        let properties = PublishProperties {
            payload_format_indicator: Some(1),
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        };
        publisher.publish_with_properties(topic, QoS::AtLeastOnce, false, "text", properties).await.expect("PUBLISH");
        next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    }
    // The messages wait in the offline session's queue.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_subscriber, mut subscriber_events, present) = connect(subscriber_options).await;
    assert!(present, "the session was kept");
    let mut seen = Vec::new();
    for _ in 0..2 {
        let publish = next(&mut subscriber_events, "a delivery", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        let properties = publish.properties.expect("properties");
        assert_eq!(properties.payload_format_indicator, Some(1), "forwarded unaltered (3.3.2.3.2)");
        seen.push((String::from_utf8_lossy(&publish.topic).into_owned(), properties.message_expiry_interval));
    }
    seen.sort();
    assert_eq!(seen[0].0, "expiry/none");
    assert_eq!(seen[0].1, None, "no expiry published, none sent");
    assert_eq!(seen[1].0, "expiry/short");
    let left = seen[1].1.expect("an expiry");
    assert!((1..=8).contains(&left), "10 s less the 2.5 s waited, rounded up: {left}");
}

#[test]
fn mqtt5_a_later_connection_or_disconnect_changes_the_session_expiry() {
    use std::io::{Read, Write};
    let broker = Broker::start();
    let subscribe = |stream: &mut std::net::TcpStream| {
        stream.write_all(&[0x82, 0x0A, 0, 1, 0, 0, 4, b'e', b'x', b'p', b'/', 1]).expect("SUBSCRIBE");
        let mut suback = [0u8; 6];
        stream.read_exact(&mut suback).expect("SUBACK");
    };
    let disconnect = |mut stream: std::net::TcpStream, packet: &[u8]| {
        stream.write_all(packet).expect("DISCONNECT");
        read_to_close(&mut stream);
    };
    // A 1 s session, then resumed with 600 s: it outlives the first expiry.
    let (mut stream, _) = raw_v5_persistent(&broker, "v5-expiry-longer", 1);
    subscribe(&mut stream);
    disconnect(stream, &[0xE0, 0x00]);
    let (stream, present) = raw_v5_persistent(&broker, "v5-expiry-longer", 600);
    assert!(present, "resumed within the second");
    disconnect(stream, &[0xE0, 0x00]);
    std::thread::sleep(Duration::from_millis(2500));
    let (stream, present) = raw_v5_persistent(&broker, "v5-expiry-longer", 1);
    assert!(present, "the 600 s expiry the last connection asked for holds");
    disconnect(stream, &[0xE0, 0x00]);
    // Left with 1 s: gone after it, queue included.
    std::thread::sleep(Duration::from_millis(2500));
    let (stream, present) = raw_v5_persistent(&broker, "v5-expiry-longer", 600);
    assert!(!present, "expired after 1 s");
    drop(stream);
    // 600 s at CONNECT, 1 s at DISCONNECT (3.14.2.2.2).
    let (mut stream, _) = raw_v5_persistent(&broker, "v5-expiry-at-disconnect", 600);
    subscribe(&mut stream);
    disconnect(stream, &[0xE0, 0x07, 0x00, 0x05, 0x11, 0, 0, 0, 1]);
    std::thread::sleep(Duration::from_millis(2500));
    let (_stream, present) = raw_v5_persistent(&broker, "v5-expiry-at-disconnect", 600);
    assert!(!present, "the DISCONNECT's 1 s expiry applied");
}

/// A persistent MQTT 5 session's own state: No Local, subscription identifiers and shared
/// subscriptions, checked after a reconnect and again after a broker crash.
async fn assert_session_state_holds(broker: &Broker, client_options: &MqttOptions, round: &str) {
    let (client, mut events, present) = connect(client_options.clone()).await;
    assert!(present, "{round}: session present");
    let (other, mut other_events, _) = connect(options(broker, &format!("v5-kept-other-{round}"))).await;
    // No Local: its own publish skips the subscription; another client's comes with id 5.
    client.publish("kept/nl/own", QoS::AtLeastOnce, false, "mine").await.expect("PUBLISH");
    other.publish("kept/nl/other", QoS::AtLeastOnce, false, "theirs").await.expect("PUBLISH");
    next(&mut other_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    // The shared subscription was rejoined: a message for the group reaches its only member.
    other.publish("kept/shared/job", QoS::AtLeastOnce, false, "job").await.expect("PUBLISH");
    next(&mut other_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let mut got: Vec<(Vec<u8>, Vec<usize>)> = publishes_within(&mut events, Duration::from_millis(800))
        .await
        .into_iter()
        .map(|publish| {
            let ids = publish.properties.map(|properties| properties.subscription_identifiers).unwrap_or_default();
            (publish.payload.to_vec(), ids)
        })
        .collect();
    got.sort();
    assert_eq!(got, [(b"job".to_vec(), vec![6]), (b"theirs".to_vec(), vec![5])], "{round}");
    client.disconnect().await.expect("DISCONNECT");
    let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;
}

#[tokio::test]
async fn mqtt5_session_state_survives_reconnects_and_a_crash() {
    use rumqttc::v5::mqttbytes::v5::{Filter, RetainForwardRule, SubscribeProperties};
    let kept_options = |broker: &Broker| {
        let mut client_options = options(broker, "v5-kept");
        client_options.set_clean_start(false);
        client_options.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(600),
            ..ConnectProperties::new()
        });
        client_options
    };
    let broker = Broker::start();
    let (client, mut events, _) = connect(kept_options(&broker)).await;
    let no_local = Filter {
        path: "kept/nl/#".into(),
        qos: QoS::AtLeastOnce,
        nolocal: true,
        preserve_retain: false,
        retain_forward_rule: RetainForwardRule::OnEverySubscribe,
    };
    let properties = SubscribeProperties { id: Some(5), user_properties: Vec::new() };
    client.subscribe_many_with_properties([no_local], properties).await.expect("SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let properties = SubscribeProperties { id: Some(6), user_properties: Vec::new() };
    client
        .subscribe_with_properties("$share/kept-group/kept/shared/#", QoS::AtLeastOnce, properties)
        .await
        .expect("SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    client.disconnect().await.expect("DISCONNECT");
    let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;

    assert_session_state_holds(&broker, &kept_options(&broker), "reconnect").await;

    // A delayed will pending at the crash goes out after the restart.
    let (will_client, will_events) = client_with_delayed_will(&broker, "v5-kept-will", 3).await;
    drop((will_client, will_events));
    // The session records are written as the connections end, not waited for.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let broker = broker.crash_and_restart();
    let (watcher, mut watcher_events, _) = connect(options(&broker, "v5-kept-watcher")).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut watcher_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;

    assert_session_state_holds(&broker, &kept_options(&broker), "crash").await;

    let wills = publishes_within(&mut watcher_events, Duration::from_millis(4000)).await;
    assert_eq!(wills.iter().map(|will| &will.payload[..]).collect::<Vec<_>>(), [&b"gone"[..]], "the will, once");
    let properties = wills[0].properties.as_ref().expect("the will's properties, kept across the crash");
    assert_eq!(properties.user_properties, [("why".to_owned(), "gone".to_owned())]);
}

/// Reads whole packets for `quiet`, returning (first byte, body) of each.
fn raw_packets_within(stream: &mut std::net::TcpStream, quiet: Duration) -> Vec<(u8, Vec<u8>)> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + quiet;
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()).filter(|left| !left.is_zero()) {
        stream.set_read_timeout(Some(left)).expect("timeout");
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => bytes.extend_from_slice(&buffer[..read]),
            Err(_) => break,
        }
    }
    let mut packets = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 2 {
        let (mut length, mut used) = (0usize, 1);
        loop {
            let byte = rest[used];
            length |= usize::from(byte & 0x7F) << (7 * (used - 1));
            used += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        packets.push((rest[0], rest[used..used + length].to_vec()));
        rest = &rest[used + length..];
    }
    packets
}

#[tokio::test]
async fn mqtt5_retained_messages_on_subscribe_respect_receive_maximum() {
    use std::io::{Read, Write};
    let broker = Broker::start();
    let (setter, mut setter_events, _) = connect(options(&broker, "v5-rm-setter")).await;
    for index in 0..5 {
        setter.publish(format!("rm/{index}"), QoS::AtLeastOnce, true, "kept").await.expect("PUBLISH");
        next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    }
    let addr = broker.mqtt_addr;
    tokio::task::spawn_blocking(move || {
        // CONNECT, MQTT 5, clean start, properties: Receive Maximum 2.
        let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 5, 0b1100_0010, 0, 60, 3, 0x21, 0, 2];
        for field in ["v5-rm-subscriber", "guest", "guest"] {
            body.extend_from_slice(&(field.len() as u16).to_be_bytes());
            body.extend_from_slice(field.as_bytes());
        }
        let mut connect = vec![0x10, body.len() as u8];
        connect.extend_from_slice(&body);
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(&connect).expect("CONNECT");
        let mut header = [0u8; 2];
        stream.read_exact(&mut header).expect("CONNACK");
        let mut rest = vec![0u8; usize::from(header[1])];
        stream.read_exact(&mut rest).expect("CONNACK body");
        stream.write_all(&[0x82, 0x0A, 0, 1, 0, 0, 4, b'r', b'm', b'/', b'#', 1]).expect("SUBSCRIBE");
        let publishes = |packets: Vec<(u8, Vec<u8>)>| -> Vec<u16> {
            packets
                .into_iter()
                .filter(|(first, _)| first & 0xF0 == 0x30)
                .map(|(first, body)| {
                    assert_eq!(first & 0x07, 0x03, "QoS 1, retained");
                    let topic_length = usize::from(u16::from_be_bytes([body[0], body[1]]));
                    u16::from_be_bytes([body[2 + topic_length], body[3 + topic_length]])
                })
                .collect()
        };
        let first = publishes(raw_packets_within(&mut stream, Duration::from_millis(500)));
        assert_eq!(first.len(), 2, "Receive Maximum 2: two unacknowledged at once");
        stream.write_all(&[0x40, 0x02]).expect("PUBACK");
        stream.write_all(&first[0].to_be_bytes()).expect("PUBACK id");
        let second = publishes(raw_packets_within(&mut stream, Duration::from_millis(500)));
        assert_eq!(second.len(), 1, "one acknowledged, one more");
        let mut all = first;
        all.extend(second);
        for id in all.iter().skip(1) {
            stream.write_all(&[0x40, 0x02]).expect("PUBACK");
            stream.write_all(&id.to_be_bytes()).expect("PUBACK id");
        }
        let third = publishes(raw_packets_within(&mut stream, Duration::from_millis(500)));
        assert_eq!(third.len(), 2, "the last two");
    })
    .await
    .expect("the raw subscriber");
}

#[tokio::test]
async fn mqtt5_shared_subscriptions_are_authorised_per_group() {
    let broker = Broker::start();
    assert_eq!(management(&broker, "PUT", "/api/users/team-a", r#"{"password":"team-a-pass","tags":""}"#), 201);
    let permissions = r#"{"configure":"^mqtt-(subscription-|shared-team-a/)","write":"^mqtt-(subscription-|shared-team-a/)","read":".*"}"#;
    assert_eq!(management(&broker, "PUT", "/api/permissions/%2F/team-a", permissions), 201);
    let mut team_options = options(&broker, "v5-team-a");
    team_options.set_credentials("team-a", "team-a-pass");
    let (client, mut events, _) = connect(team_options).await;
    client.subscribe("$share/team-a/jobs/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    let codes = next(&mut events, "SUBACK", |packet| match packet {
        Packet::SubAck(ack) => Some(ack.return_codes),
        _ => None,
    })
    .await;
    assert_eq!(codes, [SubscribeReasonCode::Success(QoS::AtLeastOnce)], "its own group");
    client.subscribe("$share/team-b/jobs/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    // rumqttc reports a failed SUBACK as an error of its own, with the reason code.
    let error = next_error(&mut events, "the refused SUBACK").await;
    assert!(
        matches!(
            error,
            ConnectionError::MqttState(rumqttc::v5::StateError::SubFail { reason: SubscribeReasonCode::NotAuthorized })
        ),
        "another group: {error:?}"
    );
}

#[tokio::test]
async fn mqtt5_retained_messages_keep_their_properties_and_expire() {
    use rumqttc::v5::mqttbytes::v5::{PublishProperties, SubscribeProperties};
    let broker = Broker::start();
    let (setter, mut setter_events, _) = connect(options(&broker, "v5-rp-setter")).await;
    for (topic, expiry) in [("rp/short", Some(2)), ("rp/long", None)] {
        let properties = PublishProperties {
            content_type: Some("text/plain".into()),
            user_properties: vec![("origin".into(), topic.into())],
            message_expiry_interval: expiry,
            ..PublishProperties::default()
        };
        setter.publish_with_properties(topic, QoS::AtLeastOnce, true, "kept", properties).await.expect("PUBLISH");
        next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    }
    let subscribe_and_collect = |client_id: &'static str, broker: &Broker| {
        let client_options = options(broker, client_id);
        async move {
            let (client, mut events, _) = connect(client_options).await;
            let properties = SubscribeProperties { id: Some(9), user_properties: Vec::new() };
            client.subscribe_with_properties("rp/#", QoS::AtLeastOnce, properties).await.expect("SUBSCRIBE");
            let mut got = publishes_within(&mut events, Duration::from_millis(600)).await;
            got.sort_by(|a, b| a.topic.cmp(&b.topic));
            got
        }
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let got = subscribe_and_collect("v5-rp-early", &broker).await;
    assert_eq!(got.len(), 2);
    for publish in &got {
        assert!(publish.retain, "flagged retained");
        let properties = publish.properties.as_ref().expect("properties");
        let topic = String::from_utf8_lossy(&publish.topic).into_owned();
        assert_eq!(properties.content_type.as_deref(), Some("text/plain"), "{topic}");
        assert_eq!(properties.user_properties, [("origin".to_owned(), topic.clone())]);
        assert_eq!(properties.subscription_identifiers, [9], "the subscription's identifier");
        let expected = if topic == "rp/short" { Some(1) } else { None };
        assert_eq!(properties.message_expiry_interval, expected, "{topic}: the time left, rounded up");
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let got = subscribe_and_collect("v5-rp-late", &broker).await;
    let topics: Vec<&[u8]> = got.iter().map(|publish| &publish.topic[..]).collect();
    assert_eq!(topics, [&b"rp/long"[..]], "the expired one is gone");

    // After a crash, the stored retained messages have their properties, and their expiry,
    // back.
    let properties = PublishProperties { message_expiry_interval: Some(600), ..PublishProperties::default() };
    setter.publish_with_properties("rp/mid", QoS::AtLeastOnce, true, "kept", properties).await.expect("PUBLISH");
    next(&mut setter_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let broker = broker.crash_and_restart();
    let got = subscribe_and_collect("v5-rp-restarted", &broker).await;
    assert_eq!(got.len(), 2);
    let long = got[0].properties.as_ref().expect("properties");
    assert_eq!(long.content_type.as_deref(), Some("text/plain"));
    assert_eq!(long.user_properties, [("origin".to_owned(), "rp/long".to_owned())]);
    assert_eq!(long.message_expiry_interval, None);
    let mid = got[1].properties.as_ref().expect("properties");
    assert!(mid.message_expiry_interval.is_some_and(|left| (590..=600).contains(&left)), "{mid:?}");
    assert!(mid.user_properties.is_empty(), "the adapter's own headers are not user properties: {mid:?}");
}

#[tokio::test]
async fn mqtt5_broker_sets_topic_aliases_for_clients_that_accept_them() {
    let broker = Broker::start();
    let mut subscriber_options = options(&broker, "v5-alias-receiver");
    subscriber_options
        .set_connect_properties(ConnectProperties { topic_alias_max: Some(2), ..ConnectProperties::new() });
    let (subscriber, mut events, _) = connect(subscriber_options).await;
    subscriber.subscribe("alias/#", QoS::AtMostOnce).await.expect("SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let connection = common::connect(&broker).await;
    let channel = common::open_channel(&connection).await;
    for key in ["alias.a", "alias.a", "alias.b", "alias.c", "alias.b"] {
        amqp_publish(&channel, key, b"x").await;
    }
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let publish = next(&mut events, "a delivery", |packet| match packet {
            Packet::Publish(publish) => Some(publish),
            _ => None,
        })
        .await;
        let alias = publish.properties.as_ref().and_then(|properties| properties.topic_alias);
        // rumqttc puts the topic back from the alias; the alias stays in the properties.
        seen.push((String::from_utf8_lossy(&publish.topic).into_owned(), alias));
    }
    let expected =
        [("alias/a", Some(1)), ("alias/a", Some(1)), ("alias/b", Some(2)), ("alias/c", None), ("alias/b", Some(2))];
    let expected: Vec<(String, Option<u16>)> =
        expected.iter().map(|(topic, alias)| (topic.to_string(), *alias)).collect();
    assert_eq!(seen, expected, "aliases up to the client's maximum of 2");
}

#[tokio::test]
async fn mqtt5_a_clean_start_takeover_publishes_the_old_sessions_delayed_will() {
    let broker = Broker::start();
    let (watcher, mut watcher_events, _) = connect(options(&broker, "v5-clean-watcher")).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut watcher_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    // A will delayed 30 s, then the same client id with Clean Start: the old session ends, so
    // its will goes out now (3.1.2.5), whether the old connection is still open or not.
    for open in [true, false] {
        let client_id = if open { "v5-clean-over-open" } else { "v5-clean-over-closed" };
        let (old, old_events) = client_with_delayed_will(&broker, client_id, 30).await;
        if !open {
            drop((old, old_events));
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert!(publishes_within(&mut watcher_events, Duration::from_millis(200)).await.is_empty(), "delayed");
        } else {
            std::mem::forget((old, old_events));
        }
        let (_new, _new_events, present) = connect(options(&broker, client_id)).await;
        assert!(!present, "a clean start");
        let wills = publishes_within(&mut watcher_events, Duration::from_millis(1000)).await;
        assert_eq!(wills.len(), 1, "{client_id}: the old session's will, now");
    }
}

/// Whether the queue `name` exists, by an AMQP passive declare.
async fn queue_exists(connection: &lapin::Connection, name: &str) -> bool {
    let channel = common::open_channel(connection).await;
    match channel.queue_declare(name, common::passive(), lapin::types::FieldTable::default()).await {
        Ok(_) => true,
        Err(error) => {
            assert_eq!(common::reply_code(&error), Some(404), "{name}: {error:?}");
            false
        }
    }
}

/// Whether the queue `name` is gone within 5 s (the broker lets a connection go a moment after
/// its client sees it end; an expiry runs on the broker's timer).
async fn queue_gone_soon(connection: &lapin::Connection, name: &str) -> bool {
    for _ in 0..100 {
        if !queue_exists(connection, name).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A shared subscription is part of each member's session (4.8.2): while every member of a
/// group of persistent sessions is away, the group's messages wait for the first one back,
/// across a broker crash too. The group's queue goes with the last session that holds it: a
/// clean start that replaces it, its expiry, or a clean session's end.
#[tokio::test]
async fn mqtt5_shared_subscription_messages_wait_for_persistent_members() {
    let persistent = |broker: &Broker, client_id: &str, expiry: u32| {
        let mut client_options = options(broker, client_id);
        client_options.set_clean_start(false);
        client_options.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(expiry),
            ..ConnectProperties::new()
        });
        client_options
    };
    let join = |client_options: MqttOptions, path: &'static str| async move {
        let (client, mut events, _) = connect(client_options).await;
        client.subscribe(path, QoS::AtLeastOnce).await.expect("SUBSCRIBE");
        next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
        client.disconnect().await.expect("DISCONNECT");
        let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;
    };
    let broker = Broker::start();
    for member in ["v5-away-a", "v5-away-b"] {
        join(persistent(&broker, member, 600), "$share/away/away/jobs/#").await;
    }
    // Every member is away: the publishes wait in the group's queue.
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-away-publisher")).await;
    for index in 0..3 {
        publisher
            .publish(format!("away/jobs/{index}"), QoS::AtLeastOnce, false, format!("job-{index}"))
            .await
            .expect("PUBLISH");
        next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    }
    drop((publisher, publisher_events));
    // A group made durable by a persistent session, whose only member left at the crash is a
    // clean session: nobody holds it after the restart.
    let orphan = "$share/orphan/orphan/#";
    let (creator, mut creator_events, _) = connect(persistent(&broker, "v5-orphan-creator", 600)).await;
    creator.subscribe(orphan, QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut creator_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let (clean, mut clean_events, _) = connect(options(&broker, "v5-orphan-clean")).await;
    clean.subscribe(orphan, QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut clean_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    creator.unsubscribe(orphan).await.expect("UNSUBSCRIBE");
    next(&mut creator_events, "UNSUBACK", |packet| matches!(packet, Packet::UnsubAck(_)).then_some(())).await;
    let amqp = common::connect(&broker).await;
    assert!(queue_exists(&amqp, "mqtt-shared-orphan/orphan/#").await, "kept for the member still connected");
    drop(amqp);
    // The session records are written as the UNSUBSCRIBE is handled, not waited for.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let broker = broker.crash_and_restart();
    drop((creator, creator_events, clean, clean_events));
    let amqp = common::connect(&broker).await;
    assert!(!queue_exists(&amqp, "mqtt-shared-orphan/orphan/#").await, "a group without members, removed at start");
    let (client, mut events, present) = connect(persistent(&broker, "v5-away-a", 600)).await;
    assert!(present, "session present after the crash");
    let mut got: Vec<String> = publishes_within(&mut events, Duration::from_millis(1000))
        .await
        .into_iter()
        .map(|publish| String::from_utf8_lossy(&publish.payload).into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["job-0", "job-1", "job-2"], "the messages that waited, to the first member back");
    client.disconnect().await.expect("DISCONNECT");
    let _ = within("the disconnect", async { while events.poll().await.is_ok() {} }).await;

    // The group's queue goes with the last session that holds it.
    let queue = "mqtt-shared-away/away/jobs/#";
    for (member, left) in [("v5-away-a", false), ("v5-away-b", true)] {
        let (_client, _events, present) = connect(options(&broker, member)).await;
        assert!(!present, "{member}: a clean start ends the session");
        assert_eq!(queue_exists(&amqp, queue).await, !left, "after {member}'s clean start");
    }
    // A session's expiry takes it too.
    join(persistent(&broker, "v5-brief", 2), "$share/brief/brief/#").await;
    assert!(queue_exists(&amqp, "mqtt-shared-brief/brief/#").await, "kept while the session is");
    assert!(queue_gone_soon(&amqp, "mqtt-shared-brief/brief/#").await, "gone with the expired session");
    // A clean session's end takes it.
    join(options(&broker, "v5-clean-member"), "$share/clean/clean/#").await;
    assert!(queue_gone_soon(&amqp, "mqtt-shared-clean/clean/#").await, "gone with the clean session");

    // A join that fails (an AMQP consumer holds the group's queue exclusively) makes no member:
    // the queue still goes with the last real one.
    let held = "mqtt-shared-held/held/#";
    let holder = common::open_channel(&amqp).await;
    holder
        .queue_declare(held, lapin::options::QueueDeclareOptions::default(), lapin::types::FieldTable::default())
        .await
        .expect("declare");
    let exclusive = lapin::options::BasicConsumeOptions { exclusive: true, ..Default::default() };
    let _consumer =
        holder.basic_consume(held, "holder", exclusive, lapin::types::FieldTable::default()).await.expect("consume");
    let (refused, mut refused_events, _) = connect(options(&broker, "v5-held-refused")).await;
    refused.subscribe("$share/held/held/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    let error = next_error(&mut refused_events, "the refused SUBACK").await;
    assert!(matches!(error, ConnectionError::MqttState(rumqttc::v5::StateError::SubFail { .. })), "{error:?}");
    drop((refused, refused_events));
    holder.close(200, "done").await.expect("close");
    // Nor does it leave the queue bound: a publish to the group's filter does not reach it.
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-held-publisher")).await;
    publisher.publish("held/x", QoS::AtLeastOnce, false, "not for the held queue").await.expect("PUBLISH");
    next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let channel = common::open_channel(&amqp).await;
    let declared =
        channel.queue_declare(held, common::passive(), lapin::types::FieldTable::default()).await.expect("passive");
    assert_eq!(declared.message_count(), 0, "no binding left by the refused join");
    join(options(&broker, "v5-held-member"), "$share/held/held/#").await;
    assert!(queue_gone_soon(&amqp, held).await, "gone with its only member");
}

/// A group that a clean session created has a transient queue; its persistent members find a
/// durable one after a restart, where messages published before they are back wait for them.
#[tokio::test]
async fn mqtt5_a_transient_group_gets_a_durable_queue_for_its_persistent_members_at_restart() {
    let member_options = |broker: &Broker| {
        let mut member_options = options(broker, "v5-mixed-persistent");
        member_options.set_clean_start(false);
        member_options.set_connect_properties(ConnectProperties {
            session_expiry_interval: Some(600),
            ..ConnectProperties::new()
        });
        member_options
    };
    let broker = Broker::start();
    let path = "$share/mixed/mixed/#";
    // The clean session first: it creates the group's queue, transient.
    let (creator, mut creator_events, _) = connect(options(&broker, "v5-mixed-clean")).await;
    creator.subscribe(path, QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut creator_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    let (member, mut member_events, _) = connect(member_options(&broker)).await;
    member.subscribe(path, QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut member_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    member.disconnect().await.expect("DISCONNECT");
    let _ = within("the disconnect", async { while member_events.poll().await.is_ok() {} }).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let broker = broker.crash_and_restart();
    drop((creator, creator_events));
    let (publisher, mut publisher_events, _) = connect(options(&broker, "v5-mixed-publisher")).await;
    publisher.publish("mixed/job", QoS::AtLeastOnce, false, "after the restart").await.expect("PUBLISH");
    next(&mut publisher_events, "PUBACK", |packet| matches!(packet, Packet::PubAck(_)).then_some(())).await;
    let (_member, mut member_events, present) = connect(member_options(&broker)).await;
    assert!(present, "session present");
    let got = publishes_within(&mut member_events, Duration::from_millis(1000)).await;
    assert_eq!(got.iter().map(|publish| &publish.payload[..]).collect::<Vec<_>>(), [&b"after the restart"[..]]);
}

/// A session resumed by a connection with Session Expiry 0 ends with that connection, so a
/// crash while it is connected leaves no session behind: not the delayed will it cancelled,
/// nor the session itself.
#[tokio::test]
async fn mqtt5_a_session_resumed_with_expiry_zero_leaves_nothing_after_a_crash() {
    let broker = Broker::start();
    let (client, mut events) = client_with_delayed_will(&broker, "v5-resumed-zero", 2).await;
    client.subscribe("zero/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    drop((client, events));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut resume = options(&broker, "v5-resumed-zero");
    resume.set_clean_start(false);
    let (_resumed, _resumed_events, present) = connect(resume).await;
    assert!(present, "resumed, cancelling the will");
    // The records are written as the connections go, not waited for.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let broker = broker.crash_and_restart();
    let (watcher, mut watcher_events, _) = connect(options(&broker, "v5-resumed-zero-watcher")).await;
    watcher.subscribe("wills/#", QoS::AtLeastOnce).await.expect("SUBSCRIBE");
    next(&mut watcher_events, "SUBACK", |packet| matches!(packet, Packet::SubAck(_)).then_some(())).await;
    assert!(publishes_within(&mut watcher_events, Duration::from_millis(3000)).await.is_empty(), "no will");
    let mut again = options(&broker, "v5-resumed-zero");
    again.set_clean_start(false);
    let (_again, _again_events, present) = connect(again).await;
    assert!(!present, "the session ended with the crash");
}
