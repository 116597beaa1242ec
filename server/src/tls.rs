//! HTTPS: the rustls configuration (ring provider, TLS 1.3 by default) and each connection's
//! verified client identity, which [`crate::conn`]'s accept loop attaches to its requests.
//!
//! Client certificates are asked for but not demanded during the handshake: people use bearer
//! tokens and do not have one, and a client that enrols has no certificate yet. After the
//! handshake the presented chain is verified against the federation CA with webpki
//! ([`PeerIdentity`]); only a verified chain lets a request act as a client, so an expired or
//! foreign certificate gets a 401 problem document instead of a bare TLS alert. The handshake
//! itself still checks the client's signature with the presented key, so holding a certificate
//! without its key proves nothing.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};
use tokio_rustls::TlsAcceptor;

/// Why TLS could not be set up; says which file is at fault.
#[derive(Debug)]
pub struct TlsSetupError(pub String);

impl std::fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

/// What the connection proved about its client certificate; every request carries one as an
/// extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerIdentity {
    /// No certificate was presented (people, enrolling clients, or plain HTTP).
    Anonymous,
    /// A certificate chaining to the federation CA, valid now.
    Verified {
        /// Lowercase hex SHA-256 of the leaf certificate's DER.
        fingerprint: String,
    },
    /// A certificate was presented but did not verify (expired, foreign CA, wrong usage).
    Rejected {
        /// Why, in words safe to return.
        reason: String,
    },
}

/// The remote address of the connection, for rate limits and logs.
#[derive(Debug, Clone, Copy)]
pub struct RemoteAddr(pub SocketAddr);

/// Hex SHA-256 of a certificate: how the server recognises an enrolled client.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts any chain during the handshake (signatures are still checked by the inner webpki
/// verifier); the chain itself is judged after the handshake by [`classify_peer`].
#[derive(Debug)]
struct DeferredClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for DeferredClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }
    fn client_auth_mandatory(&self) -> bool {
        false
    }
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }
    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The server's TLS material, loaded and checked.
#[derive(Clone)]
pub struct TlsServer {
    acceptor: TlsAcceptor,
    client_verifier: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").finish_non_exhaustive()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsServer {
    /// Loads the server certificate chain and key and the CA that client certificates must
    /// chain to. TLS 1.2 is offered only when `allow_tls12`.
    pub fn load(
        cert: &Path,
        key: &Path,
        client_ca: &Path,
        allow_tls12: bool,
    ) -> Result<Self, TlsSetupError> {
        let err = |p: &Path, e: &dyn std::fmt::Display| {
            TlsSetupError(format!(
                "{}: {e} (create it with `cohort pki`)",
                p.display()
            ))
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| err(cert, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| err(cert, &e))?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| err(key, &e))?;
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_file_iter(client_ca).map_err(|e| err(client_ca, &e))? {
            let ca = ca.map_err(|e| err(client_ca, &e))?;
            roots.add(ca).map_err(|e| err(client_ca, &e))?;
        }
        Self::from_parts(chain, key_der, roots, allow_tls12)
    }

    /// Builds from in-memory parts (tests).
    pub fn from_parts(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        client_roots: RootCertStore,
        allow_tls12: bool,
    ) -> Result<Self, TlsSetupError> {
        let provider = provider();
        let client_verifier =
            WebPkiClientVerifier::builder_with_provider(Arc::new(client_roots), provider.clone())
                .build()
                .map_err(|e| TlsSetupError(format!("client CA: {e}")))?;
        let versions: &[&rustls::SupportedProtocolVersion] = if allow_tls12 {
            &[&rustls::version::TLS13, &rustls::version::TLS12]
        } else {
            &[&rustls::version::TLS13]
        };
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .map_err(|e| TlsSetupError(format!("TLS versions: {e}")))?
            .with_client_cert_verifier(Arc::new(DeferredClientVerifier {
                inner: client_verifier.clone(),
            }))
            .with_single_cert(chain, key)
            .map_err(|e| TlsSetupError(format!("server certificate or key: {e}")))?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            client_verifier,
        })
    }

    /// Accepts TLS connections with this configuration.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }

    /// Verifies the chain a connection presented.
    pub fn classify_peer(&self, certs: Option<&[CertificateDer<'static>]>) -> PeerIdentity {
        let Some((leaf, intermediates)) = certs.and_then(<[_]>::split_first) else {
            return PeerIdentity::Anonymous;
        };
        match self
            .client_verifier
            .verify_client_cert(leaf, intermediates, UnixTime::now())
        {
            Ok(_) => PeerIdentity::Verified {
                fingerprint: fingerprint(leaf.as_ref()),
            },
            Err(e) => PeerIdentity::Rejected {
                reason: describe_cert_error(&e),
            },
        }
    }
}

fn describe_cert_error(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            "the client certificate has expired".into()
        }
        rustls::Error::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            "the client certificate is not valid yet".into()
        }
        rustls::Error::InvalidCertificate(C::UnknownIssuer) => {
            "the client certificate was not issued by this federation's CA".into()
        }
        rustls::Error::InvalidCertificate(C::Revoked) => "the client certificate is revoked".into(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the client certificate is invalid: {other:?}")
        }
        other => format!("the client certificate could not be verified: {other}"),
    }
}
