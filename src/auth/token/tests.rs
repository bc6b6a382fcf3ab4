//! Tests of token verification and issuing. Keys and certificates are made here with openssl,
//! once per test run (RSA generation is the slow part), and written to a fresh directory per
//! test.

use std::sync::OnceLock;

use base64::engine::general_purpose::STANDARD;
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::sign::Signer;
use openssl::x509::extension::{BasicConstraints, KeyUsage};
use openssl::x509::{X509Extension, X509Name, X509};
use serde_json::{json, Value};

use super::*;

const ISSUER: &str = "auth.example.com";
const SERVICE: &str = "registry.example.com";
const DAY: i64 = 86_400;

fn now() -> SystemTime {
    // A fixed instant, so that nothing depends on when the tests run (certificates are made
    // valid around the real clock, which is close enough: see `cert`).
    UNIX_EPOCH + Duration::from_secs(unix_now() as u64)
}

fn unix_now() -> i64 {
    static NOW: OnceLock<i64> = OnceLock::new();
    *NOW.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    })
}

fn rsa_key() -> PKey<Private> {
    PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap()
}

pub(super) fn ec_key(curve: Nid) -> PKey<Private> {
    let group = EcGroup::from_curve_name(curve).unwrap();
    PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
}

/// A certificate for `key`, signed by `issuer` (or self-signed), valid from `from` to `until`
/// (seconds relative to now).
fn cert(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    ca: bool,
    from: i64,
    until: i64,
) -> X509 {
    let extensions = if ca {
        ca_extensions()
    } else {
        vec![digital_signature()]
    };
    x509(
        cn,
        key,
        issuer,
        &Asn1Time::from_unix(unix_now() + from).unwrap(),
        &Asn1Time::from_unix(unix_now() + until).unwrap(),
        extensions,
    )
}

/// A certificate for `key` with `extensions`, signed by `issuer` (or self-signed), valid from
/// `not_before` to `not_after`: what `cert` here and the chain tests' certificates are made with.
pub(super) fn x509(
    cn: &str,
    key: &PKey<Private>,
    issuer: Option<(&X509, &PKey<Private>)>,
    not_before: &Asn1Time,
    not_after: &Asn1Time,
    extensions: Vec<X509Extension>,
) -> X509 {
    let mut name = X509Name::builder().unwrap();
    name.append_entry_by_nid(Nid::COMMONNAME, cn).unwrap();
    let name = name.build();
    let mut b = X509::builder().unwrap();
    b.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    b.set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(issuer.map_or(&*name, |(c, _)| c.subject_name()))
        .unwrap();
    b.set_pubkey(key).unwrap();
    b.set_not_before(not_before).unwrap();
    b.set_not_after(not_after).unwrap();
    for e in extensions {
        b.append_extension(e).unwrap();
    }
    let signer = issuer.map_or(key, |(_, k)| k);
    b.sign(signer, MessageDigest::sha256()).unwrap();
    b.build()
}

/// A CA's extensions: `CA:TRUE` and the key usages `keyCertSign` and `cRLSign`, both critical.
pub(super) fn ca_extensions() -> Vec<X509Extension> {
    vec![
        BasicConstraints::new().critical().ca().build().unwrap(),
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()
            .unwrap(),
    ]
}

/// The critical key usage `digitalSignature` of a signing certificate.
pub(super) fn digital_signature() -> X509Extension {
    KeyUsage::new()
        .critical()
        .digital_signature()
        .build()
        .unwrap()
}

/// Everything made once: the trusted and the untrusted keys and certificates.
struct Keys {
    /// RSA root CA of the bundle, an intermediate CA under it, and leaves.
    root_key: PKey<Private>,
    root: X509,
    intermediate: X509,
    leaf_key: PKey<Private>,
    leaf: X509,
    leaf_of_intermediate: X509,
    expired_leaf: X509,
    /// A self-signed EC P-256 certificate in the bundle: its key is trusted by libtrust kid.
    ec_key: PKey<Private>,
    ec_cert: X509,
    /// A JWKS key (EC P-384, alg unpinned) and a JWKS RSA key pinned to PS256.
    jwks_ec_key: PKey<Private>,
    jwks_rsa_key: PKey<Private>,
    /// berth's own signing key.
    signing_key: PKey<Private>,
    /// Not trusted anywhere: an RSA root with its leaf, and an EC key.
    rogue_root: X509,
    rogue_leaf_key: PKey<Private>,
    rogue_leaf: X509,
    rogue_ec_key: PKey<Private>,
}

