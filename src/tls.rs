//! HTTPS through OpenSSL (`http.tls`): the acceptor actix-web serves with, its certificate and
//! key reloaded from their files on `SIGHUP` without a restart.
//!
//! Reload works by swapping whole `SslContext`s: every context is built by [`context_builder`]
//! from the configuration and the certificate files as they were then read, and the acceptor's
//! client-hello callback moves each new connection onto the newest one (`SSL_set_SSL_CTX`). The
//! client hello comes before SNI, ALPN and certificate selection, so every connection gets the
//! new certificate, including clients that send no server name (connecting by IP address). The
//! things `SSL_set_SSL_CTX` does not carry over (protocol versions, cipher list, verify mode are
//! copied into a connection when it is created) come from the acceptor's context, which was built
//! by the same function from the same configuration, so they are the same.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use openssl::error::ErrorStack;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{
    AlpnError, ClientHelloResponse, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod,
    SslVerifyMode, SslVersion,
};
use openssl::x509::X509;
use thiserror::Error;

use crate::config::TlsConfig;

/// TLS 1.2 suites used when `ciphersuites` is empty: forward secrecy (ECDHE) and AEAD only —
/// Mozilla's intermediate list without its DHE suites (slow, and weak with small groups).
pub const MODERN_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    Invalid { path: PathBuf, problem: String },
    #[error("the key {} does not belong to the certificate {}", key.display(), certificate.display())]
    Mismatch { certificate: PathBuf, key: PathBuf },
    #[error("http.tls.ciphersuites: {0:?} is not a TLS 1.2 cipher suite OpenSSL offers (e.g. ECDHE-RSA-AES128-GCM-SHA256 or TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256)")]
    Cipher(String),
    #[error("TLS set-up: {0}")]
    OpenSsl(#[from] ErrorStack),
    #[error("cannot watch for SIGHUP: {0}")]
    Signal(std::io::Error),
}

/// A certificate chain (the server's certificate first) and its private key, as read from files.
pub struct Identity {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

impl Identity {
    /// Reads and checks `certificate` and `key`: PEM, at least one certificate, and the key
    /// belonging to the first.
    pub fn load(certificate: &Path, key: &Path) -> Result<Identity, TlsError> {
        let chain = read_certificates(certificate)?;
        let key_pem = read(key)?;
        let key_pkey = PKey::private_key_from_pem(&key_pem).map_err(|e| TlsError::Invalid {
            path: key.to_path_buf(),
            problem: format!("not a PEM private key ({e})"),
        })?;
        let leaf_key = chain[0].public_key()?;
        if !leaf_key.public_eq(&key_pkey) {
            return Err(TlsError::Mismatch {
                certificate: certificate.to_path_buf(),
                key: key.to_path_buf(),
            });
        }
        Ok(Identity {
            chain,
            key: key_pkey,
        })
    }

