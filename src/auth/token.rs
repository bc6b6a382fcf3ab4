//! Bearer tokens (JWT) of the Docker token specification, as CNCF distribution handles them.
//!
//! This module owns:
//! - **verifying** the compact-JWS tokens a token server hands out ([`TokenVerifier`]): the
//!   signing key is found from the header's `x5c` chain (checked against `rootcertbundle`, and
//!   its leaf must be a certificate meant for signing: [`chain`]), or
//!   by `kid` among the trusted keys (the `rootcertbundle` certificates' keys under their libtrust
//!   key IDs, the `jwks` keys under their `kid`, berth's own signing key); then the signature,
//!   `iss`, `aud`, `exp`/`nbf` are checked, and `sub` + `access` become a [`Grant`];
//! - **issuing** tokens when berth is its own token server ([`TokenIssuer`]), signed with
//!   `signingkey`, which the verifier built from the same configuration trusts;
//! - the **scope** strings of challenges and token requests ([`Access::parse_scope`],
//!   [`Access::to_scope`]).
//!
//! Deciding which access a user gets, and the HTTP side (challenges, the token endpoint), live
//! elsewhere.
//!
//! All cryptography is done with openssl: the x5c chain must be verified with its X509 store
//! anyway, and doing the signatures there too means one key type for every source of keys (PEM
//! certificates, JWKS, PEM private keys in any of their encodings).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use openssl::bn::BigNum;
use openssl::ec::EcKey;
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::rsa::{Padding, Rsa};
use openssl::sign::{RsaPssSaltlen, Signer, Verifier};
use openssl::x509::X509;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::config::TokenConfig;

#[derive(Debug, Error)]
pub enum TokenError {
    #[error("token configuration: {0}")]
    Config(String),
    /// The reason is meant for logs: it never contains the token (nor its signature).
    #[error("invalid token: {0}")]
    Invalid(String),
}

fn invalid(reason: impl Into<String>) -> TokenError {
    TokenError::Invalid(reason.into())
}

fn config(reason: impl Into<String>) -> TokenError {
    TokenError::Config(reason.into())
}

/// Clock skew allowed on `exp` and `nbf`, as distribution allows (RFC 7519 section 4.1.4).
pub const LEEWAY: Duration = Duration::from_secs(60);

/// Tokens longer than this are refused before any decoding: a real one, even with a three
/// certificate RSA-4096 chain, is a few kilobytes.
const MAX_TOKEN_LEN: usize = 64 * 1024;

/// One entry of a token's `access` claim, or one requested `scope`
/// (`repository:team-a/app:pull,push`, `registry:catalog:*`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Access {
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    // Token servers may leave `actions` out (or null) for "nothing".
    #[serde(default, deserialize_with = "null_as_empty")]
    pub actions: Vec<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    Ok(Option::<Vec<String>>::deserialize(d)?.unwrap_or_default())
}

impl Access {
    /// Parses a `scope` parameter entry: `type:name:actions`, where the name may itself contain
    /// `:` (a registry host with a port). The type is what comes before the first `:`, the
    /// actions (comma-separated) what comes after the last one. `None` if any part is empty.
    pub fn parse_scope(scope: &str) -> Option<Access> {
        let (kind, rest) = scope.split_once(':')?;
        let (name, actions) = rest.rsplit_once(':')?;
        if kind.is_empty() || name.is_empty() || actions.is_empty() {
            return None;
        }
        let actions: Vec<String> = actions.split(',').map(str::to_string).collect();
        if actions.iter().any(String::is_empty) {
            return None;
        }
        Some(Access {
            kind: kind.to_string(),
            name: name.to_string(),
            actions,
        })
    }

    /// The `scope` string form (`repository:team-a/app:pull,push`), as challenges carry it.
    pub fn to_scope(&self) -> String {
        format!("{}:{}:{}", self.kind, self.name, self.actions.join(","))
    }
}

