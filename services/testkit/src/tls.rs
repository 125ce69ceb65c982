//! A private CA and a certificate for `localhost` signed by it, for tests of TLS clients against local servers.

use rcgen::{BasicConstraints, Certificate, CertificateParams, IsCa, Issuer, KeyPair};

pub struct LocalhostCertificate {
    /// The CA's certificate: what a client must trust.
    pub ca: Certificate,
    /// The server's certificate, for `localhost`.
    pub server: Certificate,
    pub server_key: KeyPair,
}

impl LocalhostCertificate {
    /// A fresh CA and server certificate. Panics if key generation fails, as a test cannot go on without them.
    pub fn generate() -> LocalhostCertificate {
        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server = CertificateParams::new(vec!["localhost".to_string()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");
        LocalhostCertificate { ca, server, server_key }
    }
}
