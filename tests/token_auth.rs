//! Token authentication over HTTP: berth as its own token server (`/token` for its htpasswd
//! users, scopes granted by the access rules), and tokens from an external token server trusted
//! through `rootcertbundle`. Every refusal: no token, wrong password, insufficient scope, and
//! forged tokens (`alg: none`, a foreign key under a trusted `kid`, HS256 keyed with the public
//! key, expired, wrong audience, wrong issuer, a chain to an untrusted root).

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use common::{assert_error, TestRegistry};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::BasicConstraints;
use openssl::x509::{X509Name, X509};
use reqwest::blocking::Response;
use reqwest::Method;
use serde_json::{json, Value};

const SERVICE: &str = "berth-test";

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `key`, self-signed or signed by `issuer`.
fn certificate(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    b.set_serial_number(
        &BigNum::from_u32(rand_u32())
            .unwrap()
            .to_asn1_integer()
            .unwrap(),
    )
    .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    b.set_not_after(&Asn1Time::days_from_now(1).unwrap())
        .unwrap();
    if ca {
        b.append_extension(BasicConstraints::new().critical().ca().build().unwrap())
            .unwrap();
    }
    match issuer {
        Some((cert, issuer_key)) => {
            b.set_issuer_name(cert.subject_name()).unwrap();
            b.sign(issuer_key, MessageDigest::sha256()).unwrap();
        }
        None => {
            b.set_issuer_name(&name).unwrap();
            b.sign(key, MessageDigest::sha256()).unwrap();
        }
    }
    b.build()
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    openssl::rand::rand_bytes(&mut b).unwrap();
    u32::from_le_bytes(b) >> 1
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Signs `claims` with `key` (ES256) and `header` fields.
fn sign(
    key: &PKey<Private>,
    kid: Option<&str>,
    x5c: Option<Vec<String>>,
    claims: &Value,
) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = kid.map(str::to_string);
    header.x5c = x5c;
    let pem = key.private_key_to_pem_pkcs8().unwrap();
    jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_pem(&pem).unwrap()).unwrap()
}

fn claims(issuer: &str, audience: &str, access: Value, exp_offset: i64) -> Value {
    let now = now() as i64;
    json!({
        "iss": issuer, "sub": "alice", "aud": audience,
        "exp": now + exp_offset, "nbf": now - 10, "iat": now - 10,
        "jti": uuid_like(), "access": access,
    })
}

