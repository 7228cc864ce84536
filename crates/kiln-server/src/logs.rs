//! Reading a task's log by line: its line index ([`kiln_ui::log::LineIndex`])
//! and the bytes of any window of it, wherever the log lives.
//!
//! - A log still in the database (a running task's, or a small finished
//!   one's) is indexed in memory as its chunks are read: each request
//!   reads only the chunks added since the last one ([`LogIndexes`]). A
//!   server that restarts rebuilds it from the chunks (at most the
//!   database's share of a log, `Limits::max_log_bytes`).
//! - A log moved to the blob store has its index next to it, under
//!   [`index_key`], written as the log moves
//!   (`results::finalize_console`). A log moved before indexes existed
//!   gets one on its first view, read once from the blob store.
//!
//! So a window is one read of at most a checkpoint's span plus its lines,
//! and search scans the bytes from a line on with `memchr::memmem`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kiln_store::{Database, JobId, TaskId};
use kiln_ui::log::{Checkpoint, LineIndex};

use crate::error::{ApiError, ApiResult};
use crate::results::console_key;
use crate::state::AppState;

/// Chunks read from the database at a time (each at most 256 KiB).
const PAGE: usize = 16;
/// The most bytes one window reads: a window of very long lines shows
/// those that fit.
pub const MAX_WINDOW_BYTES: u64 = 8 << 20;
/// Bytes searched per read.
const SEARCH_BLOCK: u64 = 4 << 20;
/// Indexes of logs of the database and of the blob store kept in memory.
const KEPT: usize = 64;

/// Where the index of the console at blob `key` is kept.
pub fn index_key(key: &str) -> String {
    format!("{key}.index")
}

/// A log of the database as far as one reader got, which the next reader
/// waits for and goes on from.
type SharedDatabaseLog = Arc<tokio::sync::Mutex<DatabaseLog>>;

/// The line indexes this process keeps in memory.
#[derive(Default)]
pub struct LogIndexes {
    /// By task and attempt.
    database: Mutex<HashMap<(TaskId, i64), SharedDatabaseLog>>,
    blobs: Mutex<HashMap<String, Arc<LineIndex>>>,
}

/// A log in the database as far as it was read: its index, and where
/// each chunk read starts, to read a range of bytes back.
#[derive(Default)]
struct DatabaseLog {
    index: LineIndex,
    /// `(seq, offset)` of every chunk read, in order.
    chunks: Vec<(i64, u64)>,
}

/// A log opened for reading: its index as of now, and where it lives.
pub struct OpenLog {
    pub index: Arc<LineIndex>,
    place: Place,
}

enum Place {
    Database {
        task_id: TaskId,
        attempt: i64,
        chunks: Vec<(i64, u64)>,
        /// Where the log goes when its task ends.
        key: String,
    },
    Blob {
        key: String,
    },
    Empty,
}

/// Keeps at most `KEPT` entries: any one goes when full (an index is
/// cheap to get back).
fn keep<K: std::hash::Hash + Eq + Clone, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= KEPT && !map.contains_key(&key) {
        let gone = map.keys().next().cloned();
        if let Some(gone) = gone {
            map.remove(&gone);
        }
    }
    map.insert(key, value);
}

/// Opens the log of `attempt` of the task.
pub async fn open<D: Database>(
    state: &AppState<D>,
    job_id: JobId,
    run: i64,
    task_id: TaskId,
    attempt: i64,
) -> ApiResult<OpenLog> {
    let in_database = state.db.log_size(task_id, attempt).await?;
    if in_database > 0 {
        let key = console_key(job_id, run, task_id, attempt);
        if let Some(log) = open_in_database(state, task_id, attempt, in_database, key).await? {
            return Ok(log);
        }
        // It moved to the blob store while it was read.
    }
    let key = console_key(job_id, run, task_id, attempt);
    let cached = state
        .log_indexes
        .blobs
        .lock()
        .ok()
        .and_then(|m| m.get(&key).cloned());
    if let Some(index) = cached {
        return Ok(OpenLog {
            index,
            place: Place::Blob { key },
        });
    }
    let size = match state.blobs.size(&key).await {
        Ok(size) => size,
        Err(kiln_blob::BlobError::NotFound(_)) => 0,
        Err(e) => return Err(ApiError::internal(e)),
    };
    if size == 0 {
        return Ok(OpenLog {
            index: Arc::new(LineIndex::new()),
            place: Place::Empty,
        });
    }
    let stored = match state.blobs.get(&index_key(&key)).await {
        Ok(text) => std::str::from_utf8(&text)
            .ok()
            .and_then(|text| LineIndex::from_text(text).ok())
            .filter(|index| index.length() == size),
        Err(kiln_blob::BlobError::NotFound(_)) => None,
        Err(e) => return Err(ApiError::internal(e)),
    };
    let index = match stored {
        Some(index) => index,
        None => {
            // A log moved before indexes were kept (or whose index is
            // unreadable): read it once, and keep the index next to it.
            let index = index_blob(state, &key).await?;
            if let Err(e) = state
                .blobs
                .put(&index_key(&key), index.to_text().into_bytes())
                .await
            {
                tracing::warn!(key, error = %e, "could not keep a log's line index");
            }
            index
        }
    };
    let index = Arc::new(index);
    if let Ok(mut blobs) = state.log_indexes.blobs.lock() {
        keep(&mut blobs, key.clone(), index.clone());
    }
    Ok(OpenLog {
        index,
        place: Place::Blob { key },
    })
}