    /// The serial number of the server certificate, in hex (for logs).
    pub fn serial(&self) -> String {
        self.chain[0]
            .serial_number()
            .to_bn()
            .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
            .unwrap_or_else(|_| "?".into())
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate of a PEM file; an error if there is none.
fn read_certificates(path: &Path) -> Result<Vec<X509>, TlsError> {
    let pem = read(path)?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| TlsError::Invalid {
        path: path.to_path_buf(),
        problem: format!("not PEM certificates ({e})"),
    })?;
    if certs.is_empty() {
        return Err(TlsError::Invalid {
            path: path.to_path_buf(),
            problem: "holds no PEM certificate".into(),
        });
    }
    Ok(certs)
}

/// distribution's (Go's, IANA's) names of the TLS 1.2 suites OpenSSL still offers, with
/// OpenSSL's names, so a configuration written for distribution works unchanged.
const IANA_CIPHERS: &[(&str, &str)] = &[
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        "ECDHE-ECDSA-AES128-SHA256",
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        "ECDHE-RSA-AES128-SHA256",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        "ECDHE-ECDSA-AES128-SHA",
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        "ECDHE-ECDSA-AES256-SHA",
    ),
    ("TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA", "ECDHE-RSA-AES128-SHA"),
    ("TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA", "ECDHE-RSA-AES256-SHA"),
    ("TLS_RSA_WITH_AES_128_GCM_SHA256", "AES128-GCM-SHA256"),
    ("TLS_RSA_WITH_AES_256_GCM_SHA384", "AES256-GCM-SHA384"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA256", "AES128-SHA256"),
    ("TLS_RSA_WITH_AES_128_CBC_SHA", "AES128-SHA"),
    ("TLS_RSA_WITH_AES_256_CBC_SHA", "AES256-SHA"),
];

/// The OpenSSL TLS 1.2 cipher list for `ciphersuites` (OpenSSL or distribution's names; TLS 1.3
/// names are accepted and left to OpenSSL's TLS 1.3 defaults, as Go does). Each name is checked
/// on its own, since OpenSSL silently skips unknown names in a list as long as one is valid.
fn cipher_list(ciphersuites: &[String]) -> Result<String, TlsError> {
    let mut scratch = SslContext::builder(SslMethod::tls_server())?;
    let mut names = Vec::new();
    for name in ciphersuites {
        if [
            "TLS_AES_128_GCM_SHA256",
            "TLS_AES_256_GCM_SHA384",
            "TLS_CHACHA20_POLY1305_SHA256",
        ]
        .contains(&name.as_str())
        {
            continue;
        }
        let openssl_name = IANA_CIPHERS
            .iter()
            .find(|(iana, _)| iana == name)
            .map_or(name.as_str(), |(_, o)| o);
        if openssl_name.contains([':', ',', ' ', '!', '+', '@'])
            || scratch.set_cipher_list(openssl_name).is_err()
        {
            return Err(TlsError::Cipher(name.clone()));
        }
        names.push(openssl_name);
    }
    if names.is_empty() {
        return Ok(MODERN_CIPHERS.to_string());
    }
    Ok(names.join(":"))
}

/// A server context for `config` serving `identity`: Mozilla's intermediate profile, TLS 1.2 or
/// 1.3 at least, the configured or modern TLS 1.2 ciphers, client certificates required when
/// `clientcas` is set, and ALPN offering h2 and http/1.1.
pub fn context_builder(
    config: &TlsConfig,
    identity: &Identity,
) -> Result<SslAcceptorBuilder, TlsError> {
    let mut builder = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())?;
    let minimum = match config.minimumtls.as_deref() {
        Some("tls1.3") => SslVersion::TLS1_3,
        // Config loading refuses anything but tls1.2 and tls1.3.
        _ => SslVersion::TLS1_2,
    };
    builder.set_min_proto_version(Some(minimum))?;
    builder.set_cipher_list(&cipher_list(&config.ciphersuites)?)?;
    builder.set_certificate(&identity.chain[0])?;
    for extra in &identity.chain[1..] {
        builder.add_extra_chain_cert(extra.clone())?;
    }
    builder.set_private_key(&identity.key)?;
    builder.check_private_key()?;
    // Sessions are only resumed in the context that made them; OpenSSL also refuses to resume
    // with client verification on unless this is set.
    builder.set_session_id_context(b"berth")?;
    if !config.clientcas.is_empty() {
        for path in &config.clientcas {
            for ca in read_certificates(path)? {
                // The names sent in the CertificateRequest, so clients pick a matching cert.
                builder.add_client_ca(&ca)?;
                builder.cert_store_mut().add_cert(ca)?;
            }
        }
        builder.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
        // Every listed certificate is a trust anchor, intermediates included, as in Go's
        // ClientCAs (distribution set-ups often list only the issuing intermediate).
        builder
            .verify_param_mut()
            .set_flags(openssl::x509::verify::X509VerifyFlags::PARTIAL_CHAIN)?;
        // No session resumption: a resumed session skips the certificate check, so a CA
        // removed on reload would still let its clients in.
        builder.set_options(openssl::ssl::SslOptions::NO_TICKET);
        builder.set_session_cache_mode(openssl::ssl::SslSessionCacheMode::OFF);
    }
    // What actix-web's `bind_openssl` installs on the acceptor's context; swapped-in contexts
    // need it too, since OpenSSL reads the ALPN callback from the connection's current context.
    builder.set_alpn_select_callback(|_, offered| {
        openssl::ssl::select_next_proto(b"\x02h2\x08http/1.1", offered).ok_or(AlpnError::NOACK)
    });
    Ok(builder)
}

/// The TLS set-up of a server: its configuration and the context new connections are moved to.
#[derive(Clone)]
pub struct Tls {
    config: TlsConfig,
    current: Arc<RwLock<SslContext>>,
}

impl Tls {
    /// Reads the certificate, key and client CAs; fails with the file and the problem.
    pub fn load(config: &TlsConfig) -> Result<Tls, TlsError> {
        let identity = Identity::load(&config.certificate, &config.key)?;
        let context = context_builder(config, &identity)?.build().into_context();
        log::info!(
            "TLS certificate {} (serial {}){}",
            config.certificate.display(),
            identity.serial(),
            if config.clientcas.is_empty() {
                ""
            } else {
                ", client certificates required"
            }
        );
        Ok(Tls {
            config: config.clone(),
            current: Arc::new(RwLock::new(context)),
        })
    }

