//! Console output of one task attempt as sequenced chunks, kept until the
//! server says it stored them.
//!
//! The server's append is idempotent on `(task, seq)`, so everything not yet
//! acknowledged can be sent again after a reconnect: nothing is lost, and a
//! chunk stored twice is stored once.

use std::collections::VecDeque;
use std::sync::Arc;

use kiln_proto::v1::LogChunk;

#[derive(Debug)]
pub struct ChunkBuffer {
    task_id: i64,
    /// The attempt of the task the output is of.
    attempt: i64,
    max_chunk: usize,
    next_seq: i64,
    /// Sealed chunks the server has not acknowledged, in `seq` order. Shared,
    /// so a call copies each chunk only as it is sent rather than all at once.
    unacked: VecDeque<(i64, Arc<Vec<u8>>)>,
    /// Output not yet made into a chunk, so small writes are merged.
    open: Vec<u8>,
}

impl ChunkBuffer {
    /// A buffer whose chunks hold at most `max_chunk` bytes (at least one).
    pub fn new(task_id: i64, attempt: i64, max_chunk: usize) -> Self {
        ChunkBuffer {
            task_id,
            attempt,
            max_chunk: max_chunk.max(1),
            next_seq: 0,
            unacked: VecDeque::new(),
            open: Vec::new(),
        }
    }

    /// Adds output; full chunks are sealed as they fill up.
    pub fn write(&mut self, bytes: &[u8]) {
        self.open.extend_from_slice(bytes);
        while self.open.len() >= self.max_chunk {
            let rest = self.open.split_off(self.max_chunk);
            let chunk = std::mem::replace(&mut self.open, rest);
            self.push(chunk);
        }
    }

    /// Makes the pending output a chunk of its own, ready to send.
    pub fn seal(&mut self) {
        if !self.open.is_empty() {
            let chunk = std::mem::take(&mut self.open);
            self.push(chunk);
        }
    }

    fn push(&mut self, data: Vec<u8>) {
        self.unacked.push_back((self.next_seq, Arc::new(data)));
        self.next_seq += 1;
    }

    /// The `seq` the next sealed chunk will get: everything written so far
    /// is acknowledged once [`ChunkBuffer::acked_before`] says so for it.
    pub fn next_seq(&self) -> i64 {
        self.next_seq
    }

    /// Whether every chunk sealed before `seq` is acknowledged.
    pub fn acked_before(&self, seq: i64) -> bool {
        self.unacked.front().is_none_or(|(first, _)| *first >= seq)
    }

    /// Forgets every chunk up to and including `stored_through`; returns how
    /// many bytes of output that let go of.
    pub fn ack(&mut self, stored_through: i64) -> usize {
        let mut freed = 0;
        while self
            .unacked
            .front()
            .is_some_and(|(seq, _)| *seq <= stored_through)
        {
            if let Some((_, data)) = self.unacked.pop_front() {
                freed += data.len();
            }
        }
        freed
    }

    /// The sealed chunks still to be acknowledged, oldest first.
    pub fn unacked(&self) -> Vec<LogChunk> {
        self.batch(usize::MAX).into_chunks().collect()
    }

    /// The oldest unacknowledged chunks holding at most `max_bytes` of
    /// output, or just the oldest chunk when it alone is larger.
    pub fn batch(&self, max_bytes: usize) -> Batch {
        let mut total = 0;
        let chunks = self
            .unacked
            .iter()
            .enumerate()
            .take_while(|(index, (_, data))| {
                total += data.len();
                *index == 0 || total <= max_bytes
            })
            .map(|(_, (seq, data))| (*seq, data.clone()))
            .collect();
        Batch {
            task_id: self.task_id,
            attempt: self.attempt,
            chunks,
        }
    }

    pub fn has_unacked(&self) -> bool {
        !self.unacked.is_empty()
    }

    /// Whether nothing at all is waiting, sealed or not.
    pub fn is_empty(&self) -> bool {
        self.unacked.is_empty() && self.open.is_empty()
    }

    /// Drops everything: the task is no longer ours to report. Returns how
    /// many bytes of output that let go of.
    pub fn clear(&mut self) -> usize {
        let freed = self
            .unacked
            .iter()
            .map(|(_, data)| data.len())
            .sum::<usize>()
            + self.open.len();
        self.unacked.clear();
        self.open.clear();
        freed
    }
}