fn keys() -> &'static Keys {
    static KEYS: OnceLock<Keys> = OnceLock::new();
    KEYS.get_or_init(|| {
        let root_key = rsa_key();
        let root = cert("Test Root", &root_key, None, true, -DAY, 365 * DAY);
        let intermediate_key = rsa_key();
        let intermediate = cert(
            "Test Intermediate",
            &intermediate_key,
            Some((&root, &root_key)),
            true,
            -DAY,
            365 * DAY,
        );
        let leaf_key = rsa_key();
        let leaf = cert(
            "token signer",
            &leaf_key,
            Some((&root, &root_key)),
            false,
            -DAY,
            30 * DAY,
        );
        let leaf_of_intermediate = cert(
            "token signer 2",
            &leaf_key,
            Some((&intermediate, &intermediate_key)),
            false,
            -DAY,
            30 * DAY,
        );
        let expired_leaf = cert(
            "old token signer",
            &leaf_key,
            Some((&root, &root_key)),
            false,
            -30 * DAY,
            -DAY,
        );
        let ec_key = ec_key(Nid::X9_62_PRIME256V1);
        let ec_cert = cert("ec signer", &ec_key, None, false, -DAY, 365 * DAY);
        let rogue_root_key = rsa_key();
        let rogue_root = cert("Rogue Root", &rogue_root_key, None, true, -DAY, 365 * DAY);
        let rogue_leaf_key = rsa_key();
        let rogue_leaf = cert(
            "token signer",
            &rogue_leaf_key,
            Some((&rogue_root, &rogue_root_key)),
            false,
            -DAY,
            30 * DAY,
        );
        Keys {
            root_key,
            root,
            intermediate,
            leaf_key,
            leaf,
            leaf_of_intermediate,
            expired_leaf,
            ec_key,
            ec_cert,
            jwks_ec_key: self::ec_key(Nid::SECP384R1),
            jwks_rsa_key: rsa_key(),
            signing_key: self::ec_key(Nid::X9_62_PRIME256V1),
            rogue_root,
            rogue_leaf_key,
            rogue_leaf,
            rogue_ec_key: self::ec_key(Nid::X9_62_PRIME256V1),
        }
    })
}

fn b64(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

fn jwk_of(key: &PKey<Private>) -> Value {
    if let Ok(rsa) = key.rsa() {
        json!({"kty": "RSA", "n": b64(&rsa.n().to_vec()), "e": b64(&rsa.e().to_vec())})
    } else {
        let ec = key.ec_key().unwrap();
        let (crv, n) = match ec.group().curve_name().unwrap() {
            Nid::X9_62_PRIME256V1 => ("P-256", 32),
            Nid::SECP384R1 => ("P-384", 48),
            _ => ("P-521", 66),
        };
        let mut ctx = openssl::bn::BigNumContext::new().unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)
            .unwrap();
        json!({
            "kty": "EC",
            "crv": crv,
            "x": b64(&x.to_vec_padded(n).unwrap()),
            "y": b64(&y.to_vec_padded(n).unwrap()),
        })
    }
}

fn public(key: &PKey<Private>) -> PKey<Public> {
    PKey::public_key_from_der(&key.public_key_to_der().unwrap()).unwrap()
}

fn kid_of(key: &PKey<Private>) -> String {
    libtrust_key_id(&public(key)).unwrap()
}

/// A configuration with all three sources of keys, its files in a fresh directory.
struct Setup {
    dir: tempfile::TempDir,
    config: TokenConfig,
}

fn setup() -> Setup {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("roots.pem");
    let mut pem = k.root.to_pem().unwrap();
    pem.extend(k.ec_cert.to_pem().unwrap());
    std::fs::write(&bundle, pem).unwrap();
    let jwks = dir.path().join("jwks.json");
    let mut ec = jwk_of(&k.jwks_ec_key);
    ec["kid"] = json!("jwks-ec");
    let mut rsa = jwk_of(&k.jwks_rsa_key);
    rsa["kid"] = json!("jwks-rsa");
    rsa["alg"] = json!("PS256");
    rsa["use"] = json!("sig");
    std::fs::write(&jwks, json!({"keys": [ec, rsa]}).to_string()).unwrap();
    let signing = dir.path().join("signing.pem");
    // The traditional `EC PRIVATE KEY` form, as `openssl ecparam -genkey` writes it.
    std::fs::write(
        &signing,
        k.signing_key
            .ec_key()
            .unwrap()
            .private_key_to_pem()
            .unwrap(),
    )
    .unwrap();
    let config = TokenConfig {
        realm: "https://auth.example.com/token".to_string(),
        service: SERVICE.to_string(),
        issuer: ISSUER.to_string(),
        rootcertbundle: Some(bundle),
        jwks: Some(jwks),
        signingkey: Some(signing),
        expiration: Duration::from_secs(300),
        partialchain: false,
    };
    Setup { dir, config }
}

fn verifier(setup: &Setup) -> TokenVerifier {
    TokenVerifier::from_config(&setup.config).unwrap()
}

fn claims() -> Value {
    let now = unix_now();
    json!({
        "iss": ISSUER,
        "sub": "alice",
        "aud": SERVICE,
        "exp": now + 300,
        "nbf": now,
        "iat": now,
        "jti": "a-token-id",
        "access": [{"type": "repository", "name": "team-a/app", "actions": ["pull", "push"]}],
    })
}

/// Signs `header`.`claims` with `key` as `alg` says (independently of the issuer's code path
/// for RSA; ES* shares the r || s conversion of the issuer).
fn sign(header: &Value, claims: &Value, key: &PKey<Private>) -> String {
    let alg = Algorithm::from_name(header["alg"].as_str().unwrap()).unwrap();
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut signer = Signer::new(alg.digest(), key).unwrap();
    if alg.is_pss() {
        signer
            .set_rsa_padding(openssl::rsa::Padding::PKCS1_PSS)
            .unwrap();
        signer
            .set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)
            .unwrap();
    }
    let mut signature = signer.sign_oneshot_to_vec(message.as_bytes()).unwrap();
    if let Some((_, n)) = alg.ec_curve() {
        let sig = EcdsaSig::from_der(&signature).unwrap();
        signature = sig.r().to_vec_padded(n as i32).unwrap();
        signature.extend(sig.s().to_vec_padded(n as i32).unwrap());
    }
    format!("{message}.{}", b64(&signature))
}