    /// The acceptor builder for `HttpServer::bind_openssl`: same settings as the current context,
    /// plus the callback moving each connection onto whatever context is current then.
    pub fn acceptor(&self) -> Result<SslAcceptorBuilder, TlsError> {
        let identity = Identity::load(&self.config.certificate, &self.config.key)?;
        let mut builder = context_builder(&self.config, &identity)?;
        let current = self.current.clone();
        builder.set_client_hello_callback(move |ssl, _alert| {
            let context = current.read().unwrap_or_else(|e| e.into_inner()).clone();
            ssl.set_ssl_context(&context)?;
            Ok(ClientHelloResponse::SUCCESS)
        });
        Ok(builder)
    }

    /// Re-reads the certificate and key; on success new connections get them, on failure nothing
    /// changes. Answers the new certificate's serial number.
    pub fn reload(&self) -> Result<String, TlsError> {
        let identity = Identity::load(&self.config.certificate, &self.config.key)?;
        let context = context_builder(&self.config, &identity)?
            .build()
            .into_context();
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = context;
        Ok(identity.serial())
    }

    /// Reloads on every `SIGHUP`, in a task of the running actix system. A failed reload is
    /// logged and the previous certificate stays.
    pub fn reload_on_sighup(&self) -> Result<(), TlsError> {
        use actix_web::rt::signal::unix::{signal, SignalKind};
        let mut hangups = signal(SignalKind::hangup()).map_err(TlsError::Signal)?;
        let tls = self.clone();
        actix_web::rt::spawn(async move {
            while hangups.recv().await.is_some() {
                // A few small files: read here rather than on the blocking pool.
                match tls.reload() {
                    Ok(serial) => log::info!(
                        "SIGHUP: reloaded TLS certificate {} (serial {serial})",
                        tls.config.certificate.display()
                    ),
                    Err(e) => {
                        log::error!(
                            "SIGHUP: TLS reload failed, keeping the previous certificate: {e}"
                        )
                    }
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{self, Made};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    use openssl::ssl::{SslConnector, SslStream};

    fn config(dir: &Path) -> TlsConfig {
        TlsConfig {
            certificate: dir.join("server.crt"),
            key: dir.join("server.key"),
            clientcas: vec![],
            minimumtls: None,
            ciphersuites: vec![],
        }
    }

    fn make(dir: &Path, client: Option<&str>) -> Made {
        certs::make(&certs::CertsArgs {
            domains: vec!["registry.test".into()],
            ips: vec![],
            out: dir.to_path_buf(),
            days: 30,
            clients: client.map(|c| vec![c.to_string()]).unwrap_or_default(),
            force: false,
        })
        .unwrap()
    }

    /// Serves one TLS handshake (and answers "ok" to whatever is read) on a thread; answers the
    /// port.
    fn serve_once(acceptor: SslAcceptor) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            while let Ok((tcp, _)) = listener.accept() {
                if let Ok(mut tls) = acceptor.accept(tcp) {
                    let mut buf = [0u8; 16];
                    let _ = tls.read(&mut buf);
                    let _ = tls.write_all(b"ok");
                }
            }
        });
        port
    }

    fn connect(
        port: u16,
        ca: &Path,
        setup: impl FnOnce(&mut openssl::ssl::SslConnectorBuilder),
    ) -> Result<SslStream<TcpStream>, String> {
        let mut builder = SslConnector::builder(SslMethod::tls_client()).unwrap();
        builder.set_ca_file(ca).unwrap();
        setup(&mut builder);
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let mut config = builder.build().configure().unwrap();
        config.set_use_server_name_indication(false);
        config
            .connect("localhost", tcp)
            .map_err(|e| e.to_string())
            .and_then(|mut s| {
                s.write_all(b"hi").map_err(|e| e.to_string())?;
                let mut buf = [0u8; 2];
                s.read_exact(&mut buf).map_err(|e| e.to_string())?;
                Ok(s)
            })
    }

    fn serial_of(stream: &SslStream<TcpStream>) -> String {
        let cert = stream.ssl().peer_certificate().unwrap();
        let serial = cert.serial_number().to_bn().unwrap().to_hex_str().unwrap();
        serial.to_string()
    }

    #[test]
    fn serves_the_certificate_and_reloads_it() {
        let dir = tempfile::tempdir().unwrap();
        let made = make(dir.path(), None);
        let tls = Tls::load(&config(dir.path())).unwrap();
        let port = serve_once(tls.acceptor().unwrap().build());
        let ca = dir.path().join("ca.crt");
        let first = connect(port, &ca, |_| {}).unwrap();
        assert_eq!(serial_of(&first), made.server_serial.clone().unwrap());

        // A new server certificate from the same CA; a failed reload keeps the old one.
        let made2 = make(dir.path(), None);
        assert_ne!(made.server_serial, made2.server_serial);
        let key = std::fs::read(dir.path().join("server.key")).unwrap();
        std::fs::write(dir.path().join("server.key"), b"garbage").unwrap();
        assert!(tls.reload().is_err());
        let still = connect(port, &ca, |_| {}).unwrap();
        assert_eq!(serial_of(&still), made.server_serial.unwrap());
        std::fs::write(dir.path().join("server.key"), key).unwrap();
        assert_eq!(tls.reload().unwrap(), made2.server_serial.clone().unwrap());
        // No SNI is sent (see `connect`): the new certificate all the same.
        let second = connect(port, &ca, |_| {}).unwrap();
        assert_eq!(serial_of(&second), made2.server_serial.unwrap());
    }

    #[test]
    fn cipher_names_of_openssl_and_distribution() {
        assert_eq!(cipher_list(&[]).unwrap(), MODERN_CIPHERS);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            cipher_list(&names(&[
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "ECDHE-ECDSA-AES128-GCM-SHA256",
                "TLS_AES_128_GCM_SHA256",
            ]))
            .unwrap(),
            "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256"
        );
        for bad in ["TLS_RSA_WITH_RC4_128_SHA", "ALL:!aNULL", "NOPE"] {
            assert!(cipher_list(&names(&[bad])).is_err(), "{bad}");
        }
    }

    #[test]
    fn mismatched_key_is_refused_naming_the_files() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        make(a.path(), None);
        make(b.path(), None);
        let mut cfg = config(a.path());
        cfg.key = b.path().join("server.key");
        let err = Tls::load(&cfg).err().expect("mismatch refused").to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(err.contains(&b.path().join("server.key").display().to_string()));
        cfg.key = a.path().join("missing.key");
        let err = Tls::load(&cfg).err().unwrap().to_string();
        assert!(err.contains("missing.key"), "{err}");
        cfg.ciphersuites = vec!["NOT-A-CIPHER".into()];
        cfg.key = a.path().join("server.key");
        let err = Tls::load(&cfg).err().unwrap().to_string();
        assert!(err.contains("NOT-A-CIPHER"), "{err}");
    }