/// What a valid token says.
#[derive(Debug, Clone)]
pub struct Grant {
    pub subject: String,
    pub access: Vec<Access>,
    /// Signed with berth's own `signingkey`: berth's issuer granted it from the access rules,
    /// so what the rules say of `subject` still holds (the catalog is filtered by them).
    pub issued_here: bool,
}

impl Grant {
    /// Whether the token grants `action` on the resource `kind`/`name`; a granted `*` action
    /// allows every action.
    pub fn allows(&self, kind: &str, name: &str, action: &str) -> bool {
        self.access.iter().any(|a| {
            a.kind == kind && a.name == name && a.actions.iter().any(|x| x == action || x == "*")
        })
    }
}

/// The libtrust key ID docker and distribution give a public key: SHA-256 of its DER
/// SubjectPublicKeyInfo, truncated to 240 bits, base32 (RFC 4648, no padding: 48 characters),
/// in 12 groups of 4 joined by `:` (`PYYO:TEWU:V7JH:…`).
pub fn libtrust_key_id(key: &PKey<Public>) -> Result<String, TokenError> {
    let der = key
        .public_key_to_der()
        .map_err(|e| config(format!("cannot encode a public key: {e}")))?;
    Ok(libtrust_key_id_of_spki(&der))
}

fn libtrust_key_id_of_spki(spki_der: &[u8]) -> String {
    let digest = Sha256::digest(spki_der);
    let encoded = base32(&digest[..30]);
    encoded
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).expect("base32 is ASCII"))
        .collect::<Vec<_>>()
        .join(":")
}

/// RFC 4648 base32, without padding.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((buffer >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// base64url as JOSE uses it: unpadded, but padding is tolerated as distribution's decoder does.
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Signature algorithms accepted. Only asymmetric ones: a shared secret (HS*) would let anyone
/// who may verify also forge, and `none` is no signature at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    ES512,
}

