//! A bus client: one Unix-socket connection to the broker (a named pipe on
//! Windows, `bus::pipe`), split into a writer (`BusWriter`) and a reader
//! (`BusReader`) so that a collector can publish from one task while
//! another reads acks and requests.

use std::path::Path;

use futures_util::{SinkExt, StreamExt};
#[cfg(unix)]
use tokio::net::UnixStream;
#[cfg(unix)]
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::protocol::{self, Envelope, FrameKind, ProtocolError};

#[cfg(windows)]
type OwnedReadHalf = tokio::io::ReadHalf<tokio::net::windows::named_pipe::NamedPipeClient>;
#[cfg(windows)]
type OwnedWriteHalf = tokio::io::WriteHalf<tokio::net::windows::named_pipe::NamedPipeClient>;

#[derive(Debug)]
pub struct BusWriter {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
}

#[derive(Debug)]
pub struct BusReader {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
}

/// Connects to the broker at `path`.
pub async fn connect(path: &Path) -> std::io::Result<(BusWriter, BusReader)> {
    #[cfg(unix)]
    let (r, w) = UnixStream::connect(path).await?.into_split();
    #[cfg(windows)]
    let (r, w) = tokio::io::split(super::pipe::connect(path).await?);
    Ok((
        BusWriter {
            inner: FramedWrite::new(w, protocol::frame_codec()),
        },
        BusReader {
            inner: FramedRead::new(r, protocol::frame_codec()),
        },
    ))
}

impl BusWriter {
    /// Queues a frame without flushing (see `flush`).
    pub async fn feed(&mut self, envelope: &Envelope) -> Result<(), ProtocolError> {
        self.inner.feed(protocol::encode(envelope)?).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), ProtocolError> {
        SinkExt::<bytes::Bytes>::flush(&mut self.inner).await?;
        Ok(())
    }

    /// Sends one frame now.
    pub async fn send(&mut self, envelope: &Envelope) -> Result<(), ProtocolError> {
        self.inner.send(protocol::encode(envelope)?).await?;
        Ok(())
    }

    pub async fn subscribe(
        &mut self,
        pattern: &str,
        correlation_id: u64,
    ) -> Result<(), ProtocolError> {
        self.send(&Envelope::new(
            FrameKind::Subscribe,
            pattern,
            correlation_id,
            Vec::new(),
        ))
        .await
    }
}

impl BusReader {
    /// The next frame; `None` when the broker closed the connection.
    pub async fn next(&mut self) -> Option<Result<Envelope, ProtocolError>> {
        let frame = self.inner.next().await?;
        Some(
            frame
                .map_err(ProtocolError::from)
                .and_then(|f| protocol::decode(&f)),
        )
    }
}
