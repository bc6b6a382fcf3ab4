//! Logins and access control over HTTP: htpasswd users, access rules, the failed-login guard,
//! read-only mode, the `berth htpasswd` command, and that credentials never reach the log.
//! Token authentication is in `tests/token_auth.rs`; real clients logging in are in
//! `tests/login_clients.rs`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine as _;
use common::{assert_error, sha256, TestRegistry};
use reqwest::blocking::{RequestBuilder, Response};
use reqwest::Method;

/// Requests as one caller: with `Authorization: Basic …`, or anonymous.
#[derive(Clone)]
struct Caller {
    authorization: Option<String>,
}

fn basic(user: &str, password: &str) -> Caller {
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    Caller {
        authorization: Some(format!("Basic {encoded}")),
    }
}

fn anonymous() -> Caller {
    Caller {
        authorization: None,
    }
}

impl Caller {
    fn request(&self, method: Method, url: &str) -> RequestBuilder {
        common::request_as(method, url, self.authorization.as_deref())
    }

    fn get(&self, url: &str) -> Response {
        self.request(Method::GET, url).send().unwrap()
    }

    /// Pushes `content` as a blob of `repo`: the POST's response if it is refused, else the PUT's.
    fn push_blob(&self, reg: &TestRegistry, repo: &str, content: &[u8]) -> Response {
        common::push_blob_as(&reg.url, repo, content, self.authorization.as_deref())
    }

    /// Pushes a one-layer image as `repo:tag`; the first refused response, or the manifest PUT's.
    fn push_image(&self, reg: &TestRegistry, repo: &str, tag: &str) -> Response {
        common::push_image_as(&reg.url, repo, tag, self.authorization.as_deref())
    }

    fn pull_manifest(&self, reg: &TestRegistry, repo: &str, tag: &str) -> Response {
        self.request(
            Method::GET,
            &reg.url(&format!("/v2/{repo}/manifests/{tag}")),
        )
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
    }
}

/// Writes an htpasswd file with bcrypt entries (cost 4: fast tests; the cost is the file's).
fn write_htpasswd(dir: &Path, users: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("htpasswd");
    let text: String = users
        .iter()
        .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
        .collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// A registry with htpasswd logins and `extra` YAML under `auth:` (access rules etc.).
fn start_with_users(dir: &Path, users: &[(&str, &str)], extra_auth: &str) -> TestRegistry {
    let htpasswd = write_htpasswd(dir, users);
    let config = dir.join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n{extra_auth}",
            htpasswd.display()
        ),
    )
    .unwrap();
    TestRegistry::builder().config_file(&config).start()
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

fn assert_unauthorized(r: Response) {
    assert_eq!(
        challenge(&r),
        r#"Basic realm="berth-test""#,
        "a 401 carries the challenge ({})",
        r.url()
    );
    assert_error(r, 401, "UNAUTHORIZED");
}

#[test]
fn every_protected_route_challenges_and_only_right_passwords_get_in() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_with_users(dir.path(), &[("alice", "wonderland")], "");
    let alice = basic("alice", "wonderland");
    assert_eq!(alice.push_image(&reg, "team/app", "v1").status(), 201);

    // No credentials: /v2/ and every API route answer the challenge, in the spec's JSON.
    let digest = sha256(b"anything");
    for (method, path) in [
        (Method::GET, "/v2/".to_string()),
        (Method::GET, "/v2/_catalog".to_string()),
        (Method::GET, "/v2/team/app/tags/list".to_string()),
        (Method::GET, "/v2/team/app/manifests/v1".to_string()),
        (Method::HEAD, format!("/v2/team/app/blobs/{digest}")),
        (Method::POST, "/v2/team/app/blobs/uploads/".to_string()),
        (Method::DELETE, "/v2/team/app/manifests/v1".to_string()),
        (Method::GET, format!("/v2/team/app/referrers/{digest}")),
    ] {
        let r = anonymous()
            .request(method.clone(), &reg.url(&path))
            .send()
            .unwrap();
        if method == Method::HEAD {
            assert_eq!(r.status(), 401, "HEAD {path}");
            assert_eq!(challenge(&r), r#"Basic realm="berth-test""#);
        } else {
            assert_unauthorized(r);
        }
    }
    // Wrong password, unknown user, a malformed header, another scheme: all 401.
    for caller in [
        basic("alice", "wrong"),
        basic("mallory", "wonderland"),
        Caller {
            authorization: Some("Basic !!!".into()),
        },
        Caller {
            authorization: Some("Digest username=alice".into()),
        },
    ] {
        assert_unauthorized(caller.get(&reg.url("/v2/")));
        assert_unauthorized(caller.pull_manifest(&reg, "team/app", "v1"));
    }
    // The right one, for every route.
    assert_eq!(alice.get(&reg.url("/v2/")).status(), 200);
    assert_eq!(alice.pull_manifest(&reg, "team/app", "v1").status(), 200);
    assert_eq!(alice.get(&reg.url("/v2/_catalog")).status(), 200);
}

