//! `berth certs`: a CA and a server certificate with subjectAltName. (Being written.)

use std::path::PathBuf;
use std::process::ExitCode;

/// Make a private CA and a server certificate signed by it.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// The registry's DNS name (repeatable); `localhost`, 127.0.0.1 and ::1 are always added.
    #[arg(long = "domain", required = true)]
    pub domains: Vec<String>,
    /// Extra IP addresses to certify (repeatable).
    #[arg(long = "ip")]
    pub ips: Vec<std::net::IpAddr>,
    /// Where to write ca.crt, ca.key, server.crt and server.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Validity of the server certificate, in days.
    #[arg(long, default_value_t = 825)]
    pub days: u32,
}

pub fn run(_args: CertsArgs) -> ExitCode {
    eprintln!("berth certs: not written yet");
    ExitCode::FAILURE
}
