//! Server side: load certificate files (refusing expired certificates and keys that do not match
//! their certificate, naming the file), choose a certificate by SNI (exact name before wildcard,
//! else the first certificate unless `strict_sni`), and build the rustls server config.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use gatehouse_config::model::{self, ClientAuth, HostPattern};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use x509_parser::prelude::*;

/// One loaded certificate: its key and the names it covers.
#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    names: Arc<Vec<HostPattern>>,
}

/// SNI -> certificate.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    certs: Vec<Loaded>,
    strict: bool,
    /// Open ACME tls-alpn-01 challenges (shared with the ACME task).
    challenges: Arc<crate::acme::Challenges>,
}

/// ALPN of an ACME tls-alpn-01 validation (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

impl SniResolver {
    fn pick(&self, sni: Option<&str>) -> Option<usize> {
        if self.certs.is_empty() {
            return None;
        }
        let Some(name) = sni else {
            return (!self.strict).then_some(0);
        };
        let name = name.to_ascii_lowercase();
        if let Some(i) = self.exact.get(&name) {
            return Some(*i);
        }
        // "*.example.com" covers "a.example.com" (one label), as RFC 6125 §6.4.3 says.
        if let Some((_, parent)) = name.split_once('.')
            && let Some(i) = self.wildcard.get(parent)
        {
            return Some(*i);
        }
        (!self.strict).then_some(0)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protos| protos.any(|p| p == ACME_TLS_ALPN));
        if acme {
            return hello
                .server_name()
                .and_then(|n| self.challenges.alpn_cert(n));
        }
        self.pick(hello.server_name())
            .map(|i| self.certs[i].key.clone())
    }
}

/// An https listener's TLS at run time.
#[derive(Debug)]
pub struct ListenerTls {
    /// The rustls config (resolver, versions, ALPN, client verification).
    pub config: Arc<ServerConfig>,
    resolver: Arc<SniResolver>,
    /// Strict-Transport-Security value.
    pub hsts: Option<http::HeaderValue>,
}

/// What a TLS connection tells its requests.
#[derive(Debug)]
pub struct TlsInfo {
    /// Names the served certificate covers (Host must be one: else 421).
    pub names: Arc<Vec<HostPattern>>,
    /// Verified client certificate: subject.
    pub client_subject: Option<String>,
    /// Verified client certificate: SHA-256 of its DER, hex.
    pub client_sha256: Option<String>,
    /// Strict-Transport-Security value.
    pub hsts: Option<http::HeaderValue>,
    /// SNI the client sent.
    pub sni: Option<String>,
    /// ALPN negotiated.
    pub alpn: Option<Vec<u8>>,
    /// "TLSv1.3" / "TLSv1.2".
    pub version: Option<String>,
}