const TEAM_RULES: &str = "  access:
    - account: ci
      repositories: ['*']
      actions: [pull]
    - account: team-a
      repositories: ['team-a/*']
      actions: [push]
    - account: anonymous
      repositories: ['public/*']
      actions: [pull]
    - account: admin
      repositories: ['*']
      actions: ['*']
";

fn team_registry(dir: &Path) -> TestRegistry {
    start_with_users(
        dir,
        &[
            ("ci", "ci-pw"),
            ("team-a", "a-pw"),
            ("admin", "admin-pw"),
            ("eve", "eve-pw"),
        ],
        TEAM_RULES,
    )
}

#[test]
fn access_rules_allow_and_deny_each_kind_of_user() {
    let dir = tempfile::tempdir().unwrap();
    let reg = team_registry(dir.path());
    let (ci, team, admin, eve) = (
        basic("ci", "ci-pw"),
        basic("team-a", "a-pw"),
        basic("admin", "admin-pw"),
        basic("eve", "eve-pw"),
    );

    // A team pushes under its prefix (push implies pull), and only there.
    assert_eq!(team.push_image(&reg, "team-a/app", "v1").status(), 201);
    assert_eq!(team.pull_manifest(&reg, "team-a/app", "v1").status(), 200);
    assert_error(team.push_image(&reg, "team-b/app", "v1"), 403, "DENIED");
    assert_error(team.push_image(&reg, "team-a", "v1"), 403, "DENIED");
    assert_error(team.pull_manifest(&reg, "public/base", "v1"), 403, "DENIED");

    // The read-only CI puller pulls everything and pushes nothing.
    assert_eq!(admin.push_image(&reg, "public/base", "v1").status(), 201);
    assert_eq!(ci.pull_manifest(&reg, "team-a/app", "v1").status(), 200);
    assert_eq!(ci.pull_manifest(&reg, "public/base", "v1").status(), 200);
    assert_error(ci.push_image(&reg, "team-a/app", "v2"), 403, "DENIED");
    let delete = ci
        .request(Method::DELETE, &reg.url("/v2/team-a/app/manifests/v1"))
        .send()
        .unwrap();
    assert_error(delete, 403, "DENIED");

    // Anonymous pulls of public/* only; anything else asks for a login (401, not 403).
    assert_eq!(
        anonymous()
            .pull_manifest(&reg, "public/base", "v1")
            .status(),
        200
    );
    assert_unauthorized(anonymous().pull_manifest(&reg, "team-a/app", "v1"));
    assert_unauthorized(anonymous().push_image(&reg, "public/base", "v2"));
    assert_unauthorized(anonymous().get(&reg.url("/v2/")));

    // A user with no rule may log in (docker login works) but do nothing.
    assert_eq!(eve.get(&reg.url("/v2/")).status(), 200);
    assert_error(eve.pull_manifest(&reg, "public/base", "v1"), 403, "DENIED");

    // The catalog: admin only.
    assert_eq!(admin.get(&reg.url("/v2/_catalog")).status(), 200);
    assert_error(ci.get(&reg.url("/v2/_catalog")), 403, "DENIED");
    // Deletes: admin's `*` includes them.
    let delete = admin
        .request(Method::DELETE, &reg.url("/v2/team-a/app/manifests/v1"))
        .send()
        .unwrap();
    assert_eq!(delete.status(), 202);
}

