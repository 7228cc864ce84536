//! Bridges between the blocking `tar` crate and the engine's async byte
//! streams, so neither a workspace nor an artifact is ever held in memory whole.

use std::io::{self, Read, Write};

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

const CHUNK: usize = 256 * 1024;

/// Writes what a blocking job produces into an async request body.
pub(super) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Vec<u8>>>,
    buffer: Vec<u8>,
}

impl ChannelWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buffer, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the engine stopped reading"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Runs `produce` on a blocking thread and returns the stream of what it
/// writes (for [`bollard::body_try_stream`]), plus the job's own result: when
/// the body is cut short, the job's error says why far better than the engine's.
pub(super) fn stream_from_blocking<F>(
    produce: F,
) -> (
    impl Stream<Item = io::Result<Vec<u8>>> + Send + 'static,
    JoinHandle<io::Result<()>>,
)
where
    F: FnOnce(&mut ChannelWriter) -> io::Result<()> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    let job = tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx: tx.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        let result = produce(&mut writer).and_then(|()| writer.flush());
        if let Err(e) = &result {
            // Fail the body too, so the engine does not take a truncated tar for a whole one.
            let _ = tx.blocking_send(Err(io::Error::new(e.kind(), e.to_string())));
        }
        result
    });
    let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (chunks, job)
}

/// Reads, on a blocking thread, what an async response body delivers.
pub(super) struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Vec<u8>>>,
    current: Vec<u8>,
    at: usize,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.at == self.current.len() {
            match self.rx.blocking_recv() {
                Some(Ok(chunk)) => {
                    self.current = chunk;
                    self.at = 0;
                }
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.current.len() - self.at);
        out[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Why [`consume_blocking`] failed.
pub(super) enum Consumed<E> {
    /// The body itself failed, e.g. the engine answered with an error.
    Body(E),
    /// The consumer failed, or the body ended before it was done.
    Consumer(io::Error),
}

/// Feeds `body` to `consume` running on a blocking thread and returns the
/// consumer's result.
pub(super) async fn consume_blocking<S, B, E, T, F>(body: S, consume: F) -> Result<T, Consumed<E>>
where
    S: Stream<Item = Result<B, E>> + Send,
    B: AsRef<[u8]>,
    T: Send + 'static,
    F: FnOnce(&mut ChannelReader) -> io::Result<T> + Send + 'static,
{
    let (tx, rx) = mpsc::channel::<io::Result<Vec<u8>>>(4);
    let job = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader {
            rx,
            current: Vec::new(),
            at: 0,
        };
        let result = consume(&mut reader);
        // The feeding side must never wait on a consumer that gave up.
        reader.rx.close();
        result
    });
    let mut body_error = None;
    {
        let mut body = std::pin::pin!(body);
        while let Some(item) = body.next().await {
            let chunk = match item {
                Ok(bytes) => Ok(bytes.as_ref().to_vec()),
                Err(e) => {
                    body_error = Some(e);
                    Err(io::Error::other("the engine's answer was cut short"))
                }
            };
            if tx.send(chunk).await.is_err() || body_error.is_some() {
                break;
            }
        }
    }
    drop(tx);
    let result = job
        .await
        .map_err(|e| Consumed::Consumer(io::Error::other(format!("reading an archive: {e}"))))?;
    match body_error {
        Some(e) => Err(Consumed::Body(e)),
        None => result.map_err(Consumed::Consumer),
    }
}
