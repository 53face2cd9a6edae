//! TLS server configurations built from `tls.cert_file` and `tls.key_file`,
//! and their reload on SIGHUP.
//!
//! [`TlsConfigs`] owns the current rustls `ServerConfig`s (one for the
//! WebSocket listener, one for the API: they differ only in ALPN) behind an
//! `ArcSwap`, so readers never lock: the API's acceptor loads the current
//! one per connection ([`TlsConfigs::api`]); shards keep their own copy and
//! only look at the shared one when the generation counter moved
//! ([`ShardTls`]), so an accept costs one relaxed atomic load and a clone of
//! a shard-local `Arc`.
//!
//! A reload re-reads both files and swaps only when everything loads:
//! handshakes that start afterwards use the new certificate, connections
//! already open keep theirs (a rustls connection holds its own `Arc` of the
//! config it started with), and a bad file leaves the old certificate in
//! place.
//!
//! Crypto is rustls' `ring` provider: it builds with a C compiler alone
//! (aws-lc-rs wants cmake, and on some targets nasm), and `ring` is already
//! in the tree for `jsonwebtoken`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

use crate::config::TlsConfig;

/// ALPN protocol offered on both listeners: WebSocket upgrades are HTTP/1.1
/// requests (RFC 6455; RFC 8441's HTTP/2 WebSockets are not served), and
/// the API speaks HTTP/1.1.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why the certificate or key could not be used. Each names the config key
/// and the file, so the operator knows which line and which file to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    #[error("{key} {}: cannot read it: {source}", path.display())]
    Read {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{key} {}: is not valid PEM: {problem}", path.display())]
    NotPem {
        key: &'static str,
        path: PathBuf,
        problem: String,
    },
    #[error(
        "tls.cert_file {}: holds no PEM certificate (a `-----BEGIN CERTIFICATE-----` block)",
        path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error(
        "tls.key_file {}: holds no PEM private key (PKCS#8 `BEGIN PRIVATE KEY`, PKCS#1 \
         `BEGIN RSA PRIVATE KEY` or SEC1 `BEGIN EC PRIVATE KEY`)",
        path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "tls.key_file {} does not match the certificate in tls.cert_file {}: the key's public \
         half differs from the first certificate's; check that both files are from the same \
         issuance",
        key_path.display(),
        cert_path.display()
    )]
    KeyMismatch {
        cert_path: PathBuf,
        key_path: PathBuf,
    },
    #[error(
        "tls.key_file {} with tls.cert_file {}: rustls refused them: {source}",
        key_path.display(),
        cert_path.display()
    )]
    Rejected {
        cert_path: PathBuf,
        key_path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The two files, as configured.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

/// The current TLS configurations and their reload.
pub struct TlsConfigs {
    files: TlsFiles,
    /// Serve `wss://` on the WebSocket listener.
    pub websocket_enabled: bool,
    /// Serve `https://` on the API listener.
    pub api_enabled: bool,
    current: ArcSwap<Loaded>,
    /// Bumped after each successful swap; shards compare it with the one
    /// their copy was made at.
    generation: AtomicU64,
}

/// One successful load of the files.
struct Loaded {
    websocket: Arc<ServerConfig>,
    api: Arc<ServerConfig>,
}

impl TlsConfigs {
    /// Loads the files named by `config`; `Ok(None)` when TLS is off.
    pub fn from_config(config: &TlsConfig) -> Result<Option<TlsConfigs>, TlsError> {
        let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
            return Ok(None);
        };
        let files = TlsFiles {
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        };
        let loaded = load(&files)?;
        Ok(Some(TlsConfigs {
            files,
            websocket_enabled: config.websocket,
            api_enabled: config.api,
            current: ArcSwap::from_pointee(loaded),
            generation: AtomicU64::new(0),
        }))
    }

    /// Re-reads both files; swaps the configurations only if they load.
    /// On error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let loaded = load(&self.files)?;
        self.current.store(Arc::new(loaded));
        self.generation.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// The configuration for the WebSocket listener (ALPN `http/1.1`).
    pub fn websocket(&self) -> Arc<ServerConfig> {
        self.current.load().websocket.clone()
    }

    /// The configuration for the API listener, for a `tokio_rustls`
    /// acceptor: load it per accepted connection so a reload takes effect
    /// at the next handshake (`TlsAcceptor::from(configs.api())`).
    pub fn api(&self) -> Arc<ServerConfig> {
        self.current.load().api.clone()
    }

    /// How many reloads succeeded.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }
}

