//! TLS: SNI certificate choice, strict SNI, 421, ALPN, HSTS, client mTLS, HTTPS upstreams with an
//! internal CA, a pin, or no verification, and certificate files checked with their names.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, PublicKeyData};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::common::*;
use crate::config::{Config, Listener, Route, Upstream, quoted};
use crate::peer::{gatehouse_command, require};

/// A test PKI: one CA and leaf certificates it signs, written to a temp directory.
pub(crate) struct Pki {
    dir: PathBuf,
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

pub(crate) struct Leaf {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) der: Vec<u8>,
    spki_sha256_b64: String,
}

impl Pki {
    pub(crate) fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "gatehouse-pki-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "gatehouse test CA");
        let ca = params.self_signed(&key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki {
            dir,
            ca_pem: ca.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    pub(crate) fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub(crate) fn leaf(
        &self,
        file: &str,
        names: &[&str],
        cn: &str,
        self_signed: bool,
        expired: bool,
    ) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        let cert = if self_signed {
            params.self_signed(&key).unwrap()
        } else {
            params.signed_by(&key, &self.issuer).unwrap()
        };
        let (cp, kp) = (
            self.dir.join(format!("{file}.pem")),
            self.dir.join(format!("{file}.key")),
        );
        std::fs::write(&cp, cert.pem()).unwrap();
        std::fs::write(&kp, key.serialize_pem()).unwrap();
        let spki = ring::digest::digest(&ring::digest::SHA256, &key.subject_public_key_info());
        use base64::Engine as _;
        Leaf {
            cert: cp,
            key: kp,
            der: cert.der().to_vec(),
            spki_sha256_b64: base64::engine::general_purpose::STANDARD.encode(spki.as_ref()),
        }
    }
}

pub(crate) fn client_config(
    pki: &Pki,
    alpn: &[&str],
    client: Option<&Leaf>,
) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut c = match client {
        Some(l) => {
            let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&l.cert)
                .unwrap()
                .map(|c| c.unwrap())
                .collect();
            b.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(&l.key).unwrap())
                .unwrap()
        }
        None => b.with_no_client_auth(),
    };
    c.alpn_protocols = alpn.iter().map(|a| a.as_bytes().to_vec()).collect();
    Arc::new(c)
}

/// Handshakes with `sni`; returns the stream or the handshake error.
async fn handshake(
    addr: std::net::SocketAddr,
    config: Arc<rustls::ClientConfig>,
    sni: &str,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
}

fn peer_der(s: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .as_ref()
        .to_vec()
}

