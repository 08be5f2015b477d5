//! AMQP 0-9-1 behaviour checked with lapin, a real client, against a real `warren` process.
//! Every expectation is what RabbitMQ 3.x does; each test starts its own broker on port 0.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{
    ack, assert_bodies, assert_no_delivery, assert_reply_code, bind, bind_with, confirm_channel, connect, consume,
    declare_exchange, declare_queue, exclusive, get_no_ack, message_count, next_delivery, no_ack, open_channel,
    passive, poll_until, publish_confirmed, publish_plain, raw, reply_code, sorted, string_table, try_declare, within,
    Broker, QUIET_PERIOD, RPC_TIMEOUT,
};
use futures_lite::stream::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ExchangeDeclareOptions, QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, ExchangeKind};

/// AMQP reply codes (spec section 1.2).
const NO_ROUTE: u16 = 312;
const CONNECTION_FORCED: u16 = 320;
const NOT_FOUND: u16 = 404;
const RESOURCE_LOCKED: u16 = 405;
const PRECONDITION_FAILED: u16 = 406;

#[tokio::test]
async fn publish_consume_round_trips_body_and_properties() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "round-trip").await;

    let mut nested = FieldTable::default();
    nested.insert("inner".into(), AMQPValue::LongString("deep".into()));
    let mut headers = FieldTable::default();
    headers.insert("x-string".into(), AMQPValue::LongString("hello".into()));
    headers.insert("x-int".into(), AMQPValue::LongInt(-42));
    headers.insert("x-bool".into(), AMQPValue::Boolean(true));
    headers.insert("x-nested".into(), AMQPValue::FieldTable(nested));
    let properties = BasicProperties::default()
        .with_content_type("application/octet-stream".into())
        .with_headers(headers)
        .with_correlation_id("correlation-1".into())
        .with_reply_to("reply-queue".into())
        .with_delivery_mode(2)
        .with_message_id("message-1".into())
        .with_timestamp(1_700_000_000);
    let body = b"\x00\xffbinary \x01 body\n".to_vec();

    let mut consumer = consume(&channel, "round-trip", "round-trip-consumer", no_ack()).await;
    publish_confirmed(&channel, "", "round-trip", &body, properties.clone()).await;
    let delivery = next_delivery(&mut consumer).await;

    assert_eq!(delivery.data, body);
    assert_eq!(delivery.properties, properties);
    assert_eq!(delivery.exchange.as_str(), "");
    assert_eq!(delivery.routing_key.as_str(), "round-trip");
    assert!(!delivery.redelivered);
}

#[tokio::test]
async fn server_named_queue_gets_amq_gen_name() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    let first = try_declare(&channel, "", exclusive()).await.expect("server-named queue");
    let second = try_declare(&channel, "", exclusive()).await.expect("second server-named queue");

    assert!(first.name().as_str().starts_with("amq.gen-"), "name was {:?}", first.name());
    assert_ne!(first.name(), second.name());
    publish_plain(&channel, "", first.name().as_str(), "to generated").await;
    assert_bodies(&channel, first.name().as_str(), &["to generated"]).await;
}

#[tokio::test]
async fn fanout_exchange_copies_to_every_bound_queue() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_exchange(&channel, "fanout-x", ExchangeKind::Fanout).await;
    for queue in ["fanout-q1", "fanout-q2"] {
        declare_queue(&channel, queue).await;
        bind(&channel, queue, "fanout-x", "").await;
    }
    declare_queue(&channel, "fanout-unbound").await;

    publish_plain(&channel, "fanout-x", "any.key", "broadcast").await;

    assert_bodies(&channel, "fanout-q1", &["broadcast"]).await;
    assert_bodies(&channel, "fanout-q2", &["broadcast"]).await;
    assert_eq!(message_count(&channel, "fanout-unbound").await, 0);
}

