//! The `sensor` binary as a process in a lab namespace: started, waited for until it has
//! attached, its stderr collected, stopped by a signal. Dropping it kills a sensor still running,
//! so a failing test leaves no agent (and so no attachment) behind.

use std::{
    io::BufRead as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    time::{Duration, Instant},
};

use sensor::privilege::Credentials;

pub struct SensorProcess {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    reader: Option<std::thread::JoinHandle<()>>,
    attached: mpsc::Receiver<String>,
}

/// How the sensor ended.
pub struct Ended {
    pub status: ExitStatus,
    pub stderr: String,
    /// How long it took from the signal to the exit.
    pub took: Duration,
}

impl SensorProcess {
    /// Starts `command` (the sensor, possibly behind `ip netns exec` and other wrappers that exec
    /// it) with stderr captured.
    pub fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the sensor");
        let stderr = child.stderr.take().expect("stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, attached) = mpsc::channel();
        let collected = lines.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if line.contains("attached to") {
                    let _ = tx.send(line.clone());
                }
                collected.lock().expect("lines").push(line);
            }
        });
        Self {
            child,
            lines,
            reader: Some(reader),
            attached,
        }
    }

    /// `sensor run ARGS` in network namespace `ns`.
    pub fn run_in(ns: &str, args: &[&str]) -> Self {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", ns])
            .arg(crate::sensor_binary())
            .arg("run")
            .args(args);
        Self::spawn(command)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the attach message (30 s at most); panics with the stderr so far if it does
    /// not come.
    pub fn wait_attached(&self) -> String {
        match self.attached.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => line,
            Err(_) => panic!("the sensor did not attach:\n{}", self.stderr_so_far()),
        }
    }

    pub fn stderr_so_far(&self) -> String {
        self.lines.lock().expect("lines").join("\n")
    }

    /// Waits until a stderr line contains `needle` (for `deadline` at most).
    pub fn wait_for_line(&self, needle: &str, deadline: Duration) -> Option<String> {
        let start = Instant::now();
        while start.elapsed() < deadline {
            if let Some(line) = self
                .lines
                .lock()
                .expect("lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return Some(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The credentials of the running sensor, and those of each of its threads.
    pub fn credentials(&self) -> (Credentials, Vec<Credentials>) {
        let pid = self.pid().to_string();
        let process = Credentials::of(&pid).expect("read /proc/PID/status");
        let threads = std::fs::read_dir(format!("/proc/{pid}/task"))
            .expect("list threads")
            .filter_map(Result::ok)
            .map(|t| {
                Credentials::of(&format!("{pid}/task/{}", t.file_name().to_string_lossy()))
                    .expect("read a thread's status")
            })
            .collect();
        (process, threads)
    }

    pub fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, signal) };
    }

    /// Sends `signal` and waits for the exit (60 s at most: a sensor that does not exit by then
    /// is killed and the test fails).
    pub fn stop(mut self, signal: libc::c_int) -> Ended {
        let start = Instant::now();
        self.signal(signal);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the sensor did not exit within 60 s of signal {signal}:\n{}",
                    self.stderr_so_far()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let took = start.elapsed();
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        Ended {
            status,
            stderr: self.stderr_so_far(),
            took,
        }
    }
}

impl Drop for SensorProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A counter of the sensor's final report (`  kernel.emitted   20`).
pub fn final_counter(stderr: &str, name: &str) -> Option<u64> {
    stderr.lines().find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next()? == name).then_some(())?;
        parts.next()?.parse().ok()
    })
}

/// Removes a path (file or directory) when dropped.
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let path: &Path = &self.0;
        if path.is_dir() {
            let _ = std::fs::remove_dir_all(path);
        } else {
            let _ = std::fs::remove_file(path);
        }
    }
}
