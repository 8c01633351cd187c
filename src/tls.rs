//! TLS for the broker's listeners and for every client (the library, the CLI, the load
//! generator, and the broker's own connections to other brokers), with rustls and its
//! `ring` provider. The handshake and the records are driven over the connection's own
//! async stream (`futures-rustls`), so TLS runs on the shard's executor like everything else:
//! no runtime of its own, no thread.
//!
//! A broker's certificate and key are reread on SIGHUP (`ServerTls::reload`): connections
//! accepted after it use the new ones, open connections keep theirs. A reload that fails
//! (a missing file, a key that does not match) keeps the old configuration and says why.
//!
//! Clients check the broker's certificate against a CA file, for the broker's IP address
//! (the certificate needs it as a subject alternative name) unless a server name is given.
//! With `client_ca`, a broker requires a client certificate issued by that CA (mutual TLS).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// A byte stream a connection runs over: plain TCP, or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Stream for T {}
pub type BoxedStream = Box<dyn Stream>;

/// Why TLS material could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

/// Where a broker's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// The broker's certificate chain (PEM), leaf first.
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate issued by this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: a client may also come without a certificate (it authenticates
    /// otherwise, with SCRAM).
    pub client_certificate_optional: bool,
    /// The CA the broker trusts when it connects to other brokers (replication, the
    /// controller); default: `client_ca`.
    pub ca: Option<PathBuf>,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(error: impl std::fmt::Display) -> TlsError {
    TlsError::Config(error.to_string())
}

fn file_error(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    }
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| file_error(path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// Whether a listener asks for client certificates, and from which CA.
enum ClientCertificates<'a> {
    NotAsked,
    Required(&'a Path),
    Optional(&'a Path),
}

/// A broker's server configuration from its files (the client listeners').
pub fn server_config(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let asked = match (&files.client_ca, files.client_certificate_optional) {
        (None, _) => ClientCertificates::NotAsked,
        (Some(ca), false) => ClientCertificates::Required(ca),
        (Some(ca), true) => ClientCertificates::Optional(ca),
    };
    server_config_asking(files, asked)
}

fn server_config_asking(
    files: &ServerTlsFiles,
    asked: ClientCertificates<'_>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = load_certs(&files.cert)?;
    let key = load_key(&files.key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_error)?;
    let verifier = |ca: &Path| {
        let roots = Arc::new(load_roots(ca)?);
        Ok::<_, TlsError>(rustls::server::WebPkiClientVerifier::builder_with_provider(
            roots,
            provider(),
        ))
    };
    let builder = match asked {
        ClientCertificates::NotAsked => builder.with_no_client_auth(),
        ClientCertificates::Required(ca) => {
            builder.with_client_cert_verifier(verifier(ca)?.build().map_err(config_error)?)
        }
        ClientCertificates::Optional(ca) => builder.with_client_cert_verifier(
            verifier(ca)?
                .allow_unauthenticated()
                .build()
                .map_err(config_error)?,
        ),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        let pair = format!("{} with {}", files.cert.display(), files.key.display());
        file_error(
            Path::new(&pair),
            format!("not a usable certificate and key: {e}"),
        )
    })?;
    Ok(Arc::new(config))
}

/// The internal listener's configuration: it always requires a certificate from the
/// brokers' CA (`ca`, else `client_ca`); `None` without one.
fn internal_config(files: &ServerTlsFiles) -> Result<Option<Arc<ServerConfig>>, TlsError> {
    match files.ca.as_ref().or(files.client_ca.as_ref()) {
        Some(ca) => server_config_asking(files, ClientCertificates::Required(ca)).map(Some),
        None => Ok(None),
    }
}

/// A client's TLS settings.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
    /// The name the broker's certificate must carry; `None`: the broker's IP address.
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Trusts the CA in `ca`; presents `identity` (certificate chain, key) when the broker
    /// asks for one; checks the broker's certificate for `server_name` when given.
    pub fn new(
        ca: &Path,
        identity: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> Result<ClientTls, TlsError> {
        let roots = load_roots(ca)?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(config_error)?
            .with_root_certificates(roots);
        let config = match identity {
            Some((cert, key)) => builder
                .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
                .map_err(|e| {
                    let pair = format!("{} with {}", cert.display(), key.display());
                    file_error(
                        Path::new(&pair),
                        format!("not a usable client identity: {e}"),
                    )
                })?,
            None => builder.with_no_client_auth(),
        };
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_string())
                    .map_err(|e| config_error(format!("server name '{name}': {e}")))
            })
            .transpose()?;
        Ok(ClientTls {
            config: Arc::new(config),
            server_name,
        })
    }

    fn name_for(&self, address: SocketAddr) -> ServerName<'static> {
        self.server_name
            .clone()
            .unwrap_or_else(|| ServerName::IpAddress(address.ip().into()))
    }
}