/// The index of the log at blob `key`, read whole as a stream.
async fn index_blob<D: Database>(state: &AppState<D>, key: &str) -> ApiResult<LineIndex> {
    use futures_util::StreamExt;
    let mut stream = state
        .blobs
        .get_stream(key)
        .await
        .map_err(ApiError::internal)?;
    let mut index = LineIndex::new();
    while let Some(bytes) = stream.next().await {
        index.feed(&bytes.map_err(ApiError::internal)?);
    }
    Ok(index)
}

async fn open_in_database<D: Database>(
    state: &AppState<D>,
    task_id: TaskId,
    attempt: i64,
    size: u64,
    key: String,
) -> ApiResult<Option<OpenLog>> {
    let entry = {
        let mut logs = state
            .log_indexes
            .database
            .lock()
            .map_err(|_| ApiError::internal("the log index cache is poisoned"))?;
        match logs.get(&(task_id, attempt)) {
            Some(entry) => entry.clone(),
            None => {
                let entry = Arc::new(tokio::sync::Mutex::new(DatabaseLog::default()));
                keep(&mut logs, (task_id, attempt), entry.clone());
                entry
            }
        }
    };
    let mut log = entry.lock().await;
    // The log only grows while it is in the database; a shorter one is
    // another (a rerun's attempt cannot share the key), so start again.
    if log.index.length() > size {
        *log = DatabaseLog::default();
    }
    for _ in 0..2 {
        read_new_chunks(state, task_id, attempt, &mut log).await?;
        if log.index.length() == size {
            break;
        }
        // Chunks stored out of order since the last read (a retried
        // upload): the index is of another byte sequence; read it again.
        if log.index.length() != size {
            *log = DatabaseLog::default();
        }
    }
    if log.index.length() < size && state.db.log_size(task_id, attempt).await? == 0 {
        *log = DatabaseLog::default();
        return Ok(None);
    }
    Ok(Some(OpenLog {
        index: Arc::new(log.index.clone()),
        place: Place::Database {
            task_id,
            attempt,
            chunks: log.chunks.clone(),
            key,
        },
    }))
}

async fn read_new_chunks<D: Database>(
    state: &AppState<D>,
    task_id: TaskId,
    attempt: i64,
    log: &mut DatabaseLog,
) -> ApiResult<()> {
    loop {
        // An agent picks the numbers: the last may be `i64::MAX`, read
        // again by `from` then, and left out as read.
        let read = log.chunks.last().map(|&(seq, _)| seq);
        let from = read.map_or(0, |seq| seq.saturating_add(1));
        let chunks = state.db.read_log(task_id, attempt, from, PAGE).await?;
        let new: Vec<(i64, Vec<u8>)> = chunks
            .into_iter()
            .filter(|(seq, _)| read.is_none_or(|read| *seq > read))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        for (seq, data) in new {
            log.chunks.push((seq, log.index.length()));
            log.index.feed(&data);
        }
    }
}

