//! NATS with JetStream (Debian's `nats-server`): file storage under the run's directory.
//! Only the `no-fsync` class exists for 2.9 (see the module above).

use std::path::Path;
use std::process::Command;

/// The server configuration: loopback, JetStream with its store in `dir`.
pub fn config(dir: &Path, port: u16) -> String {
    format!(
        "listen: 127.0.0.1:{port}\n\
         jetstream {{\n  store_dir: \"{}\"\n}}\n",
        dir.join("jetstream").display()
    )
}

pub fn prepare(dir: &Path, port: u16) -> Result<Command, String> {
    let program = super::find_program("nats-server")?;
    let path = dir.join("nats.conf");
    std::fs::write(&path, config(dir, port))
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    let mut command = Command::new(program);
    command.arg("-c").arg(path);
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_with_jetstream_in_the_run_dir() {
        let text = config(Path::new("/tmp/n"), 4333);
        assert!(text.starts_with("listen: 127.0.0.1:4333\n"), "{text}");
        assert!(text.contains("store_dir: \"/tmp/n/jetstream\""), "{text}");
        assert!(!text.contains("sync_interval"), "2.9 refuses it: {text}");
    }
}
