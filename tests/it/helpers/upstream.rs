//! A mock model provider on a real socket. It speaks the providers' wire
//! formats from scripted replies: JSON, SSE split at chosen byte boundaries,
//! pauses between chunks, error statuses, and connections cut mid-body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// What the mock answers.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub chunks: Vec<Bytes>,
    /// Pause before each chunk after the first.
    pub pause: Duration,
    /// Cut the connection after this many chunks (a broken upstream).
    pub cut_after: Option<usize>,
    /// Wait this long before sending headers.
    pub delay_headers: Duration,
    /// `Content-Encoding` of the body (the chunks are already encoded).
    pub encoding: Option<&'static str>,
    /// More response headers.
    pub headers: Vec<(&'static str, &'static str)>,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        Reply {
            status,
            content_type: "application/json",
            chunks: vec![body.into()],
            pause: Duration::ZERO,
            cut_after: None,
            delay_headers: Duration::ZERO,
            encoding: None,
            headers: Vec::new(),
        }
    }

    /// An SSE body cut into pieces at the given byte offsets.
    pub fn sse_split(body: &[u8], cuts: &[usize]) -> Reply {
        let mut chunks = Vec::new();
        let mut last = 0;
        for &cut in cuts.iter().filter(|&&c| c > 0 && c < body.len()) {
            if cut > last {
                chunks.push(Bytes::copy_from_slice(&body[last..cut]));
                last = cut;
            }
        }
        chunks.push(Bytes::copy_from_slice(&body[last..]));
        Reply {
            status: 200,
            content_type: "text/event-stream",
            chunks,
            pause: Duration::ZERO,
            cut_after: None,
            delay_headers: Duration::ZERO,
            encoding: None,
            headers: Vec::new(),
        }
    }

    /// An SSE body sent one byte at a time.
    pub fn sse_bytewise(body: &[u8]) -> Reply {
        let cuts: Vec<usize> = (1..body.len()).collect();
        Reply::sse_split(body, &cuts)
    }

    pub fn paced(mut self, pause: Duration) -> Reply {
        self.pause = pause;
        self
    }

    pub fn cut_after(mut self, chunks: usize) -> Reply {
        self.cut_after = Some(chunks);
        self
    }

    /// Sends the body as `coding` (the chunks must already be encoded).
    pub fn encoded(mut self, coding: &'static str) -> Reply {
        self.encoding = Some(coding);
        self
    }

    pub fn header(mut self, name: &'static str, value: &'static str) -> Reply {
        self.headers.push((name, value));
        self
    }

    pub fn delay_headers(mut self, delay: Duration) -> Reply {
        self.delay_headers = delay;
        self
    }
}

/// A request the mock received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub path: String,
    pub headers: HeaderMap,
    pub body: serde_json::Value,
    /// The body's bytes as they arrived (up to 1 MiB).
    pub raw: Bytes,
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

pub struct MockUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Per finished answer: how many chunks went out before it ended or
    /// its reader went away (what a provider would have generated).
    delivered: Arc<Mutex<Vec<usize>>>,
}

impl MockUpstream {
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> MockUpstream {
        Self::start_on(0, script).await
    }

    /// On a given port (0: any).
    pub async fn start_on(
        port: u16,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> MockUpstream {
        let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let delivered = Arc::new(Mutex::new(Vec::new()));
        let script: Script = Arc::new(script);
        let seen_for_server = seen.clone();
        let delivered_for_server = delivered.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let _ = stream.set_nodelay(true);
                let script = script.clone();
                let seen = seen_for_server.clone();
                let delivered = delivered_for_server.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let script = script.clone();
                        let seen = seen.clone();
                        let delivered = delivered.clone();
                        async move {
                            Ok::<_, Infallible>(answer(request, script, seen, delivered).await)
                        }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        MockUpstream {
            addr,
            seen,
            delivered,
        }
    }

    /// Chunks delivered per finished answer (see `delivered`).
    pub fn delivered(&self) -> Vec<usize> {
        self.delivered.lock().unwrap().clone()
    }

    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type ChunkResult = Result<Frame<Bytes>, std::io::Error>;

async fn answer(
    request: Request<Incoming>,
    script: Script,
    seen: Arc<Mutex<Vec<Seen>>>,
    delivered: Arc<Mutex<Vec<usize>>>,
) -> Response<StreamBody<tokio_stream_shim::Receiver<ChunkResult>>> {
    let (parts, body) = request.into_parts();
    let bytes = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let record = Seen {
        path: parts.uri.path().to_string(),
        headers: parts.headers,
        // Huge bodies are not parsed (a hostile-body test would make this
        // process build the tree the gateway must not).
        body: if bytes.len() <= 1 << 20 {
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null)
        } else {
            serde_json::Value::Null
        },
        raw: if bytes.len() <= 1 << 20 {
            bytes.clone()
        } else {
            Bytes::new()
        },
    };
    let reply = script(&record);
    seen.lock().unwrap().push(record);
    if !reply.delay_headers.is_zero() {
        tokio::time::sleep(reply.delay_headers).await;
    }
    let (tx, rx) = mpsc::channel::<ChunkResult>(1);
    let chunks = reply.chunks.clone();
    tokio::spawn(async move {
        let mut sent = 0;
        for (i, chunk) in chunks.into_iter().enumerate() {
            if reply.cut_after == Some(i) {
                let _ = tx
                    .send(Err(std::io::Error::new(
                        std::io::ErrorKind::ConnectionReset,
                        "cut",
                    )))
                    .await;
                break;
            }
            if i > 0 && !reply.pause.is_zero() {
                tokio::time::sleep(reply.pause).await;
            }
            if tx.send(Ok(Frame::data(chunk))).await.is_err() {
                break;
            }
            sent += 1;
        }
        delivered.lock().unwrap().push(sent);
    });
    let mut response = Response::new(StreamBody::new(tokio_stream_shim::Receiver(rx)));
    *response.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        reply.content_type.parse().unwrap(),
    );
    if let Some(coding) = reply.encoding {
        response
            .headers_mut()
            .insert(http::header::CONTENT_ENCODING, coding.parse().unwrap());
    }
    for (name, value) in &reply.headers {
        response.headers_mut().append(*name, value.parse().unwrap());
    }
    response
}

/// A tiny `Stream` over an mpsc receiver (no extra crate needed).
pub mod tokio_stream_shim {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub struct Receiver<T>(pub tokio::sync::mpsc::Receiver<T>);

    impl<T> futures_util::Stream for Receiver<T> {
        type Item = T;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            self.0.poll_recv(cx)
        }
    }
}