#[tokio::test]
async fn direct_exchange_routes_by_exact_key() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_exchange(&channel, "direct-x", ExchangeKind::Direct).await;
    declare_queue(&channel, "direct-warm").await;
    declare_queue(&channel, "direct-cold").await;
    bind(&channel, "direct-warm", "direct-x", "red").await;
    bind(&channel, "direct-warm", "direct-x", "orange").await;
    bind(&channel, "direct-cold", "direct-x", "blue").await;

    for key in ["red", "orange", "blue", "black", "red.dark"] {
        publish_plain(&channel, "direct-x", key, key).await;
    }

    assert_bodies(&channel, "direct-warm", &["red", "orange"]).await;
    assert_bodies(&channel, "direct-cold", &["blue"]).await;
}

#[tokio::test]
async fn topic_exchange_matches_star_and_hash() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_exchange(&channel, "topic-x", ExchangeKind::Topic).await;
    let bindings = [
        ("topic-a-star", "a.*"),
        ("topic-a-hash", "a.#"),
        ("topic-hash", "#"),
        ("topic-hash-c", "#.c"),
        ("topic-a-star-c", "a.*.c"),
        ("topic-hash-mid", "a.#.c"),
    ];
    for (queue, key) in bindings {
        declare_queue(&channel, queue).await;
        bind(&channel, queue, "topic-x", key).await;
    }
    for key in ["a", "a.b", "a.b.c", "a.c", "c", "b.a", "a.b.b.c"] {
        publish_plain(&channel, "topic-x", key, key).await;
    }

    // `*` is exactly one word; `#` is zero or more, so `a.#` matches `a` and `a.#.c` matches `a.c`.
    let expected: [(&str, &[&str]); 6] = [
        ("topic-a-star", &["a.b", "a.c"][..]),
        ("topic-a-hash", &["a", "a.b", "a.b.c", "a.c", "a.b.b.c"][..]),
        ("topic-hash", &["a", "a.b", "a.b.c", "a.c", "c", "b.a", "a.b.b.c"][..]),
        ("topic-hash-c", &["a.b.c", "a.c", "c", "a.b.b.c"][..]),
        ("topic-a-star-c", &["a.b.c"][..]),
        ("topic-hash-mid", &["a.b.c", "a.c", "a.b.b.c"][..]),
    ];
    for (queue, keys) in expected {
        assert_bodies(&channel, queue, keys).await;
    }
}

#[tokio::test]
async fn headers_exchange_matches_all_and_any() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_exchange(&channel, "headers-x", ExchangeKind::Headers).await;
    declare_queue(&channel, "headers-all").await;
    declare_queue(&channel, "headers-any").await;
    let all = string_table(&[("x-match", "all"), ("format", "pdf"), ("type", "report")]);
    let any = string_table(&[("x-match", "any"), ("format", "pdf"), ("type", "report")]);
    bind_with(&channel, "headers-all", "headers-x", "", all).await;
    bind_with(&channel, "headers-any", "headers-x", "", any).await;

    let messages = [
        ("both", Some(string_table(&[("format", "pdf"), ("type", "report"), ("extra", "1")]))),
        ("one", Some(string_table(&[("format", "pdf"), ("type", "log")]))),
        ("other", Some(string_table(&[("format", "zip")]))),
        ("none", None),
    ];
    for (body, headers) in messages {
        let properties = match headers {
            Some(headers) => BasicProperties::default().with_headers(headers),
            None => BasicProperties::default(),
        };
        // The routing key is ignored by a headers exchange.
        publish_confirmed(&channel, "headers-x", "format.pdf", body.as_bytes(), properties).await;
    }

    assert_bodies(&channel, "headers-all", &["both"]).await;
    assert_bodies(&channel, "headers-any", &["both", "one"]).await;
}

#[tokio::test]
async fn predeclared_exchanges_exist() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    let passive_exchange = ExchangeDeclareOptions { passive: true, ..ExchangeDeclareOptions::default() };
    let exchanges = [
        ("amq.direct", ExchangeKind::Direct),
        ("amq.fanout", ExchangeKind::Fanout),
        ("amq.topic", ExchangeKind::Topic),
        ("amq.headers", ExchangeKind::Headers),
        ("amq.match", ExchangeKind::Headers),
    ];
    for (name, kind) in exchanges {
        within(
            "passive exchange.declare",
            channel.exchange_declare(name, kind, passive_exchange, FieldTable::default()),
        )
        .await
        .unwrap_or_else(|error| panic!("passive declare of {name}: {error}"));
    }
}