fn uuid_like() -> String {
    format!("{:08x}{:08x}", rand_u32(), rand_u32())
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn get(url: &str, authorization: Option<&str>) -> Response {
    common::request_as(Method::GET, url, authorization)
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .unwrap()
}

fn challenge(r: &Response) -> String {
    r.headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Pushes a one-layer image with `authorization`; the first refused response or the manifest's.
fn push_image(reg: &TestRegistry, repo: &str, tag: &str, authorization: &str) -> Response {
    common::push_image_as(&reg.url, repo, tag, Some(authorization))
}

struct Issuer {
    reg: TestRegistry,
    realm: String,
    /// berth's signing key, so that the tests can sign stale or misdirected tokens with it.
    key: PKey<Private>,
    _dir: tempfile::TempDir,
}

/// berth as its own token server, with htpasswd users and access rules.
fn start_issuer() -> Issuer {
    start_issuer_with("")
}

/// The same, with `extra` YAML lines under `auth:`.
fn start_issuer_with(extra: &str) -> Issuer {
    let dir = tempfile::tempdir().unwrap();
    let users: String = [
        ("alice", "alice-pw"),
        ("ci", "ci-pw"),
        ("admin", "admin-pw"),
        ("bob", "bob-pw"),
    ]
    .iter()
    .map(|(u, p)| format!("{u}:{}\n", bcrypt::hash(p, 4).unwrap()))
    .collect();
    std::fs::write(dir.path().join("htpasswd"), users).unwrap();
    let key = ec_key();
    std::fs::write(
        dir.path().join("signing.pem"),
        key.private_key_to_pem_pkcs8().unwrap(),
    )
    .unwrap();
    let port = common::free_port();
    let realm = format!("http://127.0.0.1:{port}/token");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nauth:\n  htpasswd:\n    path: {d}/htpasswd\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: berth-test-issuer\n    signingkey: {d}/signing.pem\n    expiration: 5m\n  access:\n    - account: alice\n      repositories: ['team-a/*']\n      actions: [push]\n    - account: ci\n      repositories: ['*']\n      actions: [pull]\n    - account: anonymous\n      repositories: ['public/*']\n      actions: [pull]\n    - account: admin\n      repositories: ['*']\n      actions: ['*']\n    - account: bob\n      repositories: ['bob/*']\n      actions: ['*']\n{extra}",
            d = dir.path().display()
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder()
        .config_file(&config)
        .env("REGISTRY_HTTP_ADDR", &format!("127.0.0.1:{port}"))
        .start();
    Issuer {
        reg,
        realm,
        key,
        _dir: dir,
    }
}

/// Asks berth's token server for `scopes` as `user` (anonymous when `None`).
fn fetch_token(issuer: &Issuer, user: Option<(&str, &str)>, scopes: &[&str]) -> Response {
    let mut url = format!("{}?service={SERVICE}", issuer.realm);
    for s in scopes {
        url.push_str(&format!("&scope={}", form_encode(s)));
    }
    let r = common::client().get(url);
    let r = match user {
        Some((u, p)) => r.basic_auth(u, Some(p)),
        None => r,
    };
    r.send().unwrap()
}

fn form_encode(s: &str) -> String {
    s.replace(':', "%3A")
        .replace('/', "%2F")
        .replace(',', "%2C")
        .replace('*', "%2A")
}

fn token_of(r: Response) -> String {
    assert_eq!(r.status(), 200);
    let body: Value = r.json().unwrap();
    assert_eq!(body["token"], body["access_token"]);
    assert!(body["expires_in"].as_u64().unwrap() >= 60);
    assert!(body["issued_at"].is_string());
    body["token"].as_str().unwrap().to_string()
}

/// The (unverified) claims of a token, to see what was granted.
fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn berth_issues_tokens_that_grant_what_the_rules_allow() {
    let issuer = start_issuer();
    let reg = &issuer.reg;

    // Anonymous: the Bearer challenge names the realm, the service and the scope needed.
    let r = get(&reg.url("/v2/"), None);
    assert_eq!(
        challenge(&r),
        format!(r#"Bearer realm="{}",service="{SERVICE}""#, issuer.realm)
    );
    assert_error(r, 401, "UNAUTHORIZED");
    let r = get(&reg.url("/v2/team-a/app/manifests/v1"), None);
    assert!(
        challenge(&r).ends_with(r#",scope="repository:team-a/app:pull""#),
        "{}",
        challenge(&r)
    );
    assert_error(r, 401, "UNAUTHORIZED");

    // Wrong password or unknown user at the token server: 401, no token.
    assert_eq!(
        fetch_token(
            &issuer,
            Some(("alice", "nope")),
            &["repository:team-a/app:pull,push"]
        )
        .status(),
        401
    );
    assert_eq!(
        fetch_token(&issuer, Some(("mallory", "x")), &[]).status(),
        401
    );

    // alice pushes and pulls under team-a/ with a token for exactly that.
    let token = token_of(fetch_token(
        &issuer,
        Some(("alice", "alice-pw")),
        &["repository:team-a/app:pull,push"],
    ));
    let claims = payload(&token);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], SERVICE);
    assert_eq!(
        claims["access"],
        json!([{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}])
    );
    assert_eq!(
        push_image(reg, "team-a/app", "v1", &bearer(&token)).status(),
        201
    );
    assert_eq!(
        get(
            &reg.url("/v2/team-a/app/manifests/v1"),
            Some(&bearer(&token))
        )
        .status(),
        200
    );
    // The token is for team-a/app only.
    let r = get(
        &reg.url("/v2/team-a/other/manifests/v1"),
        Some(&bearer(&token)),
    );
    assert!(
        challenge(&r).contains(r#"error="insufficient_scope""#),
        "{}",
        challenge(&r)
    );
    assert_error(r, 401, "UNAUTHORIZED");

    // alice asking for team-b: granted nothing, so pushing there fails.
    let token = token_of(fetch_token(
        &issuer,
        Some(("alice", "alice-pw")),
        &["repository:team-b/app:pull,push"],
    ));
    assert_eq!(payload(&token)["access"], json!([]));
    assert_error(
        push_image(reg, "team-b/app", "v1", &bearer(&token)),
        401,
        "UNAUTHORIZED",
    );

    // ci asks for pull and push: only pull is granted.
    let token = token_of(fetch_token(
        &issuer,
        Some(("ci", "ci-pw")),
        &["repository:team-a/app:pull,push"],
    ));
    assert_eq!(payload(&token)["access"][0]["actions"], json!(["pull"]));
    assert_eq!(
        get(
            &reg.url("/v2/team-a/app/manifests/v1"),
            Some(&bearer(&token))
        )
        .status(),
        200
    );
    assert_error(
        push_image(reg, "team-a/app", "v2", &bearer(&token)),
        401,
        "UNAUTHORIZED",
    );

    // Anonymous tokens: public/* only.
    let admin = token_of(fetch_token(
        &issuer,
        Some(("admin", "admin-pw")),
        &["repository:public/base:pull,push"],
    ));
    assert_eq!(
        push_image(reg, "public/base", "v1", &bearer(&admin)).status(),
        201
    );
    let anon = token_of(fetch_token(
        &issuer,
        None,
        &["repository:public/base:pull", "repository:team-a/app:pull"],
    ));
    assert_eq!(
        payload(&anon)["access"],
        json!([{"type": "repository", "name": "public/base", "actions": ["pull"]}])
    );
    assert_eq!(
        get(
            &reg.url("/v2/public/base/manifests/v1"),
            Some(&bearer(&anon))
        )
        .status(),
        200
    );
    assert_eq!(
        get(
            &reg.url("/v2/team-a/app/manifests/v1"),
            Some(&bearer(&anon))
        )
        .status(),
        401
    );

    // The catalog needs registry:catalog:*, which only admin gets.
    let token = token_of(fetch_token(
        &issuer,
        Some(("admin", "admin-pw")),
        &["registry:catalog:*"],
    ));
    assert_eq!(
        get(&reg.url("/v2/_catalog"), Some(&bearer(&token))).status(),
        200
    );
    let token = token_of(fetch_token(
        &issuer,
        Some(("ci", "ci-pw")),
        &["registry:catalog:*"],
    ));
    assert_eq!(payload(&token)["access"], json!([]));
    assert_eq!(
        get(&reg.url("/v2/_catalog"), Some(&bearer(&token))).status(),
        401
    );
}

#[test]
fn a_catalog_token_from_berth_lists_only_what_its_holder_may_pull() {
    let issuer = start_issuer();
    let reg = &issuer.reg;
    for repo in ["bob/app", "public/base", "team-a/app"] {
        let scope = format!("repository:{repo}:pull,push");
        let token = token_of(fetch_token(&issuer, Some(("admin", "admin-pw")), &[&scope]));
        assert_eq!(push_image(reg, repo, "v1", &bearer(&token)).status(), 201);
    }
    let list = |user: (&str, &str)| -> Vec<String> {
        let token = token_of(fetch_token(&issuer, Some(user), &["registry:catalog:*"]));
        assert_eq!(
            payload(&token)["access"],
            json!([{"type": "registry", "name": "catalog", "actions": ["*"]}]),
            "{user:?} may list the catalog"
        );
        let r = get(&reg.url("/v2/_catalog"), Some(&bearer(&token)));
        assert_eq!(r.status(), 200);
        let body: Value = r.json().unwrap();
        serde_json::from_value(body["repositories"].clone()).unwrap()
    };
    // bob's rules (`bob/*`, every action) grant him the catalog scope, which shows him bob/*.
    assert_eq!(list(("bob", "bob-pw")), ["bob/app"]);
    assert_eq!(
        list(("admin", "admin-pw")),
        ["bob/app", "public/base", "team-a/app"]
    );
    // ci may pull everything but not list: no catalog scope, so the token does not do.
    let token = token_of(fetch_token(
        &issuer,
        Some(("ci", "ci-pw")),
        &["registry:catalog:*"],
    ));
    let r = get(&reg.url("/v2/_catalog"), Some(&bearer(&token)));
    assert!(challenge(&r).contains(r#"error="insufficient_scope""#));
    assert_error(r, 401, "UNAUTHORIZED");
}

#[test]
fn token_requests_are_limited_per_address() {
    let issuer = start_issuer_with("  tokenrequestsperminute: 5\n");
    let scope = ["repository:public/base:pull"];
    for _ in 0..5 {
        token_of(fetch_token(&issuer, None, &scope));
    }
    // The sixth in the minute is refused before any work, logged in or not.
    for user in [None, Some(("admin", "admin-pw"))] {
        common::assert_too_many_requests(fetch_token(&issuer, user, &scope));
    }
    // Another address has its own allowance.
    let other = reqwest::blocking::Client::builder()
        .local_address("127.0.0.2".parse::<std::net::IpAddr>().unwrap())
        .build()
        .unwrap();
    let r = other
        .get(format!(
            "{}?service={SERVICE}&scope=repository%3Apublic%2Fbase%3Apull",
            issuer.realm
        ))
        .send()
        .unwrap();
    token_of(r);
}

#[test]
fn forged_and_stale_tokens_are_refused() {
    let issuer = start_issuer();
    let reg = &issuer.reg;
    let real = token_of(fetch_token(
        &issuer,
        Some(("admin", "admin-pw")),
        &["repository:x/y:pull"],
    ));
    let url = reg.url("/v2/x/y/tags/list");
    assert_eq!(
        get(&url, Some(&bearer(&real))).status(),
        404,
        "the real token gets in (no such repo)"
    );
    let kid = jsonwebtoken::decode_header(&real)
        .unwrap()
        .kid
        .expect("berth's tokens name their key");
    let access = json!([{"type": "repository", "name": "x/y", "actions": ["pull"]}]);
    let good_claims = claims("berth-test-issuer", SERVICE, access.clone(), 300);

    let (header, body) = {
        let mut parts = real.split('.');
        (
            parts.next().unwrap().to_string(),
            parts.next().unwrap().to_string(),
        )
    };
    let signature = real.rsplit('.').next().unwrap();
    let none_header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let with_berths_key = |claims: &Value| sign(&issuer.key, Some(&kid), None, claims);
    let mut not_yet = good_claims.clone();
    not_yet["nbf"] = json!(now() + 600);
    let more = claims(
        "berth-test-issuer",
        SERVICE,
        json!([{"type": "repository", "name": "x/y", "actions": ["*"]}]),
        300,
    );
    let public_pem = issuer.key.public_key_to_pem().unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let forged = [
        (
            "signed by berth's key itself",
            with_berths_key(&good_claims),
            404,
        ),
        (
            "alg none",
            format!(
                "{none_header}.{}.",
                b64url(good_claims.to_string().as_bytes())
            ),
            401,
        ),
        (
            "a foreign key under berth's kid",
            sign(&ec_key(), Some(&kid), None, &good_claims),
            401,
        ),
        (
            "HS256 keyed with berth's public key",
            jsonwebtoken::encode(&hs, &good_claims, &EncodingKey::from_secret(&public_pem))
                .unwrap(),
            401,
        ),
        (
            "expired",
            with_berths_key(&claims("berth-test-issuer", SERVICE, access.clone(), -120)),
            401,
        ),
        ("not yet valid", with_berths_key(&not_yet), 401),
        (
            "wrong audience",
            with_berths_key(&claims(
                "berth-test-issuer",
                "other-registry",
                access.clone(),
                300,
            )),
            401,
        ),
        (
            "wrong issuer",
            with_berths_key(&claims("someone-else", SERVICE, access.clone(), 300)),
            401,
        ),
        (
            "a payload swapped under a real signature",
            format!(
                "{header}.{}.{signature}",
                b64url(more.to_string().as_bytes())
            ),
            401,
        ),
        ("truncated", format!("{header}.{body}"), 401),
        ("garbage", "not-a-token".to_string(), 401),
    ];
    for (what, token, status) in forged {
        let r = get(&url, Some(&bearer(&token)));
        assert_eq!(r.status(), status, "{what}");
        if status == 401 {
            assert!(
                challenge(&r).contains(r#"error="invalid_token""#),
                "{what}: {}",
                challenge(&r)
            );
            assert!(
                challenge(&r).contains(r#"scope="repository:x/y:pull""#),
                "{what}: the challenge says what to ask for: {}",
                challenge(&r)
            );
        }
    }
}

struct ExternalServer {
    root: X509,
    leaf: X509,
    leaf_key: PKey<Private>,
}

impl ExternalServer {
    fn new() -> ExternalServer {
        let root_key = ec_key();
        let root = certificate("test token CA", &root_key, None, true);
        let leaf_key = ec_key();
        let leaf = certificate("token signer", &leaf_key, Some((&root, &root_key)), false);
        ExternalServer {
            root,
            leaf,
            leaf_key,
        }
    }

    fn x5c(&self) -> Vec<String> {
        vec![base64::engine::general_purpose::STANDARD.encode(self.leaf.to_der().unwrap())]
    }

    fn token(&self, claims: &Value) -> String {
        sign(&self.leaf_key, None, Some(self.x5c()), claims)
    }
}

#[test]
fn tokens_of_an_external_token_server_are_checked_against_its_root_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let server = ExternalServer::new();
    std::fs::write(dir.path().join("bundle.pem"), server.root.to_pem().unwrap()).unwrap();
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nauth:\n  token:\n    realm: https://auth.example/token\n    service: {SERVICE}\n    issuer: auth.example\n    rootcertbundle: {}/bundle.pem\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder().config_file(&config).start();
    let push = json!([{"type": "repository", "name": "ext/app", "actions": ["pull", "push"]}]);
    let good = server.token(&claims("auth.example", SERVICE, push.clone(), 300));
    assert_eq!(
        push_image(&reg, "ext/app", "v1", &bearer(&good)).status(),
        201
    );
    assert_eq!(
        get(&reg.url("/v2/ext/app/manifests/v1"), Some(&bearer(&good))).status(),
        200
    );

    // HS256 keyed with the signer's public key: the classic algorithm confusion.
    let public_pem = server.leaf_key.public_key_to_pem().unwrap();
    let mut hs = Header::new(Algorithm::HS256);
    hs.x5c = Some(server.x5c());
    let confused = jsonwebtoken::encode(
        &hs,
        &claims("auth.example", SERVICE, push.clone(), 300),
        &EncodingKey::from_secret(&public_pem),
    )
    .unwrap();
    // A chain to a root berth does not trust.
    let rogue = ExternalServer::new();
    let refused = [
        (
            "expired",
            server.token(&claims("auth.example", SERVICE, push.clone(), -120)),
        ),
        (
            "wrong audience",
            server.token(&claims(
                "auth.example",
                "another-registry",
                push.clone(),
                300,
            )),
        ),
        (
            "wrong issuer",
            server.token(&claims("evil.example", SERVICE, push.clone(), 300)),
        ),
        ("HS256 with the public key", confused),
        (
            "untrusted root",
            rogue.token(&claims("auth.example", SERVICE, push.clone(), 300)),
        ),
    ];
    for (what, token) in refused {
        let r = get(&reg.url("/v2/ext/app/manifests/v1"), Some(&bearer(&token)));
        assert_eq!(r.status(), 401, "{what}");
        assert_error(r, 401, "UNAUTHORIZED");
    }
    // Wrong scope: a pull token cannot push.
    let pull = server.token(&claims(
        "auth.example",
        SERVICE,
        json!([{"type": "repository", "name": "ext/app", "actions": ["pull"]}]),
        300,
    ));
    let r = push_image(&reg, "ext/app", "v2", &bearer(&pull));
    assert!(
        challenge(&r).contains(r#"scope="repository:ext/app:pull,push""#),
        "{}",
        challenge(&r)
    );
    assert!(challenge(&r).contains(r#"error="insufficient_scope""#));
    assert_error(r, 401, "UNAUTHORIZED");
}

#[test]
fn a_mutual_tls_client_certificate_of_a_bundle_ca_cannot_sign_tokens() {
    // One CA for everything, as `berth certs` makes it: the token server's root, and the
    // issuer of mutual-TLS client certificates (clientAuth only) handed to CI machines.
    let dir = tempfile::tempdir().unwrap();
    let certs = dir.path().join("certs");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
        .args(["certs", "--client", "ci", "--out"])
        .arg(&certs)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let config = dir.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "log:\n  level: warn\nauth:\n  token:\n    realm: https://auth.example/token\n    service: {SERVICE}\n    issuer: auth.example\n    rootcertbundle: {}/ca.crt\n",
            certs.display()
        ),
    )
    .unwrap();
    let reg = TestRegistry::builder().config_file(&config).start();

    // The CI machine signs itself a token for everything with its TLS client key.
    let client_cert = X509::from_pem(&std::fs::read(certs.join("ci.crt")).unwrap()).unwrap();
    let client_key =
        PKey::private_key_from_pem(&std::fs::read(certs.join("ci.key")).unwrap()).unwrap();
    let x5c = vec![base64::engine::general_purpose::STANDARD.encode(client_cert.to_der().unwrap())];
    let everything = json!([{"type": "repository", "name": "anything", "actions": ["*"]}]);
    let forged = sign(
        &client_key,
        None,
        Some(x5c),
        &claims("auth.example", SERVICE, everything, 300),
    );
    let r = common::request_as(
        Method::POST,
        &reg.url("/v2/anything/blobs/uploads/"),
        Some(&bearer(&forged)),
    )
    .send()
    .unwrap();
    assert!(
        challenge(&r).contains(r#"error="invalid_token""#),
        "{} {:?}",
        r.status(),
        challenge(&r)
    );
    assert_error(r, 401, "UNAUTHORIZED");
}