    #[test]
    fn old_protocols_are_never_negotiated() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), None);
        let ca = dir.path().join("ca.crt");
        let port = serve_once(
            Tls::load(&config(dir.path()))
                .unwrap()
                .acceptor()
                .unwrap()
                .build(),
        );
        for old in [SslVersion::TLS1, SslVersion::TLS1_1] {
            let r = connect(port, &ca, |b| {
                // OpenSSL's default security level forbids these on the client side too.
                b.set_security_level(0);
                b.set_min_proto_version(Some(old)).unwrap();
                b.set_max_proto_version(Some(old)).unwrap();
            });
            assert!(r.is_err(), "{old:?} negotiated");
        }
        let s = connect(port, &ca, |b| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        })
        .unwrap();
        assert_eq!(s.ssl().version_str(), "TLSv1.2");

        let mut cfg = config(dir.path());
        cfg.minimumtls = Some("tls1.3".into());
        let port = serve_once(Tls::load(&cfg).unwrap().acceptor().unwrap().build());
        let r = connect(port, &ca, |b| {
            b.set_max_proto_version(Some(SslVersion::TLS1_2)).unwrap();
        });
        assert!(r.is_err(), "TLS 1.2 negotiated with minimumtls tls1.3");
        let s = connect(port, &ca, |_| {}).unwrap();
        assert_eq!(s.ssl().version_str(), "TLSv1.3");
    }

    #[test]
    fn client_certificates_are_required_with_clientcas() {
        let dir = tempfile::tempdir().unwrap();
        make(dir.path(), Some("ci"));
        let ca = dir.path().join("ca.crt");
        let mut cfg = config(dir.path());
        cfg.clientcas = vec![ca.clone()];
        let tls = Tls::load(&cfg).unwrap();
        let port = serve_once(tls.acceptor().unwrap().build());
        assert!(connect(port, &ca, |_| {}).is_err(), "no client certificate");
        let with_cert = |b: &mut openssl::ssl::SslConnectorBuilder| {
            b.set_certificate_file(dir.path().join("ci.crt"), openssl::ssl::SslFiletype::PEM)
                .unwrap();
            b.set_private_key_file(dir.path().join("ci.key"), openssl::ssl::SslFiletype::PEM)
                .unwrap();
        };
        connect(port, &ca, with_cert).unwrap();
        // Still required after a reload (the swapped-in context verifies too).
        tls.reload().unwrap();
        assert!(connect(port, &ca, |_| {}).is_err(), "no client certificate");
        connect(port, &ca, with_cert).unwrap();

        // A certificate from another CA is refused.
        let other = tempfile::tempdir().unwrap();
        make(other.path(), Some("ci"));
        let r = connect(port, &ca, |b| {
            b.set_certificate_file(other.path().join("ci.crt"), openssl::ssl::SslFiletype::PEM)
                .unwrap();
            b.set_private_key_file(other.path().join("ci.key"), openssl::ssl::SslFiletype::PEM)
                .unwrap();
        });
        assert!(r.is_err(), "foreign client certificate accepted");
    }
}
