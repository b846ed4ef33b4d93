//! The TLS client configuration for every connection we make (the ingress,
//! IMAP servers, token endpoints): the system's trust store, read once and
//! only when a connection needs TLS, plus the administrator's `ca_file`.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::sys::io_reason;

/// A `ca_file` that cannot be used: a configuration problem.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CaFileError(String);

/// Where the distributions keep their bundle of trusted certificates; the
/// first one present is read, and nothing else (the directory of single
/// certificates beside it holds the same ones again).
const BUNDLES: [&str; 5] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/cert.pem",
];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

/// The system's trust anchors, read at most once per process.
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        let bundle = std::env::var_os("SSL_CERT_FILE")
            .map(PathBuf::from)
            .into_iter()
            .chain(BUNDLES.iter().map(PathBuf::from))
            .find_map(|path| fs::read(path).ok());
        if let Some(pem) = bundle {
            roots.add_parsable_certificates(CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok));
        } else if let Ok(dir) =
            fs::read_dir(std::env::var_os("SSL_CERT_DIR").unwrap_or("/etc/ssl/certs".into()))
        {
            for entry in dir.flatten() {
                if let Ok(pem) = fs::read(entry.path()) {
                    roots.add_parsable_certificates(
                        CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok),
                    );
                }
            }
        }
        if roots.is_empty() {
            // No system store at all (a minimal container): Mozilla's list.
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        roots
    })
}

/// The certificates of a `ca_file`: at least one, or an error naming the file.
pub fn read_ca_file(path: &Path) -> Result<Vec<CertificateDer<'static>>, CaFileError> {
    let pem = fs::read(path)
        .map_err(|e| CaFileError(format!("cannot read ca_file {}: {}", path.display(), io_reason(&e))))?;
    let certificates: Vec<_> = CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect();
    if certificates.is_empty() {
        return Err(CaFileError(format!(
            "ca_file {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(certificates)
}

/// The system's bundle of trusted certificates and `ca_file`'s, as PEM, for
/// a client that takes its trust only as PEM (the redis crate, for
/// rediss://): the same authorities as [`client_config`] trusts.
pub fn trusted_pem(ca_file: &Path) -> Result<Vec<u8>, CaFileError> {
    read_ca_file(ca_file)?;
    let mut pem = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .into_iter()
        .chain(BUNDLES.iter().map(PathBuf::from))
        .find_map(|path| fs::read(path).ok())
        .unwrap_or_default();
    pem.push(b'\n');
    pem.extend(
        fs::read(ca_file).map_err(|e| {
            CaFileError(format!("cannot read ca_file {}: {}", ca_file.display(), io_reason(&e)))
        })?,
    );
    Ok(pem)
}

/// A client configuration trusting the system's store and `ca_file`'s
/// certificates, as authorities and, when a server presents one of them
/// as its own certificate (a self-signed one, as `openssl req -x509` makes
/// for an internal host), as exactly that server certificate.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, CaFileError> {
    let mut roots = system_roots().clone();
    let mut pinned = Vec::new();
    if let Some(path) = ca_file {
        for certificate in read_ca_file(path)? {
            // Not every certificate is a valid anchor (a leaf one may not
            // be); it can still be pinned.
            let _ = roots.add(certificate.clone());
            pinned.push(certificate);
        }
    }
    let provider = provider();
    let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| CaFileError(format!("cannot use the trusted certificates: {e}")))?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CaFileError(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Verifier { inner, pinned }))
        .with_no_client_auth();
    Ok(config)
}

/// WebPKI verification, except that a certificate listed in `ca_file` is
/// trusted when the server presents it as its own.
struct Verifier {
    inner: Arc<WebPkiServerVerifier>,
    pinned: Vec<CertificateDer<'static>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Verifier({} pinned)", self.pinned.len())
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(_) if self.pinned.iter().any(|p| p.as_ref() == end_entity.as_ref()) => {
                Ok(ServerCertVerified::assertion())
            }
            verified => verified,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_a_certificate_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        fs::write(&path, "not a certificate\n").unwrap();
        let e = client_config(Some(&path)).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()) && e.contains("no PEM certificate"), "{e}");
        let e = client_config(Some(&dir.path().join("missing.pem"))).unwrap_err().to_string();
        assert!(e.starts_with("cannot read ca_file"), "{e}");
    }

    #[test]
    fn the_system_store_is_read() {
        assert!(!system_roots().is_empty());
        client_config(None).unwrap();
    }
}