impl Algorithm {
    fn from_name(name: &str) -> Option<Algorithm> {
        Some(match name {
            "RS256" => Algorithm::RS256,
            "RS384" => Algorithm::RS384,
            "RS512" => Algorithm::RS512,
            "PS256" => Algorithm::PS256,
            "PS384" => Algorithm::PS384,
            "PS512" => Algorithm::PS512,
            "ES256" => Algorithm::ES256,
            "ES384" => Algorithm::ES384,
            "ES512" => Algorithm::ES512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::RS384 => "RS384",
            Algorithm::RS512 => "RS512",
            Algorithm::PS256 => "PS256",
            Algorithm::PS384 => "PS384",
            Algorithm::PS512 => "PS512",
            Algorithm::ES256 => "ES256",
            Algorithm::ES384 => "ES384",
            Algorithm::ES512 => "ES512",
        }
    }

    fn digest(self) -> MessageDigest {
        match self {
            Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 => MessageDigest::sha256(),
            Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 => MessageDigest::sha384(),
            Algorithm::RS512 | Algorithm::PS512 | Algorithm::ES512 => MessageDigest::sha512(),
        }
    }

    /// For ES*: the curve the key must be on, and the byte length of each of r and s.
    fn ec_curve(self) -> Option<(Nid, usize)> {
        match self {
            Algorithm::ES256 => Some((Nid::X9_62_PRIME256V1, 32)),
            Algorithm::ES384 => Some((Nid::SECP384R1, 48)),
            Algorithm::ES512 => Some((Nid::SECP521R1, 66)),
            _ => None,
        }
    }

    fn is_pss(self) -> bool {
        matches!(self, Algorithm::PS256 | Algorithm::PS384 | Algorithm::PS512)
    }

    /// Checks that `key` is of the kind this algorithm signs with: an RS* token verified with an
    /// EC key (or ES256 with a P-384 key) is refused, not merely failed.
    fn check_key(self, key: &PKey<Public>) -> Result<(), TokenError> {
        match self.ec_curve() {
            None if key.id() == Id::RSA => Ok(()),
            Some((curve, _)) if key.id() == Id::EC => {
                let actual = key.ec_key().ok().and_then(|k| k.group().curve_name());
                if actual == Some(curve) {
                    Ok(())
                } else {
                    Err(invalid(format!(
                        "algorithm {} does not match the signing key's curve",
                        self.name()
                    )))
                }
            }
            _ => Err(invalid(format!(
                "algorithm {} does not match the signing key's type",
                self.name()
            ))),
        }
    }

    fn verify(self, key: &PKey<Public>, message: &[u8], signature: &[u8]) -> bool {
        let der_signature;
        let signature = match self.ec_curve() {
            // JWS carries ECDSA signatures as fixed-length r || s; openssl wants DER.
            Some((_, n)) => {
                if signature.len() != 2 * n {
                    return false;
                }
                let parts = BigNum::from_slice(&signature[..n])
                    .and_then(|r| Ok((r, BigNum::from_slice(&signature[n..])?)));
                der_signature = match parts
                    .and_then(|(r, s)| EcdsaSig::from_private_components(r, s))
                    .and_then(|sig| sig.to_der())
                {
                    Ok(der) => der,
                    Err(_) => return false,
                };
                &der_signature[..]
            }
            None => signature,
        };
        let result = (|| -> Result<bool, openssl::error::ErrorStack> {
            let mut verifier = Verifier::new(self.digest(), key)?;
            if self.is_pss() {
                verifier.set_rsa_padding(Padding::PKCS1_PSS)?;
                verifier.set_rsa_pss_saltlen(RsaPssSaltlen::DIGEST_LENGTH)?;
                verifier.set_rsa_mgf1_md(self.digest())?;
            }
            verifier.verify_oneshot(signature, message)
        })();
        // An openssl error (a malformed signature) is a failed verification like any other.
        result.unwrap_or(false)
    }
}

/// A key trusted to sign tokens.
struct TrustedKey {
    key: PKey<Public>,
    /// The `alg` a JWKS entry pins its key to, if it does.
    alg: Option<String>,
}

/// The JOSE header fields this module looks at.
#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    kid: Option<String>,
    x5c: Option<Vec<String>>,
    jwk: Option<serde_json::Value>,
    crit: Option<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// The claims this module looks at. Times are JSON numbers, which RFC 7519 allows to be
/// fractional.
#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Audience>,
    exp: Option<f64>,
    nbf: Option<f64>,
    #[serde(default, deserialize_with = "null_as_empty_access")]
    access: Vec<Access>,
}

fn null_as_empty_access<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Access>, D::Error> {
    Ok(Option::<Vec<Access>>::deserialize(d)?.unwrap_or_default())
}

/// A value taken from a token, fit for an error message: quoted, escaped and cut short, so a
/// hostile token cannot fill the log or forge lines in it.
fn shown(value: &str) -> String {
    const MAX: usize = 80;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let cut: String = value.chars().take(MAX).collect();
        format!("{cut:?}…")
    }
}

/// A JSON error without serde's wording, which quotes the offending value (token content).
fn json_error(e: &serde_json::Error) -> String {
    let kind = match e.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "not JSON",
        serde_json::error::Category::Data => "a field of the wrong type",
        serde_json::error::Category::Eof => "cut short",
    };
    format!("{kind} at column {}", e.column())
}

fn unix_seconds(t: SystemTime) -> f64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Checks tokens: signature by a trusted key, `iss`, `aud`, `exp`/`nbf`.
pub struct TokenVerifier {
    issuer: String,
    service: String,
    /// Trust anchors for `x5c` chains: the `rootcertbundle` certificates.
    anchors: chain::Anchors,
    /// Keys trusted by `kid`.
    keys: HashMap<String, TrustedKey>,
    /// The `kid` of berth's own signing key, when berth issues tokens.
    own_kid: Option<String>,
}

