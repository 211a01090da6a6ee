//! Finished build logs over HTTP: stored zstd-compressed
//! (`<version>.<n>.log.zst`, the content size in the frame header), sent
//! as they are with `Content-Encoding: zstd` when the request's
//! `Accept-Encoding` allows it, else decompressed on the fly. Either way
//! the body is streamed in chunks of [`CHUNK`] with its `Content-Length`
//! known up front, so a large log never sits in memory whole: each chunk
//! is read on a blocking thread only once the one before was taken, and
//! no thread waits on a slow client. Logs are opened only as the daemon's
//! own regular files, never through a link ([`open`]).

use std::convert::Infallible;
use std::io::Read;
use std::path::Path;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, VARY};
use hyper::{Response, StatusCode};
use tokio::sync::mpsc;

use crate::serve::status::LogFile;

/// Bytes read or decompressed at a time.
pub const CHUNK: usize = 64 * 1024;

type Body = BoxBody<Bytes, Infallible>;

/// True when an `Accept-Encoding` header admits `zstd` (named with a
/// non-zero q-value, or through `*` without `zstd;q=0`).
pub fn accepts_zstd(accept_encoding: Option<&HeaderValue>) -> bool {
    let Some(v) = accept_encoding.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut star = false;
    for item in v.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let coding = parts.next().unwrap_or("").to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match coding.as_str() {
            "zstd" => return q > 0.0,
            "*" => star = q > 0.0,
            _ => {}
        }
    }
    star
}

/// Opens a log file for reading, never through a symbolic link
/// (`O_NOFOLLOW`) and never waiting on a FIFO (`O_NONBLOCK`); anything
/// but a regular file is refused.
pub fn open(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(f)
}

/// How a finished log will be sent.
enum Source {
    /// The stored bytes, as they are.
    Raw(std::fs::File, u64),
    /// The stored bytes, decompressed.
    Zstd(std::fs::File, Option<u64>),
}

fn plain_text() -> HeaderValue {
    HeaderValue::from_static("text/plain; charset=utf-8")
}

/// The answer for a finished build's log (`None` when neither its
/// compressed nor its plain file exists). `head`: headers only.
pub async fn finished(file: &LogFile, zstd_ok: bool, head: bool) -> Option<Response<Body>> {
    let (compressed, plain) = (file.compressed.clone(), file.plain.clone());
    let opened = tokio::task::spawn_blocking(move || -> std::io::Result<(Source, bool)> {
        match open(&compressed) {
            Ok(mut f) => {
                let len = f.metadata()?.len();
                if zstd_ok {
                    return Ok((Source::Raw(f, len), true));
                }
                let mut header = [0u8; 18];
                let n = f.read(&mut header)?;
                let size = zstd::zstd_safe::get_frame_content_size(&header[..n])
                    .ok()
                    .flatten();
                let f = {
                    use std::io::Seek;
                    f.seek(std::io::SeekFrom::Start(0))?;
                    f
                };
                Ok((Source::Zstd(f, size), false))
            }
            // Not compressed (yet): a crash between the build's end and
            // the compression, or a failed compression.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let f = open(&plain)?;
                let len = f.metadata()?.len();
                Ok((Source::Raw(f, len), false))
            }
            Err(e) => Err(e),
        }
    })
    .await
    .ok()?;
    let (source, encoded) = match opened {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            let mut r = Response::new(
                http_body_util::Full::new(Bytes::from(format!("cannot read log: {e}\n"))).boxed(),
            );
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r.headers_mut().insert(CONTENT_TYPE, plain_text());
            return Some(r);
        }
    };
    let length = match &source {
        Source::Raw(_, len) => Some(*len),
        Source::Zstd(_, size) => *size,
    };
    let body = if head {
        Empty::new().boxed()
    } else {
        let (tx, rx) = mpsc::channel::<Bytes>(1);
        tokio::spawn(async move {
            let reader: Box<dyn Read + Send> = match source {
                Source::Raw(f, _) => Box::new(f),
                Source::Zstd(f, _) => match zstd::stream::read::Decoder::new(f) {
                    Ok(d) => Box::new(d),
                    Err(_) => return,
                },
            };
            pump(reader, &tx).await;
        });
        ChunkBody(rx).boxed()
    };
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, plain_text());
    h.insert(VARY, HeaderValue::from_static("accept-encoding"));
    if encoded {
        h.insert(CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    if let Some(n) = length {
        h.insert(CONTENT_LENGTH, HeaderValue::from(n));
    }
    Some(r)
}

/// Reads `r` in chunks into `tx` until its end, an error, or the client
/// going away.
async fn pump(mut r: Box<dyn Read + Send>, tx: &mpsc::Sender<Bytes>) {
    loop {
        let Some((back, chunk)) = next_chunk(r).await else {
            return;
        };
        r = back;
        match chunk {
            Ok(b) if !b.is_empty() => {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            _ => return,
        }
    }
}

/// Up to [`CHUNK`] bytes of `r` (empty at its end), read on a blocking
/// thread that is held for this one read only; `r` comes back for the
/// next. `None` when the blocking task failed.
pub async fn next_chunk<R: Read + Send + 'static>(mut r: R) -> Option<(R, std::io::Result<Bytes>)> {
    tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; CHUNK];
        let chunk = r.read(&mut buf).map(|n| {
            buf.truncate(n);
            Bytes::from(buf)
        });
        (r, chunk)
    })
    .await
    .ok()
}