fn x5c(certs: &[&X509]) -> Value {
    json!(certs
        .iter()
        .map(|c| STANDARD.encode(c.to_der().unwrap()))
        .collect::<Vec<_>>())
}

/// Asserts that `token` is refused with a reason containing `expected`, and that the reason
/// gives away no part of the token.
#[track_caller]
fn refused(verifier: &TokenVerifier, token: &str, expected: &str) {
    refused_at(verifier, token, now(), expected)
}

#[track_caller]
fn refused_at(verifier: &TokenVerifier, token: &str, at: SystemTime, expected: &str) {
    match verifier.verify(token, at) {
        Ok(grant) => panic!("accepted ({grant:?}), expected refusal: {expected}"),
        Err(TokenError::Invalid(reason)) => {
            assert!(
                reason.contains(expected),
                "reason {reason:?} does not say {expected:?}"
            );
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!reason.contains(part), "reason {reason:?} quotes the token");
            }
        }
        Err(e) => panic!("wrong kind of error: {e}"),
    }
}

fn accepted(verifier: &TokenVerifier, token: &str) -> Grant {
    verifier
        .verify(token, now())
        .unwrap_or_else(|e| panic!("refused: {e}"))
}

// ---- the libtrust key ID ----

/// The key and key ID of the example in distribution's token specification (spec-auth-jwt.md).
const SPEC_KID: &str = "PYYO:TEWU:V7JH:26JV:AQTZ:LJC3:SXVJ:XGHA:34F2:2LAQ:ZRMK:Z7Q6";

fn spec_jwk() -> Value {
    json!({
        "kty": "EC",
        "crv": "P-256",
        "kid": SPEC_KID,
        "x": "m7zUpx3b-zmVE5cymSs64POG9QcyEpJaYCD82-549_Q",
        "y": "dU3biz8sZ_8GPB-odm8Wxz3lNDr1xcAQQPQaOcr1fmc"
    })
}

#[test]
fn libtrust_key_id_matches_the_specification_example() {
    let key = jwk_public_key(&spec_jwk()).unwrap();
    assert_eq!(libtrust_key_id(&key).unwrap(), SPEC_KID);
}

#[test]
fn base32_is_rfc_4648() {
    // RFC 4648 section 10 test vectors, without padding.
    for (input, output) in [
        ("", ""),
        ("f", "MY"),
        ("fo", "MZXQ"),
        ("foo", "MZXW6"),
        ("foob", "MZXW6YQ"),
        ("fooba", "MZXW6YTB"),
        ("foobar", "MZXW6YTBOI"),
    ] {
        assert_eq!(base32(input.as_bytes()), output);
    }
}

#[test]
fn the_specification_example_verifies_with_its_key() {
    // The example token of spec-auth-jwt.md, header and claims as printed. Its printed signature
    // does not verify (not with Python's `cryptography` either: the example was edited after
    // signing), so it is signed again here with the example's private key `d`.
    let header = "eyJ0eXAiOiJKV1QiLCJhbGciOiJFUzI1NiIsImtpZCI6IlBZWU86VEVXVTpWN0pIOjI2SlY6QVFUWjpMSkMzOlNYVko6WEdIQTozNEYyOjJMQVE6WlJNSzpaN1E2In0";
    let claims = "eyJpc3MiOiJhdXRoLmRvY2tlci5jb20iLCJzdWIiOiJqbGhhd24iLCJhdWQiOiJyZWdpc3RyeS5kb2NrZXIuY29tIiwiZXhwIjoxNDE1Mzg3MzE1LCJuYmYiOjE0MTUzODcwMTUsImlhdCI6MTQxNTM4NzAxNSwianRpIjoidFlKQ08xYzZjbnl5N2tBbjBjN3JLUGdiVjFIMWJGd3MiLCJhY2Nlc3MiOlt7InR5cGUiOiJyZXBvc2l0b3J5IiwibmFtZSI6InNhbWFsYmEvbXktYXBwIiwiYWN0aW9ucyI6WyJwdXNoIl19XX0";
    let printed_signature =
        "QhflHPfbd6eVF4lM9bwYpFZIV0PfikbyXuLx959ykRTBpe3CYnzs6YBK8FToVb5R47920PVLrh8zuLzdCr9t3w";
    let jwk = spec_jwk();
    let bn = |field: &str| {
        BigNum::from_slice(&B64URL.decode(jwk[field].as_str().unwrap()).unwrap()).unwrap()
    };
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
    let public = EcKey::from_public_key_affine_coordinates(&group, &bn("x"), &bn("y")).unwrap();
    let d = BigNum::from_slice(
        &B64URL
            .decode("R7OnbfMaD5J2jl7GeE8ESo7CnHSBm_1N2k9IXYFrKJA")
            .unwrap(),
    )
    .unwrap();
    let private = EcKey::from_private_components(&group, &d, public.public_key()).unwrap();
    private.check_key().unwrap();
    let private = PKey::from_ec_key(private).unwrap();
    let mut signer = Signer::new(MessageDigest::sha256(), &private).unwrap();
    let der = signer
        .sign_oneshot_to_vec(format!("{header}.{claims}").as_bytes())
        .unwrap();
    let sig = EcdsaSig::from_der(&der).unwrap();
    let mut signature = sig.r().to_vec_padded(32).unwrap();
    signature.extend(sig.s().to_vec_padded(32).unwrap());
    let token = format!("{header}.{claims}.{}", b64(&signature));

    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let config = TokenConfig {
        realm: "https://auth.docker.com/token".to_string(),
        service: "registry.docker.com".to_string(),
        issuer: "auth.docker.com".to_string(),
        rootcertbundle: None,
        jwks: Some(jwks),
        signingkey: None,
        expiration: Duration::from_secs(300),
        partialchain: false,
    };
    let verifier = TokenVerifier::from_config(&config).unwrap();
    let then = UNIX_EPOCH + Duration::from_secs(1_415_387_100);
    let grant = verifier.verify(&token, then).unwrap();
    assert_eq!(grant.subject, "jlhawn");
    assert!(grant.allows("repository", "samalba/my-app", "push"));
    assert!(!grant.allows("repository", "samalba/my-app", "pull"));
    // By today's clock it is long expired.
    refused(&verifier, &token, "expired");
    refused_at(
        &verifier,
        &format!("{header}.{claims}.{printed_signature}"),
        then,
        "bad signature",
    );
}

