//! `ringcast-token`: mints a connection token signed with the secret in a
//! Ringcast config, for demos and manual testing. Production tokens come from
//! the app backend, which holds the same secret.
//!
//! `ringcast-token --config=ringcast.toml --user=alice [--ttl-s=3600]`

use std::process::ExitCode;

use anyhow::{bail, Context};
use ringcast_engine::config::Config;

fn main() -> ExitCode {
    match run() {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("ringcast-token: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run() -> anyhow::Result<String> {
    let mut config_path = None;
    let mut user = None;
    let mut ttl_s: u64 = 3600;
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("--config", v)) => config_path = Some(v.to_string()),
            Some(("--user", v)) => user = Some(v.to_string()),
            Some(("--ttl-s", v)) => ttl_s = v.parse().context("--ttl-s takes whole seconds")?,
            _ => bail!("unknown argument {arg:?}; usage: ringcast-token --config=<file> --user=<id> [--ttl-s=<seconds>]"),
        }
    }
    let config_path = config_path.context("--config=<file> is required")?;
    let user = user.context("--user=<id> is required")?;
    let text =
        std::fs::read_to_string(&config_path).with_context(|| format!("reading {config_path}"))?;
    let config = Config::from_toml_str(&text, std::path::Path::new(&config_path))?;
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs()
        + ttl_s;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(config.auth.jwt_secret.expose().as_bytes()),
    )?;
    Ok(token)
}
