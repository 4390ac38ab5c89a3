//! `planledger token issue`: mints a JWT with the service's signing key.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use planledger_app::{Authenticator, Role};

/// Token subcommands.
#[derive(clap::Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a signed token for a subject in a tenant with roles.
    Issue(IssueArgs),
}

/// Flags of `token issue`.
#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    /// Data directory holding the signing key (created if missing).
    #[arg(long, env = "PLANLEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Signing secret file instead of the data directory's key.
    #[arg(long, env = "PLANLEDGER_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// Tenant the token may see.
    #[arg(long)]
    pub tenant: String,
    /// Subject: recorded as the actor of every event it causes.
    #[arg(long)]
    pub sub: String,
    /// Comma-separated roles: viewer, contributor, planner, auditor, admin.
    #[arg(long, value_delimiter = ',', required = true)]
    pub roles: Vec<String>,
    /// Lifetime, e.g. 30m, 24h, 7d.
    #[arg(long, default_value = "24h")]
    pub ttl: String,
}

/// Parses a lifetime such as `90s`, `30m`, `24h` or `7d` into seconds.
pub fn parse_ttl(text: &str) -> Result<i64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .context("ttl needs a unit: s, m, h or d (e.g. 24h)")?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number
        .parse()
        .with_context(|| format!("ttl {text:?} must start with a number, e.g. 24h"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "d" => number * 86_400,
        _ => bail!("ttl unit {unit:?} is unknown: use s, m, h or d"),
    };
    if seconds <= 0 || seconds > 366 * 86_400 {
        bail!("ttl must be between 1s and 366d");
    }
    Ok(seconds)
}

/// Loads the authenticator the way `serve` does.
pub fn authenticator(
    data_dir: &std::path::Path,
    secret_file: Option<&std::path::Path>,
) -> Result<Authenticator> {
    match secret_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading JWT secret file {}", path.display()))?;
            let secret = hex::decode(text.trim())
                .with_context(|| format!("JWT secret file {} must hold hex", path.display()))?;
            Ok(Authenticator::from_secret(&secret)?)
        }
        None => Ok(Authenticator::from_data_dir(data_dir)?),
    }
}

/// Runs a token subcommand.
pub fn run(command: TokenCommand) -> Result<()> {
    match command {
        TokenCommand::Issue(args) => {
            let roles = args
                .roles
                .iter()
                .map(|r| Role::parse(r))
                .collect::<Result<Vec<_>, _>>()?;
            let ttl = parse_ttl(&args.ttl)?;
            let auth = authenticator(&args.data_dir, args.jwt_secret_file.as_deref())?;
            let token = auth.issue(&args.sub, &args.tenant, roles, jiff::Timestamp::now(), ttl)?;
            println!("{token}");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_units_parse() {
        assert_eq!(parse_ttl("90s").expect("s"), 90);
        assert_eq!(parse_ttl("30m").expect("m"), 1800);
        assert_eq!(parse_ttl("24h").expect("h"), 86_400);
        assert_eq!(parse_ttl("7d").expect("d"), 604_800);
        assert!(parse_ttl("24").is_err());
        assert!(parse_ttl("5y").is_err());
        assert!(parse_ttl("0h").is_err());
    }
}
