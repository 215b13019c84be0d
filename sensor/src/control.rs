//! The control socket: a Unix stream socket (mode 0600: what the kernel drops is root's to
//! change) taking one command per line and answering each with one line, `ok: ...` or
//! `error: ...`. The agent's loop applies each command between two ring buffer batches, updating
//! the kernel program's maps in place, so nothing is detached and no record is lost.
//!
//! ```text
//! ports 5060,5070-5080     the port set (a port that stays in it keeps matching throughout)
//! action drop|pass         what the kernel does with matched frames
//! prefix-len N             payload bytes captured per record (1 to 1024)
//! match-source-port on|off also match frames whose source port is in the set
//! source-rate N [BURST]    per-source records per second admitted (0: unlimited)
//! reload                   read the config file again (as SIGHUP does)
//! status                   the settings in force and the main counters
//! help                     this list
//! ```
//!
//! `sensor ctl COMMAND...` sends one command and prints the answer.

use std::{
    io::{self, BufRead as _, BufReader, Write as _},
    os::unix::fs::{FileTypeExt as _, PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use sensor_common::{MatchAction, PAYLOAD_CAPACITY};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _},
    net::{UnixListener, UnixStream},
    sync::{Semaphore, mpsc, oneshot},
};

use crate::capture::PortSet;

/// Longest command line taken.
const MAX_LINE: usize = 4096;
/// A connection idle this long is closed.
const IDLE: Duration = Duration::from_secs(60);
const MAX_CONNECTIONS: usize = 4;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ControlCommand {
    Ports(PortSet),
    Action(MatchAction),
    PrefixLen(u16),
    MatchSourcePort(bool),
    SourceRate { rate: u32, burst: Option<u32> },
    Reload,
    Status,
    Help,
}

pub const HELP: &str = "commands: ports LIST | action drop|pass | prefix-len N | \
    match-source-port on|off | source-rate N [BURST] | reload | status | help";

impl ControlCommand {
    pub fn parse(line: &str) -> Result<Self, String> {
        let mut words = line.split_whitespace();
        let verb = words.next().ok_or("empty command; try `help`")?;
        let args: Vec<&str> = words.collect();
        let one = |what: &str| -> Result<&str, String> {
            match args.as_slice() {
                [a] => Ok(*a),
                _ => Err(format!("`{verb}` takes one argument: {what}")),
            }
        };
        let none = || -> Result<(), String> {
            if args.is_empty() {
                Ok(())
            } else {
                Err(format!("`{verb}` takes no argument"))
            }
        };
        match verb {
            "ports" => {
                // Spaces after commas are fine: `ports 5060, 5070`.
                let list = args.join("");
                if list.is_empty() {
                    return Err("`ports` takes a list, e.g. ports 5060,5070-5080".into());
                }
                list.parse()
                    .map(Self::Ports)
                    .map_err(|e: crate::capture::PortSetError| e.to_string())
            }
            "action" => match one("drop or pass")? {
                "drop" => Ok(Self::Action(MatchAction::Drop)),
                "pass" => Ok(Self::Action(MatchAction::Pass)),
                other => Err(format!("unknown action `{other}`: expected drop or pass")),
            },
            "prefix-len" => {
                let n = one("bytes, 1 to 1024")?;
                match n.parse::<u16>() {
                    Ok(n) if n >= 1 && usize::from(n) <= PAYLOAD_CAPACITY => Ok(Self::PrefixLen(n)),
                    _ => Err(format!(
                        "bad prefix length `{n}`: expected 1 to {PAYLOAD_CAPACITY}"
                    )),
                }
            }
            "match-source-port" => match one("on or off")? {
                "on" | "true" => Ok(Self::MatchSourcePort(true)),
                "off" | "false" => Ok(Self::MatchSourcePort(false)),
                other => Err(format!("expected on or off, not `{other}`")),
            },
            "source-rate" => {
                let number = |s: &str| {
                    s.parse::<u32>()
                        .map_err(|_| format!("bad number `{s}` for source-rate"))
                };
                match args.as_slice() {
                    [rate] => Ok(Self::SourceRate {
                        rate: number(rate)?,
                        burst: None,
                    }),
                    [rate, burst] => Ok(Self::SourceRate {
                        rate: number(rate)?,
                        burst: Some(number(burst)?),
                    }),
                    _ => Err("`source-rate` takes RATE and optionally BURST".into()),
                }
            }
            "reload" => none().map(|()| Self::Reload),
            "status" => none().map(|()| Self::Status),
            "help" => none().map(|()| Self::Help),
            other => Err(format!("unknown command `{other}`; {HELP}")),
        }
    }
}

/// A command for the agent's loop, with where its answer goes.
pub struct ControlRequest {
    pub command: ControlCommand,
    pub reply: oneshot::Sender<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path}: another process is listening there")]
    InUse { path: PathBuf },
    #[error("control socket {path}: exists and is not a socket; remove it or choose another path")]
    NotASocket { path: PathBuf },
    #[error("control socket {path}: {reason}")]
    Io { path: PathBuf, reason: io::Error },
}

