//! The admin kubeconfig (`--write-kubeconfig`): the cluster CA, the server URL and the admin
//! client certificate, all embedded, for kubectl.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::pki::Pki;

/// The kubeconfig text for `server` (`https://127.0.0.1:6443`). The cluster and the context
/// are named `cairn`, the user `admin`.
pub fn render(server: &str, pki: &Pki) -> String {
    let b64 = |pem: &str| STANDARD.encode(pem.as_bytes());
    format!(
        "\
apiVersion: v1
kind: Config
clusters:
- cluster:
    certificate-authority-data: {ca}
    server: {server}
  name: cairn
contexts:
- context:
    cluster: cairn
    user: admin
  name: cairn
current-context: cairn
preferences: {{}}
users:
- name: admin
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
",
        ca = b64(&pki.ca_cert),
        cert = b64(&pki.admin.cert),
        key = b64(&pki.admin.key),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::PemPair;

    #[test]
    fn kubeconfig_is_valid_yaml_with_embedded_pem() {
        let pki = Pki {
            ca_cert: "CA PEM\n".into(),
            serving: PemPair {
                cert: String::new(),
                key: String::new(),
            },
            admin: PemPair {
                cert: "CERT\n".into(),
                key: "KEY\n".into(),
            },
        };
        let text = render("https://127.0.0.1:6443", &pki);
        let v: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let cluster = &v["clusters"][0]["cluster"];
        assert_eq!(cluster["server"].as_str(), Some("https://127.0.0.1:6443"));
        let ca = STANDARD
            .decode(cluster["certificate-authority-data"].as_str().unwrap())
            .unwrap();
        assert_eq!(ca, b"CA PEM\n");
        let user = &v["users"][0]["user"];
        assert_eq!(
            STANDARD
                .decode(user["client-key-data"].as_str().unwrap())
                .unwrap(),
            b"KEY\n"
        );
        assert_eq!(v["current-context"].as_str(), Some("cairn"));
        assert_eq!(v["contexts"][0]["context"]["user"].as_str(), Some("admin"));
    }
}