/// An independent implementation (the jsonwebtoken crate, RustCrypto backend) agrees with this
/// module's signatures both ways: ES r || s encoding, PKCS#1 v1.5 and PSS.
#[test]
fn signatures_agree_with_the_jsonwebtoken_crate() {
    use jsonwebtoken::{
        decode, encode, Algorithm as Alg, DecodingKey, EncodingKey, Header, Validation,
    };
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let mut validation = Validation::new(Alg::ES256);
    validation.set_audience(&[SERVICE]);
    validation.set_issuer(&[ISSUER]);

    // berth's ES256 tokens, checked by jsonwebtoken.
    let issuer = TokenIssuer::from_config(&s.config).unwrap().unwrap();
    let token = issuer.issue("bob", &[], SystemTime::now()).unwrap();
    let key = DecodingKey::from_ec_pem(&k.signing_key.public_key_to_pem().unwrap()).unwrap();
    let data = decode::<Value>(&token, &key, &validation).unwrap();
    assert_eq!(data.claims["sub"], "bob");
    assert_eq!(data.header.kid.as_deref(), Some(issuer.key_id()));

    // jsonwebtoken's tokens, checked by berth.
    let claims = claims();
    for (alg, key, kid) in [
        (Alg::ES256, &k.ec_key, kid_of(&k.ec_key)),
        (Alg::ES384, &k.jwks_ec_key, "jwks-ec".to_string()),
        (Alg::RS256, &k.root_key, kid_of(&k.root_key)),
        (Alg::RS384, &k.root_key, kid_of(&k.root_key)),
        (Alg::PS256, &k.jwks_rsa_key, "jwks-rsa".to_string()),
    ] {
        let pem = key.private_key_to_pem_pkcs8().unwrap();
        let encoding = match alg {
            Alg::ES256 | Alg::ES384 => EncodingKey::from_ec_pem(&pem).unwrap(),
            _ => EncodingKey::from_rsa_pem(&pem).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid);
        let token = encode(&header, &claims, &encoding).unwrap();
        accepted(&v, &token);
    }

    // berth's RS256 tokens, checked by jsonwebtoken.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rsa.pem");
    std::fs::write(&path, k.root_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut config = s.config.clone();
    config.signingkey = Some(path);
    let issuer = TokenIssuer::from_config(&config).unwrap().unwrap();
    let token = issuer.issue("carol", &[], SystemTime::now()).unwrap();
    let key = DecodingKey::from_rsa_pem(&k.root_key.public_key_to_pem().unwrap()).unwrap();
    let mut validation = validation.clone();
    validation.algorithms = vec![Alg::RS256];
    assert_eq!(
        decode::<Value>(&token, &key, &validation).unwrap().claims["sub"],
        "carol"
    );
}

// ---- accepted tokens ----

#[test]
fn rs256_with_an_x5c_chain_to_a_trusted_root() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    for chain in [vec![&k.leaf], vec![&k.leaf, &k.root]] {
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": x5c(&chain)});
        let grant = accepted(&v, &sign(&header, &claims(), &k.leaf_key));
        assert_eq!(grant.subject, "alice");
        assert_eq!(
            grant.access,
            vec![Access::parse_scope("repository:team-a/app:pull,push").unwrap()]
        );
    }
}

#[test]
fn rs512_with_an_x5c_chain_through_an_intermediate() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "RS512", "x5c": x5c(&[&k.leaf_of_intermediate, &k.intermediate])});
    accepted(&verifier(&s), &sign(&header, &claims(), &k.leaf_key));
    // Without the intermediate the leaf has no path to the root.
    let header = json!({"alg": "RS512", "x5c": x5c(&[&k.leaf_of_intermediate])});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.leaf_key),
        "x5c chain not trusted",
    );
}

