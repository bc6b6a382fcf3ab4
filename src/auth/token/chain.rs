//! The `x5c` chain of a token: verified up to a `rootcertbundle` anchor with openssl's X509
//! store, then its leaf — the certificate whose key signed the token — must be one meant for
//! signing. Chaining to a bundle CA alone is not enough: the same CA often also certifies TLS
//! servers and mutual-TLS clients (`berth certs --client`), and their holders must not be able
//! to sign tokens with those keys.
//!
//! The leaf must:
//! - allow `digitalSignature` if it has a key usage extension;
//! - name `codeSigning` or `anyExtendedKeyUsage` if it has an extended key usage extension
//!   (a `serverAuth`/`clientAuth` certificate is for TLS);
//! - not be a CA (`CA:TRUE`) unless it is itself a trust anchor: a CA certifies keys, it does
//!   not sign tokens, except for the self-signed token certificate many token servers use.
//!
//! Anchors are the bundle's self-signed certificates; with `auth.token.partialchain` every
//! bundle certificate is one (as Go's x509, hence distribution, treats its roots).

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use openssl::pkey::{PKey, Public};
use openssl::stack::Stack;
use openssl::x509::store::X509StoreBuilder;
use openssl::x509::verify::{X509VerifyFlags, X509VerifyParam};
use openssl::x509::{
    X509ExtendedKeyUsage, X509KeyUsage, X509Ref, X509StoreContext, X509VerifyResult, X509,
};

use super::{invalid, unix_seconds, TokenError};

/// The trust anchors of `x5c` chains: the `rootcertbundle` certificates.
pub(super) struct Anchors {
    pub certs: Vec<X509>,
    /// Every bundle certificate is an anchor, not only self-signed ones.
    pub partial_chain: bool,
}

impl Anchors {
    /// Verifies an `x5c` chain (leaf first, base64 DER) up to an anchor, valid at `now`, checks
    /// that its leaf may sign tokens, and returns the leaf's key.
    pub fn verify(&self, x5c: &[String], now: SystemTime) -> Result<PKey<Public>, TokenError> {
        if self.certs.is_empty() {
            return Err(invalid(
                "x5c chain, but no rootcertbundle to verify it against",
            ));
        }
        let mut certs = x5c.iter().enumerate().map(|(i, b64)| {
            let der = STANDARD
                .decode(b64)
                .map_err(|_| invalid(format!("x5c certificate {i} is not base64")))?;
            X509::from_der(&der).map_err(|_| invalid(format!("x5c certificate {i} is not X.509")))
        });
        let leaf = certs.next().ok_or_else(|| invalid("empty x5c chain"))??;
        let mut intermediates = Stack::new().map_err(|e| invalid(format!("openssl: {e}")))?;
        for cert in certs {
            intermediates
                .push(cert?)
                .map_err(|e| invalid(format!("openssl: {e}")))?;
        }

        // A store per verification, since the check time is a property of the store; adding
        // the anchors only takes references. Without PARTIAL_CHAIN a bundle certificate that
        // is not self-signed only helps build the path to a self-signed one.
        type Verified = Result<(), X509VerifyResult>;
        let verified = (|| -> Result<Verified, openssl::error::ErrorStack> {
            let mut store = X509StoreBuilder::new()?;
            for cert in &self.certs {
                store.add_cert(cert.clone())?;
            }
            let mut param = X509VerifyParam::new()?;
            if self.partial_chain {
                param.set_flags(X509VerifyFlags::PARTIAL_CHAIN)?;
            }
            param.set_time(unix_seconds(now).floor() as libc::time_t);
            store.set_param(&param)?;
            let store = store.build();
            let mut context = X509StoreContext::new()?;
            context.init(&store, &leaf, &intermediates, |c| {
                Ok(if c.verify_cert()? {
                    Ok(())
                } else {
                    Err(c.error())
                })
            })
        })();
        match verified {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                return Err(invalid(format!(
                    "x5c chain not trusted: {}",
                    e.error_string()
                )))
            }
            Err(e) => return Err(invalid(format!("x5c chain not verified: {e}"))),
        }
        check_signer(&leaf, self.is_anchor(&leaf))
            .map_err(|why| invalid(format!("x5c leaf certificate may not sign tokens: {why}")))?;
        leaf.public_key()
            .map_err(|_| invalid("x5c leaf certificate has an unusable public key"))
    }

    /// Whether `cert` is itself one of the anchors.
    fn is_anchor(&self, cert: &X509Ref) -> bool {
        let Ok(der) = cert.to_der() else {
            return false;
        };
        self.certs.iter().any(|anchor| {
            anchor.to_der().is_ok_and(|d| d == der) && (self.partial_chain || self_signed(anchor))
        })
    }
}

fn self_signed(cert: &X509Ref) -> bool {
    cert.issued(cert) == X509VerifyResult::OK
        && cert
            .public_key()
            .and_then(|key| cert.verify(&key))
            .unwrap_or(false)
}