impl TokenVerifier {
    pub fn from_config(config: &TokenConfig) -> Result<TokenVerifier, TokenError> {
        let mut verifier = TokenVerifier {
            issuer: config.issuer.clone(),
            service: config.service.clone(),
            anchors: chain::Anchors {
                certs: Vec::new(),
                partial_chain: config.partialchain,
            },
            keys: HashMap::new(),
            own_kid: None,
        };
        if let Some(path) = &config.rootcertbundle {
            let pem = std::fs::read(path)
                .map_err(|e| self::config(format!("rootcertbundle {}: {e}", path.display())))?;
            let certs = X509::stack_from_pem(&pem)
                .map_err(|e| self::config(format!("rootcertbundle {}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(self::config(format!(
                    "rootcertbundle {}: no certificates in it",
                    path.display()
                )));
            }
            for cert in certs {
                let key = cert.public_key().map_err(|e| {
                    self::config(format!(
                        "rootcertbundle {}: a certificate's public key: {e}",
                        path.display()
                    ))
                })?;
                let kid = libtrust_key_id(&key)?;
                verifier.trust(kid, TrustedKey { key, alg: None })?;
                verifier.anchors.certs.push(cert);
            }
        }
        if let Some(path) = &config.jwks {
            let text = std::fs::read(path)
                .map_err(|e| self::config(format!("jwks {}: {e}", path.display())))?;
            for (kid, key) in parse_jwks(&text)
                .map_err(|e| self::config(format!("jwks {}: {e}", path.display())))?
            {
                verifier.trust(kid, key)?;
            }
        }
        if let Some(issuer) = TokenIssuer::from_config(config)? {
            // berth trusts what it signs itself.
            verifier.trust(
                issuer.kid.clone(),
                TrustedKey {
                    key: issuer.public_key()?,
                    alg: Some(issuer.alg.name().to_string()),
                },
            )?;
            verifier.own_kid = Some(issuer.kid.clone());
        }
        if verifier.keys.is_empty() {
            return Err(self::config(
                "no trusted keys: set rootcertbundle, jwks or signingkey",
            ));
        }
        Ok(verifier)
    }

    /// Adds a key under `kid`. The same key twice is harmless; two different keys under one
    /// `kid` would make the choice of key arbitrary, so that is a configuration error.
    fn trust(&mut self, kid: String, key: TrustedKey) -> Result<(), TokenError> {
        if let Some(existing) = self.keys.get(&kid) {
            if existing.key.public_eq(&key.key) {
                return Ok(());
            }
            return Err(config(format!(
                "two different keys have the key ID {kid:?}"
            )));
        }
        self.keys.insert(kid, key);
        Ok(())
    }

    /// The key IDs trusted (for diagnostics and tests).
    pub fn trusted_key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    pub fn verify(&self, token: &str, now: SystemTime) -> Result<Grant, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(invalid(format!("longer than {MAX_TOKEN_LEN} bytes")));
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(claims_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid("not a compact JWS (three dot-separated parts)"));
        };
        let header_json = B64URL
            .decode(header_b64)
            .map_err(|_| invalid("header is not base64url"))?;
        let claims_json = B64URL
            .decode(claims_b64)
            .map_err(|_| invalid("claims are not base64url"))?;
        let signature = B64URL
            .decode(signature_b64)
            .map_err(|_| invalid("signature is not base64url"))?;
        let header: Header = serde_json::from_slice(&header_json)
            .map_err(|e| invalid(format!("header is not a JOSE header ({})", json_error(&e))))?;

        // The algorithm first: whatever else the token says, an unacceptable algorithm ends it.
        let alg_name = header
            .alg
            .as_deref()
            .ok_or_else(|| invalid("header has no alg"))?;
        let alg = Algorithm::from_name(alg_name).ok_or_else(|| {
            invalid(format!(
                "algorithm {} not allowed (only RS*, PS*, ES*)",
                shown(alg_name)
            ))
        })?;
        // RFC 7515 4.1.11: extensions marked critical must be understood; berth knows none.
        if header.crit.is_some() {
            return Err(invalid(
                "header has crit extensions, none of which is supported",
            ));
        }
        if signature.is_empty() {
            return Err(invalid("no signature"));
        }

        let (key, issued_here) = self.signing_key(&header, alg, now)?;
        alg.check_key(&key)?;
        let message = &token[..header_b64.len() + 1 + claims_b64.len()];
        if !alg.verify(&key, message.as_bytes(), &signature) {
            return Err(invalid("bad signature"));
        }

        // Claims are only looked at once the signature is good: before, they are anyone's words.
        let claims: Claims = serde_json::from_slice(&claims_json)
            .map_err(|e| invalid(format!("claims are not JWT claims ({})", json_error(&e))))?;
        self.check_claims(&claims, now)?;
        Ok(Grant {
            subject: claims.sub.unwrap_or_default(),
            access: claims.access,
            issued_here,
        })
    }

    /// Finds the key that must have signed the token, the way distribution does: the `x5c`
    /// chain if there is one, else the trusted key named by `kid`, else (with only a `jwk`) the
    /// trusted key with that JWK's ID. A key carried in the token is never trusted by itself.
    /// Also says whether the key is berth's own signing key.
    fn signing_key(
        &self,
        header: &Header,
        alg: Algorithm,
        now: SystemTime,
    ) -> Result<(PKey<Public>, bool), TokenError> {
        if let Some(x5c) = &header.x5c {
            return Ok((self.anchors.verify(x5c, now)?, false));
        }
        let kid = match (&header.kid, &header.jwk) {
            (Some(kid), _) => kid.clone(),
            (None, Some(jwk)) => match jwk.get("kid").and_then(|k| k.as_str()) {
                Some(kid) => kid.to_string(),
                // A JWK without a kid is known by its libtrust ID, as distribution does.
                None => {
                    let key =
                        jwk_public_key(jwk).map_err(|e| invalid(format!("header jwk: {e}")))?;
                    libtrust_key_id(&key).map_err(|_| invalid("header jwk: unusable key"))?
                }
            },
            (None, None) => return Err(invalid("header names no key (no x5c, kid or jwk)")),
        };
        let trusted = self
            .keys
            .get(&kid)
            .ok_or_else(|| invalid(format!("unknown key: kid {}", shown(&kid))))?;
        if let Some(pinned) = &trusted.alg {
            if pinned != alg.name() {
                return Err(invalid(format!(
                    "algorithm {} not allowed for key {} (it is for {pinned})",
                    alg.name(),
                    shown(&kid)
                )));
            }
        }
        Ok((
            trusted.key.clone(),
            self.own_kid.as_deref() == Some(kid.as_str()),
        ))
    }

    fn check_claims(&self, claims: &Claims, now: SystemTime) -> Result<(), TokenError> {
        match &claims.iss {
            Some(iss) if *iss == self.issuer => {}
            Some(iss) => return Err(invalid(format!("wrong issuer {}", shown(iss)))),
            None => return Err(invalid("no issuer (iss)")),
        }
        match &claims.aud {
            Some(Audience::One(aud)) if *aud == self.service => {}
            Some(Audience::Many(auds)) if auds.contains(&self.service) => {}
            Some(Audience::One(aud)) => {
                return Err(invalid(format!(
                    "wrong audience {} (this is {})",
                    shown(aud),
                    shown(&self.service)
                )))
            }
            Some(Audience::Many(_)) => {
                return Err(invalid(format!(
                    "wrong audience (none of them is {})",
                    shown(&self.service)
                )))
            }
            None => return Err(invalid("no audience (aud)")),
        }
        let now = unix_seconds(now);
        let leeway = LEEWAY.as_secs_f64();
        let exp = claims
            .exp
            .ok_or_else(|| invalid("no expiration time (exp)"))?;
        if now > exp + leeway {
            return Err(invalid(format!(
                "expired {} s ago",
                (now - exp).floor() as i64
            )));
        }
        if let Some(nbf) = claims.nbf {
            if now < nbf - leeway {
                return Err(invalid(format!(
                    "not valid yet (for another {} s)",
                    (nbf - now).ceil() as i64
                )));
            }
        }
        Ok(())
    }
}

