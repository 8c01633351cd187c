//! `shardline quota set|remove|list`: byte-rate quotas, kept by the controller.

use clap::{Args, Subcommand};

use super::client_tools::{error_text, BrokerArg};
use crate::client::Admin;
use crate::protocol::{Quota, QuotaEntity, QuotaEntityKind};

#[derive(Subcommand)]
pub enum QuotaCommand {
    /// Limit a principal's or a client id's bytes per second (replaces its quota).
    Set {
        #[command(flatten)]
        entity: EntityArgs,
        /// Produce bytes per second (over the whole broker).
        #[arg(long)]
        produce_bytes_per_s: Option<u64>,
        /// Fetch bytes per second (over the whole broker).
        #[arg(long)]
        fetch_bytes_per_s: Option<u64>,
    },
    /// Remove a quota.
    Remove {
        #[command(flatten)]
        entity: EntityArgs,
    },
    /// Every quota: kind, name, produce and fetch bytes per second (- for none).
    List {
        #[command(flatten)]
        broker: BrokerArg,
    },
}

#[derive(Args)]
pub struct EntityArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// A principal (certificate common name or SCRAM user).
    #[arg(
        long,
        conflicts_with = "client_id",
        required_unless_present = "client_id"
    )]
    principal: Option<String>,
    /// A client id (as the client gives it in its handshake).
    #[arg(long)]
    client_id: Option<String>,
}

impl EntityArgs {
    fn entity(&self) -> QuotaEntity {
        match (&self.principal, &self.client_id) {
            (Some(name), _) => QuotaEntity {
                kind: QuotaEntityKind::Principal,
                name: name.clone(),
            },
            (None, name) => QuotaEntity {
                kind: QuotaEntityKind::ClientId,
                name: name.clone().unwrap_or_default(),
            },
        }
    }
}

fn rate(rate: Option<u64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| r.to_string())
}

pub fn run_quota(command: QuotaCommand) -> Result<(), String> {
    super::run_on_executor(move || async move {
        let (broker, quota) = match command {
            QuotaCommand::Set {
                entity,
                produce_bytes_per_s,
                fetch_bytes_per_s,
            } => {
                if produce_bytes_per_s.is_none() && fetch_bytes_per_s.is_none() {
                    return Err(
                        "give --produce-bytes-per-s and/or --fetch-bytes-per-s (quota remove takes one away)"
                            .into(),
                    );
                }
                let quota = Quota {
                    entity: entity.entity(),
                    produce_bytes_per_s,
                    fetch_bytes_per_s,
                };
                (entity.broker, quota)
            }
            QuotaCommand::Remove { entity } => {
                let quota = Quota {
                    entity: entity.entity(),
                    produce_bytes_per_s: None,
                    fetch_bytes_per_s: None,
                };
                (entity.broker, quota)
            }
            QuotaCommand::List { broker } => {
                let admin = Admin::new(broker.cluster(false)?);
                for quota in admin.describe_quotas().await.map_err(error_text)? {
                    println!(
                        "{:?}\t{}\t{}\t{}",
                        quota.entity.kind,
                        quota.entity.name,
                        rate(quota.produce_bytes_per_s),
                        rate(quota.fetch_bytes_per_s)
                    );
                }
                return Ok(());
            }
        };
        let admin = Admin::new(broker.cluster(false)?);
        admin
            .alter_quotas(vec![quota.clone()])
            .await
            .map_err(error_text)?;
        println!(
            "{:?} {}: produce {} B/s, fetch {} B/s",
            quota.entity.kind,
            quota.entity.name,
            rate(quota.produce_bytes_per_s),
            rate(quota.fetch_bytes_per_s)
        );
        Ok(())
    })
}