/// The crypto the engine uses: rustls' `ring` provider with its cipher
/// suites (AES-GCM and ChaCha20-Poly1305 only), and its key exchange groups
/// in browser order, X25519 first. (rustls 0.23.48's ring list puts P-384
/// first, which a client that follows the provider's order, such as a
/// rustls client, would pick: measured at 4–5 times the handshake CPU of
/// X25519 with ring's generic P-384 code.) Public so the tests and benches
/// use the same provider as their clients.
#[expect(
    deprecated,
    reason = "rustls marks ring's provider deprecated because it lacks post-quantum key \
              exchange (X25519MLKEM768); aws-lc-rs has it but needs cmake to build; see \
              docs/dependencies.md"
)]
pub fn crypto_provider() -> rustls::crypto::CryptoProvider {
    use rustls::crypto::ring::{default_provider, kx_group};
    rustls::crypto::CryptoProvider {
        kx_groups: vec![kx_group::X25519, kx_group::SECP256R1, kx_group::SECP384R1],
        ..default_provider()
    }
}

/// A shard's own copy of the WebSocket configuration. The copy is a
/// separate `Arc` (a shallow clone of the `ServerConfig`), so the
/// reference count every new connection increments is the shard's alone,
/// not a cache line all shards fight over.
pub struct ShardTls {
    shared: Arc<TlsConfigs>,
    generation: u64,
    config: Arc<ServerConfig>,
}

impl ShardTls {
    pub fn new(shared: Arc<TlsConfigs>) -> ShardTls {
        let generation = shared.generation();
        let config = Arc::new((*shared.websocket()).clone());
        ShardTls {
            shared,
            generation,
            config,
        }
    }

    /// The configuration a new connection should use: the shard's copy,
    /// refreshed first if a reload happened since it was made.
    pub fn current(&mut self) -> Arc<ServerConfig> {
        let generation = self.shared.generation();
        if generation != self.generation {
            self.generation = generation;
            self.config = Arc::new((*self.shared.websocket()).clone());
        }
        self.config.clone()
    }
}

/// Reads and checks both files and builds the two configurations.
fn load(files: &TlsFiles) -> Result<Loaded, TlsError> {
    let certs = read_certs(&files.cert_file)?;
    let key = read_key(&files.key_file)?;
    let config = ServerConfig::builder_with_provider(Arc::new(crypto_provider()))
        // TLS 1.2 and 1.3: rustls' safe defaults (no 1.0/1.1).
        .with_safe_default_protocol_versions()
        .map_err(|source| rejected(files, source))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|source| match source {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch {
                    cert_path: files.cert_file.clone(),
                    key_path: files.key_file.clone(),
                }
            }
            source => rejected(files, source),
        })?;
    Ok(Loaded {
        websocket: Arc::new(with_alpn(config.clone(), ALPN_HTTP_1_1)),
        api: Arc::new(with_alpn(config, ALPN_HTTP_1_1)),
    })
}

fn with_alpn(mut config: ServerConfig, protocol: &[u8]) -> ServerConfig {
    config.alpn_protocols = vec![protocol.to_vec()];
    config
}

fn rejected(files: &TlsFiles, source: rustls::Error) -> TlsError {
    TlsError::Rejected {
        cert_path: files.cert_file.clone(),
        key_path: files.key_file.clone(),
        source,
    }
}

fn read_file(key: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        path: path.to_path_buf(),
        source,
    })
}

fn not_pem(key: &'static str, path: &Path, error: &pem::Error) -> TlsError {
    TlsError::NotPem {
        key,
        path: path.to_path_buf(),
        problem: error.to_string(),
    }
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    const KEY: &str = "tls.cert_file";
    let bytes = read_file(KEY, path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| match error {
            pem::Error::NoItemsFound => TlsError::NoCertificate {
                path: path.to_path_buf(),
            },
            error => not_pem(KEY, path, &error),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    const KEY: &str = "tls.key_file";
    let bytes = read_file(KEY, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|error| match error {
        pem::Error::NoItemsFound => TlsError::NoKey {
            path: path.to_path_buf(),
        },
        error => not_pem(KEY, path, &error),
    })
}