impl ListenerTls {
    /// Loads every file and builds the config. Errors name the file. Certificates obtained by
    /// ACME are read from its storage when there; a missing one is not an error (it is being
    /// obtained).
    pub fn new(
        t: &model::ListenerTls,
        acme: Option<&model::Acme>,
        challenges: Arc<crate::acme::Challenges>,
    ) -> Result<ListenerTls, Vec<String>> {
        let mut errors = Vec::new();
        let certs = load_certificates(t, acme, &mut errors);
        let client_roots = match &t.client_ca {
            Some(p) if t.client_auth != ClientAuth::None => match roots(p) {
                Ok(r) => Some(r),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            _ => None,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let (exact, wildcard) = names_index(&certs);
        let resolver = Arc::new(SniResolver {
            exact,
            wildcard,
            certs,
            strict: t.strict_sni,
            challenges,
        });
        let config = server_config(t, client_roots, resolver.clone())?;
        Ok(ListenerTls {
            config: Arc::new(config),
            resolver,
            hsts: t
                .hsts
                .as_deref()
                .and_then(|h| http::HeaderValue::from_str(h).ok()),
        })
    }

    /// What the requests of a finished handshake need to know.
    pub fn info(&self, conn: &rustls::ServerConnection) -> TlsInfo {
        let names = self
            .resolver
            .pick(conn.server_name())
            .map(|i| self.resolver.certs[i].names.clone())
            .unwrap_or_default();
        let (client_subject, client_sha256) = match conn.peer_certificates().and_then(|c| c.first())
        {
            Some(der) => {
                let subject = X509Certificate::from_der(der.as_ref())
                    .map(|(_, c)| c.subject().to_string())
                    .ok();
                let digest = ring::digest::digest(&ring::digest::SHA256, der.as_ref());
                let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
                (subject, Some(hex))
            }
            None => (None, None),
        };
        TlsInfo {
            names,
            client_subject,
            client_sha256,
            hsts: self.hsts.clone(),
            sni: conn.server_name().map(str::to_string),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            version: conn.protocol_version().map(|v| match v {
                rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3".to_string(),
                rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2".to_string(),
                other => format!("{other:?}"),
            }),
        }
    }
}

/// The listener's certificates: the configured ones (a file that cannot be used goes to
/// `errors`) and then those ACME has stored (one not usable is only warned about: ACME will
/// obtain it again).
fn load_certificates(
    t: &model::ListenerTls,
    acme: Option<&model::Acme>,
    errors: &mut Vec<String>,
) -> Vec<Loaded> {
    let mut certs = Vec::new();
    for c in &t.certificates {
        match load(&c.cert, &c.key, c.ocsp.as_deref()) {
            Ok(l) => certs.push(l),
            Err(e) => errors.push(e),
        }
    }
    if let Some(acme) = acme {
        for name in &t.acme {
            let (cert, key) = crate::acme::stored_paths(&acme.storage, name);
            if !cert.exists() {
                continue;
            }
            match load(&cert, &key, None) {
                Ok(l) => certs.push(l),
                Err(e) => tracing::warn!("stored ACME certificate for {name} not usable: {e}"),
            }
        }
    }
    certs
}

/// Certificate indexes by exact name and by wildcard parent domain; the first certificate
/// naming a name wins it.
fn names_index(certs: &[Loaded]) -> (HashMap<String, usize>, HashMap<String, usize>) {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    for (i, l) in certs.iter().enumerate() {
        for n in l.names.iter() {
            match n {
                HostPattern::Exact(h) => {
                    exact.entry(h.clone()).or_insert(i);
                }
                HostPattern::Wildcard(suffix) => {
                    wildcard
                        .entry(suffix.trim_start_matches('.').to_string())
                        .or_insert(i);
                }
            }
        }
    }
    (exact, wildcard)
}

/// The rustls server config: protocol versions, client certificate verification, the
/// certificate resolver, ALPN (with ACME's when the listener obtains certificates) and session
/// resumption.
fn server_config(
    t: &model::ListenerTls,
    client_roots: Option<RootCertStore>,
    resolver: Arc<SniResolver>,
) -> Result<ServerConfig, Vec<String>> {
    let versions: &[&rustls::SupportedProtocolVersion] = if t.min_version >= 13 {
        &[&rustls::version::TLS13]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let builder = ServerConfig::builder_with_provider(super::provider())
        .with_protocol_versions(versions)
        .map_err(|e| vec![format!("TLS versions: {e}")])?;
    let builder = match client_roots {
        Some(roots) => {
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), super::provider());
            let v = if t.client_auth == ClientAuth::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| vec![format!("client_ca: {e}")])?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    config.alpn_protocols = t.alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    if !t.acme.is_empty() {
        config.alpn_protocols.push(ACME_TLS_ALPN.to_vec());
    }
    // Resumption both ways: stateless tickets (TLS 1.2 and 1.3) and the session cache.
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Ok(config)
}

fn load(cert: &Path, key: &Path, ocsp: Option<&Path>) -> Result<Loaded, String> {
    let cd = cert.display();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("{cd}: cannot read certificates: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cd}: bad PEM: {e}"))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{cd}: no certificate in the file"));
    };
    let (_, x509) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| format!("{cd}: not an X.509 certificate: {e}"))?;
    let validity = x509.validity();
    if !validity.is_valid() {
        return Err(format!(
            "{cd}: certificate is not valid now (valid from {} to {})",
            validity.not_before, validity.not_after
        ));
    }
    let names = names_of(&x509);
    if names.is_empty() {
        return Err(format!("{cd}: certificate names no DNS name"));
    }
    let key_der = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("{}: cannot read a private key: {e}", key.display()))?;
    let signing = super::provider()
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| format!("{}: unusable private key: {e}", key.display()))?;
    let mut ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        format!(
            "{}: key does not match the certificate in {cd}: {e}",
            key.display()
        )
    })?;
    if let Some(o) = ocsp {
        ck.ocsp = Some(
            std::fs::read(o)
                .map_err(|e| format!("{}: cannot read OCSP response: {e}", o.display()))?,
        );
    }
    Ok(Loaded {
        key: Arc::new(ck),
        names: Arc::new(names),
    })
}

/// DNS names from subjectAltName (else the subject's CN), lowercase, as host patterns.
fn names_of(x509: &X509Certificate<'_>) -> Vec<HostPattern> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = x509.subject_alternative_name() {
        for n in &san.value.general_names {
            if let GeneralName::DNSName(d) = n {
                out.push(pattern(d));
            }
        }
    }
    if out.is_empty() {
        for cn in x509.subject().iter_common_name() {
            if let Ok(s) = cn.as_str() {
                out.push(pattern(s));
            }
        }
    }
    out
}

fn pattern(name: &str) -> HostPattern {
    let n = name.to_ascii_lowercase();
    match n.strip_prefix("*.") {
        Some(rest) => HostPattern::Wildcard(format!(".{rest}")),
        None => HostPattern::Exact(n),
    }
}

/// Whether `host` is covered by the names, with wildcards covering exactly one label.
pub fn covers(names: &[HostPattern], host: &str) -> bool {
    names.iter().any(|n| match n {
        HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
        HostPattern::Wildcard(suffix) => host
            .split_once('.')
            .is_some_and(|(_, parent)| suffix[1..].eq_ignore_ascii_case(parent)),
    })
}

pub(super) fn roots(path: &Path) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: cannot read CA certificates: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{}: bad PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", path.display()));
    }
    for c in certs {
        store
            .add(c)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(store)
}

/// Loads every TLS file a config names; returns every problem (each naming its file).
pub fn check_files(config: &model::Config) -> Vec<String> {
    let mut errors = Vec::new();
    for l in &config.listeners {
        if let Some(t) = &l.tls
            && let Err(e) = ListenerTls::new(t, config.acme.as_ref(), Arc::default())
        {
            errors.extend(
                e.into_iter()
                    .map(|e| format!("listeners.{}.tls: {e}", l.name)),
            );
        }
    }
    for u in &config.upstreams {
        if let Some(t) = &u.tls
            && let Err(e) = super::client_config(t, u.protocol)
        {
            errors.push(format!("upstreams.{}.tls: {e}", u.name));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec![pattern("*.example.com"), pattern("Exact.org")];
        assert!(covers(&names, "a.example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(!covers(&names, "example.com"));
        assert!(covers(&names, "exact.org"));
    }
}