#[tokio::test]
async fn prefetch_one_holds_second_message_until_ack() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    let consumer_channel = open_channel(&connection).await;
    declare_queue(&publisher, "prefetch").await;
    within("basic.qos", consumer_channel.basic_qos(1, BasicQosOptions::default())).await.expect("basic.qos");
    let manual_ack = BasicConsumeOptions::default();
    let mut consumer = consume(&consumer_channel, "prefetch", "prefetch", manual_ack).await;

    publish_plain(&publisher, "", "prefetch", "first").await;
    publish_plain(&publisher, "", "prefetch", "second").await;

    let first = next_delivery(&mut consumer).await;
    assert_eq!(first.data, b"first");
    assert_no_delivery(&mut consumer, QUIET_PERIOD).await;
    assert_eq!(message_count(&publisher, "prefetch").await, 1, "second message stays ready");

    ack(&first).await;
    let second = next_delivery(&mut consumer).await;
    assert_eq!(second.data, b"second");
    ack(&second).await;
}

#[tokio::test]
async fn two_consumers_share_a_queue_round_robin() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    declare_queue(&publisher, "round-robin").await;
    let channel_one = open_channel(&connection).await;
    let channel_two = open_channel(&connection).await;
    let mut consumer_one = consume(&channel_one, "round-robin", "rr-one", no_ack()).await;
    let mut consumer_two = consume(&channel_two, "round-robin", "rr-two", no_ack()).await;

    for index in 0..10 {
        let body = format!("message-{index}");
        publish_plain(&publisher, "", "round-robin", &body).await;
    }

    let mut counts = [0usize; 2];
    within("10 deliveries across two consumers", async {
        while counts[0] + counts[1] < 10 {
            tokio::select! {
                item = consumer_one.next() => {
                    item.expect("consumer one ended").expect("consumer one error");
                    counts[0] += 1;
                }
                item = consumer_two.next() => {
                    item.expect("consumer two ended").expect("consumer two error");
                    counts[1] += 1;
                }
            }
        }
    })
    .await;
    assert_eq!(counts, [5, 5]);
}

#[tokio::test]
async fn nack_requeue_redelivers_and_reject_discards() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "nack-requeue").await;
    declare_queue(&channel, "reject-discard").await;

    let manual_ack = BasicConsumeOptions::default();
    let mut consumer = consume(&channel, "nack-requeue", "nack", manual_ack).await;
    publish_plain(&channel, "", "nack-requeue", "try again").await;
    let first = next_delivery(&mut consumer).await;
    assert!(!first.redelivered);
    let requeue = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
    within("basic.nack", first.nack(requeue)).await.expect("nack");
    let again = next_delivery(&mut consumer).await;
    assert_eq!(again.data, b"try again");
    assert!(again.redelivered, "a requeued message is flagged redelivered");
    ack(&again).await;

    publish_plain(&channel, "", "reject-discard", "drop me").await;
    let got = within("basic.get", channel.basic_get("reject-discard", BasicGetOptions::default()))
        .await
        .expect("basic.get")
        .expect("a message is ready");
    let discard = BasicRejectOptions { requeue: false };
    within("basic.reject", got.delivery.reject(discard)).await.expect("reject");
    // The passive declare is answered after the reject on the same channel was processed.
    assert_eq!(message_count(&channel, "reject-discard").await, 0);
    assert!(get_no_ack(&channel, "reject-discard").await.is_none(), "rejected message is gone");
}

#[tokio::test]
async fn closing_channel_requeues_unacked_messages() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let publisher = confirm_channel(&connection).await;
    declare_queue(&publisher, "close-requeue").await;
    let doomed = open_channel(&connection).await;
    let manual_ack = BasicConsumeOptions::default();
    let mut consumer = consume(&doomed, "close-requeue", "doomed", manual_ack).await;
    for body in ["m0", "m1", "m2"] {
        publish_plain(&publisher, "", "close-requeue", body).await;
    }
    for _ in 0..3 {
        assert!(!next_delivery(&mut consumer).await.redelivered);
    }

    within("channel.close", doomed.close(200, "closing with unacked messages")).await.expect("close channel");

    let survivor = open_channel(&connection).await;
    let mut consumer = consume(&survivor, "close-requeue", "survivor", manual_ack).await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let delivery = next_delivery(&mut consumer).await;
        assert!(delivery.redelivered, "requeued message {:?} is flagged redelivered", delivery.data);
        bodies.push(String::from_utf8_lossy(&delivery.data).into_owned());
        ack(&delivery).await;
    }
    bodies.sort();
    assert_eq!(bodies, sorted(&["m0", "m1", "m2"]));
}

