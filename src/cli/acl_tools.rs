//! `shardline acl add|remove|list`: the access rules, kept by the controller.

use clap::{Args, Subcommand};

use super::client_tools::{error_text, BrokerArg};
use crate::client::Admin;
use crate::protocol::{Acl, ResourceKind};
use crate::security::acl::{parse_operation, CLUSTER_NAME};

#[derive(Subcommand)]
pub enum AclCommand {
    /// Allow a principal an operation on a resource.
    Add(RuleArgs),
    /// Take a rule away (the same flags as `add`).
    Remove(RuleArgs),
    /// Every rule, one a line: principal, resource, name, operation.
    List {
        #[command(flatten)]
        broker: BrokerArg,
    },
}

#[derive(Args)]
pub struct RuleArgs {
    #[command(flatten)]
    broker: BrokerArg,
    /// Who: a client certificate's common name, or * for anyone.
    #[arg(long)]
    principal: String,
    /// A topic (or * for every topic).
    #[arg(long, conflicts_with_all = ["group", "cluster"])]
    topic: Option<String>,
    /// A consumer group (or * for every group).
    #[arg(long, conflicts_with = "cluster")]
    group: Option<String>,
    /// The cluster (administrative requests).
    #[arg(long)]
    cluster: bool,
    /// read, write, create, delete, describe, alter (topics); read, describe (groups);
    /// admin (the cluster); all.
    #[arg(long)]
    operation: String,
}

impl RuleArgs {
    fn rule(&self) -> Result<Acl, String> {
        let (resource, name) = match (&self.topic, &self.group, self.cluster) {
            (Some(topic), None, false) => (ResourceKind::Topic, topic.clone()),
            (None, Some(group), false) => (ResourceKind::Group, group.clone()),
            (None, None, true) => (ResourceKind::Cluster, CLUSTER_NAME.to_string()),
            _ => return Err("name one resource: --topic T, --group G or --cluster".into()),
        };
        let rule = Acl {
            principal: self.principal.clone(),
            resource,
            name,
            operation: parse_operation(&self.operation)?,
        };
        crate::security::acl::normalize(&rule)
    }
}

pub fn run_acl(command: AclCommand) -> Result<(), String> {
    super::run_on_executor(move || async move {
        match command {
            AclCommand::Add(args) => {
                let rule = args.rule()?;
                let admin = Admin::new(args.broker.cluster(false)?);
                admin
                    .alter_acls(vec![rule.clone()], Vec::new())
                    .await
                    .map_err(error_text)?;
                println!("added {}", describe(&rule));
                Ok(())
            }
            AclCommand::Remove(args) => {
                let rule = args.rule()?;
                let admin = Admin::new(args.broker.cluster(false)?);
                admin
                    .alter_acls(Vec::new(), vec![rule.clone()])
                    .await
                    .map_err(error_text)?;
                println!("removed {}", describe(&rule));
                Ok(())
            }
            AclCommand::List { broker } => {
                let admin = Admin::new(broker.cluster(false)?);
                for rule in admin.describe_acls().await.map_err(error_text)? {
                    println!("{}", describe(&rule));
                }
                Ok(())
            }
        }
    })
}

fn describe(rule: &Acl) -> String {
    format!(
        "{}\t{:?}\t{}\t{:?}",
        rule.principal, rule.resource, rule.name, rule.operation
    )
}