/// Runs `future` for at most `timeout`.
async fn within<T>(
    timeout: Duration,
    future: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    futures_lite::future::or(future, async {
        glommio::timer::sleep(timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {timeout:?}"),
        ))
    })
    .await
}

/// Connects to `address` (TCP, no Nagle), then performs the TLS handshake when `tls` is
/// given; both within `timeout`.
pub async fn connect(
    address: SocketAddr,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> std::io::Result<BoxedStream> {
    Ok(connect_with_fd(address, timeout, tls).await?.0)
}

/// As `connect`, and also the socket's descriptor when the stream is plain TCP, for writes
/// that go to the socket directly (`crate::net::send_now`). The descriptor lives as long as
/// the stream.
pub async fn connect_with_fd(
    address: SocketAddr,
    timeout: Duration,
    tls: Option<&ClientTls>,
) -> std::io::Result<(BoxedStream, Option<std::os::fd::RawFd>)> {
    within(timeout, async {
        let stream = TcpStream::connect_timeout(address, timeout).await?;
        let _ = stream.set_nodelay(true);
        match tls {
            None => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
                Ok((Box::new(stream) as BoxedStream, Some(fd)))
            }
            Some(tls) => {
                let connector = futures_rustls::TlsConnector::from(tls.config.clone());
                let stream = connector.connect(tls.name_for(address), stream).await?;
                Ok((Box::new(stream) as BoxedStream, None))
            }
        }
    })
    .await
}

/// A broker's TLS: its current server configuration (replaced by `reload`) and the client
/// side it uses to reach other brokers. Shared by every shard.
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The internal (controller) listener's: client certificates from the brokers' CA are
    /// required there, whatever the client listeners ask.
    internal: RwLock<Option<Arc<ServerConfig>>>,
    client: Option<ClientTls>,
}

impl ServerTls {
    pub fn load(files: ServerTlsFiles) -> Result<ServerTls, TlsError> {
        let current = RwLock::new(server_config(&files)?);
        let internal = RwLock::new(internal_config(&files)?);
        let client = match files.ca.as_ref().or(files.client_ca.as_ref()) {
            // A broker always presents its own certificate to other brokers.
            Some(ca) => Some(ClientTls::new(
                ca,
                Some((files.cert.as_path(), files.key.as_path())),
                None,
            )?),
            None => None,
        };
        Ok(ServerTls {
            files,
            current,
            internal,
            client,
        })
    }

    /// Whether the internal listener can take TLS (a CA to check brokers against is known).
    pub fn has_internal(&self) -> bool {
        self.internal.read().expect("tls config lock").is_some()
    }

    /// Rereads the certificate and key (and client CA); on failure the old ones stay. The
    /// certificate this broker presents to other brokers is not reread (a restart is).
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files)?;
        let internal = internal_config(&self.files)?;
        *self.current.write().expect("tls config lock") = config;
        *self.internal.write().expect("tls config lock") = internal;
        Ok(())
    }

    /// How this broker connects to other brokers (`None`: it trusts no CA, so it cannot).
    pub fn client(&self) -> Option<&ClientTls> {
        self.client.as_ref()
    }

    /// The TLS handshake of an accepted connection, within `timeout`; with the common name
    /// of the client's certificate when it presented one (mutual TLS).
    pub async fn accept(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> std::io::Result<(BoxedStream, Option<String>)> {
        let config = self.current.read().expect("tls config lock").clone();
        accept_with(config, stream, timeout).await
    }

    /// `accept` on the internal listener: a certificate from the brokers' CA is required.
    pub async fn accept_internal(
        &self,
        stream: TcpStream,
        timeout: Duration,
    ) -> std::io::Result<(BoxedStream, Option<String>)> {
        let config = self
            .internal
            .read()
            .expect("tls config lock")
            .clone()
            .ok_or_else(|| std::io::Error::other("no CA to check brokers against"))?;
        accept_with(config, stream, timeout).await
    }
}

async fn accept_with(
    config: Arc<ServerConfig>,
    stream: TcpStream,
    timeout: Duration,
) -> std::io::Result<(BoxedStream, Option<String>)> {
    {
        let acceptor = futures_rustls::TlsAcceptor::from(config);
        within(timeout, async {
            let stream = acceptor.accept(stream).await?;
            let name = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(common_name)
                .filter(|name| crate::security::is_usable_principal(name));
            Ok((Box::new(stream) as BoxedStream, name))
        })
        .await
    }
}

/// The subject common name of a certificate (the handshake already checked it).
fn common_name(certificate: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let name = parsed
        .subject()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    Some(name)
}
