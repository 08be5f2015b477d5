//! A minimal blocking AMQP client: handshake, declare, publish batches, consume with acks.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use warren_amqp::codec::methods::{basic, channel, confirm, connection, queue};
use warren_amqp::codec::{self, Frame, Method, PROTOCOL_HEADER};
use warren_core::properties::Properties;
use warren_core::value::Table;

use crate::{Options, Shared};

const FRAME_MAX: u32 = 131_072;
/// Publishes per write.
const PUBLISH_BATCH: u64 = 256;

pub type Result<T> = std::result::Result<T, String>;

pub struct Client {
    socket: TcpStream,
    buffer: BytesMut,
}

impl Client {
    pub fn connect(addr: &str) -> Result<Client> {
        let socket = TcpStream::connect(addr).map_err(|error| format!("connect {addr}: {error}"))?;
        socket.set_nodelay(true).map_err(|error| error.to_string())?;
        let mut client = Client { socket, buffer: BytesMut::with_capacity(1 << 20) };
        client.write(PROTOCOL_HEADER)?;
        client.expect(|method| matches!(method, Method::ConnectionStart(_)))?;
        client.send(
            0,
            Method::ConnectionStartOk(connection::StartOk {
                client_properties: Table::new(),
                mechanism: "PLAIN".into(),
                response: Bytes::from_static(b"\0guest\0guest"),
                locale: "en_US".into(),
            }),
        )?;
        client.expect(|method| matches!(method, Method::ConnectionTune(_)))?;
        client.send(
            0,
            Method::ConnectionTuneOk(connection::TuneOk { channel_max: 16, frame_max: FRAME_MAX, heartbeat: 0 }),
        )?;
        client.send(0, Method::ConnectionOpen(connection::Open { virtual_host: "/".into(), ..Default::default() }))?;
        client.expect(|method| matches!(method, Method::ConnectionOpenOk(_)))?;
        client.send(1, Method::ChannelOpen(channel::Open::default()))?;
        client.expect(|method| matches!(method, Method::ChannelOpenOk(_)))?;
        Ok(client)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.socket.write_all(bytes).map_err(|error| format!("write: {error}"))
    }

    pub(crate) fn send(&mut self, channel: u16, method: Method) -> Result<()> {
        let mut out = BytesMut::new();
        codec::encode_method(&mut out, channel, &method);
        self.write(&out)
    }

    /// Reads until a whole frame is buffered.
    pub(crate) fn next_frame(&mut self) -> Result<Frame> {
        loop {
            if let Some(frame) = codec::decode(&mut self.buffer, FRAME_MAX).map_err(|error| error.to_string())? {
                return Ok(frame);
            }
            self.fill()?;
        }
    }

    fn fill(&mut self) -> Result<usize> {
        let mut chunk = [0u8; 65_536];
        let read = self.socket.read(&mut chunk).map_err(|error| format!("read: {error}"))?;
        if read == 0 {
            return Err("broker closed the connection".into());
        }
        self.buffer.extend_from_slice(&chunk[..read]);
        Ok(read)
    }

    pub(crate) fn expect(&mut self, wanted: impl Fn(&Method) -> bool) -> Result<Method> {
        loop {
            match self.next_frame()? {
                Frame::Method { method, .. } if wanted(&method) => return Ok(method),
                Frame::Method { method: Method::ConnectionClose(close), .. } => {
                    return Err(format!("connection closed: {} {}", close.reply_code, close.reply_text));
                }
                Frame::Method { method: Method::ChannelClose(close), .. } => {
                    return Err(format!("channel closed: {} {}", close.reply_code, close.reply_text));
                }
                _ => {}
            }
        }
    }

    pub fn declare_queue(&mut self, name: &str, durable: bool) -> Result<()> {
        self.send(1, Method::QueueDeclare(queue::Declare { queue: name.into(), durable, ..Default::default() }))?;
        self.expect(|method| matches!(method, Method::QueueDeclareOk(_)))?;
        Ok(())
    }

    pub fn delete_queue(&mut self, name: &str) -> Result<()> {
        self.send(1, Method::QueueDelete(queue::Delete { queue: name.into(), ..Default::default() }))?;
        self.expect(|method| matches!(method, Method::QueueDeleteOk(_)))?;
        Ok(())
    }

