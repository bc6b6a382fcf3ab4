//! A front for `s3s-fs` that enforces AWS's limit on `CopyObject`, which s3s-fs does not have:
//! a copy whose source is larger than the limit (5 GiB on AWS, a few MiB in the tests) is
//! answered as AWS answers it, `400 InvalidRequest`. Everything else is passed through, byte
//! for byte (SigV4 signs the `Host` header, so it reaches s3s-fs unchanged). It can also make
//! part copies (`UploadPartCopy`) fail from the n-th on, and counts what it saw.
//!
//! The sizes of copy sources are read from s3s-fs's directory, where an object is the file
//! `<dir>/<bucket>/<key>`: asking s3s-fs would need a signed request. Before another store
//! (Garage), the test says how to learn a source's size ([`CopyLimitFront::start_before`]).

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::s3::S3Server;

/// AWS's largest copy source, named in its refusal.
const AWS_COPY_LIMIT: u64 = 5 * 1024 * 1024 * 1024;

/// The front, listening until the test process ends.
pub struct CopyLimitFront {
    pub port: u16,
    state: Arc<State>,
}

/// The size of the object at `/bucket/key` (percent-decoded), if it exists.
pub type SizeOf = Box<dyn Fn(&str) -> Option<u64> + Send + Sync>;

struct State {
    upstream: u16,
    size_of: SizeOf,
    /// Copy sources larger than this are refused.
    limit: u64,
    /// Part copies from this one on (1-based; 0: none) are answered with an error.
    fail_part_copies_from: AtomicU64,
    part_copies: AtomicU64,
    copies: AtomicU64,
    refused_copies: AtomicU64,
    /// The paths (`/bucket/key`) of the multipart uploads created.
    multipart_starts: Mutex<Vec<String>>,
    /// Every request seen, as its S3 operation's name (for counting what an operation costs).
    operations: Mutex<Vec<&'static str>>,
}

impl CopyLimitFront {
    /// A front for `server` refusing copies of sources larger than `limit` bytes.
    pub fn start(server: &S3Server, limit: u64) -> CopyLimitFront {
        let dir = server.dir.clone();
        let size_of: SizeOf = Box::new(move |path| {
            Some(
                std::fs::metadata(dir.join(path.trim_start_matches('/')))
                    .ok()?
                    .len(),
            )
        });
        CopyLimitFront::start_before(server.port, limit, size_of)
    }

    /// A front for the S3 API on 127.0.0.1:`upstream`, learning the sizes of copy sources
    /// from `size_of`.
    pub fn start_before(upstream: u16, limit: u64, size_of: SizeOf) -> CopyLimitFront {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(State {
            upstream,
            size_of,
            limit,
            fail_part_copies_from: AtomicU64::new(0),
            part_copies: AtomicU64::new(0),
            copies: AtomicU64::new(0),
            refused_copies: AtomicU64::new(0),
            multipart_starts: Mutex::new(Vec::new()),
            operations: Mutex::new(Vec::new()),
        });
        let shared = state.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || {
                    let _ = serve(client, &state);
                });
            }
        });
        CopyLimitFront { port, state }
    }

    /// The `REGISTRY_…` variables that put berth on `bucket` of `server`, through this front.
    pub fn env(&self, server: &S3Server, bucket: &str) -> Vec<(String, String)> {
        let mut env = server.env(bucket);
        for (key, value) in &mut env {
            if key == "REGISTRY_STORAGE_S3_REGIONENDPOINT" {
                *value = format!("http://127.0.0.1:{}", self.port);
            }
        }
        env
    }

    /// From the `n`-th part copy on (counted from the start), part copies fail as AWS's do when
    /// a copy breaks off: `200 OK` with an `InternalError` body. `0` lets them all through.
    pub fn fail_part_copies_from(&self, n: u64) {
        self.state.fail_part_copies_from.store(n, Ordering::SeqCst);
    }

    /// `UploadPartCopy` requests seen (failed ones included).
    pub fn part_copies(&self) -> u64 {
        self.state.part_copies.load(Ordering::SeqCst)
    }

    /// `CopyObject` requests seen (refused ones included).
    pub fn copies(&self) -> u64 {
        self.state.copies.load(Ordering::SeqCst)
    }

    /// The paths (`/bucket/key`) of the `CreateMultipartUpload` requests seen, in order.
    pub fn multipart_starts(&self) -> Vec<String> {
        self.state.multipart_starts.lock().unwrap().clone()
    }

    /// The S3 operations seen since the last call, in order.
    pub fn take_operations(&self) -> Vec<&'static str> {
        std::mem::take(&mut *self.state.operations.lock().unwrap())
    }

    /// `CopyObject` requests refused for their source's size.
    pub fn refused_copies(&self) -> u64 {
        self.state.refused_copies.load(Ordering::SeqCst)
    }
}

