//! `cairn token create|list|delete`: bootstrap-token Secrets through the API.

use std::time::{Duration, SystemTime};

use anyhow::{bail, Context, Result};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use cairn::client::Client;
use cairn::token::{random_hex, JoinToken};
use cairn_apiserver::auth::{BootstrapToken, BOOTSTRAP_TOKEN_NAMESPACE, BOOTSTRAP_TOKEN_TYPE};
use hyper::Method;
use serde_json::{json, Value};

use crate::cli::{TokenArgs, TokenCommand};
use crate::run::ServerPaths;

const SECRETS: &str = "/api/v1/namespaces/kube-system/secrets";

pub fn run(args: TokenArgs) -> Result<()> {
    let kubeconfig = args
        .kubeconfig
        .clone()
        .unwrap_or_else(|| ServerPaths::new(&args.data_dir).admin_kubeconfig);
    let client = Client::from_kubeconfig(&kubeconfig).with_context(|| {
        format!(
            "the admin kubeconfig is written by `cairn server`; pass --kubeconfig or --data-dir \
             if the server does not use {}",
            args.data_dir.display()
        )
    })?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match args.command {
            TokenCommand::Create {
                ttl,
                description,
                groups,
            } => create(&client, ttl, description, groups).await,
            TokenCommand::List => list(&client).await,
            TokenCommand::Delete { ids } => delete(&client, &ids).await,
        }
    })
}

async fn create(
    client: &Client,
    ttl: u64,
    description: Option<String>,
    groups: Vec<String>,
) -> Result<()> {
    if let Some(bad) = groups
        .iter()
        .find(|g| !g.starts_with("system:bootstrappers:"))
    {
        bail!("group {bad:?}: extra groups must start with system:bootstrappers:");
    }
    let secret = random_hex(8)?;
    let token = BootstrapToken::parse(&format!("{}.{}", &random_hex(3)?, secret))
        .context("generated token")?;
    let mut data = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_owned(), Value::String(STANDARD.encode(v)));
    };
    put("token-id", &token.id);
    put("token-secret", &token.secret);
    put("usage-bootstrap-authentication", "true");
    put("usage-bootstrap-signing", "true");
    if !groups.is_empty() {
        put("auth-extra-groups", &groups.join(","));
    }
    if let Some(d) = &description {
        put("description", d);
    }
    if ttl > 0 {
        let at = jiff::Timestamp::try_from(SystemTime::now() + Duration::from_secs(ttl))
            .context("expiry time")?;
        put("expiration", &at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string());
    }
    let body = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": token.secret_name(), "namespace": BOOTSTRAP_TOKEN_NAMESPACE},
        "type": BOOTSTRAP_TOKEN_TYPE,
        "data": data,
    });
    client
        .request(Method::POST, SECRETS, Some(&body))
        .await
        .context("creating the token")?;
    println!("{}", JoinToken::new(client.ca_pem(), token.to_string()));
    Ok(())
}

async fn list(client: &Client) -> Result<()> {
    let secrets = client
        .request(Method::GET, SECRETS, None)
        .await
        .context("listing tokens")?;
    let text = |s: &Value, k: &str| -> String {
        s["data"][k]
            .as_str()
            .and_then(|b| STANDARD.decode(b).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let now = jiff::Timestamp::now();
    println!(
        "{:<8} {:<22} {:<10} {:<32} DESCRIPTION",
        "ID", "EXPIRES", "TTL", "EXTRA GROUPS"
    );
    for s in secrets["items"].as_array().into_iter().flatten() {
        if s["type"] != BOOTSTRAP_TOKEN_TYPE {
            continue;
        }
        let expiration = text(s, "expiration");
        let ttl = match expiration.parse::<jiff::Timestamp>() {
            Ok(at) if at <= now => "expired".to_owned(),
            Ok(at) => format_ttl(at.as_second() - now.as_second()),
            Err(_) if expiration.is_empty() => "never".to_owned(),
            Err(_) => "invalid".to_owned(),
        };
        println!(
            "{:<8} {:<22} {:<10} {:<32} {}",
            text(s, "token-id"),
            if expiration.is_empty() {
                "-"
            } else {
                &expiration
            },
            ttl,
            text(s, "auth-extra-groups"),
            text(s, "description")
        );
    }
    Ok(())
}

fn format_ttl(seconds: i64) -> String {
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3600 => format!("{}h", s / 3600),
        s if s >= 60 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

async fn delete(client: &Client, ids: &[String]) -> Result<()> {
    for given in ids {
        // An id, or a whole token (bare or K10 form).
        let id = BootstrapToken::parse(given)
            .map(|t| t.id)
            .unwrap_or_else(|_| given.clone());
        if id.len() != 6
            || !id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        {
            bail!("{given:?} is not a token id (6 characters of a-z, 0-9) or a token");
        }
        let path = format!("{SECRETS}/bootstrap-token-{id}");
        client
            .request(Method::DELETE, &path, None)
            .await
            .with_context(|| format!("deleting token {id}"))?;
        println!("token {id} deleted");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ttl_columns() {
        assert_eq!(super::format_ttl(59), "59s");
        assert_eq!(super::format_ttl(7200), "2h");
        assert_eq!(super::format_ttl(3 * 86_400 + 5), "3d");
    }
}
