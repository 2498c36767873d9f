//! HTTP/2 spoken frame by frame over real TLS, for what no well-behaved client sends:
//! stream floods, rapid resets, endless CONTINUATION frames. A task reads the server's
//! frames as they come, so a flood never stalls on a full socket buffer.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::client::TlsStream;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const CANCEL: u32 = 0x8;
pub const REFUSED_STREAM: u32 = 0x7;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame from the server.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let bytes = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes(bytes.try_into().ok()?))
    }
}

pub struct RawH2 {
    writer: WriteHalf<TlsStream<TcpStream>>,
    /// The server's frames; closed when the server closes the connection.
    pub frames: mpsc::UnboundedReceiver<Frame>,
}

/// Encodes one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn literal(out: &mut Vec<u8>, static_index: u8, value: &[u8]) {
    // Literal header field without indexing, name from the static table (RFC 7541 6.2.2).
    if static_index < 15 {
        out.push(static_index);
    } else {
        out.push(0x0f);
        out.push(static_index - 15);
    }
    integer(out, 7, 0, value.len());
    out.extend_from_slice(value);
}

fn integer(out: &mut Vec<u8>, prefix_bits: u32, first: u8, mut value: usize) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(first | u8::try_from(value).unwrap());
        return;
    }
    out.push(first | u8::try_from(max).unwrap());
    value -= max;
    while value >= 128 {
        out.push(u8::try_from(value % 128).unwrap() | 0x80);
        value /= 128;
    }
    out.push(u8::try_from(value).unwrap());
}

/// The header block of `POST /mutate` (HPACK, no Huffman, no dynamic table).
pub fn post_mutate() -> Vec<u8> {
    let mut block = vec![0x83, 0x87]; // :method POST, :scheme https
    literal(&mut block, 4, b"/mutate"); // :path
    literal(&mut block, 1, b"localhost"); // :authority
    literal(&mut block, 31, b"application/json"); // content-type
    block
}

/// A header `x-pad: <n bytes>` as a literal with a new name.
pub fn padding_header(n: usize) -> Vec<u8> {
    let mut block = vec![0x00];
    integer(&mut block, 7, 0, 5);
    block.extend_from_slice(b"x-pad");
    integer(&mut block, 7, 0, n);
    block.extend(std::iter::repeat_n(b'a', n));
    block
}

impl RawH2 {
    /// A TLS connection with ALPN h2, the client preface and an empty SETTINGS sent.
    pub async fn connect(addr: SocketAddr, ca_pem: &[u8]) -> std::io::Result<Self> {
        let tls = super::client::Client::new(ca_pem, super::client::Proto::H2)
            .connect_tls(addr)
            .await?;
        let (mut reader, writer) = tokio::io::split(tls);
        let (tx, frames) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut header = [0u8; 9];
            loop {
                if reader.read_exact(&mut header).await.is_err() {
                    return;
                }
                let len = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
                let mut payload = vec![0; len];
                if reader.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let frame = Frame {
                    kind: header[3],
                    flags: header[4],
                    stream: u32::from_be_bytes(header[5..9].try_into().unwrap()) & 0x7fff_ffff,
                    payload,
                };
                if tx.send(frame).is_err() {
                    return;
                }
            }
        });
        let mut raw = Self { writer, frames };
        let mut hello = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        raw.send(&hello).await?;
        Ok(raw)
    }

    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// Every frame until the server closes the connection or `within` passes; and
    /// whether it closed.
    pub async fn frames_until_closed(&mut self, within: std::time::Duration) -> (Vec<Frame>, bool) {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Ok(Some(frame)) => seen.push(frame),
                Ok(None) => return (seen, true),
                Err(_) => return (seen, false),
            }
        }
    }
}