/// Why the certificate whose key signed a token is not one meant for it, if it is not.
pub(super) fn check_signer(leaf: &X509Ref, is_anchor: bool) -> Result<(), String> {
    // openssl reports extensions it could not parse as present and empty: refused.
    if let Some(usage) = leaf.key_usage() {
        if !usage.contains(X509KeyUsage::DIGITAL_SIGNATURE) {
            return Err("its key usage does not include digitalSignature".into());
        }
    }
    if let Some(extended) = leaf.extended_key_usage() {
        if !extended.intersects(X509ExtendedKeyUsage::CODE_SIGN | X509ExtendedKeyUsage::ANYEKU) {
            let tls = match (
                extended.contains(X509ExtendedKeyUsage::SSL_SERVER),
                extended.contains(X509ExtendedKeyUsage::SSL_CLIENT),
            ) {
                (true, true) => "a TLS server and client certificate",
                (true, false) => "a TLS server certificate (serverAuth)",
                (false, true) => "a TLS client certificate (clientAuth)",
                (false, false) => "its extended key usage is for other purposes",
            };
            return Err(format!(
                "{tls}; a token signing certificate names codeSigning, anyExtendedKeyUsage or \
                 no extended key usage"
            ));
        }
    }
    match is_ca(leaf) {
        Some(false) => Ok(()),
        Some(true) if is_anchor => Ok(()),
        Some(true) => Err(
            "it is a CA certificate (CA:TRUE) and not itself a trust anchor of rootcertbundle"
                .into(),
        ),
        None => Err("its extensions cannot be read".into()),
    }
}

/// `(tag, content, rest)` of the DER element at the start of `der`.
fn element(der: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, der) = der.split_first()?;
    let (&first, mut der) = der.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || der.len() < n {
            return None;
        }
        let len = der[..n]
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        der = &der[n..];
        len
    };
    (der.len() >= len).then(|| (tag, &der[..len], &der[len..]))
}

