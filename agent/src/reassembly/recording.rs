//! A `StreamSink` that keeps every call, for tests and fuzzers of this and later stages.

use super::{StreamEnd, StreamKey, StreamSink};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordedEvent {
    Data(StreamKey, Vec<u8>),
    Gap(StreamKey, u64),
    End(StreamKey, StreamEnd),
    Distrust(StreamKey),
}

#[derive(Clone, Debug, Default)]
pub struct RecordingSink {
    pub events: Vec<RecordedEvent>,
}

impl RecordingSink {
    /// Streams in the order they first appeared.
    pub fn streams(&self) -> Vec<StreamKey> {
        let mut keys: Vec<StreamKey> = Vec::new();
        for event in &self.events {
            let key = match event {
                RecordedEvent::Data(k, _)
                | RecordedEvent::Gap(k, _)
                | RecordedEvent::End(k, _)
                | RecordedEvent::Distrust(k) => *k,
            };
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
        keys
    }

    /// One stream's events with adjacent data joined: `Data`/`Gap` runs and its ends.
    pub fn stream(&self, key: StreamKey) -> Vec<RecordedEvent> {
        let mut out: Vec<RecordedEvent> = Vec::new();
        for event in &self.events {
            match event {
                RecordedEvent::Data(k, bytes) if *k == key => match out.last_mut() {
                    Some(RecordedEvent::Data(_, prev)) => prev.extend_from_slice(bytes),
                    _ => out.push(event.clone()),
                },
                RecordedEvent::Gap(k, n) if *k == key => match out.last_mut() {
                    Some(RecordedEvent::Gap(_, prev)) => *prev += n,
                    _ => out.push(event.clone()),
                },
                RecordedEvent::End(k, _) | RecordedEvent::Distrust(k) if *k == key => {
                    out.push(event.clone())
                }
                _ => {}
            }
        }
        out
    }

    /// Every delivered byte of a stream, gaps left out.
    pub fn bytes(&self, key: StreamKey) -> Vec<u8> {
        let mut out = Vec::new();
        for event in &self.events {
            if let RecordedEvent::Data(k, bytes) = event {
                if *k == key {
                    out.extend_from_slice(bytes);
                }
            }
        }
        out
    }

    /// How each stream ended, in order.
    pub fn ends(&self, key: StreamKey) -> Vec<StreamEnd> {
        self.events
            .iter()
            .filter_map(|e| match e {
                RecordedEvent::End(k, how) if *k == key => Some(*how),
                _ => None,
            })
            .collect()
    }
}

impl StreamSink for RecordingSink {
    fn data(&mut self, stream: StreamKey, _ts_nanos: u64, bytes: &[u8]) {
        self.events
            .push(RecordedEvent::Data(stream, bytes.to_vec()));
    }

    fn gap(&mut self, stream: StreamKey, _ts_nanos: u64, missing: u64) {
        self.events.push(RecordedEvent::Gap(stream, missing));
    }

    fn end(&mut self, stream: StreamKey, _ts_nanos: u64, how: StreamEnd) {
        self.events.push(RecordedEvent::End(stream, how));
    }

    fn distrust(&mut self, stream: StreamKey, _ts_nanos: u64) {
        self.events.push(RecordedEvent::Distrust(stream));
    }
}
