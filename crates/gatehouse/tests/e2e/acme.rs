//! ACME against Pebble (Debian's `pebble` with `pebble-challtestsrv` answering DNS with
//! 127.0.0.1): obtain with tls-alpn-01 and with http-01, serve it, and reuse it after a restart
//! without a new order.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::common::*;
use crate::peer::{Peer, require};

/// Starts challtestsrv and Pebble validating on `http_port` / `tls_port`; returns the
/// directory URL, the CA file that signs Pebble's own HTTPS, and the processes, whose directory
/// is the test's.
async fn pebble(http_port: u16, tls_port: u16) -> (String, PathBuf, Peer) {
    let mut peer = Peer::new("acme");
    let dir = peer.dir().to_path_buf();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pebble API test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("api-ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("api.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("api.key"), key.serialize_pem()).unwrap();
    let (api, mgmt, dns, dns_mgmt) = (free_port(), free_port(), free_port(), free_port());
    let cfg = serde_json::json!({"pebble": {
        "listenAddress": format!("127.0.0.1:{api}"),
        "managementListenAddress": format!("127.0.0.1:{mgmt}"),
        "certificate": dir.join("api.pem"),
        "privateKey": dir.join("api.key"),
        "httpPort": http_port,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false
    }});
    std::fs::write(dir.join("pebble.json"), cfg.to_string()).unwrap();
    let mut chall = Command::new("pebble-challtestsrv");
    chall
        .args([
            "-dns01",
            &format!("127.0.0.1:{dns}"),
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
        ])
        .args([
            "-management",
            &format!("127.0.0.1:{dns_mgmt}"),
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
        ]);
    let mut peb = Command::new("pebble");
    peb.args(["-config"])
        .arg(dir.join("pebble.json"))
        .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .env("PEBBLE_AUTHZREUSE", "0");
    peer.spawn(&mut chall).spawn(&mut peb);
    peer.wait_tcp(api, Duration::from_secs(10)).await;
    (
        format!("https://127.0.0.1:{api}/dir"),
        dir.join("api-ca.pem"),
        peer,
    )
}

/// The certificate served for `name` (any certificate accepted: we compare bytes).
async fn served(addr: std::net::SocketAddr, name: &str) -> Option<Vec<u8>> {
    let mut c = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    c.dangerous()
        .set_certificate_verifier(Arc::new(crate::tls::AcceptAny::default()));
    let tcp = TcpStream::connect(addr).await.ok()?;
    let s = tokio_rustls::TlsConnector::from(Arc::new(c))
        .connect(ServerName::try_from(name.to_string()).unwrap(), tcp)
        .await
        .ok()?;
    Some(s.get_ref().1.peer_certificates()?[0].as_ref().to_vec())
}

fn stored_der(path: &Path) -> Option<Vec<u8>> {
    let c = CertificateDer::pem_file_iter(path).ok()?.next()?.ok()?;
    Some(c.as_ref().to_vec())
}

async fn obtain_with(challenge: &str) {
    if !require("pebble") || !require("pebble-challtestsrv") {
        return;
    }
    let (http_port, tls_port) = (free_port(), free_port());
    let (directory, api_ca, peers) = pebble(http_port, tls_port).await;
    let storage = peers.path("storage");
    let name = "acme-test.example";
    let cfg = format!(
        r#"
[global]
access_log = "off"
[listeners.web]
bind = "127.0.0.1:{http_port}"
[listeners.websecure]
bind = "127.0.0.1:{tls_port}"
protocol = "https"
tls.acme = ["{name}"]
[acme]
directory = "{directory}"
email = "ops@example.org"
storage = "{}"
ca = "{}"
challenge = "{challenge}"
[[routes]]
respond = {{ status = 200, body = "acme site" }}
"#,
        storage.display(),
        api_ca.display()
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{tls_port}").parse().unwrap();
    let cert_path = storage.join(format!("{name}.pem"));
    let first;
    {
        let gh = proxy(&cfg).await;
        let got = eventually(Duration::from_secs(40), async || cert_path.exists()).await;
        assert!(got, "no certificate obtained with {challenge}");
        first = stored_der(&cert_path).unwrap();
        let ok = eventually(Duration::from_secs(10), async || {
            served(addr, name).await.as_deref() == Some(&first[..])
        })
        .await;
        assert!(ok, "the obtained certificate is not served");
        assert!(storage.join("account.json").exists());
        gh.shutdown(Duration::from_secs(1)).await;
    }
    // Restart on the same storage: served at once, and no new order replaces it.
    let account = std::fs::read_to_string(storage.join("account.json")).unwrap();
    let gh = proxy(&cfg).await;
    let ok = eventually(Duration::from_secs(5), async || {
        served(addr, name).await.as_deref() == Some(&first[..])
    })
    .await;
    assert!(ok, "stored certificate not reused after restart");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        stored_der(&cert_path).unwrap(),
        first,
        "a new order replaced a valid certificate"
    );
    assert_eq!(
        std::fs::read_to_string(storage.join("account.json")).unwrap(),
        account
    );
    gh.shutdown(Duration::from_secs(1)).await;

    // Forced renewal: a renew_before longer than the certificate's life makes it due now.
    let gh = proxy(&cfg.replace("[acme]\n", "[acme]\nrenew_before = \"36500d\"\n")).await;
    let renewed = eventually(Duration::from_secs(40), async || {
        stored_der(&cert_path).is_some_and(|d| d != first)
    })
    .await;
    assert!(renewed, "a due certificate was not renewed");
    let ok = eventually(Duration::from_secs(10), async || {
        served(addr, name).await.is_some_and(|d| d != first)
    })
    .await;
    assert!(ok, "the renewed certificate is not served");
    drop(gh);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_tls_alpn_01_obtains_serves_and_reuses() {
    obtain_with("tls-alpn-01").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_http_01_obtains_serves_and_reuses() {
    obtain_with("http-01").await;
}
