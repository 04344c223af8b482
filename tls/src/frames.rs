//! Length-prefixed frames over an upgraded connection: the transport of the
//! agents' heartbeat stream (`GET /v1/agent/stream`, then `101 Switching
//! Protocols` to [`PROTOCOL`]).
//!
//! A frame is a kind byte, a big-endian `u32` payload length, and the
//! payload. The reader refuses a frame longer than the caller's cap before
//! reading its payload, so a broken or hostile peer cannot make either side
//! buffer without end; the payload is what the unary endpoint carries in a
//! body (a `proto::encode`d heartbeat or reply), or an error message.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The path an agent opens its heartbeat stream on.
pub const PATH: &str = "/v1/agent/stream";
/// The `Upgrade:` protocol of the heartbeat stream.
pub const PROTOCOL: &str = "supervisor-heartbeat/1";
/// Bytes before a frame's payload.
pub const HEADER: usize = 5;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Agent to supervisor: an encoded `Heartbeat`.
    Heartbeat = 1,
    /// Supervisor to agent: an encoded `HeartbeatReply`.
    Reply = 2,
    /// Supervisor to agent: why the stream ends (UTF-8); nothing follows.
    Error = 3,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Heartbeat),
            2 => Some(Kind::Reply),
            3 => Some(Kind::Error),
            _ => None,
        }
    }
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("the connection failed: {0}")]
    Io(#[from] io::Error),
    #[error("a frame of {len} bytes is over the {max} bytes allowed")]
    TooLarge { len: usize, max: usize },
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
}

/// The header of a frame of `kind` carrying `len` bytes.
pub fn header(kind: Kind, len: usize) -> [u8; HEADER] {
    let len = u32::try_from(len).unwrap_or(u32::MAX).to_be_bytes();
    [kind as u8, len[0], len[1], len[2], len[3]]
}

/// Reads a header: its kind and payload length, at most `max`.
pub fn parse_header(h: [u8; HEADER], max: usize) -> Result<(Kind, usize), FrameError> {
    let kind = Kind::from_byte(h[0]).ok_or(FrameError::UnknownKind(h[0]))?;
    let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    Ok((kind, len))
}

/// Reads the next frame of at most `max` payload bytes; `None` at a clean
/// end of the stream (between frames).
pub async fn read<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
) -> Result<Option<(Kind, Vec<u8>)>, FrameError> {
    let mut h = [0u8; HEADER];
    // The first byte tells a clean end from a cut frame.
    if io.read(&mut h[..1]).await? == 0 {
        return Ok(None);
    }
    io.read_exact(&mut h[1..]).await?;
    let (kind, len) = parse_header(h, max)?;
    let mut payload = vec![0u8; len];
    io.read_exact(&mut payload).await?;
    Ok(Some((kind, payload)))
}

/// Writes one frame and flushes it (one write for header and payload).
pub async fn write<W: AsyncWrite + Unpin>(
    io: &mut W,
    kind: Kind,
    payload: &[u8],
) -> io::Result<()> {
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    buf.extend_from_slice(&header(kind, payload.len()));
    buf.extend_from_slice(payload);
    io.write_all(&buf).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            write(&mut a, Kind::Heartbeat, b"one").await.expect("write");
            write(&mut a, Kind::Reply, b"").await.expect("write");
            write(&mut a, Kind::Error, &[9u8; 200])
                .await
                .expect("write");
        });
        assert_eq!(
            read(&mut b, 1024).await.expect("read"),
            Some((Kind::Heartbeat, b"one".to_vec()))
        );
        assert_eq!(
            read(&mut b, 1024).await.expect("read"),
            Some((Kind::Reply, vec![]))
        );
        assert_eq!(
            read(&mut b, 1024).await.expect("read"),
            Some((Kind::Error, vec![9u8; 200]))
        );
        writer.await.expect("writer");
        assert_eq!(read(&mut b, 1024).await.expect("clean end"), None);
    }

    #[tokio::test]
    async fn an_oversized_or_unknown_or_cut_frame_is_an_error() {
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&header(Kind::Heartbeat, 2000))
            .await
            .expect("w");
        let e = read(&mut b, 1000).await.expect_err("too large");
        assert!(
            e.to_string()
                .contains("a frame of 2000 bytes is over the 1000 bytes allowed"),
            "{e}"
        );
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[7, 0, 0, 0, 1, 0]).await.expect("w");
        let e = read(&mut b, 1000).await.expect_err("unknown kind");
        assert!(e.to_string().contains("unknown frame kind 7"), "{e}");
        let (mut a, mut b) = tokio::io::duplex(64);
        a.write_all(&[1, 0, 0, 0, 9, 1, 2]).await.expect("w");
        drop(a);
        assert!(matches!(
            read(&mut b, 1000).await,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }
}
