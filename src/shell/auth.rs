//! Peer authentication, all derived from one cluster secret.
//!
//! Why a secret and not a CA the operator manages: a local cluster must start with one command,
//! and every peer can derive the same trust root from a shared secret. From the secret we derive:
//! - a **cluster CA**: an Ed25519 key from `blake3::derive_key(secret)`. Ed25519 signatures are
//!   deterministic and the CA certificate's fields are fixed, so every peer builds the
//!   byte-identical CA certificate. Each peer then issues itself a leaf certificate (fresh key
//!   per start) signed by that CA, and QUIC runs mutual TLS 1.3 against it: a peer with another
//!   secret has another CA, and the handshake fails in both directions.
//! - a **gossip seal key** for a keyed BLAKE3 MAC on every gossip datagram
//!   (`shell::gossip_seal`): chitchat's own UDP is plaintext and only checks a cluster-id string,
//!   so without it a stranger could inject membership or crash chitchat's decoder.
//! - a **gossip key** for the membership tag each peer publishes in its gossip state
//!   (`shell::gossip`): defense in depth behind the datagram MAC.
//! - the chitchat **cluster id**, so clusters with different secrets ignore each other quietly.
//! - a **context key** for a keyed BLAKE3 MAC on every causal context token handed to clients
//!   (`api::causal_context`), so any peer accepts back exactly the contexts some peer of this
//!   cluster issued, and nobody without the secret can forge one.
//!
//! Each leaf certificate also names its peer, in a URI subject alternative name
//! (`urn:ringcache:peer:<hex of the name>`): the transport checks that every envelope's `from`
//! is the name the sender's certificate carries ([`peer_name_of`]). A holder of the secret can
//! derive the CA key and so issue itself a certificate for any name: the check stops a peer
//! from speaking as another over its own connection, not a holder of the secret from minting.
//!
//! What this does not do: encrypt gossip (membership is not secret), or rotate the secret without
//! restarting every peer.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ED25519,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::sync::Arc;

/// The name every peer certificate carries and every client checks.
pub const PEER_SERVER_NAME: &str = "ringcache-peer";
/// The application protocol every peer offers and requires in its TLS handshake.
pub const ALPN: &[u8] = b"ringcache/1";
/// The prefix of the URI name that carries a peer's name in its certificate (then the name's
/// bytes in lowercase hex, so any name fits the URI's ASCII).
const PEER_NAME_URI: &str = "urn:ringcache:peer:";

/// The URI subject alternative name that names peer `name` in its certificate.
pub fn peer_name_uri(name: &str) -> String {
    let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{PEER_NAME_URI}{hex}")
}

/// The peer name a certificate carries (see [`peer_name_uri`]), or `None` if it names none or
/// more than one. Only meaningful for a certificate the TLS handshake has verified.
pub fn peer_name_of(cert: &CertificateDer<'_>) -> Option<String> {
    let cert = webpki::EndEntityCert::try_from(cert).ok()?;
    let mut names = cert
        .valid_uri_names()
        .filter_map(|uri| uri.strip_prefix(PEER_NAME_URI));
    let hex = names.next()?;
    if names.next().is_some() || hex.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// The cluster secret, at least 16 bytes.
#[derive(Clone)]
pub struct ClusterSecret(Vec<u8>);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    pub fn new(secret: impl AsRef<[u8]>) -> anyhow::Result<Self> {
        let bytes = secret.as_ref().to_vec();
        anyhow::ensure!(
            bytes.len() >= 16,
            "the cluster secret must be at least 16 bytes long"
        );
        Ok(Self(bytes))
    }

    /// A fresh random secret, hex-encoded (what `ringcache up` hands its peers).
    pub fn generate_hex() -> String {
        let bytes: [u8; 32] = rand::random();
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        blake3::derive_key(purpose, &self.0)
    }

    /// The key of membership tags (see `shell::gossip`). Its derivation string predates the
    /// datagram seal and is kept so tags stay the same across versions.
    pub fn gossip_key(&self) -> [u8; 32] {
        self.derive("ringcache 2026-11 gossip datagram MAC")
    }

    /// The MAC key of every gossip datagram (see `shell::gossip_seal`): its own derivation
    /// string, unrelated to the tag key, the context key and the CA seed.
    pub fn gossip_seal_key(&self) -> [u8; 32] {
        self.derive("ringcache 2026-11 gossip datagram seal")
    }

    /// The MAC key of causal context tokens: the same on every peer of the cluster, so a token
    /// issued by one peer is accepted by every other; its own derivation string, so it is
    /// unrelated to the gossip key and the CA seed.
    pub fn context_key(&self) -> [u8; 32] {
        self.derive("ringcache 2026-11 causal context token MAC")
    }

    pub fn cluster_id(&self) -> String {
        let id = self.derive("ringcache 2026-11 chitchat cluster id");
        let hex: String = id[..8].iter().map(|b| format!("{b:02x}")).collect();
        format!("ringcache-{hex}")
    }

    fn ca_key(&self) -> anyhow::Result<KeyPair> {
        let seed = self.derive("ringcache 2026-11 cluster CA ed25519 seed");
        // PKCS#8 v1 wrapping of a raw Ed25519 seed (RFC 8410).
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(&seed);
        KeyPair::from_pkcs8_der_and_sign_algo(&PrivatePkcs8KeyDer::from(der), &PKCS_ED25519)
            .context("deriving the cluster CA key")
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "ringcache cluster CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(SerialNumber::from(1u64));
    params
}

/// A peer's TLS material: the cluster CA and this peer's own certificate and key.
pub struct PeerIdentity {
    ca: CertificateDer<'static>,
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl PeerIdentity {
    pub fn new(secret: &ClusterSecret, node_name: &str) -> anyhow::Result<Self> {
        let ca_key = secret.ca_key()?;
        let params = ca_params();
        let ca_cert = params
            .self_signed(&ca_key)
            .context("self-signing the cluster CA")?;
        let issuer = Issuer::new(params, ca_key);

        let leaf_key = KeyPair::generate_for(&PKCS_ED25519).context("generating a peer key")?;
        let mut leaf = CertificateParams::new(vec![PEER_SERVER_NAME.to_string()])
            .context("building the peer certificate")?;
        leaf.distinguished_name.push(DnType::CommonName, node_name);
        leaf.subject_alt_names.push(SanType::URI(
            peer_name_uri(node_name)
                .try_into()
                .context("encoding the peer name")?,
        ));
        leaf.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf_cert = leaf
            .signed_by(&leaf_key, &issuer)
            .context("signing the peer certificate")?;
        Ok(Self {
            ca: ca_cert.der().clone(),
            cert: leaf_cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(leaf_key.serialize_der()),
        })
    }

    /// This peer's certificate chain and private key (its own fresh leaf key; the cluster CA
    /// key is never kept). For building TLS endpoints other than the two QUIC configs below:
    /// the transport tests build one-sided endpoints from it, each skipping one check, to show
    /// that the *other* side's check refuses a stranger on its own. It hands out nothing the
    /// holder of this identity does not already have, and changes neither config below.
    pub fn certificate_chain_and_key(
        &self,
    ) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (
            vec![self.cert.clone()],
            PrivateKeyDer::Pkcs8(self.key.clone_key()),
        )
    }

    fn roots(&self) -> anyhow::Result<rustls::RootCertStore> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.ca.clone())
            .context("trusting the cluster CA")?;
        Ok(roots)
    }

    /// QUIC server side: requires a client certificate from the same cluster CA.
    pub fn quic_server_config(&self) -> anyhow::Result<quinn::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(self.roots()?),
            provider.clone(),
        )
        .build()
        .context("building the peer certificate verifier")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .context("loading the peer certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .context("QUIC server TLS config")?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        config.transport_config(transport_config());
        Ok(config)
    }

    /// QUIC client side: presents this peer's certificate and trusts only the cluster CA.
    pub fn quic_client_config(&self) -> anyhow::Result<quinn::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(self.roots()?)
            .with_client_auth_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )
            .context("loading the peer certificate")?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .context("QUIC client TLS config")?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport_config());
        Ok(config)
    }
}

