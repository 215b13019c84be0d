//! Running the agent library in a network namespace while traffic is sent from another thread.

use std::{path::Path, sync::mpsc, time::Duration};

use sensor::agent::{self, RunOptions, RunSummary};
use xtask::lab::NetnsGuard;

use crate::temp_path;

/// Runs the agent in network namespace `ns` while `send` runs in another thread; the agent
/// stops `settle` after `send` returns. Returns the summary and the NDJSON lines written (the
/// agent's other outputs are left as `options` has them).
pub fn run_agent_in(
    ns: &str,
    options: RunOptions,
    settle: Duration,
    send: impl FnOnce() + Send,
) -> (RunSummary, Vec<serde_json::Value>) {
    run_agent_watched(ns, options, settle, |_| send())
}

/// [`run_agent_in`], with `send` given the path of the NDJSON file the agent is writing, to
/// look at while the agent runs.
pub fn run_agent_watched(
    ns: &str,
    mut options: RunOptions,
    settle: Duration,
    send: impl FnOnce(&Path) + Send,
) -> (RunSummary, Vec<serde_json::Value>) {
    let output = temp_path("events.ndjson");
    options.outputs.ndjson = Some(sensor::output::Destination::File(output.clone()));
    let (attached_tx, attached_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let summary = std::thread::scope(|scope| {
        let watched = &output;
        scope.spawn(move || {
            attached_rx
                .recv_timeout(Duration::from_secs(30))
                .expect("agent attached");
            send(watched);
            let _ = done_tx.send(());
        });
        let _ns = NetnsGuard::enter(ns).expect("enter the agent's namespace");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(agent::run(
            &options,
            async {
                let _ = done_rx.await;
                tokio::time::sleep(settle).await;
            },
            |_| attached_tx.send(()).unwrap(),
        ))
    })
    .expect("agent run");
    let docs = read_ndjson(&output);
    let _ = std::fs::remove_file(&output);
    (summary, docs)
}

pub fn read_ndjson(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .expect("events file")
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}
