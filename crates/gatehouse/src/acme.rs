//! ACME (RFC 8555): certificates for the names in `tls.acme`, obtained at start when missing,
//! renewed `renew_before` their expiry, kept in `storage` and reused after a restart. The
//! account is created once and its credentials kept in `storage/account.json`. Challenges:
//! tls-alpn-01 (RFC 8737) is answered by the https listener itself; http-01 under
//! /.well-known/acme-challenge/ on every http listener. A failed order is retried with backoff
//! and never takes a listener down: it serves its other certificates meanwhile.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use gatehouse_config::model::{Acme, AcmeChallenge};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::sign::CertifiedKey;

use crate::runtime::Shared;

/// Challenge answers in flight, shared with the TLS resolver and the HTTP pipeline.
#[derive(Debug, Default)]
pub struct Challenges {
    /// tls-alpn-01: name -> the challenge certificate.
    alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    /// http-01: token -> key authorization.
    http: Mutex<HashMap<String, String>>,
}

impl Challenges {
    /// The tls-alpn-01 certificate for `name`, while its challenge is open.
    pub fn alpn_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.alpn
            .lock()
            .ok()?
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// The http-01 answer for `token`, while its challenge is open.
    pub fn http_answer(&self, token: &str) -> Option<String> {
        self.http.lock().ok()?.get(token).cloned()
    }
}

/// Where the certificate and key for `name` live.
pub fn stored_paths(storage: &Path, name: &str) -> (PathBuf, PathBuf) {
    (
        storage.join(format!("{name}.pem")),
        storage.join(format!("{name}.key")),
    )
}

/// When the stored certificate for `name` expires, if there is one that parses.
fn stored_expiry(storage: &Path, name: &str) -> Option<SystemTime> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let (cert, _) = stored_paths(storage, name);
    let der = CertificateDer::pem_file_iter(&cert).ok()?.next()?.ok()?;
    let (_, x509) = x509_parser::parse_x509_certificate(der.as_ref()).ok()?;
    let secs = x509.validity().not_after.timestamp();
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).ok()?))
}

fn due(acme: &Acme, name: &str) -> bool {
    match stored_expiry(&acme.storage, name) {
        None => true,
        Some(exp) => exp
            .duration_since(SystemTime::now())
            .map(|left| left <= acme.renew_before)
            .unwrap_or(true),
    }
}