#[test]
fn a_bundle_certificate_is_a_trust_anchor_even_if_not_self_signed_when_configured() {
    // As with Go's x509 roots: with `partialchain`, a bundle holding only the intermediate CA
    // trusts its leaves; without, only self-signed bundle certificates are anchors.
    let (mut s, k) = (setup(), keys());
    let bundle = s.dir.path().join("intermediate.pem");
    std::fs::write(&bundle, k.intermediate.to_pem().unwrap()).unwrap();
    s.config.rootcertbundle = Some(bundle);
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.leaf_of_intermediate])});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.leaf_key),
        "x5c chain not trusted",
    );
    s.config.partialchain = true;
    let v = verifier(&s);
    accepted(&v, &sign(&header, &claims(), &k.leaf_key));
    // And the root's leaves are no longer trusted.
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.leaf, &k.root])});
    refused(
        &v,
        &sign(&header, &claims(), &k.leaf_key),
        "x5c chain not trusted",
    );
}

#[test]
fn x5c_without_a_rootcertbundle_is_refused() {
    let (mut s, k) = (setup(), keys());
    s.config.rootcertbundle = None;
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.leaf, &k.root])});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.leaf_key),
        "no rootcertbundle",
    );
    let header = json!({"alg": "RS256", "x5c": []});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.leaf_key),
        "no rootcertbundle",
    );
}

#[test]
fn es256_by_the_libtrust_kid_of_a_bundle_certificate() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid_of(&k.ec_key)});
    let grant = accepted(&verifier(&s), &sign(&header, &claims(), &k.ec_key));
    assert!(grant.allows("repository", "team-a/app", "push"));
}

#[test]
fn the_bundle_root_key_is_trusted_by_kid_too() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "RS256", "kid": kid_of(&k.root_key)});
    accepted(&verifier(&s), &sign(&header, &claims(), &k.root_key));
}

#[test]
fn es384_by_a_jwks_kid() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES384", "kid": "jwks-ec"});
    accepted(&verifier(&s), &sign(&header, &claims(), &k.jwks_ec_key));
}

#[test]
fn a_jwks_key_pinned_to_an_algorithm_takes_only_that_one() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "PS256", "kid": "jwks-rsa"});
    accepted(&v, &sign(&header, &claims(), &k.jwks_rsa_key));
    let header = json!({"alg": "RS256", "kid": "jwks-rsa"});
    refused(
        &v,
        &sign(&header, &claims(), &k.jwks_rsa_key),
        "not allowed for key",
    );
}

#[test]
fn a_jwk_header_of_a_trusted_key_is_accepted_by_its_libtrust_id() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES256", "jwk": jwk_of(&k.ec_key)});
    accepted(&verifier(&s), &sign(&header, &claims(), &k.ec_key));
}

#[test]
fn audience_may_be_an_array_and_times_get_leeway() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    let now = unix_now();
    let mut c = claims();
    c["aud"] = json!(["other", SERVICE]);
    c["exp"] = json!(now - 30);
    c["nbf"] = json!(now + 30);
    accepted(&v, &sign(&header, &c, &k.ec_key));
    // No nbf, no access, no sub: still a token (anonymous, nothing granted).
    let mut c = claims();
    let o = c.as_object_mut().unwrap();
    o.remove("nbf");
    o.remove("access");
    o.remove("sub");
    let grant = accepted(&v, &sign(&header, &c, &k.ec_key));
    assert_eq!(grant.subject, "");
    assert!(grant.access.is_empty());
}

// ---- berth's own tokens ----

#[test]
fn issued_tokens_verify_with_the_same_configuration() {
    let (s, k) = (setup(), keys());
    let issuer = TokenIssuer::from_config(&s.config).unwrap().unwrap();
    assert_eq!(issuer.algorithm(), Algorithm::ES256);
    assert_eq!(issuer.key_id(), kid_of(&k.signing_key));
    assert_eq!(issuer.expiration(), Duration::from_secs(300));
    let access = vec![
        Access::parse_scope("repository:team-a/app:pull").unwrap(),
        Access::parse_scope("registry:catalog:*").unwrap(),
    ];
    let token = issuer.issue("bob", &access, now()).unwrap();

    let grant = accepted(&verifier(&s), &token);
    assert_eq!(grant.subject, "bob");
    assert_eq!(grant.access, access);
    assert!(grant.allows("registry", "catalog", "anything"));
    assert!(!grant.allows("repository", "team-a/app", "push"));

    let mut parts = token.split('.');
    let header: Value =
        serde_json::from_slice(&B64URL.decode(parts.next().unwrap()).unwrap()).unwrap();
    assert_eq!(
        header,
        json!({"alg": "ES256", "kid": issuer.key_id(), "typ": "JWT"})
    );
    let c: Value = serde_json::from_slice(&B64URL.decode(parts.next().unwrap()).unwrap()).unwrap();
    let now = unix_now();
    assert_eq!(c["iss"], ISSUER);
    assert_eq!(c["aud"], SERVICE);
    assert_eq!(c["sub"], "bob");
    assert_eq!(c["iat"], now);
    assert_eq!(c["nbf"], now);
    assert_eq!(c["exp"], now + 300);
    uuid::Uuid::parse_str(c["jti"].as_str().unwrap()).unwrap();
    assert_eq!(B64URL.decode(parts.next().unwrap()).unwrap().len(), 64);

    // Each token is its own: a fresh jti.
    let again = issuer.issue("bob", &access, now_plus(0)).unwrap();
    assert_ne!(again, token);
    // And it runs out like any other.
    refused_at(&verifier(&s), &token, now_plus(300 + 61), "expired");
}