/// Idle connections are closed after 10 s without traffic and kept alive every 2 s while in use,
/// so a dead peer's connection is noticed and dropped instead of hanging sends. Streams and
/// receive windows are bounded so that one peer can make another buffer only so much (see
/// `shell::transport`); peers use no bidirectional streams.
fn transport_config() -> Arc<quinn::TransportConfig> {
    use crate::shell::transport::{
        CONNECTION_RECEIVE_WINDOW, MAX_STREAMS_PER_CONNECTION, STREAM_RECEIVE_WINDOW,
    };
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(
        std::time::Duration::from_secs(10)
            .try_into()
            .expect("10 s fits a QUIC idle timeout"),
    ));
    t.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    t.max_concurrent_uni_streams(MAX_STREAMS_PER_CONNECTION.into());
    t.max_concurrent_bidi_streams(0u32.into());
    t.stream_receive_window(STREAM_RECEIVE_WINDOW.into());
    t.receive_window(CONNECTION_RECEIVE_WINDOW.into());
    Arc::new(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_peer_derives_the_same_ca_from_the_same_secret() {
        let s = ClusterSecret::new("a secret of sixteen+ bytes").unwrap();
        let a = PeerIdentity::new(&s, "A").unwrap();
        let b = PeerIdentity::new(&s, "B").unwrap();
        assert_eq!(a.ca, b.ca);
        assert_ne!(a.cert, b.cert);
        let other = ClusterSecret::new("another secret, also long").unwrap();
        assert_ne!(PeerIdentity::new(&other, "A").unwrap().ca, a.ca);
        assert_ne!(other.cluster_id(), s.cluster_id());
        assert_ne!(other.gossip_key(), s.gossip_key());
        assert_ne!(other.context_key(), s.context_key());
        assert_ne!(s.context_key(), s.gossip_key());
        assert_ne!(s.gossip_seal_key(), s.gossip_key());
        assert_ne!(s.gossip_seal_key(), s.context_key());
    }

    #[test]
    fn a_peer_certificate_names_its_peer() {
        let s = ClusterSecret::new("a secret of sixteen+ bytes").unwrap();
        for name in ["A", "peer-7", "ünïcode/with spaces", ""] {
            let id = PeerIdentity::new(&s, name).unwrap();
            assert_eq!(peer_name_of(&id.cert).as_deref(), Some(name));
        }
        // The CA certificate names no peer.
        let id = PeerIdentity::new(&s, "A").unwrap();
        assert_eq!(peer_name_of(&id.ca), None);
        assert_eq!(peer_name_of(&CertificateDer::from(vec![1, 2, 3])), None);
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
    }
}