#[tokio::test]
async fn basic_get_reports_empty_and_message_count() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "get-queue").await;

    assert!(get_no_ack(&channel, "get-queue").await.is_none(), "empty queue answers get-empty");
    for body in ["g0", "g1", "g2"] {
        publish_plain(&channel, "", "get-queue", body).await;
    }
    // get-ok's message-count is the number of messages left after this one.
    for (body, remaining) in [("g0", 2), ("g1", 1), ("g2", 0)] {
        let message = get_no_ack(&channel, "get-queue").await.expect("a message");
        assert_eq!(message.delivery.data, body.as_bytes());
        assert_eq!(message.message_count, remaining);
        assert!(!message.delivery.redelivered);
    }
    assert!(get_no_ack(&channel, "get-queue").await.is_none());
}

#[tokio::test]
async fn publisher_confirms_ack_a_thousand_messages() {
    const MESSAGES: usize = 1000;
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "confirms").await;

    let mut confirms = Vec::with_capacity(MESSAGES);
    for index in 0..MESSAGES {
        let body = index.to_string();
        let confirm = within(
            "basic.publish",
            channel.basic_publish(
                "",
                "confirms",
                BasicPublishOptions::default(),
                body.as_bytes(),
                BasicProperties::default(),
            ),
        )
        .await
        .expect("basic.publish");
        confirms.push(confirm);
    }
    for (index, confirm) in confirms.into_iter().enumerate() {
        let confirmation = within("publisher confirm", confirm).await.expect("confirm");
        assert_eq!(confirmation, Confirmation::Ack(None), "message {index}");
    }
    let returned = within("wait_for_confirms", channel.wait_for_confirms()).await.expect("confirms");
    assert!(returned.is_empty());
    assert_eq!(message_count(&channel, "confirms").await, MESSAGES as u32);
}

#[tokio::test]
async fn mandatory_unroutable_message_is_returned_with_no_route() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "mandatory-routable").await;
    let mandatory = BasicPublishOptions { mandatory: true, ..BasicPublishOptions::default() };
    let properties = BasicProperties::default().with_message_id("lost-1".into());

    let routable = within(
        "basic.publish",
        channel.basic_publish("", "mandatory-routable", mandatory, b"kept", BasicProperties::default()),
    )
    .await
    .expect("publish routable");
    assert_eq!(within("confirm", routable).await.expect("confirm"), Confirmation::Ack(None));

    let unroutable =
        within("basic.publish", channel.basic_publish("", "mandatory-nowhere", mandatory, b"lost", properties.clone()))
            .await
            .expect("publish unroutable");
    // RabbitMQ sends basic.return before basic.ack; lapin attaches the return to the ack.
    let confirmation = within("confirm", unroutable).await.expect("confirm");
    let returned = match confirmation {
        Confirmation::Ack(Some(returned)) => returned,
        other => panic!("expected an ack carrying a returned message, got {other:?}"),
    };
    assert_eq!(returned.reply_code, NO_ROUTE);
    assert_eq!(returned.reply_text.as_str(), "NO_ROUTE");
    assert_eq!(returned.delivery.exchange.as_str(), "");
    assert_eq!(returned.delivery.routing_key.as_str(), "mandatory-nowhere");
    assert_eq!(returned.delivery.data, b"lost");
    assert_eq!(returned.delivery.properties, properties);
}

#[tokio::test]
async fn purge_returns_the_number_of_messages_removed() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "purge-me").await;
    for index in 0..5 {
        let body = format!("p{index}");
        publish_plain(&channel, "", "purge-me", &body).await;
    }
    let purged = within("queue.purge", channel.queue_purge("purge-me", QueuePurgeOptions::default()))
        .await
        .expect("queue.purge");
    assert_eq!(purged, 5);
    assert_eq!(message_count(&channel, "purge-me").await, 0);
}