fn now_plus(seconds: u64) -> SystemTime {
    now() + Duration::from_secs(seconds)
}

#[test]
fn an_rsa_signing_key_issues_rs256_and_only_it_is_needed() {
    let k = keys();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    // PKCS#8 this time.
    std::fs::write(&path, k.leaf_key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let config = TokenConfig {
        realm: "r".to_string(),
        service: SERVICE.to_string(),
        issuer: ISSUER.to_string(),
        rootcertbundle: None,
        jwks: None,
        signingkey: Some(path),
        expiration: Duration::from_secs(60),
        partialchain: false,
    };
    let issuer = TokenIssuer::from_config(&config).unwrap().unwrap();
    assert_eq!(issuer.algorithm(), Algorithm::RS256);
    let token = issuer.issue("", &[], now()).unwrap();
    let verifier = TokenVerifier::from_config(&config).unwrap();
    assert_eq!(
        verifier.trusted_key_ids().collect::<Vec<_>>(),
        vec![issuer.key_id()]
    );
    let grant = accepted(&verifier, &token);
    assert_eq!(grant.subject, "");
}

#[test]
fn no_signing_key_no_issuer() {
    let mut s = setup();
    s.config.signingkey = None;
    assert!(TokenIssuer::from_config(&s.config).unwrap().is_none());
    // And berth's key is then not trusted.
    let k = keys();
    let header = json!({"alg": "ES256", "kid": kid_of(&k.signing_key)});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.signing_key),
        "unknown key",
    );
}

#[test]
fn configuration_errors() {
    let mut s = setup();
    s.config.rootcertbundle = None;
    s.config.jwks = None;
    s.config.signingkey = None;
    assert!(matches!(
        TokenVerifier::from_config(&s.config),
        Err(TokenError::Config(m)) if m.contains("no trusted keys")
    ));

    let s = setup();
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.pem");
    let rsa = Rsa::generate(1024).unwrap();
    std::fs::write(&small, rsa.private_key_to_pem().unwrap()).unwrap();
    let mut config = s.config.clone();
    config.signingkey = Some(small);
    assert!(matches!(
        TokenIssuer::from_config(&config),
        Err(TokenError::Config(m)) if m.contains("2048")
    ));

    let mut config = s.config.clone();
    config.rootcertbundle = Some(dir.path().join("missing.pem"));
    assert!(matches!(
        TokenVerifier::from_config(&config),
        Err(TokenError::Config(_))
    ));

    let hmac = dir.path().join("hmac.json");
    std::fs::write(
        &hmac,
        json!({"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}).to_string(),
    )
    .unwrap();
    let mut config = s.config.clone();
    config.jwks = Some(hmac);
    assert!(matches!(
        TokenVerifier::from_config(&config),
        Err(TokenError::Config(m)) if m.contains("unsupported key type")
    ));
}

// ---- refused tokens ----

#[test]
fn refused_when_signed_by_another_key_under_a_trusted_kid() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    refused(
        &verifier(&s),
        &sign(&header, &claims(), &k.rogue_ec_key),
        "bad signature",
    );
}

#[test]
fn refused_when_claims_are_altered_after_signing() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    let token = sign(&header, &claims(), &k.ec_key);
    let mut c = claims();
    c["access"][0]["name"] = json!("team-b/app");
    let forged = sign(&header, &c, &k.rogue_ec_key);
    let mut parts: Vec<&str> = forged.split('.').collect();
    parts[2] = token.split('.').nth(2).unwrap();
    refused(&verifier(&s), &parts.join("."), "bad signature");
}

#[test]
fn refused_alg_none() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    for alg in ["none", "None", "NONE", ""] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": kid_of(&k.ec_key)});
        let unsigned = format!(
            "{}.{}.",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        refused(&v, &unsigned, "not allowed");
        // Not even with something in the signature slot.
        refused(&v, &format!("{unsigned}c2lnbmF0dXJl"), "not allowed");
    }
    let header = json!({"typ": "JWT", "kid": kid_of(&k.ec_key)});
    let unsigned = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    refused(&v, &unsigned, "no alg");
}

#[test]
fn refused_hs256_with_the_public_key_as_secret() {
    // The classic confusion: a verifier that feeds "the key" to whatever alg the header names
    // would check an HMAC made with the (public) key bytes.
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    for (kid, secret) in [
        (kid_of(&k.root_key), k.root_key.public_key_to_pem().unwrap()),
        (kid_of(&k.ec_key), k.ec_key.public_key_to_pem().unwrap()),
        (
            "jwks-rsa".to_string(),
            k.jwks_rsa_key.public_key_to_der().unwrap(),
        ),
    ] {
        let header = json!({"alg": "HS256", "typ": "JWT", "kid": kid});
        let message = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims().to_string().as_bytes())
        );
        let hmac_key = PKey::hmac(&secret).unwrap();
        let mut signer = Signer::new(MessageDigest::sha256(), &hmac_key).unwrap();
        let mac = signer.sign_oneshot_to_vec(message.as_bytes()).unwrap();
        refused(&v, &format!("{message}.{}", b64(&mac)), "HS256");
        refused(&v, &format!("{message}.{}", b64(&mac)), "not allowed");
    }
}