/// Chunks picked for one call; each is copied into a message only when the
/// call reaches it, so a call never doubles the memory the buffer holds.
#[derive(Debug)]
pub struct Batch {
    task_id: i64,
    attempt: i64,
    chunks: Vec<(i64, Arc<Vec<u8>>)>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    /// The `seq` after the batch's last chunk: the batch is stored once
    /// [`ChunkBuffer::acked_before`] says so for it.
    pub fn end(&self) -> Option<i64> {
        self.chunks.last().map(|(seq, _)| seq + 1)
    }

    pub fn into_chunks(self) -> impl Iterator<Item = LogChunk> + Send + 'static {
        let (task_id, attempt) = (self.task_id, self.attempt);
        self.chunks.into_iter().map(move |(seq, data)| LogChunk {
            task_id,
            attempt,
            seq,
            data: Arc::unwrap_or_clone(data),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seqs(buffer: &ChunkBuffer) -> Vec<i64> {
        buffer.unacked().iter().map(|c| c.seq).collect()
    }

    #[test]
    fn small_writes_merge_until_sealed() {
        let mut buffer = ChunkBuffer::new(7, 1, 1024);
        buffer.write(b"a");
        buffer.write(b"b");
        assert!(!buffer.has_unacked());
        buffer.seal();
        let chunks = buffer.unacked();
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].task_id, 7);
        assert_eq!(chunks[0].seq, 0);
        assert_eq!(chunks[0].data, b"ab");
        buffer.seal();
        assert_eq!(buffer.unacked().len(), 1, "sealing nothing adds no chunk");
    }

    #[test]
    fn large_writes_split_at_the_limit() {
        let mut buffer = ChunkBuffer::new(1, 1, 4);
        buffer.write(b"0123456789");
        buffer.seal();
        let data: Vec<Vec<u8>> = buffer.unacked().into_iter().map(|c| c.data).collect();
        assert_eq!(
            data,
            vec![b"0123".to_vec(), b"4567".to_vec(), b"89".to_vec()]
        );
        assert_eq!(seqs(&buffer), vec![0, 1, 2]);
    }

    #[test]
    fn ack_removes_and_resend_yields_the_rest_in_order() {
        let mut buffer = ChunkBuffer::new(1, 1, 1024);
        for text in ["one", "two", "three", "four"] {
            buffer.write(text.as_bytes());
            buffer.seal();
        }
        assert_eq!(seqs(&buffer), vec![0, 1, 2, 3]);
        buffer.ack(1);
        assert_eq!(seqs(&buffer), vec![2, 3]);
        // A stale acknowledgement changes nothing.
        buffer.ack(0);
        assert_eq!(seqs(&buffer), vec![2, 3]);
        // Resending yields the same chunks again, unchanged.
        let again = buffer.unacked();
        assert_eq!(again[0].data, b"three");
        assert_eq!(again[1].data, b"four");
        buffer.write(b"five");
        buffer.seal();
        assert_eq!(seqs(&buffer), vec![2, 3, 4]);
        buffer.ack(4);
        assert!(!buffer.has_unacked());
        assert!(buffer.is_empty());
    }

    #[test]
    fn batches_take_the_oldest_chunks_up_to_a_size() {
        let mut buffer = ChunkBuffer::new(1, 1, 4);
        buffer.write(b"0123456789");
        buffer.seal();
        let seqs_of = |batch: Batch| -> Vec<i64> { batch.into_chunks().map(|c| c.seq).collect() };
        assert_eq!(buffer.batch(8).end(), Some(2));
        assert_eq!(seqs_of(buffer.batch(8)), vec![0, 1]);
        assert_eq!(seqs_of(buffer.batch(9)), vec![0, 1]);
        assert_eq!(seqs_of(buffer.batch(10)), vec![0, 1, 2]);
        // A chunk larger than the limit still goes, alone.
        assert_eq!(seqs_of(buffer.batch(1)), vec![0]);
        assert_eq!(buffer.ack(0), 4, "acknowledging frees the chunk's bytes");
        assert_eq!(seqs_of(buffer.batch(8)), vec![1, 2]);
        assert!(buffer.acked_before(1));
        assert!(!buffer.acked_before(2));
        assert_eq!(buffer.ack(2), 6);
        assert!(buffer.batch(8).is_empty());
        assert_eq!(buffer.batch(8).end(), None);
        assert!(buffer.acked_before(buffer.next_seq()));
    }

    #[test]
    fn clearing_reports_what_it_freed() {
        let mut buffer = ChunkBuffer::new(1, 1, 4);
        buffer.write(b"012345");
        assert_eq!(buffer.clear(), 6, "sealed and open bytes alike");
        assert!(buffer.is_empty());
    }
}