#[tokio::test]
async fn delete_if_empty_on_non_empty_queue_fails_with_precondition_failed() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "not-empty").await;
    publish_plain(&channel, "", "not-empty", "still here").await;

    let failing = open_channel(&connection).await;
    let if_empty = QueueDeleteOptions { if_empty: true, ..QueueDeleteOptions::default() };
    let result = within("queue.delete", failing.queue_delete("not-empty", if_empty)).await;
    assert_reply_code(result, PRECONDITION_FAILED);
    let failing = &failing;
    poll_until("channel closed by the broker", RPC_TIMEOUT, move || async move { !failing.status().connected() }).await;

    // Only the channel closed: the connection and the queue are intact.
    assert!(connection.status().connected());
    assert_eq!(message_count(&channel, "not-empty").await, 1);
    let deleted = within("queue.delete", channel.queue_delete("not-empty", QueueDeleteOptions::default()))
        .await
        .expect("unconditional delete");
    assert_eq!(deleted, 1, "queue.delete-ok reports the messages deleted");
}

#[tokio::test]
async fn passive_declare_of_missing_queue_fails_with_not_found() {
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    assert_reply_code(try_declare(&channel, "no-such-queue", passive()).await, NOT_FOUND);
    let closed = &channel;
    poll_until("channel closed by the broker", RPC_TIMEOUT, move || async move { !closed.status().connected() }).await;

    assert!(connection.status().connected(), "a soft error closes only the channel");
    let fresh = open_channel(&connection).await;
    declare_queue(&fresh, "after-404").await;
}

#[tokio::test]
async fn exclusive_queue_is_locked_to_its_connection() {
    let broker = Broker::start();
    let owner = connect(&broker).await;
    let owner_channel = open_channel(&owner).await;
    try_declare(&owner_channel, "exclusive-q", exclusive()).await.expect("exclusive queue");

    // Each refusal closes the intruder's channel, so every attempt gets a fresh one.
    let intruder = connect(&broker).await;
    for options in [passive(), exclusive(), QueueDeclareOptions::default()] {
        let channel = open_channel(&intruder).await;
        let result = try_declare(&channel, "exclusive-q", options).await;
        assert_reply_code(result, RESOURCE_LOCKED);
    }
    let channel = open_channel(&intruder).await;
    let result =
        within("basic.consume", channel.basic_consume("exclusive-q", "intruder", no_ack(), FieldTable::default()))
            .await;
    assert_reply_code(result, RESOURCE_LOCKED);

    consume(&owner_channel, "exclusive-q", "owner", no_ack()).await;
    within("connection.close", owner.close(200, "done")).await.expect("close owner");
    // An exclusive queue is deleted with its connection.
    let intruder = &intruder;
    poll_until("exclusive queue deleted after owner closed", RPC_TIMEOUT, move || async move {
        let channel = open_channel(intruder).await;
        let result = try_declare(&channel, "exclusive-q", passive()).await;
        result.as_ref().err().and_then(reply_code) == Some(NOT_FOUND)
    })
    .await;
}

#[tokio::test]
async fn fifty_channels_on_one_connection_work_independently() {
    const CHANNELS: usize = 50;
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let mut channels = Vec::with_capacity(CHANNELS);
    for _ in 0..CHANNELS {
        channels.push(confirm_channel(&connection).await);
    }
    let ids: HashSet<u16> = channels.iter().map(Channel::id).collect();
    assert_eq!(ids.len(), CHANNELS, "every channel has its own id");

    let mut tasks = tokio::task::JoinSet::new();
    for (index, channel) in channels.into_iter().enumerate() {
        tasks.spawn(async move {
            let queue = format!("channel-queue-{index}");
            let body = format!("body-{index}");
            declare_queue(&channel, &queue).await;
            publish_plain(&channel, "", &queue, &body).await;
            let message = get_no_ack(&channel, &queue).await.expect("message on own queue");
            assert_eq!(message.delivery.data, body.as_bytes());
            channel
        });
    }
    let mut finished = Vec::with_capacity(CHANNELS);
    within("all channel tasks", async {
        while let Some(result) = tasks.join_next().await {
            finished.push(result.expect("channel task panicked"));
        }
    })
    .await;
    assert_eq!(finished.len(), CHANNELS);
    assert!(finished.iter().all(|channel| channel.status().connected()));
}

