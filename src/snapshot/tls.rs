//! Certificates for TURN-TLS (rustls) and TURN-DTLS (openssl) listeners.
//!
//! A listener's `cert` and `key` are base64 of PEM, as the operator renders them from a
//! Kubernetes Secret; hand-written configs may also give PEM text or a path to a PEM file.
//! With neither (a TURN URI in default-configuration mode), a self-signed certificate is
//! generated for the listener address, as upstream does.
//!
//! Files named by path are re-read whenever a snapshot is built; [`pem_digest`] tells a
//! worker whether the material of a listener it keeps changed (then it hot-swaps the
//! certificate for new connections), and [`input_path`] tells the runtime which files to
//! watch.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Certificate chain and key, as PEM.
#[derive(Clone)]
pub struct PemPair {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PemPair {{ cert: {} bytes, key: <SECRET> }}",
            self.cert.len()
        )
    }
}

/// Resolve a listener's `cert`/`key` into PEM, generating a self-signed pair when both are
/// empty.
pub fn pem_pair(cert: &str, key: &str, addr: IpAddr) -> Result<PemPair, String> {
    if cert.trim().is_empty() && key.trim().is_empty() {
        return self_signed(addr);
    }
    let cert = pem_input(cert).map_err(|e| format!("cert: {e}"))?;
    let key = pem_input(key).map_err(|e| format!("key: {e}"))?;
    Ok(PemPair { cert, key })
}

/// A digest of a listener's certificate material as loaded (0 when none was configured,
/// so a generated self-signed pair never counts as a change), or of why it did not load.
pub fn pem_digest(cert: &str, key: &str, loaded: &Result<PemPair, String>) -> u64 {
    use std::hash::{Hash, Hasher};
    if cert.trim().is_empty() && key.trim().is_empty() {
        return 0;
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    match loaded {
        Ok(p) => (&p.cert, &p.key).hash(&mut h),
        Err(e) => e.hash(&mut h),
    }
    h.finish()
}

/// The file a `cert` or `key` value names, if it is a path rather than PEM or base64 of
/// PEM (the same rule [`pem_pair`] reads it by).
pub fn input_path(s: &str) -> Option<PathBuf> {
    let s = s.trim();
    if s.is_empty() || s.starts_with("-----BEGIN") {
        return None;
    }
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    if base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .is_ok()
    {
        return None;
    }
    Some(PathBuf::from(s))
}

/// PEM from base64 of PEM, PEM text, or a path to a PEM file.
fn pem_input(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty".into());
    }
    if let Some(path) = input_path(s) {
        return match std::fs::read(&path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if path.exists() => Err(format!("cannot read {s}: {e}")),
            Err(_) => Err("neither base64 of PEM, PEM text, nor a readable file".into()),
        };
    }
    if s.starts_with("-----BEGIN") {
        return Ok(s.as_bytes().to_vec());
    }
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(compact.as_bytes()) {
        Ok(bytes) if bytes.windows(10).any(|w| w == b"-----BEGIN") => Ok(bytes),
        _ => Err("base64 value does not hold PEM".into()),
    }
}

fn self_signed(addr: IpAddr) -> Result<PemPair, String> {
    let mut names = vec!["localhost".to_string()];
    if !addr.is_unspecified() {
        names.push(addr.to_string());
    }
    let ck = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a self-signed certificate: {e}"))?;
    Ok(PemPair {
        cert: ck.cert.pem().into_bytes(),
        key: ck.signing_key.serialize_pem().into_bytes(),
    })
}

