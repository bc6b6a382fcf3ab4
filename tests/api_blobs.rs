//! Blob endpoints and uploads against the real server: every status, header and error code.

mod common;

use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;

use common::{assert_error, client, error_code, push_blob, sha256, sha512, TestRegistry};

fn start_upload(reg: &TestRegistry, repo: &str) -> String {
    let r = client()
        .post(reg.url(&format!("/v2/{repo}/blobs/uploads/")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-0");
    assert!(r.headers().contains_key("docker-upload-uuid"));
    r.headers()["location"].to_str().unwrap().to_string()
}

fn with_digest(location: &str, digest: &str) -> String {
    format!("{location}?digest={digest}")
}

#[test]
fn api_version_check_and_unknown_routes() {
    let reg = TestRegistry::start();
    let r = client().get(reg.url("/v2/")).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["docker-distribution-api-version"],
        "registry/2.0"
    );

    let r = client().get(reg.url("/v2/a/unknown-thing")).send().unwrap();
    assert_error(r, 404, "NOT_FOUND");

    let r = client().post(reg.url("/v2/a/tags/list")).send().unwrap();
    assert_error(r, 405, "UNSUPPORTED");
}

#[test]
fn monolithic_push_then_head_get_and_ranges() {
    let reg = TestRegistry::start();
    let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let digest = push_blob(&reg, "lib/app", &content);

    let c = client();
    let url = reg.url(&format!("/v2/lib/app/blobs/{digest}"));
    let r = c.head(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "10000");
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());

    let r = c.get(&url).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().unwrap().as_ref(), &content[..]);

    for (range, start, end) in [
        ("bytes=0-99", 0, 100),
        ("bytes=9990-", 9990, 10000),
        ("bytes=-10", 9990, 10000),
        ("bytes=5000-20000", 5000, 10000),
    ] {
        let r = c.get(&url).header("Range", range).send().unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(
            r.headers()["content-range"],
            format!("bytes {start}-{}/10000", end - 1).as_str()
        );
        assert_eq!(r.bytes().unwrap().as_ref(), &content[start..end], "{range}");
    }
    for range in ["bytes=10000-", "bytes=500-0"] {
        let r = c.get(&url).header("Range", range).send().unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */10000");
    }
    // Units other than bytes are ignored.
    let r = c.get(&url).header("Range", "items=0-1").send().unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn single_request_push_with_post_digest() {
    let reg = TestRegistry::start();
    let content = b"single request";
    let digest = sha256(content);
    let r = client()
        .post(reg.url(&format!("/v2/a/blobs/uploads/?digest={digest}")))
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let location = r.headers()["location"].to_str().unwrap();
    assert!(
        location.ends_with(&format!("/v2/a/blobs/{digest}")),
        "{location}"
    );
    let r = client().get(location).send().unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), content);

    // A wrong digest leaves nothing behind.
    let wrong = sha256(b"something else");
    let r = client()
        .post(reg.url(&format!("/v2/a/blobs/uploads/?digest={wrong}")))
        .body(content.to_vec())
        .send()
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID");
    let r = client()
        .head(reg.url(&format!("/v2/a/blobs/{wrong}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[test]
fn chunked_upload_with_status_and_out_of_order_chunks() {
    let reg = TestRegistry::start();
    let c = client();
    let content: Vec<u8> = (0..3000u32).map(|i| (i * 7 % 256) as u8).collect();
    let digest = sha256(&content);
    let location = start_upload(&reg, "chunky");

    let r = c
        .patch(&location)
        .header("Content-Range", "0-999")
        .header("Content-Type", "application/octet-stream")
        .body(content[..1000].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-999");
    let location = r.headers()["location"].to_str().unwrap().to_string();

    // Status.
    let r = c.get(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-999");

    // A chunk that skips ahead, or repeats, is refused with where the upload really is.
    for bad in ["1500-1999", "0-499"] {
        let r = c
            .patch(&location)
            .header("Content-Range", bad)
            .body(vec![0u8; 500])
            .send()
            .unwrap();
        assert_eq!(r.status(), 416, "{bad}");
        assert_eq!(r.headers()["range"], "0-999");
        assert_eq!(error_code(&r.text().unwrap()), "BLOB_UPLOAD_INVALID");
    }

    // A chunk without Content-Range (streamed) continues at the offset.
    let r = c
        .patch(&location)
        .body(content[1000..2000].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["range"], "0-1999");

    // Content-Length must agree with Content-Range.
    let r = c
        .patch(&location)
        .header("Content-Range", "2000-2009")
        .body(vec![1u8; 5])
        .send()
        .unwrap();
    assert_error(r, 400, "SIZE_INVALID");

    // Final chunk in the PUT.
    let r = c
        .put(with_digest(&location, &digest))
        .header("Content-Range", "2000-2999")
        .body(content[2000..].to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let r = c
        .get(reg.url(&format!("/v2/chunky/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.bytes().unwrap().as_ref(), &content[..]);

    // The session is gone once completed.
    let r = c.get(&location).send().unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN");
}

#[test]
fn upload_errors() {
    let reg = TestRegistry::start();
    let c = client();
    let location = start_upload(&reg, "a");

    // PUT without a digest, or with a malformed one.
    let r = c.put(&location).send().unwrap();
    assert_error(r, 400, "DIGEST_INVALID");
    let r = c
        .put(with_digest(&location, "sha256:nothex"))
        .send()
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID");
    let r = c
        .put(with_digest(
            &location,
            "md5:d41d8cd98f00b204e9800998ecf8427e",
        ))
        .send()
        .unwrap();
    assert_error(r, 400, "DIGEST_INVALID");

    // The session belongs to its repository.
    let id = location.rsplit('/').next().unwrap();
    let r = c
        .get(reg.url(&format!("/v2/other/blobs/uploads/{id}")))
        .send()
        .unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN");

    // Digest mismatch: DIGEST_INVALID, nothing stored, session gone.
    c.patch(&location).body(b"abc".to_vec()).send().unwrap();
    let wrong = sha256(b"abd");
    let r = c.put(with_digest(&location, &wrong)).send().unwrap();
    assert_error(r, 400, "DIGEST_INVALID");
    assert_eq!(
        c.head(reg.url(&format!("/v2/a/blobs/{wrong}")))
            .send()
            .unwrap()
            .status(),
        404
    );
    assert_eq!(c.get(&location).send().unwrap().status(), 404);

    // Cancel.
    let location = start_upload(&reg, "a");
    c.patch(&location).body(b"abc".to_vec()).send().unwrap();
    let r = c.delete(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    let r = c.patch(&location).body(b"def".to_vec()).send().unwrap();
    assert_error(r, 404, "BLOB_UPLOAD_UNKNOWN");

    // Invalid names.
    let r = c
        .post(reg.url("/v2/Bad_Name/blobs/uploads/"))
        .send()
        .unwrap();
    assert_error(r, 400, "NAME_INVALID");
    let long = "a".repeat(256);
    let r = c
        .post(reg.url(&format!("/v2/{long}/blobs/uploads/")))
        .send()
        .unwrap();
    assert_error(r, 400, "NAME_INVALID");
}

#[test]
fn unknown_and_invalid_blobs() {
    let reg = TestRegistry::start();
    let c = client();
    let missing = sha256(b"missing");
    let r = c
        .get(reg.url(&format!("/v2/a/blobs/{missing}")))
        .send()
        .unwrap();
    assert_error(r, 404, "BLOB_UNKNOWN");
    assert_eq!(
        c.head(reg.url(&format!("/v2/a/blobs/{missing}")))
            .send()
            .unwrap()
            .status(),
        404
    );
    let r = c.get(reg.url("/v2/a/blobs/sha256:1234")).send().unwrap();
    assert_error(r, 400, "DIGEST_INVALID");
    // A blob pushed to one repository is not visible from another.
    let d = push_blob(&reg, "one", b"private");
    assert_eq!(
        c.head(reg.url(&format!("/v2/two/blobs/{d}")))
            .send()
            .unwrap()
            .status(),
        404
    );
}

#[test]
fn sha512_and_empty_blobs() {
    // s3s-fs names a file after the base64 of each object key, and a sha512 blob's key is too
    // long for that (ENAMETOOLONG: its limit, not S3's): on S3 runs this test uses local disk.
    let dir = tempfile::tempdir().unwrap();
    let reg = if common::s3::selected() {
        eprintln!("sha512_and_empty_blobs: on local disk (s3s-fs cannot hold sha512 keys)");
        TestRegistry::builder().filesystem(dir.path()).start()
    } else {
        TestRegistry::start()
    };
    let c = client();
    let content = b"sha512 content";
    let digest = sha512(content);
    let location = start_upload(&reg, "a");
    c.patch(&location).body(content.to_vec()).send().unwrap();
    let r = c.put(with_digest(&location, &digest)).send().unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    let r = c
        .get(reg.url(&format!("/v2/a/blobs/{digest}")))
        .send()
        .unwrap();
    assert_eq!(r.headers()["docker-content-digest"], digest.as_str());
    assert_eq!(r.bytes().unwrap().as_ref(), content);

    let empty = sha256(b"");
    let location = start_upload(&reg, "a");
    let r = c.put(with_digest(&location, &empty)).send().unwrap();
    assert_eq!(r.status(), 201);
    let r = c
        .get(reg.url(&format!("/v2/a/blobs/{empty}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-length"], "0");
}

#[test]
fn cross_repository_mounts() {
    let reg = TestRegistry::start();
    let c = client();
    let d = push_blob(&reg, "source/repo", b"shared layer");

    let r = c
        .post(reg.url(&format!(
            "/v2/target/blobs/uploads/?mount={d}&from=source/repo"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.headers()["docker-content-digest"], d.as_str());
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .ends_with(&format!("/v2/target/blobs/{d}")));
    assert_eq!(
        c.get(reg.url(&format!("/v2/target/blobs/{d}")))
            .send()
            .unwrap()
            .bytes()
            .unwrap()
            .as_ref(),
        b"shared layer"
    );

    // Unknown in the source: a fresh upload session instead.
    let unknown = sha256(b"nowhere");
    let r = c
        .post(reg.url(&format!(
            "/v2/target/blobs/uploads/?mount={unknown}&from=source/repo"
        )))
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    assert!(r.headers()["location"]
        .to_str()
        .unwrap()
        .contains("/v2/target/blobs/uploads/"));

    // Without `from`, a blob the registry holds is found.
    let r = c
        .post(reg.url(&format!("/v2/third/blobs/uploads/?mount={d}")))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[test]
fn blob_delete_and_disabled_delete() {
    let reg = TestRegistry::start();
    let c = client();
    let d = push_blob(&reg, "a", b"to delete");
    let url = reg.url(&format!("/v2/a/blobs/{d}"));
    assert_eq!(c.delete(&url).send().unwrap().status(), 202);
    let r = c.get(&url).send().unwrap();
    assert_error(r, 404, "BLOB_UNKNOWN");
    let r = c.delete(&url).send().unwrap();
    assert_eq!(r.status(), 404);

    let reg = TestRegistry::builder().delete_enabled(false).start();
    let d = push_blob(&reg, "a", b"kept");
    let r = c
        .delete(reg.url(&format!("/v2/a/blobs/{d}")))
        .send()
        .unwrap();
    assert_error(r, 405, "UNSUPPORTED");
    assert_eq!(
        c.head(reg.url(&format!("/v2/a/blobs/{d}")))
            .send()
            .unwrap()
            .status(),
        200
    );
}

/// A request body that hands out bytes only when told to, to hold a PATCH open.
struct GatedBody {
    gate: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
}

/// A streamed (chunked) request body fed through `gate`.
fn gated_body(gate: mpsc::Receiver<Vec<u8>>) -> reqwest::blocking::Body {
    reqwest::blocking::Body::new(GatedBody {
        gate,
        current: Vec::new(),
    })
}

impl Read for GatedBody {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.current.is_empty() {
            match self.gate.recv() {
                Ok(next) => self.current = next,
                Err(_) => return Ok(0),
            }
        }
        let n = self.current.len().min(buf.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.drain(..n);
        Ok(n)
    }
}

#[test]
fn racing_patches_never_interleave() {
    let reg = TestRegistry::start();
    let location = start_upload(&reg, "race");
    let (tx, rx) = mpsc::channel();
    let slow_location = location.clone();
    let slow = std::thread::spawn(move || {
        let body = gated_body(rx);
        client()
            .patch(&slow_location)
            .body(body)
            .send()
            .unwrap()
            .status()
    });
    tx.send(b"first-".to_vec()).unwrap();
    // Give the first PATCH time to reach the server: its handler takes the session as soon as
    // the headers arrive, and holds it while the body is open.
    std::thread::sleep(Duration::from_millis(500));
    let c = client();
    let mut busy = None;
    for _ in 0..100 {
        let r = c
            .patch(&location)
            .header("Content-Range", "0-5")
            .body(b"second".to_vec())
            .send()
            .unwrap();
        if r.status() == 416 {
            busy = Some(r);
            break;
        }
        assert_ne!(
            r.status(),
            202,
            "the second PATCH must not win while the first is open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let busy = busy.expect("the second PATCH was refused");
    assert_eq!(error_code(&busy.text().unwrap()), "BLOB_UPLOAD_INVALID");
    tx.send(b"bytes".to_vec()).unwrap();
    drop(tx);
    assert_eq!(slow.join().unwrap(), 202);
    let digest = sha256(b"first-bytes");
    let r = c.put(with_digest(&location, &digest)).send().unwrap();
    assert_eq!(
        r.status(),
        201,
        "only the first PATCH's bytes are in the blob"
    );
}

#[test]
fn a_broken_patch_keeps_what_arrived_and_can_be_resumed() {
    let reg = TestRegistry::start();
    let location = start_upload(&reg, "resume");
    let path = location.splitn(4, '/').nth(3).unwrap().to_string();
    let received: Vec<u8> = (0..40_000u32).map(|i| (i % 199) as u8).collect();
    {
        let mut s = std::net::TcpStream::connect(&reg.host).unwrap();
        write!(
            s,
            "PATCH /{path} HTTP/1.1\r\nHost: {}\r\nContent-Length: 100000\r\nContent-Type: application/octet-stream\r\n\r\n",
            reg.host
        )
        .unwrap();
        s.write_all(&received).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        // The client goes away mid-body.
    }
    let c = client();
    let mut range = String::new();
    for _ in 0..100 {
        let r = c.get(&location).send().unwrap();
        assert_eq!(r.status(), 204);
        range = r.headers()["range"].to_str().unwrap().to_string();
        if range == "0-39999" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(range, "0-39999", "every byte that arrived is kept");
    let rest = vec![7u8; 60_000];
    let r = c
        .patch(&location)
        .header("Content-Range", "40000-99999")
        .body(rest.clone())
        .send()
        .unwrap();
    assert_eq!(r.status(), 202);
    let whole = [received, rest].concat();
    let r = c
        .put(with_digest(&location, &sha256(&whole)))
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
    let got = c
        .get(reg.url(&format!("/v2/resume/blobs/{}", sha256(&whole))))
        .send()
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(got.as_ref(), &whole[..]);
}

/// A `REGISTRY_…` setting or a request header: name and value.
type Pair = (&'static str, &'static str);

#[test]
fn location_headers_follow_configuration_and_proxies() {
    let cases: [(Option<Pair>, &[Pair], &str); 3] = [
        (
            None,
            &[
                ("X-Forwarded-Proto", "https"),
                ("X-Forwarded-Host", "registry.example.com"),
            ],
            "https://registry.example.com/v2/a/blobs/uploads/",
        ),
        (
            Some(("REGISTRY_HTTP_RELATIVEURLS", "true")),
            &[],
            "/v2/a/blobs/uploads/",
        ),
        (
            Some(("REGISTRY_HTTP_HOST", "https://reg.internal:8443")),
            &[],
            "https://reg.internal:8443/v2/a/blobs/uploads/",
        ),
    ];
    for (setting, headers, expected) in cases {
        let mut builder = TestRegistry::builder();
        if let Some((key, value)) = setting {
            builder = builder.env(key, value);
        }
        let reg = builder.start();
        let mut request = client().post(reg.url("/v2/a/blobs/uploads/"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let r = request.send().unwrap();
        let location = r.headers()["location"].to_str().unwrap();
        assert!(location.starts_with(expected), "{location} for {setting:?}");
    }
}

#[test]
fn filesystem_storage_uses_distributions_layout() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::builder().filesystem(dir.path()).start();
    let layer = b"layer bytes";
    let manifest_digest = common::push_image(&reg, "team/app", "v1", layer);
    let v2 = dir.path().join("docker/registry/v2");
    let ld = sha256(layer);
    let hex = ld.strip_prefix("sha256:").unwrap();
    assert_eq!(
        std::fs::read(v2.join(format!("blobs/sha256/{}/{hex}/data", &hex[..2]))).unwrap(),
        layer
    );
    let link = std::fs::read_to_string(
        v2.join(format!("repositories/team/app/_layers/sha256/{hex}/link")),
    )
    .unwrap();
    assert_eq!(
        link, ld,
        "a link holds the digest as plain text, no newline"
    );
    let current =
        std::fs::read_to_string(v2.join("repositories/team/app/_manifests/tags/v1/current/link"))
            .unwrap();
    assert_eq!(current, manifest_digest);
    let mhex = manifest_digest.strip_prefix("sha256:").unwrap();
    assert!(v2
        .join(format!(
            "repositories/team/app/_manifests/revisions/sha256/{mhex}/link"
        ))
        .exists());
    assert!(v2
        .join(format!(
            "repositories/team/app/_manifests/tags/v1/index/sha256/{mhex}/link"
        ))
        .exists());
    // No upload leftovers once pushes complete.
    let uploads = v2.join("_berth/uploads");
    let left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
    assert_eq!(left, 0);
}

#[test]
fn cancelling_a_busy_upload_removes_it_once_the_writer_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let reg = TestRegistry::builder().filesystem(dir.path()).start();
    let location = start_upload(&reg, "cancel");
    let (tx, rx) = mpsc::channel();
    let slow_location = location.clone();
    let slow = std::thread::spawn(move || {
        let body = gated_body(rx);
        client()
            .patch(&slow_location)
            .body(body)
            .send()
            .map(|r| r.status())
    });
    tx.send(vec![1u8; 1000]).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let c = client();
    assert_eq!(c.delete(&location).send().unwrap().status(), 204);
    assert_eq!(c.get(&location).send().unwrap().status(), 404);
    drop(tx);
    let _ = slow.join().unwrap();
    let uploads = dir.path().join("docker/registry/v2/_berth/uploads");
    let mut left = usize::MAX;
    for _ in 0..50 {
        left = std::fs::read_dir(&uploads).map(|d| d.count()).unwrap_or(0);
        if left == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(left, 0, "the cancelled upload's bytes are removed");
}

#[test]
fn a_chunk_must_be_as_long_as_its_content_range() {
    let reg = TestRegistry::start();
    let location = start_upload(&reg, "len");
    // Chunked transfer encoding: no Content-Length to compare with, the body itself is counted.
    let (tx, rx) = mpsc::channel();
    tx.send(b"abc".to_vec()).unwrap();
    drop(tx);
    let body = gated_body(rx);
    let r = client()
        .patch(&location)
        .header("Content-Range", "0-9")
        .body(body)
        .send()
        .unwrap();
    assert_error(r, 400, "SIZE_INVALID");
}

#[test]
fn a_broken_final_put_keeps_the_session() {
    let reg = TestRegistry::start();
    let location = start_upload(&reg, "put");
    let c = client();
    c.patch(&location).body(vec![1u8; 100]).send().unwrap();
    let path = location.splitn(4, '/').nth(3).unwrap().to_string();
    let digest = sha256(&[1u8; 300]);
    {
        let mut s = std::net::TcpStream::connect(&reg.host).unwrap();
        write!(
            s,
            "PUT /{path}?digest={digest} HTTP/1.1\r\nHost: {}\r\nContent-Length: 200\r\n\r\n",
            reg.host
        )
        .unwrap();
        s.write_all(&[1u8; 50]).unwrap();
        s.flush().unwrap();
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut range = String::new();
    for _ in 0..50 {
        let r = c.get(&location).send().unwrap();
        assert_eq!(r.status(), 204, "the session survives a broken PUT");
        range = r.headers()["range"].to_str().unwrap().to_string();
        if range == "0-149" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(range, "0-149");
    let r = c
        .put(with_digest(&location, &digest))
        .header("Content-Range", "150-299")
        .body(vec![1u8; 150])
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

/// Numbers a client sends at the edge of what a `u64` holds: each is refused with the spec's
/// JSON error (416 for a range no upload can satisfy, 400 for one that is not a number) and
/// nothing is stored; the limits of `Range` and `n` are served without wrapping.
#[test]
fn numbers_that_would_wrap_are_refused_with_spec_errors() {
    let reg = TestRegistry::start();
    let c = client();
    let max = u64::MAX;
    let location = start_upload(&reg, "wrap");
    let digest = sha256(b"hello");
    // `0-18446744073709551615` is 2^64 bytes: its length does not fit, and no upload takes it.
    for (method, url) in [
        (reqwest::Method::PATCH, location.clone()),
        (reqwest::Method::PUT, with_digest(&location, &digest)),
    ] {
        let r = c
            .request(method.clone(), &url)
            .header("Content-Range", format!("0-{max}"))
            .body(b"hello".to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 416, "{method}");
        assert_eq!(r.headers()["range"], "0-0", "{method}");
        assert_eq!(error_code(&r.text().unwrap()), "BLOB_UPLOAD_INVALID");
    }
    // A chunk starting at the last byte a u64 counts: not where the upload is.
    let r = c
        .patch(&location)
        .header("Content-Range", format!("{max}-{max}"))
        .body(b"h".to_vec())
        .send()
        .unwrap();
    assert_eq!(r.status(), 416);
    assert_eq!(r.headers()["range"], "0-0");
    // Past u64: not a number.
    for bad in [
        "0-18446744073709551616",
        "18446744073709551616-18446744073709551617",
    ] {
        let r = c
            .patch(&location)
            .header("Content-Range", bad)
            .body(b"hello".to_vec())
            .send()
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(error_code(&r.text().unwrap()), "BLOB_UPLOAD_INVALID");
    }
    // Nothing was stored: the upload is still empty and completes normally.
    let r = c.get(&location).send().unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(r.headers()["range"], "0-0");
    assert_eq!(common::patch_chunk(&location, 0, b"hello").status(), 202);
    assert_eq!(common::complete_upload(&location, &digest).status(), 201);

    // Blob ranges at the limits: whole, whole, unsatisfiable, unsatisfiable.
    let url = reg.url(&format!("/v2/wrap/blobs/{digest}"));
    for range in [format!("bytes=0-{max}"), format!("bytes=-{max}")] {
        let r = c.get(&url).header("Range", &range).send().unwrap();
        assert_eq!(r.status(), 206, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes 0-4/5", "{range}");
        assert_eq!(r.bytes().unwrap().as_ref(), b"hello");
    }
    for range in [
        format!("bytes={max}-"),
        "bytes=0-18446744073709551616".into(),
    ] {
        let r = c.get(&url).header("Range", &range).send().unwrap();
        assert_eq!(r.status(), 416, "{range}");
        assert_eq!(r.headers()["content-range"], "bytes */5", "{range}");
    }
    // A page size past any count.
    for path in ["/v2/wrap/tags/list", "/v2/_catalog"] {
        let r = c
            .get(reg.url(&format!("{path}?n=18446744073709551616")))
            .send()
            .unwrap();
        assert_error(r, 400, "PAGINATION_NUMBER_INVALID");
    }
}