/// One request on `client`: answered here, or forwarded with `Connection: close` so that the
/// answer ends with the connection and can be copied through without being parsed.
fn serve(client: TcpStream, state: &State) -> std::io::Result<()> {
    let mut from_client = BufReader::new(client.try_clone()?);
    let head = read_head(&mut from_client)?;
    if head.is_empty() {
        return Ok(());
    }
    let mut client = client;
    if let Some(answer) = state.answer_here(&head) {
        client.write_all(answer.as_bytes())?;
        return client.shutdown(Shutdown::Both);
    }
    let upstream = TcpStream::connect(("127.0.0.1", state.upstream))?;
    let mut to_upstream = upstream.try_clone()?;
    to_upstream.write_all(closing(&head).as_bytes())?;
    // The body, whatever its framing, until the client is done (shut down below).
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from_client, &mut to_upstream);
    });
    let mut from_upstream = BufReader::new(upstream);
    let answer_head = read_head(&mut from_upstream)?;
    client.write_all(closing(&answer_head).as_bytes())?;
    std::io::copy(&mut from_upstream, &mut client)?;
    client.shutdown(Shutdown::Both)
}

impl State {
    /// The answer the front gives itself to the request with `head`, if it is not forwarded.
    fn answer_here(&self, head: &[String]) -> Option<String> {
        let mut request_line = head[0].split(' ');
        let method = request_line.next()?;
        let target = request_line.next()?;
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let operation = operation(method, query, header(head, "x-amz-copy-source").is_some());
        self.operations.lock().unwrap().push(operation);
        if method == "POST" && query.split('&').any(|p| p == "uploads" || p == "uploads=") {
            let key = percent_decode(path);
            self.multipart_starts.lock().unwrap().push(key);
            return None;
        }
        let source = header(head, "x-amz-copy-source")?;
        if method != "PUT" {
            return None;
        }
        if query.split('&').any(|p| p.starts_with("partNumber=")) {
            let n = self.part_copies.fetch_add(1, Ordering::SeqCst) + 1;
            let from = self.fail_part_copies_from.load(Ordering::SeqCst);
            return (from > 0 && n >= from).then(|| {
                answer(
                    "200 OK",
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            });
        }
        self.copies.fetch_add(1, Ordering::SeqCst);
        let decoded = percent_decode(source.split('?').next().unwrap_or(""));
        let size = (self.size_of)(&decoded)?;
        (size > self.limit).then(|| {
            self.refused_copies.fetch_add(1, Ordering::SeqCst);
            answer(
                "400 Bad Request",
                "InvalidRequest",
                &format!(
                    "The specified copy source is larger than the maximum allowable size for a \
                     copy source: {AWS_COPY_LIMIT}"
                ),
            )
        })
    }
}

/// An S3 error answer.
fn answer(status: &str, code: &str, message: &str) -> String {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}\
         </Message><RequestId>copy-limit-front</RequestId></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The lines of a request's or answer's head, up to the empty line (none at end of stream).
fn read_head(reader: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(lines);
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

/// `head` with `Connection: close` instead of its own `Connection` header (which SigV4 does
/// not sign), as sent on the wire.
fn closing(head: &[String]) -> String {
    let mut out = String::new();
    for line in head {
        if !line.to_ascii_lowercase().starts_with("connection:") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head[1..].iter().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case(name)
            .then_some(value.trim())
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The multipart uploads s3s-fs holds (completed and aborted ones are removed): its
/// `.upload-<id>.json` files and the parts `.upload_id-<id>.part-<n>`, at its root.
pub fn multipart_leftovers(server: &S3Server) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(&server.dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(".upload"))
        .collect();
    found.sort();
    found
}

/// The S3 operation a request is, from its method, query and whether it names a copy source.
fn operation(method: &str, query: &str, copy: bool) -> &'static str {
    let has = |name: &str| {
        query
            .split('&')
            .any(|p| p == name || p.starts_with(&format!("{name}=")))
    };
    match method {
        "GET" if has("list-type") || query.contains("delimiter") => "ListObjectsV2",
        "GET" if has("uploads") => "ListMultipartUploads",
        "GET" if has("uploadId") => "ListParts",
        "GET" => "GetObject",
        "HEAD" => "HeadObject",
        "PUT" if has("partNumber") && copy => "UploadPartCopy",
        "PUT" if has("partNumber") => "UploadPart",
        "PUT" if copy => "CopyObject",
        "PUT" => "PutObject",
        "POST" if has("uploads") => "CreateMultipartUpload",
        "POST" if has("uploadId") => "CompleteMultipartUpload",
        "POST" if has("delete") => "DeleteObjects",
        "DELETE" if has("uploadId") => "AbortMultipartUpload",
        "DELETE" => "DeleteObject",
        _ => "other",
    }
}