/// The `repositories` of a catalog response, and its `Link` header.
fn catalog_of(caller: &Caller, url: &str) -> (Vec<String>, Option<String>) {
    let r = caller.get(url);
    assert_eq!(r.status(), 200, "{url}");
    let link = r
        .headers()
        .get("link")
        .map(|l| l.to_str().unwrap().to_string());
    let body: serde_json::Value = r.json().unwrap();
    let names = body["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    (names, link)
}

#[test]
fn the_catalog_lists_only_what_the_caller_may_pull() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_with_users(
        dir.path(),
        &[("bob", "bob-pw"), ("admin", "admin-pw"), ("ci", "ci-pw")],
        "  access:
    - account: bob
      repositories: ['bob/*']
      actions: ['*']
    - account: anonymous
      repositories: ['public/*']
      actions: [pull, catalog]
    - account: admin
      repositories: ['*']
      actions: ['*']
    - account: ci
      repositories: ['*']
      actions: [pull]
",
    );
    let (bob, admin, ci) = (
        basic("bob", "bob-pw"),
        basic("admin", "admin-pw"),
        basic("ci", "ci-pw"),
    );
    let all = ["a/x", "bob/1", "bob/2", "bob/3", "other/y", "public/p"];
    for repo in all {
        assert_eq!(admin.push_image(&reg, repo, "v1").status(), 201, "{repo}");
    }
    let catalog = reg.url("/v2/_catalog");
    assert_eq!(catalog_of(&admin, &catalog).0, all);
    // bob's rule names only bob/*: his catalog too, page by page with a Link to the next.
    assert_eq!(catalog_of(&bob, &catalog).0, ["bob/1", "bob/2", "bob/3"]);
    let (page, link) = catalog_of(&bob, &reg.url("/v2/_catalog?n=2"));
    assert_eq!(page, ["bob/1", "bob/2"]);
    let link = link.expect("a Link to the next page");
    assert_eq!(link, r#"</v2/_catalog?n=2&last=bob%2F2>; rel="next""#);
    let (page, link) = catalog_of(&bob, &reg.url("/v2/_catalog?n=2&last=bob%2F2"));
    assert_eq!((page, link), (vec!["bob/3".to_string()], None));
    // A page after a name bob cannot see starts at the next one he can.
    let (page, _) = catalog_of(&bob, &reg.url("/v2/_catalog?n=1&last=a%2Fx"));
    assert_eq!(page, ["bob/1"]);
    // Anonymous callers see the public repositories; a user without the catalog action none.
    assert_eq!(catalog_of(&anonymous(), &catalog).0, ["public/p"]);
    assert_error(ci.get(&catalog), 403, "DENIED");
}

#[test]
fn mounts_never_hand_out_blobs_of_repositories_the_caller_cannot_read() {
    let dir = tempfile::tempdir().unwrap();
    let reg = team_registry(dir.path());
    let (team, admin) = (basic("team-a", "a-pw"), basic("admin", "admin-pw"));
    let secret = b"a layer of the admins' private image".to_vec();
    assert_eq!(admin.push_blob(&reg, "private/x", &secret).status(), 201);
    let digest = sha256(&secret);

    // Naming the source: team-a may not read private/x, so nothing is mounted; the client gets
    // an upload session (202), as for any blob that cannot be mounted, and uploads it itself.
    let r = team
        .request(
            Method::POST,
            &reg.url(&format!(
                "/v2/team-a/app/blobs/uploads/?mount={digest}&from=private/x"
            )),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "falls back to an upload");
    // Naming none: no mount, a fresh upload session instead (202), and the blob stays unknown.
    let r = team
        .request(
            Method::POST,
            &reg.url(&format!("/v2/team-a/app/blobs/uploads/?mount={digest}")),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 202, "falls back to an upload");
    let head = team
        .request(
            Method::HEAD,
            &reg.url(&format!("/v2/team-a/app/blobs/{digest}")),
        )
        .send()
        .unwrap();
    assert_eq!(head.status(), 404);
    // The admin may read both: the mount with `from` links it (201).
    let r = admin
        .request(
            Method::POST,
            &reg.url(&format!(
                "/v2/team-a/app/blobs/uploads/?mount={digest}&from=private/x"
            )),
        )
        .send()
        .unwrap();
    assert_eq!(r.status(), 201);
}

#[test]
fn repeated_failed_logins_are_refused_for_a_while() {
    let dir = tempfile::tempdir().unwrap();
    let reg = start_with_users(
        dir.path(),
        &[("alice", "wonderland"), ("bob", "builder")],
        "  failedloginsperminute: 3\n",
    );
    // alice logs in before the trouble starts.
    assert_eq!(
        basic("alice", "wonderland").get(&reg.url("/v2/")).status(),
        200
    );
    // Malformed credentials are refused but cost nothing, so they do not count.
    for _ in 0..5 {
        let garbage = Caller {
            authorization: Some("Basic %%%".into()),
        };
        assert_eq!(garbage.get(&reg.url("/v2/")).status(), 401);
    }
    for _ in 0..3 {
        assert_eq!(basic("bob", "guess").get(&reg.url("/v2/")).status(), 401);
    }
    // Locked out: no password from this address is checked until the minute is over…
    for caller in [basic("bob", "guess"), basic("bob", "builder")] {
        common::assert_too_many_requests(caller.get(&reg.url("/v2/")));
    }
    // …but a login checked before goes on working (nothing to guess there), and requests
    // without credentials are challenged as usual.
    assert_eq!(
        basic("alice", "wonderland").get(&reg.url("/v2/")).status(),
        200
    );
    assert_eq!(anonymous().get(&reg.url("/v2/")).status(), 401);
}

#[test]
fn a_flood_of_wrong_logins_from_many_addresses_does_not_slow_logged_in_users() {
    // The real binary on local disk, as reported: a cost-12 entry under attack and a user
    // whose login is remembered pulling a 30 MiB blob.
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &htpasswd,
        format!(
            "alice:{}\nbob:{}\n",
            bcrypt::hash("wonderland", 4).unwrap(),
            bcrypt::hash("builder", 12).unwrap()
        ),
    )
    .unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            dir.path().join("storage").display(),
            htpasswd.display()
        ),
    )
    .unwrap();
    let reg = common::BerthProcess::start(&config, &[]);
    let alice = basic("alice", "wonderland");
    let blob: Vec<u8> = (0..30 << 20).map(|i: u32| (i % 251) as u8).collect();
    let pushed = common::push_blob_as(&reg.url, "team/app", &blob, alice.authorization.as_deref());
    assert_eq!(pushed.status(), 201);
    let blob_url = format!("{}/v2/team/app/blobs/{}", reg.url, sha256(&blob));
    let pull = || {
        let started = std::time::Instant::now();
        let r = alice.get(&blob_url);
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().unwrap().len(), blob.len());
        started.elapsed()
    };
    pull();
    let quiet = pull();

    // 40 addresses × 10 concurrent wrong passwords for bob, each address on its own
    // 127.0.0.x source address (loopback only), for as long as alice pulls.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let statuses = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(u16, Option<String>, String)>::new(),
    ));
    let mut flooders = Vec::new();
    for a in 0..40u8 {
        let source: std::net::IpAddr = format!("127.0.0.{}", 10 + a).parse().unwrap();
        let client = reqwest::blocking::Client::builder()
            .local_address(source)
            .timeout(std::time::Duration::from_secs(20))
            .build()
            .unwrap();
        for t in 0..10 {
            let (client, stop, statuses) = (client.clone(), stop.clone(), statuses.clone());
            let url = format!("{}/v2/", reg.url);
            flooders.push(std::thread::spawn(move || {
                // A new guess each time, as an attacker makes them (the same one twice at once
                // would share one check).
                for n in 0.. {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        break;
                    }
                    let wrong = basic("bob", &format!("guess-{a}-{t}-{n}"));
                    let Ok(r) = client
                        .get(&url)
                        .header("Authorization", wrong.authorization.unwrap())
                        .send()
                    else {
                        continue;
                    };
                    let status = r.status().as_u16();
                    let retry = r
                        .headers()
                        .get("retry-after")
                        .map(|v| v.to_str().unwrap().to_string());
                    // A body cut off by the client's timeout has no code.
                    let code = r
                        .text()
                        .ok()
                        .filter(|body| !body.is_empty())
                        .map_or_else(String::new, |body| common::error_code(&body));
                    statuses.lock().unwrap().push((status, retry, code));
                    // The attacker's machine is not this one: a short pause keeps 400 client
                    // threads from taking the CPU the registry serves alice with.
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }));
        }
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    let slowest = (0..3).map(|_| pull()).max().unwrap();
    // A remembered login checks nothing, so it does not wait for a password check either.
    let started = std::time::Instant::now();
    assert_eq!(alice.get(&format!("{}/v2/", reg.url)).status(), 200);
    let login = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for f in flooders {
        f.join().unwrap();
    }
    let statuses = statuses.lock().unwrap();
    let refused: Vec<_> = statuses.iter().filter(|(s, ..)| *s == 429).collect();
    // Generous for a machine shared with compilers: without the overall cap on password checks
    // the pull did not finish within the client's 120 s.
    assert!(
        slowest < std::time::Duration::from_secs(5),
        "a 30 MiB pull took {slowest:?} during the flood, {quiet:?} before it ({} flood \
         answers, {} of them 429)",
        statuses.len(),
        refused.len()
    );
    assert!(
        login < std::time::Duration::from_secs(5),
        "login took {login:?}"
    );
    assert!(!refused.is_empty(), "the flood is refused");
    // Each refusal is the spec's JSON error and says when to retry.
    assert!(
        refused
            .iter()
            .all(|(_, retry, code)| retry.is_some() && code == "TOOMANYREQUESTS"),
        "{refused:?}"
    );
    assert!(statuses.iter().all(|(s, ..)| *s == 401 || *s == 429));
}