#[test]
fn refused_when_alg_does_not_fit_the_key() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    // An EC key named for an RSA algorithm, and the other way round.
    let header = json!({"alg": "RS256", "kid": kid_of(&k.ec_key)});
    let message = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims().to_string().as_bytes())
    );
    refused(&v, &format!("{message}.AAAA"), "does not match");
    let header = json!({"alg": "ES256", "kid": kid_of(&k.root_key)});
    refused(&v, &sign(&header, &claims(), &k.ec_key), "does not match");
    // A P-384 key named for ES256.
    let header = json!({"alg": "ES256", "kid": "jwks-ec"});
    refused(&v, &sign(&header, &claims(), &k.ec_key), "curve");
}

#[test]
fn refused_expired_and_not_yet_valid() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    let now = unix_now();
    let mut c = claims();
    c["exp"] = json!(now - 61);
    refused(&v, &sign(&header, &c, &k.ec_key), "expired");
    let mut c = claims();
    c["nbf"] = json!(now + 61);
    refused(&v, &sign(&header, &c, &k.ec_key), "not valid yet");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    refused(&v, &sign(&header, &c, &k.ec_key), "no expiration");
    // The same good token, checked at other times.
    let token = sign(&header, &claims(), &k.ec_key);
    refused_at(&v, &token, now_plus(300 + 61), "expired");
    refused_at(&v, &token, now_minus(61), "not valid yet");
    v.verify(&token, now_minus(59)).unwrap();
}

fn now_minus(seconds: u64) -> SystemTime {
    now() - Duration::from_secs(seconds)
}

#[test]
fn refused_wrong_audience_or_issuer() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    for aud in [json!("other.example.com"), json!(["a", "b"]), json!([])] {
        let mut c = claims();
        c["aud"] = aud;
        refused(&v, &sign(&header, &c, &k.ec_key), "wrong audience");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("aud");
    refused(&v, &sign(&header, &c, &k.ec_key), "no audience");
    let mut c = claims();
    c["iss"] = json!("evil.example.com");
    refused(&v, &sign(&header, &c, &k.ec_key), "wrong issuer");
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    refused(&v, &sign(&header, &c, &k.ec_key), "no issuer");
}

#[test]
fn refused_x5c_chain_to_an_untrusted_root() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    for chain in [vec![&k.rogue_leaf], vec![&k.rogue_leaf, &k.rogue_root]] {
        let header = json!({"alg": "RS256", "x5c": x5c(&chain)});
        refused(
            &v,
            &sign(&header, &claims(), &k.rogue_leaf_key),
            "x5c chain not trusted",
        );
    }
    // An empty chain is not a missing one: no falling back to kid.
    let header = json!({"alg": "RS256", "kid": kid_of(&k.root_key), "x5c": []});
    refused(
        &v,
        &sign(&header, &claims(), &k.root_key),
        "empty x5c chain",
    );
    // A trusted chain does not vouch for a token signed by another key.
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.leaf])});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_leaf_key),
        "bad signature",
    );
    // The x5c decides: a trusted kid next to an untrusted chain does not help.
    let header = json!({"alg": "RS256", "kid": kid_of(&k.root_key), "x5c": x5c(&[&k.rogue_leaf])});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_leaf_key),
        "x5c chain not trusted",
    );
}

#[test]
fn refused_x5c_chain_out_of_its_validity() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.expired_leaf])});
    refused(
        &v,
        &sign(&header, &claims(), &k.leaf_key),
        "x5c chain not trusted",
    );
    // The chain is checked at the given time, not the machine's: the good leaf is not valid
    // yet two days ago (the token's own times are checked after the key is found).
    let header = json!({"alg": "RS256", "x5c": x5c(&[&k.leaf])});
    refused_at(
        &v,
        &sign(&header, &claims(), &k.leaf_key),
        now_minus(2 * DAY as u64),
        "x5c chain not trusted",
    );
}

#[test]
fn refused_unknown_kid_and_untrusted_jwk() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "ES256", "kid": kid_of(&k.rogue_ec_key)});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_ec_key),
        "unknown key",
    );
    // A key carried in the header vouches for nothing by itself, with or without a kid.
    let header = json!({"alg": "ES256", "jwk": jwk_of(&k.rogue_ec_key)});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_ec_key),
        "unknown key",
    );
    let mut jwk = jwk_of(&k.rogue_ec_key);
    jwk["kid"] = json!("rogue");
    let header = json!({"alg": "ES256", "jwk": jwk});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_ec_key),
        "unknown key",
    );
    // A rogue jwk naming a trusted kid gets the trusted key, which did not sign.
    let mut jwk = jwk_of(&k.rogue_ec_key);
    jwk["kid"] = json!(kid_of(&k.ec_key));
    let header = json!({"alg": "ES256", "jwk": jwk});
    refused(
        &v,
        &sign(&header, &claims(), &k.rogue_ec_key),
        "bad signature",
    );
    let header = json!({"alg": "ES256"});
    refused(&v, &sign(&header, &claims(), &k.ec_key), "names no key");
}