/// Starts the task that obtains and renews certificates for as long as the process runs.
pub fn spawn(shared: Weak<Shared>) {
    tokio::spawn(async move {
        let mut backoff: HashMap<String, (Duration, tokio::time::Instant)> = HashMap::new();
        // A renew_before longer than the certificates' life would make every new certificate
        // due at once: order each name at most once an hour while a stored one exists.
        let mut last_ok: HashMap<String, tokio::time::Instant> = HashMap::new();
        loop {
            let Some(s) = shared.upgrade() else { return };
            let snap = s.snapshot();
            if let Some(acme) = snap.config.acme.clone() {
                let names: Vec<String> = snap
                    .config
                    .listeners
                    .iter()
                    .filter_map(|l| l.tls.as_ref())
                    .flat_map(|t| t.acme.iter().cloned())
                    .collect();
                let mut obtained = false;
                for name in names {
                    if !due(&acme, &name) {
                        continue;
                    }
                    let have_one = stored_expiry(&acme.storage, &name).is_some();
                    if have_one
                        && last_ok
                            .get(&name)
                            .is_some_and(|t| t.elapsed() < Duration::from_secs(3600))
                    {
                        continue;
                    }
                    if let Some((_, not_before)) = backoff.get(&name)
                        && tokio::time::Instant::now() < *not_before
                    {
                        continue;
                    }
                    match obtain(&acme, &name, &s.challenges).await {
                        Ok(()) => {
                            tracing::info!(%name, "ACME certificate obtained");
                            backoff.remove(&name);
                            if due(&acme, &name) {
                                tracing::warn!(%name, renew_before = ?acme.renew_before, "the new certificate is already due: renew_before is longer than the certificates' life");
                            }
                            last_ok.insert(name, tokio::time::Instant::now());
                            obtained = true;
                        }
                        Err(e) => {
                            let wait = backoff
                                .get(&name)
                                .map(|(w, _)| (*w * 2).min(Duration::from_secs(3600)))
                                .unwrap_or(Duration::from_secs(5));
                            tracing::warn!(%name, error = %e, retry_in = ?wait, "ACME order failed");
                            backoff.insert(name, (wait, tokio::time::Instant::now() + wait));
                        }
                    }
                }
                if obtained {
                    // Re-assembling reads the new files: new handshakes get the certificate.
                    if let Err(errs) = s.apply(snap.config.clone()).await {
                        for e in errs {
                            tracing::error!("ACME certificate stored but not usable: {e}");
                        }
                    }
                }
            }
            drop(snap);
            drop(s);
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
}

async fn account(acme: &Acme) -> Result<Account, String> {
    let builder = || match &acme.ca {
        Some(ca) => Account::builder_with_root(ca),
        None => Account::builder(),
    };
    let creds_path = acme.storage.join("account.json");
    if let Ok(text) = std::fs::read_to_string(&creds_path) {
        let creds: AccountCredentials =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", creds_path.display()))?;
        return builder()
            .map_err(|e| e.to_string())?
            .from_credentials(creds)
            .await
            .map_err(|e| format!("restoring the account: {e}"));
    }
    let contact: Vec<String> = acme.email.iter().map(|e| format!("mailto:{e}")).collect();
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, creds) = builder()
        .map_err(|e| e.to_string())?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            None,
        )
        .await
        .map_err(|e| format!("creating the account: {e}"))?;
    std::fs::create_dir_all(&acme.storage)
        .map_err(|e| format!("{}: {e}", acme.storage.display()))?;
    let text = serde_json::to_string_pretty(&creds).map_err(|e| e.to_string())?;
    write_private(&creds_path, text.as_bytes())?;
    tracing::info!(directory = %acme.directory, "ACME account created");
    Ok(account)
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    f.write_all(bytes)
        .map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// The RFC 8737 certificate: self-signed for `name`, with the acmeIdentifier extension
/// carrying the SHA-256 of the key authorization.
fn alpn_certificate(name: &str, digest: &[u8]) -> Result<Arc<CertifiedKey>, String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_string()]).map_err(|e| e.to_string())?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
    let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let signing = crate::tls::provider()
        .key_provider
        .load_private_key(der)
        .map_err(|e| e.to_string())?;
    Ok(Arc::new(CertifiedKey::new(
        vec![cert.der().clone()],
        signing,
    )))
}

/// One order for one name: answer its challenge, finalize, store certificate and key.
async fn obtain(acme: &Acme, name: &str, challenges: &Challenges) -> Result<(), String> {
    let account = account(acme).await?;
    let ids = [Identifier::Dns(name.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut tokens = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(a) = authzs.next().await {
            let mut authz = a.map_err(|e| format!("authorization: {e}"))?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let kind = match acme.challenge {
                AcmeChallenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
                AcmeChallenge::Http01 => ChallengeType::Http01,
            };
            let mut ch = authz
                .challenge(kind.clone())
                .ok_or_else(|| format!("the server offers no {kind:?} challenge"))?;
            let ka = ch.key_authorization();
            match acme.challenge {
                AcmeChallenge::TlsAlpn01 => {
                    let cert = alpn_certificate(name, ka.digest().as_ref())?;
                    if let Ok(mut m) = challenges.alpn.lock() {
                        m.insert(name.to_string(), cert);
                    }
                }
                AcmeChallenge::Http01 => {
                    tokens.push(ch.token.clone());
                    if let Ok(mut m) = challenges.http.lock() {
                        m.insert(ch.token.clone(), ka.as_str().to_string());
                    }
                }
            }
            ch.set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
    }
    let policy = RetryPolicy::default().timeout(Duration::from_secs(60));
    let result = async {
        let status = order
            .poll_ready(&policy)
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("order is {status:?}, not ready"));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&policy)
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        Ok((chain_pem, key_pem))
    }
    .await;
    if let Ok(mut m) = challenges.alpn.lock() {
        m.remove(name);
    }
    if let Ok(mut m) = challenges.http.lock() {
        for t in &tokens {
            m.remove(t);
        }
    }
    let (chain_pem, key_pem) = result?;
    std::fs::create_dir_all(&acme.storage)
        .map_err(|e| format!("{}: {e}", acme.storage.display()))?;
    let (cert_path, key_path) = stored_paths(&acme.storage, name);
    write_private(&key_path, key_pem.as_bytes())?;
    write_private(&cert_path, chain_pem.as_bytes())?;
    Ok(())
}