#[test]
fn read_only_mode_refuses_writes_and_serves_reads() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    {
        let reg = TestRegistry::builder().filesystem(&root).start();
        common::push_image(&reg, "app", "v1", b"layer");
    }
    let reg = TestRegistry::builder()
        .filesystem(&root)
        .env("REGISTRY_STORAGE_MAINTENANCE_READONLY_ENABLED", "true")
        .start();
    let c = common::client();
    let r = c
        .get(reg.url("/v2/app/manifests/v1"))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(reg.url("/v2/app/blobs/uploads/")).send().unwrap();
    let status = r.status().as_u16();
    let body = r.text().unwrap();
    assert_eq!(
        (status, common::error_code(&body).as_str()),
        (405, "UNSUPPORTED")
    );
    assert!(body.contains("read-only"), "{body}");
    let r = c.delete(reg.url("/v2/app/manifests/v1")).send().unwrap();
    assert_error(r, 405, "UNSUPPORTED");
}

fn berth() -> Command {
    Command::new(env!("CARGO_BIN_EXE_berth"))
}

/// `berth serve` with `config`: its exit status and log, when it fails to start.
fn serve_fails(config: &Path) -> String {
    let out = berth()
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success(), "berth must refuse to start");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn weak_htpasswd_entries_stop_the_start_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yml");
    let htpasswd = dir.path().join("htpasswd");
    std::fs::write(
        &config,
        format!(
            "storage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    // `htpasswd -d` (DES-crypt) and `htpasswd -m` (MD5) entries.
    for (entry, kind) in [
        ("bob:rqXexS6ZhobKA", "DES-crypt"),
        ("bob:$apr1$x8gD1/2q$5Uwn7a1rXYe/2ND5DQQzs1", "MD5"),
    ] {
        std::fs::write(&htpasswd, format!("{entry}\n")).unwrap();
        let log = serve_fails(&config);
        assert!(log.contains(kind), "{log}");
        assert!(
            log.contains("berth htpasswd"),
            "says how to re-create it: {log}"
        );
    }
    std::fs::remove_file(&htpasswd).unwrap();
    let log = serve_fails(&config);
    assert!(log.contains("cannot read htpasswd file"), "{log}");
}

/// `berth htpasswd FILE USER` with `password` on standard input.
fn htpasswd_cli(file: &Path, user: &str, password: Option<&str>) -> std::process::Output {
    let mut cmd = berth();
    cmd.arg("htpasswd")
        .arg(file)
        .arg(user)
        .args(["--cost", "4"]);
    if password.is_none() {
        cmd.arg("--delete");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(p) = password {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "{p}").unwrap();
    }
    child.wait_with_output().unwrap()
}

#[test]
fn the_htpasswd_command_adds_changes_and_removes_users_of_a_running_registry() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    assert!(htpasswd_cli(&file, "alice", Some("first")).status.success());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the file holds password hashes: owner only");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.starts_with("alice:$2"), "a bcrypt entry: {text}");

    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  inmemory:\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            file.display()
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder().config_file(&config).start();
    assert_eq!(basic("alice", "first").get(&reg.url("/v2/")).status(), 200);

    // Changes reach the running registry without a restart.
    assert!(htpasswd_cli(&file, "alice", Some("second"))
        .status
        .success());
    // A file shared with nginx (group www-data, 0640) keeps its group and mode when edited.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    let www_data = 33;
    std::os::unix::fs::chown(&file, None, Some(www_data)).unwrap();
    assert!(htpasswd_cli(&file, "bob", Some("builder")).status.success());
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    assert_eq!(meta.gid(), www_data);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while basic("bob", "builder").get(&reg.url("/v2/")).status() != 200 {
        assert!(std::time::Instant::now() < deadline, "bob was added");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(basic("alice", "first").get(&reg.url("/v2/")).status(), 401);
    assert_eq!(basic("alice", "second").get(&reg.url("/v2/")).status(), 200);
    assert!(htpasswd_cli(&file, "alice", None).status.success());
    std::thread::sleep(std::time::Duration::from_millis(1200));
    assert_eq!(basic("alice", "second").get(&reg.url("/v2/")).status(), 401);
    // Removing a user who is not there is an error.
    let out = htpasswd_cli(&file, "alice", None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no user"));
}

#[test]
fn passwords_longer_than_bcrypt_hashes_are_refused_by_the_command_and_at_login() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("users");
    let long = "x".repeat(73);
    let out = htpasswd_cli(&file, "alice", Some(&long));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("72"), "{stderr}");
    assert!(!file.exists(), "nothing written");

    // An entry made elsewhere (htpasswd -B) from a 72-character password: bcrypt alone would
    // let that password with any suffix in.
    let exact = "p".repeat(72);
    let reg = start_with_users(dir.path(), &[("alice", &exact)], "");
    assert_eq!(basic("alice", &exact).get(&reg.url("/v2/")).status(), 200);
    for suffix in ["x", "-and-anything-else"] {
        let r = basic("alice", &format!("{exact}{suffix}")).get(&reg.url("/v2/"));
        assert_unauthorized(r);
    }
}

