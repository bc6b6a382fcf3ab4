//! `berth certs`: a private CA, a server certificate signed by it with subjectAltName for
//! `http.tls`, optionally client certificates for mutual TLS, and instructions for where clients
//! look for the CA. Everything through the openssl crate (no `openssl` command needed).

use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use openssl::asn1::{Asn1Integer, Asn1Time};
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, PKeyRef, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509Builder, X509Name, X509NameBuilder, X509Ref, X509};

/// Make a private CA and a server certificate signed by it.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The registry's DNS name (repeatable); `localhost`, 127.0.0.1 and ::1 are always added.
    #[arg(long = "domain", required_unless_present = "clients")]
    pub domains: Vec<String>,
    /// Extra IP addresses to certify (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<std::net::IpAddr>,
    /// Where to write ca.crt, ca.key, server.crt and server.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity of the server (and client) certificates, in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
    /// Also make a client certificate NAME.crt / NAME.key (clientAuth) for mutual TLS
    /// (`http.tls.clientcas`); repeatable. Without --domain, only client certificates are made.
    #[arg(long = "client", value_name = "NAME")]
    pub clients: Vec<String>,
    /// Make a new CA even if ca.crt and ca.key exist in --out (certificates signed by the old
    /// one stop being trusted by clients given the new one).
    #[arg(long)]
    pub force: bool,
}

/// Validity of the CA: ten years.
const CA_DAYS: u32 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Refused(String),
    #[error("openssl: {0}")]
    OpenSsl(#[from] openssl::error::ErrorStack),
}

/// What [`make`] did: serial numbers in hex, whether the CA was reused.
#[derive(Debug)]
pub struct Made {
    pub ca_reused: bool,
    pub server_serial: Option<String>,
    pub client_serials: Vec<String>,
}

pub fn run(args: CertsArgs) -> ExitCode {
    match make(&args) {
        Ok(made) => {
            print_instructions(&args, &made);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("berth certs: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Writes the CA (or reuses the one in `--out`), the server certificate and client certificates.
pub fn make(args: &CertsArgs) -> Result<Made, CertsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { path, source }
    };
    std::fs::create_dir_all(&args.out).map_err(io(&args.out))?;
    let ca_crt = args.out.join("ca.crt");
    let ca_key = args.out.join("ca.key");
    let (ca, ca_pkey, ca_reused) = match (ca_crt.exists(), ca_key.exists(), args.force) {
        (true, true, false) => {
            let cert = X509::from_pem(&std::fs::read(&ca_crt).map_err(io(&ca_crt))?)?;
            let key = PKey::private_key_from_pem(&std::fs::read(&ca_key).map_err(io(&ca_key))?)?;
            if !cert.public_key()?.public_eq(&key) {
                return Err(CertsError::Refused(format!(
                    "{} does not belong to {}",
                    ca_key.display(),
                    ca_crt.display()
                )));
            }
            (cert, key, true)
        }
        (false, true, false) => {
            return Err(CertsError::Refused(format!(
                "{} exists without ca.crt; refusing to overwrite a CA key (use --force)",
                ca_key.display()
            )))
        }
        (true, false, false) => {
            return Err(CertsError::Refused(format!(
                "{} exists without ca.key, so it cannot sign; refusing to replace it (use --force)",
                ca_crt.display()
            )))
        }
        _ => {
            let key = new_key()?;
            let cert = ca_certificate(&key)?;
            write(&ca_key, &key.private_key_to_pem_pkcs8()?, true)?;
            write(&ca_crt, &cert.to_pem()?, false)?;
            (cert, key, false)
        }
    };

    let mut made = Made {
        ca_reused,
        server_serial: None,
        client_serials: Vec::new(),
    };
    if !args.domains.is_empty() {
        let key = new_key()?;
        let cert = server_certificate(&ca, &ca_pkey, &key, &args.domains, &args.ips, args.days)?;
        write(
            &args.out.join("server.key"),
            &key.private_key_to_pem_pkcs8()?,
            true,
        )?;
        write(&args.out.join("server.crt"), &cert.to_pem()?, false)?;
        made.server_serial = Some(serial_hex(&cert)?);
    }
    for name in &args.clients {
        if name.is_empty() || name.contains(['/', '\0']) || name == "ca" || name == "server" {
            return Err(CertsError::Refused(format!(
                "--client {name:?}: give a plain name other than ca and server"
            )));
        }
        let key = new_key()?;
        let cert = client_certificate(&ca, &ca_pkey, &key, name, args.days)?;
        write(
            &args.out.join(format!("{name}.key")),
            &key.private_key_to_pem_pkcs8()?,
            true,
        )?;
        write(
            &args.out.join(format!("{name}.crt")),
            &cert.to_pem()?,
            false,
        )?;
        made.client_serials.push(serial_hex(&cert)?);
    }
    Ok(made)
}

/// An EC P-256 key: small and fast, and accepted by docker, podman, curl and browsers alike.
fn new_key() -> Result<PKey<Private>, CertsError> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    Ok(PKey::from_ec_key(EcKey::generate(&group)?)?)
}

/// Writes `bytes` to `path`, replacing it atomically (a running berth reloading on SIGHUP never
/// sees half a file); private keys readable by the owner only, from their creation on.
fn write(path: &Path, bytes: &[u8], private: bool) -> Result<(), CertsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CertsError::Io { path, source }
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&tmp)(e)),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// A random 159-bit serial number (positive, at most 20 bytes, as RFC 5280 wants).
fn random_serial() -> Result<Asn1Integer, CertsError> {
    let mut bn = BigNum::new()?;
    bn.rand(159, MsbOption::MAYBE_ZERO, false)?;
    Ok(bn.to_asn1_integer()?)
}

