//! `shardline user create|delete|list`: SCRAM-SHA-256 users. The salted credential is
//! computed here; the password never leaves this process.

use clap::Subcommand;

use super::client_tools::{error_text, read_password, BrokerArg};
use crate::client::Admin;
use crate::security::scram::{self, ITERATIONS_DEFAULT};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user, or give an existing one a new password.
    Create {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        name: String,
        /// A file whose first line is the password (default: the first line of stdin).
        #[arg(long)]
        password_file: Option<std::path::PathBuf>,
        /// PBKDF2 rounds (4096 to 1000000).
        #[arg(long, default_value_t = ITERATIONS_DEFAULT)]
        iterations: u32,
    },
    /// Delete a user (its connections stay until they close).
    Delete {
        #[command(flatten)]
        broker: BrokerArg,
        #[arg(long)]
        name: String,
    },
    /// Every user: name, mechanism, iterations.
    List {
        #[command(flatten)]
        broker: BrokerArg,
    },
}

fn password_from_stdin() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| format!("reading the password from stdin: {e}"))?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        return Err("no password: give --password-file or one line on stdin".into());
    }
    Ok(password)
}

pub fn run_user(command: UserCommand) -> Result<(), String> {
    // Read before the executor starts: stdin is a blocking read.
    let password = match &command {
        UserCommand::Create {
            password_file: Some(path),
            ..
        } => Some(read_password(path)?),
        UserCommand::Create { .. } => Some(password_from_stdin()?),
        _ => None,
    };
    super::run_on_executor(move || async move {
        match command {
            UserCommand::Create {
                broker,
                name,
                iterations,
                ..
            } => {
                let password = password.expect("read above");
                let credential = scram::credential(&name, &password, iterations);
                scram::check_credential(&credential)?;
                let admin = Admin::new(broker.cluster(false)?);
                admin
                    .alter_users(vec![credential], Vec::new())
                    .await
                    .map_err(error_text)?;
                println!("user {name} stored ({} rounds)", iterations);
                Ok(())
            }
            UserCommand::Delete { broker, name } => {
                let admin = Admin::new(broker.cluster(false)?);
                admin
                    .alter_users(Vec::new(), vec![name.clone()])
                    .await
                    .map_err(error_text)?;
                println!("user {name} deleted");
                Ok(())
            }
            UserCommand::List { broker } => {
                let admin = Admin::new(broker.cluster(false)?);
                for user in admin.describe_users().await.map_err(error_text)? {
                    println!("{}\t{}\t{}", user.name, user.mechanism, user.iterations);
                }
                Ok(())
            }
        }
    })
}
