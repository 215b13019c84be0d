//! A real Kafka-protocol broker for the Kafka tests: `tansu` with in-memory storage on loopback
//! (installed by `cargo xtask setup`), owned by a guard that kills it on drop, so on success, on
//! failure and on panic alike.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream},
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rdkafka::{
    ClientConfig,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    error::RDKafkaErrorCode,
};

use crate::temp_path;

pub struct Broker {
    child: Option<Child>,
    pub port: u16,
    pub log: PathBuf,
    /// The network namespace it runs in (its loopback), or None for the test's own.
    netns: Option<String>,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl Broker {
    pub fn start() -> Self {
        Self::start_on(free_port())
    }

    /// Starts tansu on 127.0.0.1:`port` with in-memory storage and waits until it accepts
    /// connections.
    pub fn start_on(port: u16) -> Self {
        Self::start_in(None, port)
    }

    /// Starts tansu on the loopback of network namespace `netns` (e.g. a lab's darknet
    /// namespace, where a sensor under test runs).
    pub fn start_in(netns: Option<&str>, port: u16) -> Self {
        let log = temp_path(&format!("tansu-{port}.log"));
        let mut broker = Self {
            child: None,
            port,
            log,
            netns: netns.map(str::to_string),
        };
        broker.spawn();
        broker
    }

    /// Runs `f` on a thread inside the broker's namespace (client threads librdkafka starts
    /// from there stay in it).
    pub fn in_netns<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        match &self.netns {
            None => f(),
            Some(ns) => std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        let _guard = xtask::lab::NetnsGuard::enter(ns).expect("enter namespace");
                        f()
                    })
                    .join()
                    .expect("thread in namespace")
            }),
        }
    }

    fn spawn(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("broker log file");
        let log2 = log.try_clone().expect("broker log file");
        let mut command = match &self.netns {
            None => Command::new("tansu"),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "tansu"]);
                c
            }
        };
        // If the test process dies without unwinding (SIGKILL), the broker goes with it.
        // SAFETY: prctl in the child between fork and exec, async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("start tansu (cargo xtask setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        let port = self.port;
        while self
            .in_netns(|| TcpStream::connect(("127.0.0.1", port)))
            .is_err()
        {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "tansu exited with {status}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "tansu did not listen on {url} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Kills the broker (its in-memory data is gone) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// Creates a topic through the Kafka admin protocol.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        self.in_netns(|| self.create_topic_here(name, partitions))
    }

    fn create_topic_here(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", self.addr())
            .create()
            .expect("admin client");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let results = runtime
            .block_on(admin.create_topics(
                [&topic],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
            ))
            .expect("create_topics request");
        for r in results {
            match r {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, e)) => panic!("create topic {t}: {e}"),
            }
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}