fn serial_hex(cert: &X509Ref) -> Result<String, CertsError> {
    Ok(cert.serial_number().to_bn()?.to_hex_str()?.to_string())
}

fn subject(common_name: &str) -> Result<X509Name, CertsError> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "berth")?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    Ok(name.build())
}

/// A v3 certificate skeleton: subject CN (and O=berth), random serial, validity from now (less
/// an hour, for clocks slightly behind) for `days`.
fn skeleton(
    common_name: &str,
    key: &PKeyRef<Private>,
    days: u32,
) -> Result<X509Builder, CertsError> {
    let name = subject(common_name)?;
    let mut b = X509Builder::new()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_pubkey(key)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let not_before = Asn1Time::from_unix(now - 3600)?;
    let not_after = Asn1Time::days_from_now(days)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

fn ca_certificate(key: &PKeyRef<Private>) -> Result<X509, CertsError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let cn = format!("berth CA {}", host.trim()).trim().to_string();
    let mut b = skeleton(&cn, key, CA_DAYS)?;
    let issuer = subject(&cn)?;
    b.set_issuer_name(&issuer)?;
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// A leaf signed by the CA; `extend` adds its particular extensions.
fn leaf(
    ca: &X509Ref,
    ca_key: &PKeyRef<Private>,
    key: &PKeyRef<Private>,
    common_name: &str,
    days: u32,
    extend: impl FnOnce(&mut X509Builder) -> Result<(), CertsError>,
) -> Result<X509, CertsError> {
    let mut b = skeleton(common_name, key, days)?;
    b.set_issuer_name(ca.subject_name())?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(KeyUsage::new().critical().digital_signature().build()?)?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(ski)?;
    let aki = AuthorityKeyIdentifier::new()
        .keyid(true)
        .build(&b.x509v3_context(Some(ca), None))?;
    b.append_extension(aki)?;
    extend(&mut b)?;
    b.sign(ca_key, MessageDigest::sha256())?;
    Ok(b.build())
}

/// The names a server certificate covers: every domain, `localhost`, the loopback addresses and
/// every `ip`, without repeats.
/// A `--domain` that is an IP address is certified as one (clients match addresses only against
/// IP entries).
pub fn server_names(domains: &[String], ips: &[IpAddr]) -> (Vec<String>, Vec<IpAddr>) {
    let mut dns: Vec<String> = Vec::new();
    let mut extra_ips: Vec<IpAddr> = Vec::new();
    for d in domains.iter().map(String::as_str).chain(["localhost"]) {
        if let Ok(ip) = d.trim_matches(['[', ']']).parse::<IpAddr>() {
            extra_ips.push(ip);
        } else if !dns.iter().any(|x| x.eq_ignore_ascii_case(d)) {
            dns.push(d.to_string());
        }
    }
    let mut addrs: Vec<IpAddr> = Vec::new();
    for ip in [
        IpAddr::from([127, 0, 0, 1]),
        IpAddr::from([0u16, 0, 0, 0, 0, 0, 0, 1]),
    ]
    .iter()
    .chain(ips)
    .chain(&extra_ips)
    {
        if !addrs.contains(ip) {
            addrs.push(*ip);
        }
    }
    (dns, addrs)
}

fn server_certificate(
    ca: &X509Ref,
    ca_key: &PKeyRef<Private>,
    key: &PKeyRef<Private>,
    domains: &[String],
    ips: &[IpAddr],
    days: u32,
) -> Result<X509, CertsError> {
    let (dns, addrs) = server_names(domains, ips);
    leaf(ca, ca_key, key, &dns[0], days, |b| {
        let mut san = SubjectAlternativeName::new();
        for d in &dns {
            san.dns(d);
        }
        for ip in &addrs {
            san.ip(&ip.to_string());
        }
        let san = san.build(&b.x509v3_context(Some(ca), None))?;
        b.append_extension(san)?;
        b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
        Ok(())
    })
}

fn client_certificate(
    ca: &X509Ref,
    ca_key: &PKeyRef<Private>,
    key: &PKeyRef<Private>,
    name: &str,
    days: u32,
) -> Result<X509, CertsError> {
    leaf(ca, ca_key, key, name, days, |b| {
        b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        Ok(())
    })
}

fn print_instructions(args: &CertsArgs, made: &Made) {
    let out = args.out.canonicalize().unwrap_or_else(|_| args.out.clone());
    let d = out.display();
    if made.ca_reused {
        println!("Reused the CA in {d}/ca.crt + ca.key (pass --force to make a new one).");
    } else {
        println!("Made a new CA: {d}/ca.crt (its key {d}/ca.key, mode 0600: keep it private).");
    }
    if let Some(serial) = &made.server_serial {
        let (dns, addrs) = server_names(&args.domains, &args.ips);
        let addrs: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        println!(
            "Server certificate {d}/server.crt (serial {serial}, {} days; the certificate alone, \
             no chain: the CA is the root clients trust) and key {d}/server.key, for DNS {} and IP {}.",
            args.days,
            dns.join(", "),
            addrs.join(", ")
        );
        println!();
        println!("In berth's configuration:");
        println!("  http:");
        println!("    tls:");
        println!("      certificate: {d}/server.crt");
        println!("      key: {d}/server.key");
        if !args.clients.is_empty() {
            println!("      clientcas:");
            println!("        - {d}/ca.crt");
        }
        println!("or in the environment:");
        println!("  REGISTRY_HTTP_TLS_CERTIFICATE={d}/server.crt");
        println!("  REGISTRY_HTTP_TLS_KEY={d}/server.key");
        println!(
            "A running berth picks up a new server.crt/server.key on SIGHUP (kill -HUP <pid>)."
        );
    }
    let host = args.domains.first().map_or("localhost", String::as_str);
    println!();
    println!("Give clients the CA (HOST:PORT as they reach the registry, e.g. {host}:5000):");
    println!("  docker:         /etc/docker/certs.d/{host}:5000/ca.crt");
    println!(
        "  podman, skopeo: /etc/containers/certs.d/{host}:5000/ca.crt, or a directory holding"
    );
    println!(
        "                  ca.crt given as --cert-dir (skopeo: --src-cert-dir/--dest-cert-dir)"
    );
    println!("  the system:     cp {d}/ca.crt /usr/local/share/ca-certificates/berth-ca.crt");
    println!("                  && update-ca-certificates   (curl, most other clients)");
    for (name, serial) in args.clients.iter().zip(&made.client_serials) {
        println!();
        println!(
            "Client certificate {d}/{name}.crt (serial {serial}) and key {d}/{name}.key, for \
             http.tls.clientcas: [{d}/ca.crt]."
        );
        println!(
            "  docker, podman, skopeo: copy them into the certs.d/{host}:5000/ directory as \
             client.cert and client.key"
        );
        println!("  curl: --cert {d}/{name}.crt --key {d}/{name}.key");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::x509::store::X509StoreBuilder;
    use openssl::x509::{X509StoreContext, X509VerifyResult};

    fn args(out: &Path) -> CertsArgs {
        CertsArgs {
            domains: vec!["registry.example.com".into()],
            ips: vec!["10.1.2.3".parse().unwrap()],
            out: out.to_path_buf(),
            days: 90,
            clients: vec!["ci".into()],
            force: false,
        }
    }

    fn read_cert(path: &Path) -> X509 {
        X509::from_pem(&std::fs::read(path).unwrap()).unwrap()
    }

    fn verifies(ca: &X509, cert: &X509) -> X509VerifyResult {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.clone()).unwrap();
        let store = store.build();
        let chain = openssl::stack::Stack::new().unwrap();
        let mut ctx = X509StoreContext::new().unwrap();
        ctx.init(&store, cert, &chain, |c| {
            c.verify_cert()?;
            Ok(c.error())
        })
        .unwrap()
    }

    #[test]
    fn server_certificate_verifies_against_the_ca_with_its_names() {
        let dir = tempfile::tempdir().unwrap();
        let made = make(&args(dir.path())).unwrap();
        assert!(!made.ca_reused);
        let ca = read_cert(&dir.path().join("ca.crt"));
        let server = read_cert(&dir.path().join("server.crt"));
        assert_eq!(verifies(&ca, &server), X509VerifyResult::OK);

        let sans = server.subject_alt_names().unwrap();
        let dns: Vec<&str> = sans.iter().filter_map(|n| n.dnsname()).collect();
        assert_eq!(dns, vec!["registry.example.com", "localhost"]);
        let ips: Vec<&[u8]> = sans.iter().filter_map(|n| n.ipaddress()).collect();
        assert!(ips.contains(&&[127u8, 0, 0, 1][..]));
        assert!(ips.contains(&&[10u8, 1, 2, 3][..]));
        assert!(ips.iter().any(|ip| ip.len() == 16 && ip[15] == 1));

        // serverAuth on the server, clientAuth on the client (openssl's text form is the only
        // read access the crate offers to extended key usage).
        let text = String::from_utf8(server.to_text().unwrap()).unwrap();
        assert!(text.contains("TLS Web Server Authentication"), "{text}");
        assert!(!text.contains("CA:TRUE"));
        let ca_text = String::from_utf8(ca.to_text().unwrap()).unwrap();
        assert!(ca_text.contains("CA:TRUE") && ca_text.contains("Certificate Sign"));
        let client = read_cert(&dir.path().join("ci.crt"));
        assert_eq!(verifies(&ca, &client), X509VerifyResult::OK);
        let text = String::from_utf8(client.to_text().unwrap()).unwrap();
        assert!(text.contains("TLS Web Client Authentication"), "{text}");

        let (dns, ips) = server_names(&["10.9.9.9".into(), "reg".into()], &[]);
        assert_eq!(dns, vec!["reg", "localhost"]);
        assert!(ips.contains(&"10.9.9.9".parse().unwrap()));

        // Another CA's certificate does not verify.
        let other = tempfile::tempdir().unwrap();
        make(&args(other.path())).unwrap();
        let foreign = read_cert(&other.path().join("server.crt"));
        assert_ne!(verifies(&ca, &foreign), X509VerifyResult::OK);
    }

    #[test]
    fn keys_are_private_and_the_ca_is_reused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = make(&args(dir.path())).unwrap();
        for key in ["ca.key", "server.key", "ci.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        let ca_before = std::fs::read(dir.path().join("ca.key")).unwrap();
        let second = make(&args(dir.path())).unwrap();
        assert!(second.ca_reused);
        assert_ne!(first.server_serial, second.server_serial);
        assert_eq!(std::fs::read(dir.path().join("ca.key")).unwrap(), ca_before);
        let ca = read_cert(&dir.path().join("ca.crt"));
        let server = read_cert(&dir.path().join("server.crt"));
        assert_eq!(verifies(&ca, &server), X509VerifyResult::OK);

        // A CA key without its certificate is not overwritten silently.
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        let err = make(&args(dir.path())).unwrap_err().to_string();
        assert!(err.contains("--force"), "{err}");
        let mut forced = args(dir.path());
        forced.force = true;
        assert!(!make(&forced).unwrap().ca_reused);
        assert_ne!(std::fs::read(dir.path().join("ca.key")).unwrap(), ca_before);
    }
}