/// The keys of a JSON Web Key Set, by `kid`.
fn parse_jwks(text: &[u8]) -> Result<Vec<(String, TrustedKey)>, String> {
    #[derive(Deserialize)]
    struct Jwks {
        keys: Vec<serde_json::Value>,
    }
    let jwks: Jwks = serde_json::from_slice(text).map_err(|e| format!("not a JWKS: {e}"))?;
    let mut keys = Vec::with_capacity(jwks.keys.len());
    for (i, jwk) in jwks.keys.iter().enumerate() {
        // A key for encryption is not one to verify signatures with.
        if jwk.get("use").and_then(|u| u.as_str()) == Some("enc") {
            continue;
        }
        let kid = jwk
            .get("kid")
            .and_then(|k| k.as_str())
            .filter(|k| !k.is_empty())
            .ok_or_else(|| format!("key {i} has no kid"))?;
        let key = jwk_public_key(jwk).map_err(|e| format!("key {kid:?}: {e}"))?;
        let alg = jwk.get("alg").and_then(|a| a.as_str()).map(str::to_string);
        if let Some(alg) = &alg {
            let usable = Algorithm::from_name(alg).ok_or_else(|| {
                format!("key {kid:?}: algorithm {alg:?} is not one berth accepts")
            })?;
            usable
                .check_key(&key)
                .map_err(|_| format!("key {kid:?}: algorithm {alg} does not fit the key"))?;
        }
        keys.push((kid.to_string(), TrustedKey { key, alg }));
    }
    Ok(keys)
}