/// Whether the certificate's basicConstraints say `cA: TRUE`; `None` when its DER cannot be
/// read. (The openssl crate exposes the key usages but not this flag.)
fn is_ca(cert: &X509Ref) -> Option<bool> {
    const SEQUENCE: u8 = 0x30;
    const BOOLEAN: u8 = 0x01;
    const OCTET_STRING: u8 = 0x04;
    const EXTENSIONS: u8 = 0xa3; // [3] EXPLICIT in TBSCertificate
    const BASIC_CONSTRAINTS: [u8; 3] = [0x55, 0x1d, 0x13]; // 2.5.29.19
    let der = cert.to_der().ok()?;
    let (_, certificate, _) = element(&der)?;
    let (tag, mut tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    while !tbs.is_empty() {
        let (tag, content, rest) = element(tbs)?;
        tbs = rest;
        if tag != EXTENSIONS {
            continue;
        }
        let (_, mut extensions, _) = element(content)?;
        while !extensions.is_empty() {
            let (_, extension, rest) = element(extensions)?;
            extensions = rest;
            let (_, oid, mut fields) = element(extension)?;
            if oid != BASIC_CONSTRAINTS {
                continue;
            }
            let (mut tag, mut value, after) = element(fields)?;
            if tag == BOOLEAN {
                fields = after;
                (tag, value, _) = element(fields)?;
            }
            if tag != OCTET_STRING {
                return None;
            }
            let (_, constraints, _) = element(value)?;
            return Some(match element(constraints) {
                Some((BOOLEAN, ca, _)) => ca.iter().any(|b| *b != 0),
                _ => false,
            });
        }
    }
    Some(false)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ca_extensions, digital_signature, ec_key, x509};
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::nid::Nid;
    use openssl::pkey::Private;
    use openssl::x509::extension::{BasicConstraints, ExtendedKeyUsage, KeyUsage};
    use openssl::x509::X509Extension;

    fn key() -> PKey<Private> {
        ec_key(Nid::X9_62_PRIME256V1)
    }

    /// A certificate for `key` with `extensions`, signed by `issuer` or self-signed, valid from
    /// today for two days.
    fn cert(
        cn: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        extensions: Vec<X509Extension>,
    ) -> X509 {
        x509(
            cn,
            key,
            issuer,
            &Asn1Time::days_from_now(0).unwrap(),
            &Asn1Time::days_from_now(2).unwrap(),
            extensions,
        )
    }

    fn b64(cert: &X509) -> String {
        STANDARD.encode(cert.to_der().unwrap())
    }

    /// A root CA in the bundle, an intermediate CA under it (not in the bundle unless said).
    struct Pki {
        root_key: PKey<Private>,
        root: X509,
        intermediate_key: PKey<Private>,
        intermediate: X509,
    }

    fn pki() -> Pki {
        let root_key = key();
        let root = cert("root", &root_key, None, ca_extensions());
        let intermediate_key = key();
        let intermediate = cert(
            "intermediate",
            &intermediate_key,
            Some((&root, &root_key)),
            ca_extensions(),
        );
        Pki {
            root_key,
            root,
            intermediate_key,
            intermediate,
        }
    }

    fn leaf_of(p: &Pki, extensions: Vec<X509Extension>) -> X509 {
        cert("signer", &key(), Some((&p.root, &p.root_key)), extensions)
    }

    fn verify(anchors: &Anchors, chain: &[&X509]) -> Result<(), String> {
        let x5c: Vec<String> = chain.iter().map(|c| b64(c)).collect();
        anchors
            .verify(&x5c, SystemTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    fn roots(certs: &[&X509], partial_chain: bool) -> Anchors {
        Anchors {
            certs: certs.iter().map(|c| (*c).clone()).collect(),
            partial_chain,
        }
    }

    #[test]
    fn signing_certificates_are_accepted() {
        let p = pki();
        let anchors = roots(&[&p.root], false);
        let code_signing = ExtendedKeyUsage::new().code_signing().build().unwrap();
        let any = ExtendedKeyUsage::new()
            .other("anyExtendedKeyUsage")
            .build()
            .unwrap();
        for extensions in [
            vec![],
            vec![digital_signature()],
            vec![digital_signature(), code_signing],
            vec![digital_signature(), any],
            vec![
                BasicConstraints::new().critical().build().unwrap(),
                digital_signature(),
            ],
        ] {
            let leaf = leaf_of(&p, extensions);
            verify(&anchors, &[&leaf]).unwrap();
        }
        // The self-signed token certificate of many token servers (CA:TRUE, as `openssl req
        // -x509` makes it) signs when it is in the bundle itself.
        let own_key = key();
        let own = cert(
            "token signer",
            &own_key,
            None,
            vec![BasicConstraints::new().critical().ca().build().unwrap()],
        );
        verify(&roots(&[&p.root, &own], false), &[&own]).unwrap();
    }

    #[test]
    fn tls_and_ca_certificates_are_refused_as_signers() {
        let p = pki();
        let anchors = roots(&[&p.root], false);
        let cases = [
            (
                vec![
                    digital_signature(),
                    ExtendedKeyUsage::new().client_auth().build().unwrap(),
                ],
                "clientAuth",
            ),
            (
                vec![
                    digital_signature(),
                    ExtendedKeyUsage::new().server_auth().build().unwrap(),
                ],
                "serverAuth",
            ),
            (
                vec![ExtendedKeyUsage::new()
                    .server_auth()
                    .client_auth()
                    .build()
                    .unwrap()],
                "TLS server and client",
            ),
            (
                vec![KeyUsage::new().key_encipherment().build().unwrap()],
                "digitalSignature",
            ),
        ];
        for (extensions, why) in cases {
            let leaf = leaf_of(&p, extensions);
            let err = verify(&anchors, &[&leaf]).unwrap_err();
            assert!(
                err.contains("may not sign tokens") && err.contains(why),
                "{err}"
            );
        }
        // A CA under the root used as the signer: refused, with or without partial chains
        // (it is not in the bundle), and when in the bundle without them (not an anchor).
        let mut ca_leaf = ca_extensions();
        ca_leaf[1] = KeyUsage::new()
            .key_cert_sign()
            .digital_signature()
            .build()
            .unwrap();
        let ca = cert(
            "intermediate as signer",
            &p.intermediate_key,
            Some((&p.root, &p.root_key)),
            ca_leaf,
        );
        for anchors in [
            roots(&[&p.root], false),
            roots(&[&p.root], true),
            roots(&[&p.root, &ca], false),
        ] {
            let err = verify(&anchors, &[&ca]).unwrap_err();
            assert!(err.contains("CA:TRUE"), "{err}");
        }
        // Configured (partialchain): every bundle certificate is an anchor and may sign.
        verify(&roots(&[&ca], true), &[&ca]).unwrap();
    }

    #[test]
    fn only_self_signed_bundle_certificates_are_anchors_unless_configured() {
        let p = pki();
        let leaf = cert(
            "signer",
            &key(),
            Some((&p.intermediate, &p.intermediate_key)),
            vec![digital_signature()],
        );
        let err = verify(&roots(&[&p.intermediate], false), &[&leaf]).unwrap_err();
        assert!(err.contains("not trusted"), "{err}");
        verify(&roots(&[&p.intermediate], true), &[&leaf]).unwrap();
        // With the root in the bundle the intermediate in it completes the path.
        verify(&roots(&[&p.root, &p.intermediate], false), &[&leaf]).unwrap();
        verify(&roots(&[&p.root], false), &[&leaf, &p.intermediate]).unwrap();
    }

    #[test]
    fn basic_constraints_are_read_from_the_der() {
        let p = pki();
        assert_eq!(is_ca(&p.root), Some(true));
        assert_eq!(is_ca(&leaf_of(&p, vec![])), Some(false));
        let not_ca = leaf_of(&p, vec![BasicConstraints::new().build().unwrap()]);
        assert_eq!(is_ca(&not_ca), Some(false));
        assert_eq!(element(&[0x30, 0x82, 0x01]), None, "cut short");
        assert_eq!(element(&[0x04, 0x02, 0xaa]), None, "content cut short");
        assert_eq!(
            element(&[0x04, 0x01, 0xaa, 0xbb]),
            Some((4, &[0xaa][..], &[0xbb][..]))
        );
    }
}
