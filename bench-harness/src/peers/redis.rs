//! Redis (Debian's `redis-server`) with the append-only file: `appendfsync always` for the
//! `fsync` class, `everysec` (its default) for `no-fsync`; RDB snapshots off.

use std::path::Path;
use std::process::Command;

use super::Durability;

/// redis-server's flags for a loopback server with its files in `dir`.
pub fn args(dir: &Path, port: u16, durability: Durability) -> Vec<String> {
    let fsync = match durability {
        Durability::Fsync => "always",
        Durability::NoFsync => "everysec",
    };
    [
        ("--bind", "127.0.0.1".to_string()),
        ("--port", port.to_string()),
        ("--dir", dir.display().to_string()),
        ("--appendonly", "yes".into()),
        ("--appendfsync", fsync.into()),
        ("--save", String::new()),
        ("--protected-mode", "no".into()),
        ("--daemonize", "no".into()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect()
}

pub fn prepare(dir: &Path, port: u16, durability: Durability) -> Result<Command, String> {
    let program = super::find_program("redis-server")?;
    let mut command = Command::new(program);
    command.args(args(dir, port, durability));
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_class_fsyncs_the_append_only_file_before_every_reply() {
        let always = args(Path::new("/tmp/r"), 6400, Durability::Fsync).join(" ");
        assert!(
            always.contains("--appendonly yes --appendfsync always"),
            "{always}"
        );
        assert!(
            always.contains("--bind 127.0.0.1 --port 6400 --dir /tmp/r"),
            "{always}"
        );
        let everysec = args(Path::new("/tmp/r"), 6400, Durability::NoFsync).join(" ");
        assert!(everysec.contains("--appendfsync everysec"), "{everysec}");
    }
}
