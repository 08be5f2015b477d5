//! STOMP headers ⇄ message properties, as RabbitMQ's STOMP plugin maps them: the standard
//! AMQP properties have header names of their own, `persistent:true` is delivery mode 2, and any
//! other header travels as an AMQP header (string-valued).

use warren_core::properties::Properties;
use warren_core::value::{Table, Value};

use crate::codec::Frame;

/// Headers that describe the frame itself, never copied into a message.
const FRAME_HEADERS: [&str; 8] =
    ["destination", "content-length", "receipt", "transaction", "message-id", "subscription", "ack", "id"];

/// Message properties from a SEND frame's headers.
pub fn properties(frame: &Frame) -> Properties {
    let mut properties = Properties::default();
    let mut headers = Table::new();
    for (name, value) in &frame.headers {
        let value = value.clone();
        match name.as_str() {
            "content-type" => properties.content_type = Some(value),
            "content-encoding" => properties.content_encoding = Some(value),
            "persistent" => properties.delivery_mode = Some(if value == "true" { 2 } else { 1 }),
            "priority" => properties.priority = value.parse().ok(),
            "correlation-id" => properties.correlation_id = Some(value),
            "reply-to" => properties.reply_to = Some(value),
            "expiration" => properties.expiration = Some(value),
            "amqp-message-id" => properties.message_id = Some(value),
            "timestamp" => properties.timestamp = value.parse().ok(),
            "type" => properties.kind = Some(value),
            "user-id" => properties.user_id = Some(value),
            "app-id" => properties.app_id = Some(value),
            name if FRAME_HEADERS.contains(&name) => {}
            name if headers.get(name).is_none() => headers.insert(name, Value::string(&value)),
            _ => {}
        }
    }
    if !headers.is_empty() {
        properties.headers = Some(headers);
    }
    properties
}

/// A MESSAGE frame's headers for a message's properties.
pub fn headers(properties: &Properties, frame: Frame) -> Frame {
    let mut frame = frame;
    let mut add = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            frame.headers.push((name.to_owned(), value));
        }
    };
    add("content-type", properties.content_type.clone());
    add("content-encoding", properties.content_encoding.clone());
    add("persistent", (properties.delivery_mode == Some(2)).then(|| "true".to_owned()));
    add("priority", properties.priority.map(|priority| priority.to_string()));
    add("correlation-id", properties.correlation_id.clone());
    add("reply-to", properties.reply_to.clone());
    add("expiration", properties.expiration.clone());
    add("amqp-message-id", properties.message_id.clone());
    add("timestamp", properties.timestamp.map(|timestamp| timestamp.to_string()));
    add("type", properties.kind.clone());
    add("user-id", properties.user_id.clone());
    add("app-id", properties.app_id.clone());
    if let Some(table) = &properties.headers {
        for (name, value) in table.iter() {
            if FRAME_HEADERS.contains(&name) {
                continue;
            }
            let text = value.as_str().map(str::to_owned).or_else(|| value.as_i64().map(|number| number.to_string()));
            add(name, text);
        }
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_through_properties() {
        let send = Frame::new("SEND")
            .with("destination", "/queue/a")
            .with("persistent", "true")
            .with("content-type", "text/plain")
            .with("correlation-id", "c1")
            .with("x-custom", "yes");
        let properties = properties(&send);
        assert_eq!(properties.delivery_mode, Some(2));
        assert_eq!(properties.headers.as_ref().and_then(|h| h.get("x-custom")).and_then(Value::as_str), Some("yes"));
        let message = headers(&properties, Frame::new("MESSAGE"));
        assert_eq!(message.header("persistent"), Some("true"));
        assert_eq!(message.header("x-custom"), Some("yes"));
        assert_eq!(message.header("destination"), None);
    }
}