impl OpenLog {
    /// The bytes `range` of the log (fewer at its end).
    pub async fn read<D: Database>(
        &self,
        state: &AppState<D>,
        range: std::ops::Range<u64>,
    ) -> ApiResult<Vec<u8>> {
        let end = range.end.min(self.index.length());
        if range.start >= end {
            return Ok(Vec::new());
        }
        match &self.place {
            Place::Empty => Ok(Vec::new()),
            Place::Blob { key } => Ok(state
                .blobs
                .get_range(key, range.start..end)
                .await
                .map_err(ApiError::internal)?
                .to_vec()),
            Place::Database {
                task_id,
                attempt,
                chunks,
                key,
            } => {
                let first = chunks
                    .partition_point(|&(_, offset)| offset <= range.start)
                    .saturating_sub(1);
                let Some(&(mut seq, mut offset)) = chunks.get(first) else {
                    return Ok(Vec::new());
                };
                let mut out = Vec::with_capacity((end - range.start) as usize);
                'pages: loop {
                    let page = state.db.read_log(*task_id, *attempt, seq, PAGE).await?;
                    let Some(&(last, _)) = page.last() else {
                        break;
                    };
                    for (_, data) in page {
                        let chunk_end = offset + data.len() as u64;
                        let from = range.start.max(offset);
                        let to = end.min(chunk_end);
                        if from < to {
                            out.extend_from_slice(
                                &data[(from - offset) as usize..(to - offset) as usize],
                            );
                        }
                        offset = chunk_end;
                        if offset >= end {
                            break 'pages;
                        }
                    }
                    if last == i64::MAX {
                        break;
                    }
                    seq = last + 1;
                }
                if (out.len() as u64) < end - range.start {
                    // The task ended and its log moved to the blob store
                    // while this was read: it is whole there, before its
                    // chunks go.
                    return Ok(state
                        .blobs
                        .get_range(key, range.start..end)
                        .await
                        .map_err(ApiError::internal)?
                        .to_vec());
                }
                Ok(out)
            }
        }
    }

    /// Lines `from..to` rendered (those of them that exist, and fit in
    /// [`MAX_WINDOW_BYTES`]).
    pub async fn window<D: Database>(
        &self,
        state: &AppState<D>,
        from: u64,
        to: u64,
    ) -> ApiResult<Vec<kiln_ui::log::LogLine>> {
        let index = &self.index;
        let from = from.max(1);
        let to = to.min(index.lines() + 1);
        if from >= to {
            return Ok(Vec::new());
        }
        let start = index.checkpoint_for_line(from);
        // Up to the checkpoint after the one of the last line wanted: that
        // line is whole in what is read.
        let last = index.checkpoint_for_line(to - 1);
        let end = index
            .checkpoint_after(last)
            .map_or(index.length(), |c| c.offset)
            .min(start.offset + MAX_WINDOW_BYTES);
        let bytes = self.read(state, start.offset..end).await?;
        let at_end = end >= index.length();
        Ok(kiln_ui::log::window(&bytes, start, from, to, at_end))
    }

    /// Where line `line` starts (the log's length past its last line).
    async fn line_start<D: Database>(&self, state: &AppState<D>, line: u64) -> ApiResult<u64> {
        let index = &self.index;
        if line > index.lines() {
            return Ok(index.length());
        }
        let checkpoint = index.checkpoint_for_line(line);
        let mut offset = checkpoint.offset;
        let mut number = checkpoint.line;
        while number < line {
            let block = self.read(state, offset..offset + SEARCH_BLOCK).await?;
            if block.is_empty() {
                return Ok(index.length());
            }
            let need = (line - number) as usize;
            match memchr::memchr_iter(b'\n', &block).nth(need - 1) {
                Some(at) => return Ok(offset + at as u64 + 1),
                None => {
                    number += memchr::memchr_iter(b'\n', &block).count() as u64;
                    offset += block.len() as u64;
                }
            }
        }
        Ok(offset)
    }

    /// The number of the line byte `at` is in.
    async fn line_of<D: Database>(&self, state: &AppState<D>, at: u64) -> ApiResult<u64> {
        let checkpoint: &Checkpoint = self.index.checkpoint_for_offset(at);
        let mut number = checkpoint.line;
        let mut offset = checkpoint.offset;
        while offset < at {
            let block = self
                .read(state, offset..at.min(offset + SEARCH_BLOCK))
                .await?;
            if block.is_empty() {
                break;
            }
            number += memchr::memchr_iter(b'\n', &block).count() as u64;
            offset += block.len() as u64;
        }
        Ok(number)
    }

    /// The first line after `line` (or the last before it, `backwards`)
    /// that holds `needle`, ignoring ASCII case. The bytes are searched as
    /// stored, so a word split by a colour code is not found.
    pub async fn search<D: Database>(
        &self,
        state: &AppState<D>,
        needle: &str,
        line: u64,
        backwards: bool,
    ) -> ApiResult<Option<u64>> {
        let needle = needle.as_bytes().to_ascii_lowercase();
        if needle.is_empty() {
            return Ok(None);
        }
        let overlap = needle.len() as u64 - 1;
        let length = self.index.length();
        if backwards {
            let finder = memchr::memmem::FinderRev::new(&needle);
            let mut end = self.line_start(state, line).await?;
            while end > 0 {
                let start = end.saturating_sub(SEARCH_BLOCK);
                let mut block = self.read(state, start..(end + overlap).min(length)).await?;
                block.make_ascii_lowercase();
                // The block runs `overlap` past `end`: just enough for a
                // match that starts before `end`, not for one after it.
                if let Some(at) = finder.rfind(&block) {
                    return Ok(Some(self.line_of(state, start + at as u64).await?));
                }
                end = start;
            }
            Ok(None)
        } else {
            let finder = memchr::memmem::Finder::new(&needle);
            let mut start = self.line_start(state, line.saturating_add(1)).await?;
            while start < length {
                let end = (start + SEARCH_BLOCK + overlap).min(length);
                let mut block = self.read(state, start..end).await?;
                block.make_ascii_lowercase();
                if let Some(at) = finder.find(&block) {
                    return Ok(Some(self.line_of(state, start + at as u64).await?));
                }
                start += SEARCH_BLOCK;
            }
            Ok(None)
        }
    }
}

/// Feeds the pieces of a log moving to the blob store into its index, to
/// keep the index next to it once it is there.
#[derive(Clone, Default)]
pub struct Indexer(Arc<Mutex<LineIndex>>);

impl Indexer {
    pub fn feed(&self, bytes: &[u8]) {
        if let Ok(mut index) = self.0.lock() {
            index.feed(bytes);
        }
    }

    pub fn text(&self) -> Option<String> {
        self.0.lock().ok().map(|index| index.to_text())
    }
}