#[test]
fn credentials_never_reach_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = write_htpasswd(dir.path(), &[("alice", "Pa55-word-in-log?")]);
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "storage:\n  inmemory:\nlog:\n  level: debug\nhttp:\n  addr: 127.0.0.1:0\nauth:\n  htpasswd:\n    realm: r\n    path: {}\n",
            htpasswd.display()
        ),
    )
    .unwrap();
    // The real binary, its whole log (RUST_LOG=trace: every module at its most talkative) in a
    // file.
    let log_file = dir.path().join("berth.log");
    let mut child = berth()
        .arg("serve")
        .arg(&config)
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_file).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let host = loop {
        let log = std::fs::read_to_string(&log_file).unwrap();
        if let Some(rest) = log.split("listening on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "berth did not start: {log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let base = format!("http://{host}");
    let url = |p: &str| format!("{base}{p}");
    let good = basic("alice", "Pa55-word-in-log?");
    let bad = basic("alice", "wrong-Secret-42");
    assert_eq!(good.get(&url("/v2/")).status(), 200);
    assert_eq!(bad.get(&url("/v2/")).status(), 401);
    assert_eq!(good.get(&url("/v2/x/manifests/latest")).status(), 404);
    let token = Caller {
        authorization: Some("Bearer eyJhbGciOiJub25lIn0.e30.c2VjcmV0LXRva2Vu".into()),
    };
    assert_eq!(token.get(&url("/v2/")).status(), 401);
    let _ = child.kill();
    let _ = child.wait();
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains("GET /v2/"),
        "the access log was captured: {log}"
    );
    for secret in [
        "Pa55-word-in-log?",
        "wrong-Secret-42",
        good.authorization
            .as_deref()
            .unwrap()
            .trim_start_matches("Basic "),
        bad.authorization
            .as_deref()
            .unwrap()
            .trim_start_matches("Basic "),
        "c2VjcmV0LXRva2Vu",
    ] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}