/// The bound socket; its file is removed when this is dropped.
pub struct ControlSocket {
    listener: Option<UnixListener>,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` (mode 0600). A socket file left by a dead sensor is replaced; one that
    /// another process answers on is not.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        let io_err = |reason| ControlError::Io {
            path: path.to_path_buf(),
            reason,
        };
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ControlError::NotASocket {
                    path: path.to_path_buf(),
                });
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            std::fs::remove_file(path).map_err(io_err)?;
        }
        let listener = std::os::unix::net::UnixListener::bind(path).map_err(io_err)?;
        // Connecting needs write permission on the socket file: owner only. Until this chmod the
        // mode is 0777 minus the umask, which with any usual umask already denies others write.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let listener = UnixListener::from_std(listener).map_err(io_err)?;
        Ok(Self {
            listener: Some(listener),
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves connections until the returned task is aborted. The socket file stays until this
    /// value is dropped.
    pub fn serve(&mut self, requests: mpsc::Sender<ControlRequest>) -> tokio::task::JoinHandle<()> {
        let listener = self.listener.take();
        tokio::spawn(async move {
            let Some(listener) = listener else { return };
            let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
            loop {
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let requests = requests.clone();
                tokio::spawn(async move {
                    let _ = connection(stream, requests).await;
                    drop(permit);
                });
            }
        })
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn connection(stream: UnixStream, requests: mpsc::Sender<ControlRequest>) -> io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut lines = tokio::io::BufReader::new(read.take(1 << 20));
    let mut line = String::new();
    loop {
        line.clear();
        let n = match tokio::time::timeout(IDLE, lines.read_line(&mut line)).await {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        };
        if n == 0 {
            return Ok(());
        }
        let answer = if line.len() > MAX_LINE {
            format!("error: command longer than {MAX_LINE} bytes")
        } else {
            match ControlCommand::parse(line.trim()) {
                Err(e) => format!("error: {e}"),
                Ok(ControlCommand::Help) => format!("ok: {HELP}"),
                Ok(command) => {
                    let (reply, answer) = oneshot::channel();
                    if requests
                        .send(ControlRequest { command, reply })
                        .await
                        .is_err()
                    {
                        "error: the sensor is stopping".to_string()
                    } else {
                        answer
                            .await
                            .unwrap_or_else(|_| "error: the sensor is stopping".into())
                    }
                }
            }
        };
        write.write_all(answer.as_bytes()).await?;
        write.write_all(b"\n").await?;
    }
}

/// Sends one command to the sensor at `path` and returns its answer (a blocking client, for
/// `sensor ctl` and tests).
pub fn send(path: &Path, command: &str, timeout: Duration) -> io::Result<String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(command.trim().as_bytes())?;
    stream.write_all(b"\n")?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the sensor closed the connection without an answer",
        ));
    }
    Ok(answer.trim_end().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(
            ControlCommand::parse("ports 5060, 5070-5072"),
            Ok(ControlCommand::Ports("5060,5070-5072".parse().unwrap()))
        );
        assert_eq!(
            ControlCommand::parse("action pass"),
            Ok(ControlCommand::Action(MatchAction::Pass))
        );
        assert_eq!(
            ControlCommand::parse("source-rate 100 20"),
            Ok(ControlCommand::SourceRate {
                rate: 100,
                burst: Some(20)
            })
        );
        assert_eq!(
            ControlCommand::parse(" reload "),
            Ok(ControlCommand::Reload)
        );
        for (bad, needle) in [
            ("", "empty command"),
            ("ports", "takes a list"),
            ("ports 0", "bad port `0`"),
            ("action maybe", "unknown action `maybe`"),
            ("prefix-len 2000", "bad prefix length"),
            ("reload now", "takes no argument"),
            ("frobnicate", "unknown command `frobnicate`"),
        ] {
            let e = ControlCommand::parse(bad).unwrap_err();
            assert!(e.contains(needle), "{bad:?}: {e}");
        }
    }

    #[tokio::test]
    async fn socket_answers_and_is_owner_only() {
        let path =
            std::env::temp_dir().join(format!("sensor-ctl-test-{}.sock", std::process::id()));
        let mut socket = ControlSocket::bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second sensor on the same path is refused while the first listens.
        assert!(matches!(
            ControlSocket::bind(&path),
            Err(ControlError::InUse { .. })
        ));
        let (tx, mut rx) = mpsc::channel::<ControlRequest>(4);
        let server = socket.serve(tx);
        let agent = tokio::spawn(async move {
            while let Some(request) = rx.recv().await {
                let _ = request.reply.send(format!("ok: {:?}", request.command));
            }
        });
        let p = path.clone();
        let answers = tokio::task::spawn_blocking(move || {
            [
                send(&p, "action drop", Duration::from_secs(5)).unwrap(),
                send(&p, "bogus", Duration::from_secs(5)).unwrap(),
                send(&p, "help", Duration::from_secs(5)).unwrap(),
            ]
        })
        .await
        .unwrap();
        assert_eq!(answers[0], "ok: Action(Drop)");
        assert!(answers[1].starts_with("error: unknown command `bogus`"));
        assert!(answers[2].starts_with("ok: commands:"));
        server.abort();
        agent.abort();
        drop(socket);
        assert!(!path.exists(), "socket file removed");
    }
}