/// A log's text from byte `offset` once it has been compressed: what a
/// follower of the running build's plain log has not seen yet when the
/// build ends. Read it with [`next_chunk`].
pub fn compressed_from(file: &LogFile, offset: u64) -> std::io::Result<impl Read + Send + 'static> {
    let mut d = zstd::stream::read::Decoder::new(open(&file.compressed)?)?;
    std::io::copy(&mut (&mut d).take(offset), &mut std::io::sink())?;
    Ok(d)
}

/// A body fed from a channel.
struct ChunkBody(mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_negotiation() {
        let h = |s: &'static str| HeaderValue::from_static(s);
        assert!(!accepts_zstd(None));
        assert!(accepts_zstd(Some(&h("zstd"))));
        assert!(accepts_zstd(Some(&h("gzip, deflate, br, zstd"))));
        assert!(accepts_zstd(Some(&h("gzip;q=1.0, ZSTD;q=0.5"))));
        assert!(!accepts_zstd(Some(&h("gzip, deflate, br"))));
        assert!(!accepts_zstd(Some(&h("zstd;q=0"))));
        assert!(accepts_zstd(Some(&h("*"))));
        assert!(!accepts_zstd(Some(&h("*, zstd;q=0"))));
        assert!(!accepts_zstd(Some(&h("identity"))));
    }

    #[tokio::test]
    async fn finished_logs_are_sent_raw_or_decompressed() {
        let dir = tempfile::tempdir().unwrap();
        let text = "line\n".repeat(50_000);
        let file = LogFile {
            plain: dir.path().join("1.0-1.1.log"),
            compressed: dir.path().join("1.0-1.1.log.zst"),
            running: false,
        };
        // As the worker stores it: the content size in the frame header.
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
        enc.set_pledged_src_size(Some(text.len() as u64)).unwrap();
        enc.include_contentsize(true).unwrap();
        std::io::Write::write_all(&mut enc, text.as_bytes()).unwrap();
        std::fs::write(&file.compressed, enc.finish().unwrap()).unwrap();
        let body = |r: Response<Body>| async move {
            let len = r.headers()[CONTENT_LENGTH]
                .to_str()
                .unwrap()
                .parse::<usize>();
            let b = r.into_body().collect().await.unwrap().to_bytes();
            (len.unwrap(), b)
        };
        let r = finished(&file, false, false).await.unwrap();
        assert!(r.headers().get(CONTENT_ENCODING).is_none());
        let (len, b) = body(r).await;
        assert_eq!((len, &b[..]), (text.len(), text.as_bytes()));
        let r = finished(&file, true, false).await.unwrap();
        assert_eq!(r.headers()[CONTENT_ENCODING], "zstd");
        let (len, b) = body(r).await;
        assert_eq!(len, b.len());
        assert!(len < text.len() / 10);
        assert_eq!(zstd::decode_all(&b[..]).unwrap(), text.as_bytes());
        let mut rest = Vec::new();
        compressed_from(&file, 5 * 49_999)
            .unwrap()
            .read_to_end(&mut rest)
            .unwrap();
        assert_eq!(rest, b"line\n".to_vec());
        let (_, chunk) = next_chunk(compressed_from(&file, 0).unwrap())
            .await
            .unwrap();
        assert_eq!(chunk.unwrap().len(), CHUNK);
        std::fs::remove_file(&file.compressed).unwrap();
        assert!(finished(&file, true, false).await.is_none());
    }
}
