//! A small certificate authority so nobody needs openssl: `cohort pki init | issue-server |
//! issue-client | issue-token` and the server's enrolment endpoint all go through here.
//!
//! Layout of a PKI directory (default `.cohort/pki`):
//!
//! ```text
//! ca.pem  ca.key           the federation CA (the key is written 0600)
//! server.pem  server.key   the server's certificate, signed by the CA
//! token.key                32 random bytes (hex) that sign people's bearer tokens
//! clients/<name>.pem/.key  client credentials issued from the command line
//! ```

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use ring::rand::{SecureRandom, SystemRandom};
use time::OffsetDateTime;

/// What went wrong creating or reading credentials; each says which file and how to fix it.
#[derive(Debug)]
#[non_exhaustive]
pub enum PkiError {
    /// A file could not be read or written.
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `init` would overwrite an existing CA.
    AlreadyExists(PathBuf),
    /// A PEM file or a CSR did not parse, or signing failed.
    Certificate(String),
    /// A name is not usable in a certificate.
    InvalidName(String),
}

impl fmt::Display for PkiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, source } => write!(f, "{}: {source}", path.display()),
            Self::AlreadyExists(p) => write!(
                f,
                "{} already exists; refusing to replace a CA (remove the directory to start over)",
                p.display()
            ),
            Self::Certificate(m) => write!(f, "certificate error: {m}"),
            Self::InvalidName(n) => write!(f, "invalid name {n:?}"),
        }
    }
}

impl std::error::Error for PkiError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn cert_err(e: impl fmt::Display) -> PkiError {
    PkiError::Certificate(e.to_string())
}

fn read(path: &Path) -> Result<String, PkiError> {
    fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write_file(path: &Path, contents: &[u8], secret: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).map_err(io)?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if secret {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = secret;
    let mut file = opts.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)
}

/// A validity window for an issued certificate.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// Not valid before.
    pub not_before: SystemTime,
    /// Not valid after.
    pub not_after: SystemTime,
}

impl Validity {
    /// From now (minus a minute of clock skew) for `days`.
    pub fn days(days: u64) -> Self {
        let now = SystemTime::now();
        Self {
            not_before: now - Duration::from_secs(60),
            not_after: now + Duration::from_secs(days * 86_400),
        }
    }
}

fn apply_validity(params: &mut CertificateParams, v: Validity) {
    params.not_before = OffsetDateTime::from(v.not_before);
    params.not_after = OffsetDateTime::from(v.not_after);
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PkiError::Certificate("the system random generator failed".into()))?;
    bytes[0] &= 0x7f; // keep it a positive INTEGER
    Ok(SerialNumber::from_slice(&bytes))
}

/// A loaded CA: its certificate and the key that signs client and server certificates.
pub struct CertificateAuthority {
    cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .finish_non_exhaustive()
    }
}

/// A certificate with its freshly generated private key, both PEM.
#[derive(Debug)]
pub struct IssuedCredentials {
    /// The certificate.
    pub cert_pem: String,
    /// The private key (PKCS#8).
    pub key_pem: String,
}

impl CertificateAuthority {
    /// Creates a new CA named `common_name`, valid for ten years.
    pub fn generate(common_name: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial()?);
        apply_validity(&mut params, Validity::days(3650));
        let cert = params.self_signed(&key).map_err(cert_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Loads `ca.pem` and `ca.key` from a PKI directory.
    pub fn load(dir: &Path) -> Result<Self, PkiError> {
        let cert_pem = read(&dir.join("ca.pem"))?;
        let key_pem = read(&dir.join("ca.key"))?;
        let key = KeyPair::from_pem(&key_pem).map_err(cert_err)?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(cert_err)?;
        Ok(Self { cert_pem, issuer })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// Writes `ca.pem` and `ca.key` into `dir`.
    fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write_file(&dir.join("ca.pem"), self.cert_pem.as_bytes(), false)?;
        let key_pem = self.issuer.key().serialize_pem();
        write_file(&dir.join("ca.key"), key_pem.as_bytes(), true)
    }

    /// Issues a server certificate for `hosts` (DNS names or IP addresses).
    pub fn issue_server(
        &self,
        hosts: &[String],
        validity: Validity,
    ) -> Result<IssuedCredentials, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        for h in hosts {
            let san = match h.parse::<std::net::IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(
                    h.clone()
                        .try_into()
                        .map_err(|_| PkiError::InvalidName(h.clone()))?,
                ),
            };
            params.subject_alt_names.push(san);
        }
        let cn = hosts.first().map_or("cohort-server", String::as_str);
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial()?);
        apply_validity(&mut params, validity);
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(IssuedCredentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    fn client_params(name: &str, validity: Validity) -> Result<CertificateParams, PkiError> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial()?);
        apply_validity(&mut params, validity);
        Ok(params)
    }

    /// Issues a client certificate and key pair (for `cohort pki issue-client` and tests).
    pub fn issue_client(
        &self,
        name: &str,
        validity: Validity,
    ) -> Result<IssuedCredentials, PkiError> {
        let key = KeyPair::generate().map_err(cert_err)?;
        let params = Self::client_params(name, validity)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_err)?;
        Ok(IssuedCredentials {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a client's CSR. Only the CSR's public key is used: the subject, usages and
    /// validity come from the server, so a client cannot ask to become a CA or another client.
    pub fn sign_client_csr(
        &self,
        csr_pem: &str,
        name: &str,
        validity: Validity,
    ) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Certificate(format!("the CSR is not valid: {e}")))?;
        csr.params = Self::client_params(name, validity)?;
        let cert = csr.signed_by(&self.issuer).map_err(cert_err)?;
        Ok(cert.pem())
    }
}