    /// Turns on publisher confirms and counts them, on a thread reading a clone of the socket,
    /// into `shared.confirmed`, until publishing stops and every publish is confirmed (or the
    /// connection goes).
    fn count_confirms(&mut self, shared: &std::sync::Arc<Shared>) -> Result<std::thread::JoinHandle<()>> {
        self.send(1, Method::ConfirmSelect(confirm::Select { nowait: false }))?;
        self.expect(|method| matches!(method, Method::ConfirmSelectOk(_)))?;
        let socket = self.socket.try_clone().map_err(|error| error.to_string())?;
        socket.set_read_timeout(Some(Duration::from_millis(50))).map_err(|error| error.to_string())?;
        let mut reader = Client { socket, buffer: std::mem::take(&mut self.buffer) };
        let shared = shared.clone();
        Ok(std::thread::spawn(move || loop {
            let done = shared.stop_publishing.load(Ordering::Acquire)
                && shared.confirmed.load(Ordering::Acquire) >= shared.sent.load(Ordering::Acquire);
            if done {
                return;
            }
            match codec::decode(&mut reader.buffer, FRAME_MAX) {
                Ok(Some(Frame::Method { method: Method::BasicAck(ack), .. })) => {
                    shared.confirmed.fetch_max(ack.delivery_tag, Ordering::AcqRel);
                }
                Ok(Some(Frame::Method { method: Method::BasicNack(nack), .. })) => {
                    eprintln!("publish {} nacked", nack.delivery_tag);
                    shared.confirmed.fetch_max(nack.delivery_tag, Ordering::AcqRel);
                }
                Ok(Some(_)) => {}
                Ok(None) => match reader.fill() {
                    Ok(_) => {}
                    Err(error) if error.contains("timed out") || error.contains("temporarily") => {}
                    Err(_) => return,
                },
                Err(_) => return,
            }
        }))
    }

    /// Publishes until told to stop: as fast as the in-flight window allows, or at a fixed rate.
    pub fn publish_loop(&mut self, queue: &str, options: &Options, shared: &std::sync::Arc<Shared>) -> Result<()> {
        let confirms = if options.confirm { Some(self.count_confirms(shared)?) } else { None };
        let method = Method::BasicPublish(basic::Publish { routing_key: queue.into(), ..Default::default() });
        let properties =
            Properties { delivery_mode: Some(if options.persistent { 2 } else { 1 }), ..Default::default() };
        let mut body = vec![0u8; options.size];
        let mut out = BytesMut::with_capacity(1 << 20);
        let started = Instant::now();
        let mut sent: u64 = 0;
        while !shared.stop_publishing.load(Ordering::Acquire) {
            let mut allowed = crate::allowance(options, shared, sent, started, PUBLISH_BATCH);
            if options.count > 0 {
                allowed = allowed.min(options.count - sent);
            }
            if allowed == 0 {
                continue;
            }
            out.clear();
            for index in sent..sent + allowed {
                // Backlog mode numbers its messages; otherwise a body carries its send time.
                let stamp = if options.count > 0 { index } else { shared.epoch.elapsed().as_nanos() as u64 };
                body[..8].copy_from_slice(&stamp.to_le_bytes());
                codec::encode_content(&mut out, 1, &method, &properties, &body, FRAME_MAX);
            }
            self.write(&out)?;
            sent += allowed;
            shared.sent.store(sent, Ordering::Release);
            if options.count > 0 && sent >= options.count {
                shared.stop_publishing.store(true, Ordering::Release);
            }
        }
        if let Some(confirms) = confirms {
            let _ = confirms.join();
        }
        Ok(())
    }

    /// Consumes until told to stop; returns the publish-to-consume latencies in nanoseconds.
    pub fn consume(&mut self, queue: &str, options: &Options, shared: &Shared) -> Result<Vec<u64>> {
        let manual = options.ack == "manual";
        if manual {
            self.send(1, Method::BasicQos(basic::Qos { prefetch_count: options.prefetch, ..Default::default() }))?;
            self.expect(|method| matches!(method, Method::BasicQosOk(_)))?;
        }
        let consume = basic::Consume { queue: queue.into(), no_ack: !manual, ..Default::default() };
        self.send(1, Method::BasicConsume(consume))?;
        self.expect(|method| matches!(method, Method::BasicConsumeOk(_)))?;
        self.socket.set_read_timeout(Some(Duration::from_millis(50))).map_err(|error| error.to_string())?;
        let mut latencies = Vec::with_capacity(1 << 20);
        let mut acks = BytesMut::with_capacity(1 << 16);
        let mut last_tag = 0;
        let mut received = 0u64;
        while !shared.stop_consuming.load(Ordering::Acquire) {
            loop {
                match codec::decode(&mut self.buffer, FRAME_MAX).map_err(|error| error.to_string())? {
                    Some(Frame::Method { method: Method::BasicDeliver(deliver), .. }) => {
                        last_tag = deliver.delivery_tag
                    }
                    Some(Frame::Body { payload, .. }) => {
                        let sent_at = u64::from_le_bytes(payload[..8].try_into().expect("body has a timestamp"));
                        let now = shared.epoch.elapsed().as_nanos() as u64;
                        if latencies.len() < latencies.capacity() {
                            latencies.push(now.saturating_sub(sent_at));
                        }
                        received += 1;
                        if manual {
                            let ack = Method::BasicAck(basic::Ack { delivery_tag: last_tag, multiple: false });
                            codec::encode_method(&mut acks, 1, &ack);
                        }
                    }
                    Some(Frame::Method { method: Method::ConnectionClose(close), .. }) => {
                        return Err(format!("connection closed: {} {}", close.reply_code, close.reply_text));
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            shared.received.store(received, Ordering::Release);
            if !acks.is_empty() {
                self.write(&acks)?;
                acks.clear();
            }
            match self.fill() {
                Ok(_) => {}
                Err(error)
                    if error.contains("timed out")
                        || error.contains("would block")
                        || error.contains("temporarily") => {}
                Err(error) => return Err(error),
            }
        }
        Ok(latencies)
    }
}