#[tokio::test]
async fn two_mebibyte_message_round_trips_byte_exact() {
    const BODY_BYTES: usize = 2 * 1024 * 1024;
    let broker = Broker::start();
    let connection = connect(&broker).await;
    let frame_max = connection.configuration().frame_max() as usize;
    assert!(frame_max < BODY_BYTES, "the body must span several frames (frame_max {frame_max})");
    let channel = confirm_channel(&connection).await;
    declare_queue(&channel, "large").await;
    // A pattern with period 251 (prime) catches dropped, duplicated or reordered frames.
    let body: Vec<u8> = (0..BODY_BYTES).map(|index| (index % 251) as u8).collect();

    let mut consumer = consume(&channel, "large", "large-consumer", no_ack()).await;
    publish_confirmed(&channel, "", "large", &body, BasicProperties::default()).await;
    let delivery = next_delivery(&mut consumer).await;
    assert_eq!(delivery.data.len(), BODY_BYTES);
    assert!(delivery.data == body, "2 MiB body differs after the round trip");
}

#[tokio::test]
async fn sigterm_closes_connections_with_connection_forced_and_exits() {
    const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
    let mut broker = Broker::start();
    let connection = connect(&broker).await;
    let channel = open_channel(&connection).await;
    declare_queue(&channel, "shutdown-q").await;
    let (error_sender, mut errors) = tokio::sync::mpsc::channel(8);
    connection.on_error(move |error| {
        let _ = error_sender.try_send(error);
    });

    let signalled = Instant::now();
    broker.terminate();
    let error = tokio::time::timeout(SHUTDOWN_TIMEOUT, errors.recv())
        .await
        .expect("no connection error within the shutdown timeout")
        .expect("error callback dropped");
    assert_eq!(reply_code(&error), Some(CONNECTION_FORCED), "connection error was {error:?}");

    let remaining = SHUTDOWN_TIMEOUT.saturating_sub(signalled.elapsed());
    let status = broker.wait_exit(remaining).expect("broker still running after SIGTERM");
    assert!(status.success(), "broker exited with {status}");
}

#[test]
fn silent_client_is_disconnected_after_two_missed_heartbeats() {
    // RabbitMQ closes the socket once two heartbeat intervals pass without any client traffic,
    // so with a 1 s heartbeat that is 2-3 s after our last frame. 4 s leaves scheduling slack.
    const HEARTBEAT_SECONDS: u16 = 1;
    const CLOSE_DEADLINE: Duration = Duration::from_secs(4);
    const CLOSE_EARLIEST: Duration = Duration::from_secs(1);
    let broker = Broker::start();
    let mut stream = raw::open_connection(broker.amqp_addr, HEARTBEAT_SECONDS);
    let silent_since = Instant::now();
    let mut heartbeats_received = 0;

    loop {
        let remaining = CLOSE_DEADLINE
            .checked_sub(silent_since.elapsed())
            .filter(|remaining| !remaining.is_zero())
            .unwrap_or_else(|| panic!("socket still open {CLOSE_DEADLINE:?} after going silent"));
        stream.set_read_timeout(Some(remaining)).expect("set read timeout");
        match raw::read_frame(&mut stream) {
            Ok(Some(frame)) if frame.frame_type == raw::FRAME_HEARTBEAT => heartbeats_received += 1,
            // The broker may say connection.close first; we stay silent and wait for the socket.
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
                ) =>
            {
                break
            }
            Err(error) if matches!(error.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                panic!("socket still open {CLOSE_DEADLINE:?} after going silent")
            }
            Err(error) => panic!("unexpected read error: {error}"),
        }
    }

    let closed_after = silent_since.elapsed();
    assert!(closed_after >= CLOSE_EARLIEST, "closed too early, after {closed_after:?}");
    assert!(heartbeats_received >= 1, "the broker sent no heartbeat before closing");
}