/// Generates a key pair and a PEM CSR for `name` (what a client does before enrolling).
pub fn generate_csr(name: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate().map_err(cert_err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(cert_err)?;
    params.distinguished_name.push(DnType::CommonName, name);
    let csr = params.serialize_request(&key).map_err(cert_err)?;
    Ok((csr.pem().map_err(cert_err)?, key.serialize_pem()))
}

/// The files of a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    root: PathBuf,
}

impl PkiDir {
    /// The default location, relative to the working directory.
    pub const DEFAULT: &'static str = ".cohort/pki";

    /// A PKI directory at `root` (not created until written).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `ca.pem`.
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    /// `server.pem`.
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    /// `server.key`.
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    /// `token.key`.
    pub fn token_key(&self) -> PathBuf {
        self.root.join("token.key")
    }
    /// `clients/<name>.pem` and `.key`.
    pub fn client_files(&self, name: &str) -> (PathBuf, PathBuf) {
        let dir = self.root.join("clients");
        (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        )
    }

    /// Creates a CA and a token-signing key; refuses to overwrite an existing CA.
    pub fn init(&self, common_name: &str) -> Result<CertificateAuthority, PkiError> {
        if self.ca_cert().exists() {
            return Err(PkiError::AlreadyExists(self.ca_cert()));
        }
        let ca = CertificateAuthority::generate(common_name)?;
        ca.save(&self.root)?;
        let mut secret = [0u8; 32];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| PkiError::Certificate("the system random generator failed".into()))?;
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        secret.fill(0);
        write_file(&self.token_key(), hex.as_bytes(), true)?;
        Ok(ca)
    }

    /// Loads the CA.
    pub fn ca(&self) -> Result<CertificateAuthority, PkiError> {
        CertificateAuthority::load(&self.root)
    }

    /// Issues `server.pem`/`server.key` for `hosts`.
    pub fn issue_server(&self, hosts: &[String], days: u64) -> Result<(), PkiError> {
        let creds = self.ca()?.issue_server(hosts, Validity::days(days))?;
        write_file(&self.server_cert(), creds.cert_pem.as_bytes(), false)?;
        write_file(&self.server_key(), creds.key_pem.as_bytes(), true)
    }

    /// Issues `clients/<name>.pem`/`.key`.
    pub fn issue_client(&self, name: &str, days: u64) -> Result<(PathBuf, PathBuf), PkiError> {
        if cohort_protocol::ClientId::parse(name).is_err() {
            return Err(PkiError::InvalidName(name.to_owned()));
        }
        let creds = self.ca()?.issue_client(name, Validity::days(days))?;
        let (cert, key) = self.client_files(name);
        write_file(&cert, creds.cert_pem.as_bytes(), false)?;
        write_file(&key, creds.key_pem.as_bytes(), true)?;
        Ok((cert, key))
    }

    /// Loads the token-signing key.
    pub fn token_signer(&self) -> Result<crate::auth::TokenSigner, PkiError> {
        let path = self.token_key();
        let hex = read(&path)?;
        crate::auth::TokenSigner::from_hex(hex.trim())
            .map_err(|e| PkiError::Certificate(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_reload() {
        let dir = std::env::temp_dir().join(format!("cohort-pki-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let pki = PkiDir::new(&dir);
        pki.init("Test CA").unwrap();
        assert!(matches!(pki.init("again"), Err(PkiError::AlreadyExists(_))));
        pki.issue_server(&["localhost".into(), "127.0.0.1".into()], 30)
            .unwrap();
        pki.issue_client("hospital-a", 30).unwrap();
        assert!(pki.issue_client("../evil", 30).is_err());
        let ca = pki.ca().unwrap();
        let (csr, _key) = generate_csr("ignored-name").unwrap();
        let pem = ca
            .sign_client_csr(&csr, "hospital-b", Validity::days(1))
            .unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(
            ca.sign_client_csr("not a csr", "x", Validity::days(1))
                .is_err()
        );
        pki.token_signer().unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join("ca.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0);
        }
        fs::remove_dir_all(&dir).unwrap();
    }
}
