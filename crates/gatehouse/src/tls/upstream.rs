//! Client side: the rustls config for an HTTPS upstream. Chain validation against `ca` (or the
//! system roots), or SPKI pins that replace the chain (name and validity still checked), or —
//! only when asked, and logged at start — no verification at all.

use std::sync::Arc;

use base64::Engine as _;
use gatehouse_config::model::{UpstreamProtocol, UpstreamTls};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};
use x509_parser::prelude::*;

/// Builds the client config of an upstream. Errors name the file or the setting.
pub fn client_config(
    t: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<Arc<ClientConfig>, String> {
    let provider = super::provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if t.dangerous_skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CustomVerify {
                trust: Trust::Anything,
                provider: provider.clone(),
            }))
    } else if !t.pin_sha256.is_empty() {
        let mut pins = Vec::new();
        for p in &t.pin_sha256 {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(p)
                .map_err(|e| format!("pin_sha256 `{p}`: {e}"))?;
            let pin: [u8; 32] = raw
                .try_into()
                .map_err(|_| format!("pin_sha256 `{p}` is not 32 bytes"))?;
            pins.push(pin);
        }
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(CustomVerify {
                trust: Trust::Pins(pins),
                provider: provider.clone(),
            }))
    } else {
        let roots = match &t.ca {
            Some(p) => super::certs::roots(p)?,
            None => system_roots(),
        };
        builder.with_root_certificates(roots)
    };
    let mut config = match &t.client_cert {
        Some((cert, key)) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
                .map_err(|e| format!("{}: {e}", cert.display()))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("{}: bad PEM: {e}", cert.display()))?;
            let key =
                PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("client certificate: {e}"))?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = match protocol {
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        // SMTP has no ALPN name of its own (STARTTLS or implicit TLS on 465).
        UpstreamProtocol::Smtp => Vec::new(),
        _ => vec![b"http/1.1".to_vec()],
    };
    Ok(Arc::new(config))
}

fn system_roots() -> RootCertStore {
    let mut store = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for c in found.certs {
        let _ = store.add(c);
    }
    store
}

/// How an upstream's certificate is trusted when not by a CA chain.
#[derive(Debug)]
enum Trust {
    /// SPKI pins: the certificate's key must hash to a pin, and its names and validity period
    /// must still fit.
    Pins(Vec<[u8; 32]>),
    /// `dangerous_skip_verify`: any certificate. Handshake signatures are still checked, so the
    /// peer must hold the key of the certificate it shows — which proves nothing about who it is.
    Anything,
}

#[derive(Debug)]
struct CustomVerify {
    trust: Trust,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CustomVerify {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let Trust::Pins(pins) = &self.trust else {
            return Ok(ServerCertVerified::assertion());
        };
        let (_, x509) = X509Certificate::from_der(end_entity.as_ref())
            .map_err(|_| Error::InvalidCertificate(rustls::CertificateError::BadEncoding))?;
        let spki = ring::digest::digest(&ring::digest::SHA256, x509.public_key().raw);
        if !pins.iter().any(|p| p.as_slice() == spki.as_ref()) {
            return Err(Error::General(
                "certificate's public key matches no pin_sha256".into(),
            ));
        }
        let now = now.as_secs() as i64;
        let v = x509.validity();
        if now < v.not_before.timestamp() {
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::NotValidYet,
            ));
        }
        if now > v.not_after.timestamp() {
            return Err(Error::InvalidCertificate(rustls::CertificateError::Expired));
        }
        if !name_matches(&x509, server_name) {
            return Err(Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn name_matches(x509: &X509Certificate<'_>, server_name: &ServerName<'_>) -> bool {
    let Ok(Some(san)) = x509.subject_alternative_name() else {
        return false;
    };
    match server_name {
        ServerName::DnsName(d) => {
            let want = d.as_ref().to_ascii_lowercase();
            san.value.general_names.iter().any(|n| match n {
                GeneralName::DNSName(have) => {
                    let have = have.to_ascii_lowercase();
                    match have.strip_prefix("*.") {
                        Some(suffix) => want.split_once('.').is_some_and(|(_, p)| p == suffix),
                        None => have == want,
                    }
                }
                _ => false,
            })
        }
        ServerName::IpAddress(ip) => {
            let want: std::net::IpAddr = (*ip).into();
            san.value.general_names.iter().any(|n| match n {
                GeneralName::IPAddress(b) => match b.len() {
                    4 => <[u8; 4]>::try_from(*b).map(std::net::IpAddr::from).ok() == Some(want),
                    16 => <[u8; 16]>::try_from(*b).map(std::net::IpAddr::from).ok() == Some(want),
                    _ => false,
                },
                _ => false,
            })
        }
        _ => false,
    }
}