/// A rustls server config (TLS 1.2 and 1.3) for a TURN-TLS listener.
pub fn rustls_config(pem: &PemPair) -> Result<Arc<rustls::ServerConfig>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem.cert)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cert: malformed PEM: {e}"))?;
    if certs.is_empty() {
        return Err("cert: no certificate in PEM".into());
    }
    let key = PrivateKeyDer::from_pem_slice(&pem.key)
        .map_err(|e| format!("key: no usable private key in PEM: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("cert/key: {e}"))?;
    Ok(Arc::new(config))
}

/// Check that a certificate and key load with openssl (for DTLS listeners), returning them
/// parsed.
pub fn openssl_pair(
    pem: &PemPair,
) -> Result<
    (
        Vec<openssl::x509::X509>,
        openssl::pkey::PKey<openssl::pkey::Private>,
    ),
    String,
> {
    let chain = openssl::x509::X509::stack_from_pem(&pem.cert)
        .map_err(|e| format!("cert: malformed PEM: {e}"))?;
    if chain.is_empty() {
        return Err("cert: no certificate in PEM".into());
    }
    let key = openssl::pkey::PKey::private_key_from_pem(&pem.key)
        .map_err(|e| format!("key: malformed PEM: {e}"))?;
    Ok((chain, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pairs_load_in_both_stacks() {
        let pem = pem_pair("", "", "127.0.0.1".parse().unwrap()).unwrap();
        rustls_config(&pem).unwrap();
        openssl_pair(&pem).unwrap();
    }

    #[test]
    fn base64_pem_and_text_pem_are_accepted() {
        let pem = pem_pair("", "", "127.0.0.1".parse().unwrap()).unwrap();
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let again = pem_pair(&b64(&pem.cert), &b64(&pem.key), "0.0.0.0".parse().unwrap()).unwrap();
        assert_eq!(again.cert, pem.cert);
        rustls_config(&again).unwrap();
        let text = pem_pair(
            std::str::from_utf8(&pem.cert).unwrap(),
            std::str::from_utf8(&pem.key).unwrap(),
            "0.0.0.0".parse().unwrap(),
        )
        .unwrap();
        rustls_config(&text).unwrap();
    }

    #[test]
    fn paths_are_told_from_pem_and_base64() {
        let pem = pem_pair("", "", "127.0.0.1".parse().unwrap()).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pem.cert);
        assert_eq!(input_path(&b64), None);
        assert_eq!(input_path(std::str::from_utf8(&pem.cert).unwrap()), None);
        assert_eq!(input_path("  "), None);
        assert_eq!(
            input_path(" /etc/letsencrypt/live/x/fullchain.pem "),
            Some(PathBuf::from("/etc/letsencrypt/live/x/fullchain.pem"))
        );
        // A file's content is read, and its digest follows the content.
        let dir = tempfile::tempdir().unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, &pem.cert).unwrap();
        std::fs::write(&k, &pem.key).unwrap();
        let (cs, ks) = (c.to_str().unwrap(), k.to_str().unwrap());
        let a = pem_pair(cs, ks, "0.0.0.0".parse().unwrap());
        assert_eq!(a.as_ref().unwrap().cert, pem.cert);
        let other = pem_pair("", "", "127.0.0.1".parse().unwrap()).unwrap();
        std::fs::write(&c, &other.cert).unwrap();
        std::fs::write(&k, &other.key).unwrap();
        let b = pem_pair(cs, ks, "0.0.0.0".parse().unwrap());
        assert_ne!(pem_digest(cs, ks, &a), pem_digest(cs, ks, &b));
        assert_eq!(pem_digest("", "", &a), 0);
        let err = pem_pair("/nonexistent/c.pem", ks, "0.0.0.0".parse().unwrap()).unwrap_err();
        assert!(err.starts_with("cert:"), "{err}");
    }

    #[test]
    fn malformed_material_is_reported_by_field() {
        let addr = "0.0.0.0".parse().unwrap();
        let err = pem_pair("not base64!", "x", addr).unwrap_err();
        assert!(err.starts_with("cert:"), "{err}");
        let junk = base64::engine::general_purpose::STANDARD.encode(b"hello world");
        let err = pem_pair(&junk, &junk, addr).unwrap_err();
        assert!(err.contains("does not hold PEM"), "{err}");
        let pem = pem_pair("", "", addr).unwrap();
        let swapped = PemPair {
            cert: pem.key.clone(),
            key: pem.cert.clone(),
        };
        assert!(rustls_config(&swapped).is_err());
        assert!(openssl_pair(&swapped).is_err());
    }
}
