//! The process-wide sections: `[global]`, `[admin]` and `[acme]`, and the checks that tie `[acme]`
//! to the listeners that need it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::Validator;
use crate::locate::KeyPath;
use crate::model::*;
use crate::raw::*;

pub(super) fn global(v: &mut Validator, root_path: &KeyPath, global: &RawGlobal) -> Global {
    let gp = root_path.key("global");
    if global.threads == Some(0) {
        v.at(&gp.key("threads"), "must be at least 1");
    }
    Global {
        threads: global.threads.filter(|t| *t > 0),
        grace_period: v.duration(
            &gp.key("grace_period"),
            global.grace_period.as_deref(),
            Duration::from_secs(30),
        ),
        access_log: match global.access_log.as_deref() {
            None | Some("stdout") => AccessLog::Stdout,
            Some("off") => AccessLog::Off,
            Some("") => {
                v.at(
                    &gp.key("access_log"),
                    "expected \"off\", \"stdout\" or a file path",
                );
                AccessLog::Off
            }
            Some(p) => AccessLog::File(PathBuf::from(p)),
        },
    }
}

pub(super) fn admin(
    v: &mut Validator,
    root_path: &KeyPath,
    admin: Option<RawAdmin>,
) -> Option<SocketAddr> {
    admin.and_then(|a| match a.bind.parse::<SocketAddr>() {
        Ok(s) => Some(s),
        Err(_) => {
            v.at(
                &root_path.key("admin").key("bind"),
                format!(
                    "`{}` is not an IP:port address like \"127.0.0.1:9901\"",
                    a.bind
                ),
            );
            None
        }
    })
}

pub(super) fn acme(v: &mut Validator, root_path: &KeyPath, acme: Option<RawAcme>) -> Option<Acme> {
    acme.map(|a| {
        let ap = root_path.key("acme");
        if !(a.directory.starts_with("https://") || a.directory.starts_with("http://")) {
            v.at(&ap.key("directory"), "must be an http(s) URL");
        }
        let challenge = match a.challenge.as_deref() {
            None | Some("tls-alpn-01") => AcmeChallenge::TlsAlpn01,
            Some("http-01") => AcmeChallenge::Http01,
            Some(x) => {
                v.at(
                    &ap.key("challenge"),
                    format!("`{x}` is not one of tls-alpn-01, http-01"),
                );
                AcmeChallenge::TlsAlpn01
            }
        };
        if a.storage.is_empty() {
            v.at(&ap.key("storage"), "needs a directory");
        }
        Acme {
            directory: a.directory.clone(),
            email: a.email.clone(),
            storage: v.path(&a.storage),
            ca: a.ca.as_deref().map(|c| v.path(c)),
            challenge,
            renew_before: v.duration(
                &ap.key("renew_before"),
                a.renew_before.as_deref(),
                Duration::from_secs(30 * 86_400),
            ),
        }
    })
}

/// Listeners naming certificates in `tls.acme` need an `[acme]` section, and http-01 needs an
/// http listener to answer on.
pub(super) fn acme_listeners(
    v: &mut Validator,
    root_path: &KeyPath,
    acme_model: Option<&Acme>,
    listener_models: &[Listener],
) {
    let wants_acme = listener_models
        .iter()
        .any(|l| l.tls.as_ref().is_some_and(|t| !t.acme.is_empty()));
    if wants_acme && acme_model.is_none() {
        v.at(
            root_path,
            "listeners name certificates in `tls.acme` but there is no [acme] section",
        );
    }
    if acme_model.is_some_and(|a| a.challenge == AcmeChallenge::Http01)
        && !listener_models
            .iter()
            .any(|l| l.protocol == ListenerProtocol::Http)
    {
        v.at(
            &root_path.key("acme").key("challenge"),
            "http-01 needs an http listener to answer on",
        );
    }
}