/// The public key of a JWK (RFC 7517): `RSA` (`n`, `e`) or `EC` on P-256/P-384/P-521 (`x`, `y`).
/// Symmetric (`oct`) keys are refused: they could only serve HS*, which is not accepted.
fn jwk_public_key(jwk: &serde_json::Value) -> Result<PKey<Public>, String> {
    let field = |name: &str| -> Result<Vec<u8>, String> {
        let text = jwk
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format!("no {name}"))?;
        B64URL
            .decode(text)
            .map_err(|_| format!("{name} is not base64url"))
    };
    let kty = jwk.get("kty").and_then(|v| v.as_str()).unwrap_or("");
    let key = match kty {
        "RSA" => {
            let n = BigNum::from_slice(&field("n")?).map_err(|e| e.to_string())?;
            let e = BigNum::from_slice(&field("e")?).map_err(|e| e.to_string())?;
            let rsa = Rsa::from_public_components(n, e).map_err(|e| e.to_string())?;
            PKey::from_rsa(rsa)
        }
        "EC" => {
            let curve = match jwk.get("crv").and_then(|v| v.as_str()) {
                Some("P-256") => Nid::X9_62_PRIME256V1,
                Some("P-384") => Nid::SECP384R1,
                Some("P-521") => Nid::SECP521R1,
                other => return Err(format!("unsupported curve {}", shown(other.unwrap_or("")))),
            };
            let group = openssl::ec::EcGroup::from_curve_name(curve).map_err(|e| e.to_string())?;
            let x = BigNum::from_slice(&field("x")?).map_err(|e| e.to_string())?;
            let y = BigNum::from_slice(&field("y")?).map_err(|e| e.to_string())?;
            // Also checks that the point is on the curve.
            let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                .map_err(|_| "not a point of the curve".to_string())?;
            PKey::from_ec_key(ec)
        }
        other => {
            return Err(format!(
                "unsupported key type {} (RSA or EC only)",
                shown(other)
            ))
        }
    };
    key.map_err(|e| e.to_string())
}

/// Signs tokens with `auth.token.signingkey` (berth as its own token server).
pub struct TokenIssuer {
    key: PKey<Private>,
    alg: Algorithm,
    kid: String,
    issuer: String,
    service: String,
    expiration: Duration,
}

/// The claims berth puts in the tokens it issues, in the order the specification lists them.
#[derive(serde::Serialize)]
struct IssuedClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    access: &'a [Access],
}