#[test]
fn refused_crit_header() {
    let (s, k) = (setup(), keys());
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key), "crit": ["exp"]});
    refused(&verifier(&s), &sign(&header, &claims(), &k.ec_key), "crit");
}

#[test]
fn refused_garbage_and_truncated() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let header = json!({"alg": "ES256", "kid": kid_of(&k.ec_key)});
    let token = sign(&header, &claims(), &k.ec_key);
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let claims_b64 = signed.split_once('.').unwrap().1;
    for (garbage, why) in [
        ("", "three"),
        ("garbage", "three"),
        ("a.b", "three"),
        ("a.b.c.d", "three"),
        ("!!!.e30.e30", "base64url"),
        ("e30.e30.e30", "no alg"),
        ("bnVsbA.e30.e30", "header"),
        (&format!("{token}."), "three"),
        (&format!("{signed}."), "no signature"),
        (&token[..token.len() - 10], "bad signature"),
        (signed, "three"),
        (&format!("{signed}.{}", &signature[..44]), "bad signature"),
        // base64 text of length 1 (mod 4) is never valid: these cuts fail whatever the bytes.
        (
            &format!("{signed}.{}", &signature[..45]),
            "signature is not base64url",
        ),
        (
            &format!(
                "{}.{signature}",
                &signed[..signed.len() - (claims_b64.len() + 3) % 4]
            ),
            "claims are not base64url",
        ),
    ] {
        refused(&v, garbage, why);
    }
    // Well signed, but not claims.
    refused(
        &v,
        &sign(&header, &json!("claims"), &k.ec_key),
        "not JWT claims",
    );
    refused(
        &v,
        &sign(&header, &json!({"exp": "soon"}), &k.ec_key),
        "not JWT claims",
    );
    refused(&v, &"a".repeat(MAX_TOKEN_LEN + 1), "longer than");
}

#[test]
fn error_messages_never_carry_the_token_and_are_bounded() {
    let (s, k) = (setup(), keys());
    let v = verifier(&s);
    let long = "x".repeat(10_000);
    let header = json!({"alg": "ES256", "kid": long});
    let token = sign(&header, &claims(), &k.ec_key);
    let e = v.verify(&token, now()).unwrap_err().to_string();
    assert!(e.contains("unknown key") && e.len() < 200, "{e}");
    let header = json!({"alg": format!("HS256\n{long}")});
    let token = sign(&json!({"alg": "ES256"}), &claims(), &k.ec_key);
    let forged = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        token.split_once('.').unwrap().1
    );
    let e = v.verify(&forged, now()).unwrap_err().to_string();
    assert!(!e.contains('\n') && e.len() < 200, "{e}");
}

// ---- scopes ----

#[test]
fn scopes_parse() {
    let a = Access::parse_scope("repository:team-a/app:pull,push").unwrap();
    assert_eq!(
        a,
        Access {
            kind: "repository".into(),
            name: "team-a/app".into(),
            actions: vec!["pull".into(), "push".into()],
        }
    );
    assert_eq!(a.to_scope(), "repository:team-a/app:pull,push");

    let a = Access::parse_scope("repository:localhost:5000/foo:pull").unwrap();
    assert_eq!(
        (a.kind.as_str(), a.name.as_str()),
        ("repository", "localhost:5000/foo")
    );
    assert_eq!(a.actions, vec!["pull"]);
    assert_eq!(a.to_scope(), "repository:localhost:5000/foo:pull");

    let a = Access::parse_scope("registry:catalog:*").unwrap();
    assert_eq!((a.kind.as_str(), a.name.as_str()), ("registry", "catalog"));
    assert_eq!(a.actions, vec!["*"]);

    let a = Access::parse_scope("repository(plugin):vieux/sshfs:pull").unwrap();
    assert_eq!(a.kind, "repository(plugin)");

    for bad in [
        "",
        "repository",
        "repository:foo",
        ":foo:pull",
        "repository::pull",
        "repository:foo:",
        "::",
        "repository:foo:pull,",
        "repository:foo:,pull",
        "repository:foo:pull,,push",
    ] {
        assert_eq!(Access::parse_scope(bad), None, "{bad:?}");
    }
}

#[test]
fn grants_allow() {
    let grant = Grant {
        subject: "alice".into(),
        access: vec![
            Access::parse_scope("repository:team-a/app:pull").unwrap(),
            Access::parse_scope("repository:team-a/app:push").unwrap(),
            Access::parse_scope("repository:team-b/app:*").unwrap(),
        ],
        issued_here: false,
    };
    assert!(grant.allows("repository", "team-a/app", "pull"));
    assert!(grant.allows("repository", "team-a/app", "push"));
    assert!(!grant.allows("repository", "team-a/app", "delete"));
    assert!(grant.allows("repository", "team-b/app", "delete"));
    assert!(!grant.allows("repository", "team-c/app", "pull"));
    assert!(!grant.allows("registry", "team-a/app", "pull"));
    assert!(!grant.allows("repository", "team-a", "pull"));
}

#[test]
fn access_claims_tolerate_missing_actions() {
    let a: Vec<Access> = serde_json::from_value(json!([
        {"type": "repository", "name": "a", "actions": null},
        {"type": "repository", "name": "b"},
    ]))
    .unwrap();
    assert!(a.iter().all(|a| a.actions.is_empty()));
}
