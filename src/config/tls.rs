//! The TLS flags as used: `--cacert` read once, the mutual-TLS pair `--cert`/`--key` read
//! and checked to belong together, and `--pinnedpubkey` parsed, before anything is contacted.
//!
//! Owns: reading PEM files and saying what is wrong with them, naming the flag. Must not: open
//! sockets.

use super::UsageError;
use crate::address::pin::Pins;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::path::Path;
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey};

/// The CA certificates of a `--cacert` PEM bundle.
pub(super) fn read_ca_certificates(path: &Path) -> Result<Vec<Certificate<'static>>, UsageError> {
    let (certificates, _) = read_pem("--cacert", path)?;
    if certificates.is_empty() {
        return Err(flag_error(
            "--cacert",
            path,
            "no certificate found (expected PEM 'BEGIN CERTIFICATE' blocks)",
        ));
    }
    Ok(certificates)
}

/// The client certificate of `--cert` (its chain, in file order) with the key of `--key`, or
/// of `--cert` itself when `--key` is not given (like curl). The pair is checked the way the
/// TLS library will use it, so a wrong key is a usage error now rather than a failure on every
/// device later.
pub(super) fn client_certificate(
    cert: Option<&Path>,
    key: Option<&Path>,
) -> Result<Option<ClientCert>, UsageError> {
    let cert_path = match (cert, key) {
        (None, None) => return Ok(None),
        (None, Some(_)) => {
            return Err(UsageError(
                "--key needs --cert FILE: the client certificate that goes with the key".into(),
            ));
        }
        (Some(cert), _) => cert,
    };
    let (chain, keys_in_cert) = read_pem("--cert", cert_path)?;
    if chain.is_empty() {
        return Err(flag_error(
            "--cert",
            cert_path,
            "no certificate found (expected a PEM 'BEGIN CERTIFICATE' block)",
        ));
    }
    let (flag, key_path, keys) = match key {
        Some(key_path) => ("--key", key_path, read_pem("--key", key_path)?.1),
        None => ("--cert", cert_path, keys_in_cert),
    };
    let Some(private_key) = keys.into_iter().next() else {
        let why = if flag == "--cert" {
            "no private key in this file: give the key with --key FILE"
        } else {
            "no private key found (expected an unencrypted PEM key: 'BEGIN PRIVATE KEY', \
             'BEGIN RSA PRIVATE KEY' or 'BEGIN EC PRIVATE KEY'; decrypt an encrypted one with \
             'openssl pkey -in KEY -out KEY.pem')"
        };
        return Err(flag_error(flag, key_path, why));
    };
    check_pair(&chain, &private_key).map_err(|why| {
        UsageError(format!(
            "--cert {} and {flag} {}: {why}",
            cert_path.display(),
            key_path.display()
        ))
    })?;
    Ok(Some(ClientCert::new_with_certs(&chain, private_key)))
}

/// The pins of `--pinnedpubkey`, checked now so a typo is one usage error.
pub(super) fn pinned_keys(pins: Option<&str>) -> Result<Option<Pins>, UsageError> {
    pins.map(Pins::parse)
        .transpose()
        .map_err(|why| UsageError(format!("--pinnedpubkey: {why}")))
}

/// Certificates and private keys of a PEM file, in order.
fn read_pem(
    flag: &str,
    path: &Path,
) -> Result<(Vec<Certificate<'static>>, Vec<PrivateKey<'static>>), UsageError> {
    let hint = match flag {
        "--cacert" => "give a PEM file of CA certificates",
        "--cert" => "give the client certificate as a PEM file",
        _ => "give the private key as a PEM file",
    };
    let pem = std::fs::read(path)
        .map_err(|e| flag_error(flag, path, &format!("cannot read it ({e}): {hint}")))?;
    let mut certificates = Vec::new();
    let mut keys = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        match item {
            Ok(PemItem::Certificate(certificate)) => certificates.push(certificate),
            Ok(PemItem::PrivateKey(key)) => keys.push(key),
            Ok(_) => {}
            Err(e) => {
                return Err(flag_error(
                    flag,
                    path,
                    &format!("not a valid PEM file ({e}): {hint}"),
                ));
            }
        }
    }
    Ok((certificates, keys))
}

/// Whether rustls (what ureq uses) accepts the key, and whether it is the certificate's key.
fn check_pair(chain: &[Certificate<'static>], key: &PrivateKey<'static>) -> Result<(), String> {
    let chain: Vec<CertificateDer<'static>> = chain
        .iter()
        .map(|certificate| CertificateDer::from(certificate.der().to_vec()))
        .collect();
    let key = PrivateKeyDer::try_from(key.der())
        .map_err(|e| format!("the private key is not usable ({e})"))?
        .clone_key();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|e| e.to_string())?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_client_auth_cert(chain, key)
        .map(|_| ())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => {
                "the private key does not belong to the certificate: give the key of this \
                 certificate"
                    .to_string()
            }
            other => format!("the certificate or key is not usable ({other})"),
        })
}

fn flag_error(flag: &str, path: &Path, why: &str) -> UsageError {
    UsageError(format!("{flag} {}: {why}", path.display()))
}