impl TokenIssuer {
    /// `None` when no `signingkey` is configured. The key is a PEM private key (PKCS#8, or the
    /// traditional `EC PRIVATE KEY` / `RSA PRIVATE KEY`): EC P-256 signs ES256 (P-384 ES384,
    /// P-521 ES512), RSA of at least 2048 bits RS256.
    pub fn from_config(config: &TokenConfig) -> Result<Option<TokenIssuer>, TokenError> {
        let Some(path) = &config.signingkey else {
            return Ok(None);
        };
        let pem = std::fs::read(path)
            .map_err(|e| self::config(format!("signingkey {}: {e}", path.display())))?;
        let key = PKey::private_key_from_pem(&pem).map_err(|e| {
            self::config(format!(
                "signingkey {}: not an unencrypted PEM private key: {e}",
                path.display()
            ))
        })?;
        let alg = match key.id() {
            Id::EC => {
                let curve = key.ec_key().ok().and_then(|k| k.group().curve_name());
                match curve {
                    Some(Nid::X9_62_PRIME256V1) => Algorithm::ES256,
                    Some(Nid::SECP384R1) => Algorithm::ES384,
                    Some(Nid::SECP521R1) => Algorithm::ES512,
                    _ => {
                        return Err(self::config(format!(
                            "signingkey {}: EC keys must be on P-256, P-384 or P-521",
                            path.display()
                        )))
                    }
                }
            }
            Id::RSA if key.bits() >= 2048 => Algorithm::RS256,
            Id::RSA => {
                return Err(self::config(format!(
                    "signingkey {}: RSA keys must have at least 2048 bits",
                    path.display()
                )))
            }
            _ => {
                return Err(self::config(format!(
                    "signingkey {}: must be an EC or RSA key",
                    path.display()
                )))
            }
        };
        let mut issuer = TokenIssuer {
            key,
            alg,
            kid: String::new(),
            issuer: config.issuer.clone(),
            service: config.service.clone(),
            expiration: config.expiration,
        };
        issuer.kid = libtrust_key_id(&issuer.public_key()?)?;
        Ok(Some(issuer))
    }

    fn public_key(&self) -> Result<PKey<Public>, TokenError> {
        self.key
            .public_key_to_der()
            .and_then(|der| PKey::public_key_from_der(&der))
            .map_err(|e| config(format!("signingkey: its public key: {e}")))
    }

    /// The `kid` of the tokens issued: the libtrust key ID of the signing key.
    pub fn key_id(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> Algorithm {
        self.alg
    }

    pub fn issue(
        &self,
        subject: &str,
        access: &[Access],
        now: SystemTime,
    ) -> Result<String, TokenError> {
        let now = unix_seconds(now).floor() as i64;
        let header = serde_json::json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        let claims = IssuedClaims {
            iss: &self.issuer,
            sub: subject,
            aud: &self.service,
            exp: now.saturating_add(i64::try_from(self.expiration.as_secs()).unwrap_or(i64::MAX)),
            nbf: now,
            iat: now,
            jti: uuid::Uuid::new_v4().to_string(),
            access,
        };
        let claims =
            serde_json::to_vec(&claims).map_err(|e| config(format!("encoding claims: {e}")))?;
        let mut token = B64URL.encode(header.to_string());
        token.push('.');
        token.push_str(&B64URL.encode(claims));
        let signature = self
            .sign(token.as_bytes())
            .map_err(|e| config(format!("signing: {e}")))?;
        token.push('.');
        token.push_str(&B64URL.encode(signature));
        Ok(token)
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        let mut signer = Signer::new(self.alg.digest(), &self.key)?;
        let signature = signer.sign_oneshot_to_vec(message)?;
        match self.alg.ec_curve() {
            // openssl gives DER; JWS wants r || s, each padded to the curve's size.
            Some((_, n)) => {
                let sig = EcdsaSig::from_der(&signature)?;
                let mut out = sig.r().to_vec_padded(n as i32)?;
                out.extend(sig.s().to_vec_padded(n as i32)?);
                Ok(out)
            }
            None => Ok(signature),
        }
    }

    pub fn expiration(&self) -> Duration {
        self.expiration
    }
}

mod chain;
#[cfg(test)]
mod tests;