/// One HTTP/1.1 request over an established TLS stream.
async fn get_over(
    s: tokio_rustls::client::TlsStream<TcpStream>,
    host: &str,
    path: &str,
    extra: &[(&str, &str)],
) -> Got {
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut b = http::Request::get(path).header("host", host);
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let resp = tx.send_request(b.body(empty()).unwrap()).await.unwrap();
    let (parts, body) = resp.into_parts();
    Got {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A `certificates` entry for `l`.
pub(crate) fn certificate(l: &Leaf) -> String {
    format!(
        "{{ cert = {}, key = {} }}",
        quoted(l.cert.display()),
        quoted(l.key.display())
    )
}

fn https_cfg(pki: &Pki, certs: &[&Leaf], origin: std::net::SocketAddr, tls_extra: &str) -> String {
    let list: Vec<String> = certs.iter().map(|l| certificate(l)).collect();
    let _ = pki;
    let tls = format!(
        r#"tls = {{ certificates = [{}], hsts = "max-age=63072000; includeSubDomains"{tls_extra} }}"#,
        list.join(", ")
    );
    Config::new()
        .listener("websecure", Listener::https().raw(tls))
        .route(Route::to("app"))
        .upstream("app", Upstream::servers([origin]))
        .toml()
}

async fn echo_origin() -> Origin {
    origin(|req| async move {
        let h = req.headers();
        let get = |n: &str| {
            h.get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        text(
            200,
            format!(
                "proto={} subject={} sha={}",
                get("x-forwarded-proto"),
                get("x-client-cert-subject"),
                get("x-client-cert-sha256")
            ),
        )
    })
    .await
}

#[tokio::test]
async fn sni_chooses_the_certificate_and_host_must_match_it() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let b = pki.leaf("b", &["b.example"], "b", false, false);
    let w = pki.leaf("w", &["*.wild.example"], "w", false, false);
    let o = echo_origin().await;
    let gh = proxy(&https_cfg(&pki, &[&a, &b, &w], o.addr, "")).await;
    let addr = gh.listener_addrs("websecure")[0];
    let cc = client_config(&pki, &["http/1.1"], None);
    for (sni, want) in [("a.example", &a), ("b.example", &b), ("x.wild.example", &w)] {
        let s = handshake(addr, cc.clone(), sni).await.unwrap();
        assert_eq!(peer_der(&s), want.der, "certificate for {sni}");
    }
    // Unknown name: the first certificate (not strict); the client then rejects the name itself.
    let lax = {
        let mut c = (*client_config(&pki, &["http/1.1"], None)).clone();
        c.dangerous()
            .set_certificate_verifier(Arc::new(AcceptAny::default()));
        Arc::new(c)
    };
    let s = handshake(addr, lax.clone(), "unknown.example")
        .await
        .unwrap();
    assert_eq!(peer_der(&s), a.der);

    let s = handshake(addr, cc.clone(), "a.example").await.unwrap();
    let r = get_over(
        s,
        "a.example",
        "/",
        &[("x-client-cert-subject", "CN=forged")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.text(),
        "proto=https subject= sha=",
        "forwarded as https; forged client-cert headers dropped"
    );
    assert_eq!(
        r.header("strict-transport-security"),
        Some("max-age=63072000; includeSubDomains")
    );
    // Domain fronting: SNI a.example, Host b.example -> 421.
    let s = handshake(addr, cc.clone(), "a.example").await.unwrap();
    let r = get_over(s, "b.example", "/", &[]).await;
    assert_eq!(r.status, 421);
    assert!(r.header("strict-transport-security").is_some());
    let s = handshake(addr, cc, "x.wild.example").await.unwrap();
    assert_eq!(
        get_over(s, "y.wild.example", "/", &[]).await.status,
        200,
        "same wildcard certificate"
    );
}

#[tokio::test]
async fn strict_sni_refuses_unknown_names_and_alpn_picks_h2() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let o = named("h2-ok").await;
    let gh = proxy(&https_cfg(&pki, &[&a], o.addr, ", strict_sni = true")).await;
    let addr = gh.listener_addrs("websecure")[0];
    let mut lax = (*client_config(&pki, &["http/1.1"], None)).clone();
    lax.dangerous()
        .set_certificate_verifier(Arc::new(AcceptAny::default()));
    assert!(
        handshake(addr, Arc::new(lax), "other.example")
            .await
            .is_err(),
        "strict SNI must refuse"
    );

    let s = handshake(
        addr,
        client_config(&pki, &["h2", "http/1.1"], None),
        "a.example",
    )
    .await
    .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut tx, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let resp = tx
        .send_request(
            http::Request::get("https://a.example/")
                .body(empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(
        resp.into_body().collect().await.unwrap().to_bytes(),
        "h2-ok"
    );
    let s = handshake(addr, client_config(&pki, &["http/1.1"], None), "a.example")
        .await
        .unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn client_certificates_required_and_passed_upstream() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let client = pki.leaf("client", &["client.example"], "alice", false, false);
    let o = echo_origin().await;
    let extra = format!(
        ", client_ca = \"{}\", client_auth = \"required\"",
        pki.ca_path().display()
    );
    let gh = proxy(&https_cfg(&pki, &[&a], o.addr, &extra)).await;
    let addr = gh.listener_addrs("websecure")[0];
    // Without a certificate: refused (in TLS 1.3 the refusal may arrive with the first read).
    let refused = match handshake(addr, client_config(&pki, &["http/1.1"], None), "a.example").await
    {
        Err(_) => true,
        Ok(s) => {
            let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            tx.send_request(
                http::Request::get("/")
                    .header("host", "a.example")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .is_err()
        }
    };
    assert!(refused, "no client certificate must be refused");
    let s = handshake(
        addr,
        client_config(&pki, &["http/1.1"], Some(&client)),
        "a.example",
    )
    .await
    .unwrap();
    let r = get_over(s, "a.example", "/", &[]).await;
    let sha: String = ring::digest::digest(&ring::digest::SHA256, &client.der)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(r.text(), format!("proto=https subject=CN=alice sha={sha}"));
}

/// A TLS origin with `leaf`, answering "tls-origin".
async fn tls_origin(leaf: &Leaf) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    tls_origin_with(leaf, None).await
}

/// A TLS origin; with `client_ca`, it requires client certificates that CA signed and says how
/// many it got.
async fn tls_origin_with(
    leaf: &Leaf,
    client_ca: Option<&Pki>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&leaf.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(&leaf.key).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(c.unwrap()).unwrap();
            }
            let v = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(v)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(chain, key).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(s) = acceptor.accept(s).await else {
                    return;
                };
                let who = match s.get_ref().1.peer_certificates() {
                    Some(c) => format!("tls-origin client={}", c.len()),
                    None => "tls-origin".to_string(),
                };
                let svc = hyper::service::service_fn(move |_req| {
                    let who = who.clone();
                    async move { Ok::<_, std::convert::Infallible>(text(200, who)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, t)
}

fn upstream_cfg(origin: std::net::SocketAddr, tls: &str) -> String {
    Config::web()
        .route(Route::to("secure"))
        .upstream(
            "secure",
            Upstream::servers([origin])
                .raw("retries = 0")
                .raw(format!("tls = {{ {tls} }}")),
        )
        .toml()
}

#[tokio::test]
async fn https_upstreams_with_internal_ca_pin_or_no_verification() {
    let pki = Pki::new();
    let leaf = pki.leaf("origin", &["origin.internal"], "origin", false, false);
    let (addr, _t) = tls_origin(&leaf).await;
    let ca = pki.ca_path().display().to_string();
    let cases = [
        (
            format!("ca = \"{ca}\", server_name = \"origin.internal\""),
            200,
        ),
        (
            format!("ca = \"{ca}\", server_name = \"wrong.internal\""),
            502,
        ),
        (format!("ca = \"{ca}\""), 502), // the name checked is then 127.0.0.1
        ("server_name = \"origin.internal\"".to_string(), 502), // system roots do not know the test CA
        (
            format!(
                "pin_sha256 = [\"{}\"], server_name = \"origin.internal\"",
                leaf.spki_sha256_b64
            ),
            200,
        ),
        (
            format!(
                "pin_sha256 = [\"{}\"], server_name = \"origin.internal\"",
                "A".repeat(43) + "="
            ),
            502,
        ),
        ("dangerous_skip_verify = true".to_string(), 200),
    ];
    for (tls, want) in cases {
        let gh = proxy(&upstream_cfg(addr, &tls)).await;
        let r = get(web(&gh), "x", "/").await;
        assert_eq!(r.status, want, "tls = {{ {tls} }}: {}", r.text());
        if want == 200 {
            assert_eq!(r.text(), "tls-origin");
        }
    }
    // A pinned self-signed origin: no CA at all, name still checked.
    let own = pki.leaf("self", &["self.internal"], "self", true, false);
    let (addr, _t2) = tls_origin(&own).await;
    for (name, want) in [("self.internal", 200), ("other.internal", 502)] {
        let gh = proxy(&upstream_cfg(
            addr,
            &format!(
                "pin_sha256 = [\"{}\"], server_name = \"{name}\"",
                own.spki_sha256_b64
            ),
        ))
        .await;
        assert_eq!(
            get(web(&gh), "x", "/").await.status,
            want,
            "pinned self-signed origin as {name}"
        );
    }
}

#[test]
fn check_names_bad_certificate_files() {
    let pki = Pki::new();
    let good = pki.leaf("good", &["good.example"], "good", false, false);
    let other = pki.leaf("other", &["other.example"], "other", false, false);
    let expired = pki.leaf("expired", &["old.example"], "old", false, true);
    let cfg = format!(
        r#"
[listeners.websecure]
bind = "127.0.0.1:8443"
protocol = "https"
tls = {{ certificates = [{{ cert = "{}", key = "{}" }}, {{ cert = "{}", key = "{}" }}, {{ cert = "/nonexistent.pem", key = "/nonexistent.key" }}] }}
[[routes]]
respond = {{ status = 200 }}
"#,
        good.cert.display(),
        other.key.display(),
        expired.cert.display(),
        expired.key.display()
    );
    let path = pki.dir.join("bad.toml");
    std::fs::write(&path, cfg).unwrap();
    let out = gatehouse_command()
        .args(["check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}: key does not match", other.key.display())),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{}: certificate is not valid now",
            expired.cert.display()
        )),
        "{err}"
    );
    assert!(err.contains("/nonexistent.pem: cannot read"), "{err}");
    let _ = Path::new(&good.cert);
}

/// Accepts any server certificate (to see which one a server sends for an unknown name), and
/// keeps the OCSP response the server stapled.
#[derive(Debug, Default)]
pub struct AcceptAny {
    pub ocsp: std::sync::Mutex<Vec<u8>>,
}

impl rustls::client::danger::ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        ocsp: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        *self.ocsp.lock().unwrap() = ocsp.to_vec();
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[tokio::test]
async fn a_certificate_swapped_on_disk_serves_new_handshakes_without_cutting_open_ones() {
    let pki = Pki::new();
    let first = pki.leaf("site", &["a.example"], "first", false, false);
    let o = named("o").await;
    let gh = proxy(&https_cfg(&pki, &[&first], o.addr, "")).await;
    let addr = gh.listener_addrs("websecure")[0];
    let cc = client_config(&pki, &["http/1.1"], None);
    let open = handshake(addr, cc.clone(), "a.example").await.unwrap();
    assert_eq!(peer_der(&open), first.der);
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(open))
        .await
        .unwrap();
    tokio::spawn(conn);

    // Same file names, new pair (written key first, then certificate, as an operator would).
    let second = pki.leaf("site", &["a.example"], "second", false, false);
    assert_ne!(first.der, second.der);
    let swapped = eventually(std::time::Duration::from_secs(6), async || {
        let s = handshake(addr, cc.clone(), "a.example").await.unwrap();
        peer_der(&s) == second.der
    })
    .await;
    assert!(swapped, "new handshakes never got the new certificate");
    let resp = tx
        .send_request(
            http::Request::get("/")
                .header("host", "a.example")
                .body(empty())
                .unwrap(),
        )
        .await
        .expect("the connection opened before the swap still serves");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn mtls_to_an_origin_that_requires_a_client_certificate() {
    let pki = Pki::new();
    let leaf = pki.leaf("origin", &["origin.internal"], "origin", false, false);
    let client = pki.leaf(
        "gatehouse-client",
        &["gatehouse.internal"],
        "gatehouse",
        false,
        false,
    );
    let (addr, _t) = tls_origin_with(&leaf, Some(&pki)).await;
    let ca = pki.ca_path().display().to_string();
    let with = format!(
        "ca = \"{ca}\", server_name = \"origin.internal\", client_cert = \"{}\", client_key = \"{}\"",
        client.cert.display(),
        client.key.display()
    );
    let gh = proxy(&upstream_cfg(addr, &with)).await;
    let r = get(web(&gh), "x", "/").await;
    assert_eq!((r.status, r.text().as_str()), (200, "tls-origin client=1"));
    let without = format!("ca = \"{ca}\", server_name = \"origin.internal\"");
    let gh = proxy(&upstream_cfg(addr, &without)).await;
    assert_eq!(
        get(web(&gh), "x", "/").await.status,
        502,
        "no client certificate: the origin refuses"
    );
}

#[tokio::test]
async fn optional_client_certificates_are_verified_when_given() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let client = pki.leaf("client", &["client.example"], "bob", false, false);
    let o = echo_origin().await;
    let extra = format!(
        ", client_ca = \"{}\", client_auth = \"optional\"",
        pki.ca_path().display()
    );
    let gh = proxy(&https_cfg(&pki, &[&a], o.addr, &extra)).await;
    let addr = gh.listener_addrs("websecure")[0];
    let s = handshake(addr, client_config(&pki, &["http/1.1"], None), "a.example")
        .await
        .unwrap();
    assert_eq!(
        get_over(s, "a.example", "/", &[]).await.text(),
        "proto=https subject= sha="
    );
    let s = handshake(
        addr,
        client_config(&pki, &["http/1.1"], Some(&client)),
        "a.example",
    )
    .await
    .unwrap();
    assert!(
        get_over(s, "a.example", "/", &[])
            .await
            .text()
            .starts_with("proto=https subject=CN=bob sha=")
    );
    // A certificate from another CA is refused even though certificates are optional.
    let other = Pki::new();
    let stranger = other.leaf("stranger", &["s.example"], "mallory", false, false);
    let refused = match handshake(
        addr,
        client_config(&pki, &["http/1.1"], Some(&stranger)),
        "a.example",
    )
    .await
    {
        Err(_) => true,
        Ok(s) => {
            let (mut tx, conn) = hyper::client::conn::http1::handshake::<_, Body>(TokioIo::new(s))
                .await
                .unwrap();
            tokio::spawn(conn);
            tx.send_request(
                http::Request::get("/")
                    .header("host", "a.example")
                    .body(empty())
                    .unwrap(),
            )
            .await
            .is_err()
        }
    };
    assert!(
        refused,
        "an unverifiable client certificate must be refused"
    );
}

#[tokio::test]
async fn curl_negotiates_h2_and_http11_by_alpn() {
    if !require("curl") {
        return;
    }
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let o = named("curl-ok").await;
    let gh = proxy(&https_cfg(&pki, &[&a], o.addr, "")).await;
    let port = gh.listener_addrs("websecure")[0].port();
    for (flag, want) in [("--http2", "2"), ("--http1.1", "1.1")] {
        let out = tokio::process::Command::new("curl")
            .args(["-s", flag, "--cacert"])
            .arg(pki.ca_path())
            .args(["--resolve", &format!("a.example:{port}:127.0.0.1")])
            .args([
                "-w",
                "\n%{http_version} %{http_code}",
                &format!("https://a.example:{port}/"),
            ])
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text, format!("curl-ok\n{want} 200"), "curl {flag}");
    }
}

#[tokio::test]
async fn the_ocsp_file_is_stapled() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example"], "a", false, false);
    let ocsp = pki.dir.join("a.ocsp.der");
    std::fs::write(&ocsp, b"stapled-ocsp-response-bytes").unwrap();
    let o = named("o").await;
    let tls = format!(
        "tls = {{ certificates = [{{ cert = {}, key = {}, ocsp = {} }}] }}",
        quoted(a.cert.display()),
        quoted(a.key.display()),
        quoted(ocsp.display())
    );
    let cfg = Config::new()
        .listener("websecure", Listener::https().raw(tls))
        .route(Route::to("app"))
        .upstream("app", Upstream::servers([o.addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let spy = Arc::new(AcceptAny::default());
    let mut c = (*client_config(&pki, &["http/1.1"], None)).clone();
    c.dangerous().set_certificate_verifier(spy.clone());
    let _s = handshake(gh.listener_addrs("websecure")[0], Arc::new(c), "a.example")
        .await
        .unwrap();
    assert_eq!(
        spy.ocsp.lock().unwrap().as_slice(),
        b"stapled-ocsp-response-bytes"
    );
}

#[tokio::test]
async fn tls_listeners_route_on_sni_and_pass_tls_through_untouched() {
    let pki = Pki::new();
    let hpb = pki.leaf("hpb", &["hpb.example.org"], "hpb", false, false);
    let other = pki.leaf(
        "fallback",
        &["fallback.example.org", "cloud.example.org"],
        "fallback",
        false,
        false,
    );
    let (hpb_addr, _t1) = tls_origin(&hpb).await;
    let (fallback_addr, _t2) = tls_origin(&other).await;
    let cfg = Config::new()
        .listener("sni", Listener::tls("fallback"))
        .route(
            Route::to("hpb")
                .listeners(["sni"])
                .raw(r#"sni = ["hpb.example.org"]"#),
        )
        .upstream("hpb", Upstream::servers([hpb_addr]))
        .upstream("fallback", Upstream::servers([fallback_addr]))
        .toml();
    let gh = proxy(&cfg).await;
    let addr = gh.listener_addrs("sni")[0];
    // The certificate the client sees is the origin's own: the TLS session is end to end.
    let s = handshake(
        addr,
        client_config(&pki, &["http/1.1"], None),
        "hpb.example.org",
    )
    .await
    .unwrap();
    assert_eq!(peer_der(&s), hpb.der);
    assert_eq!(
        get_over(s, "hpb.example.org", "/", &[]).await.text(),
        "tls-origin"
    );
    let s = handshake(
        addr,
        client_config(&pki, &["http/1.1"], None),
        "cloud.example.org",
    )
    .await
    .unwrap();
    assert_eq!(
        peer_der(&s),
        other.der,
        "unknown SNI: the listener's default upstream"
    );
}

#[tokio::test]
async fn tcp_listeners_can_terminate_tls_in_front_of_a_byte_pipe() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let pki = Pki::new();
    let turn = pki.leaf("turn", &["turn.example.org"], "turn", false, false);
    // A plaintext TCP origin that answers after the client's FIN.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut all = Vec::new();
                let _ = s.read_to_end(&mut all).await;
                let _ = s
                    .write_all(format!("plain origin got {} bytes", all.len()).as_bytes())
                    .await;
            });
        }
    });
    let cfg = Config::new()
        .listener(
            "turns",
            Listener::tcp("turn").raw(format!(
                "tls = {{ certificates = [{}] }}",
                certificate(&turn)
            )),
        )
        .upstream("turn", Upstream::servers([origin]))
        .toml();
    let gh = proxy(&cfg).await;
    let mut s = handshake(
        gh.listener_addrs("turns")[0],
        client_config(&pki, &[], None),
        "turn.example.org",
    )
    .await
    .unwrap();
    assert_eq!(
        peer_der(&s),
        turn.der,
        "gatehouse terminates TLS with its own certificate"
    );
    s.write_all(b"allocate").await.unwrap();
    s.shutdown().await.unwrap();
    let mut out = String::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        s.read_to_string(&mut out),
    )
    .await
    .unwrap();
    assert_eq!(out, "plain origin got 8 bytes");
}
