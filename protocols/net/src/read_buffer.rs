//! A read buffer sized to its connection's traffic. An idle connection (an MQTT device that
//! publishes once a minute, a browser tab) should hold a few hundred bytes, not the 64 KiB a busy
//! one wants for batching: with tens of thousands of connections, that difference is the
//! broker's memory. Reads that fill the buffer double the next reservation, up to the maximum;
//! an emptied buffer much larger than the current need is released.

use bytes::BytesMut;

#[derive(Debug)]
pub struct ReadSizer {
    /// Bytes to make room for before the next read.
    chunk: usize,
    /// Room there was before the last read, to tell whether that read filled it.
    room_before_read: usize,
}

impl Default for ReadSizer {
    fn default() -> Self {
        ReadSizer { chunk: ReadSizer::MIN_BYTES, room_before_read: 0 }
    }
}

impl ReadSizer {
    /// The smallest reservation: enough for a typical MQTT publish or STOMP frame.
    pub const MIN_BYTES: usize = 512;
    /// The largest reservation: a busy connection's batch.
    pub const MAX_BYTES: usize = 64 * 1024;

    pub fn new() -> ReadSizer {
        ReadSizer::default()
    }

    /// A new buffer of the smallest size.
    pub fn buffer() -> BytesMut {
        BytesMut::with_capacity(ReadSizer::MIN_BYTES)
    }

    /// Makes room in `buffer` for the next read (call right before it), releasing an emptied
    /// buffer that grew far beyond the current need.
    pub fn prepare(&mut self, buffer: &mut BytesMut) {
        if buffer.is_empty() && buffer.capacity() > 4 * self.chunk {
            *buffer = BytesMut::with_capacity(self.chunk);
        }
        if buffer.capacity() - buffer.len() < self.chunk / 2 {
            buffer.reserve(self.chunk);
        }
        self.room_before_read = buffer.capacity() - buffer.len();
    }

    /// Learns from a read of `read` bytes: a read that filled the room grows the next
    /// reservation; a read of a small fraction of it shrinks it.
    pub fn observe(&mut self, read: usize) {
        if read >= self.room_before_read {
            self.chunk = (self.chunk * 2).min(ReadSizer::MAX_BYTES);
        } else if read < self.chunk / 8 {
            self.chunk = (self.chunk / 2).max(ReadSizer::MIN_BYTES);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_under_load_and_shrinks_when_idle() {
        let mut sizer = ReadSizer::new();
        let mut buffer = ReadSizer::buffer();
        for _ in 0..10 {
            sizer.prepare(&mut buffer);
            let room = buffer.capacity() - buffer.len();
            buffer.extend_from_slice(&vec![0u8; room]);
            sizer.observe(room);
            buffer.clear();
        }
        assert_eq!(sizer.chunk, ReadSizer::MAX_BYTES);
        for _ in 0..10 {
            sizer.prepare(&mut buffer);
            sizer.observe(10);
        }
        assert_eq!(sizer.chunk, ReadSizer::MIN_BYTES);
        sizer.prepare(&mut buffer);
        assert!(buffer.capacity() <= 4 * ReadSizer::MIN_BYTES, "capacity {}", buffer.capacity());
    }
}
