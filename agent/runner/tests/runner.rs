//! plinth-runner as the packaged system runs it: the real binary as root on
//! its socket, runc, a busybox image prepared by the real engine.
//!
//! - every tampered bundle (privileged, an extra capability, a host mount, the
//!   host pid namespace, a namespace joined by path, a device outside CDI, a
//!   hook, a rootfs outside the image cache, a job directory outside the state
//!   directory or reached through a symlink) is refused when sent over the
//!   socket directly, with the reason in the answer and in the runner's log,
//!   and nothing runs;
//! - a peer that is not the agent user is refused before its request is read;
//! - an unprivileged agent (uid 65534, this test binary re-run as `nobody`)
//!   runs, cancels and removes jobs through the runner.
//!
//! Each test skips with a printed reason when root, runc or busybox is missing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use plinth_jobs::engine::{Engine, EngineConfig};
use plinth_jobs::protocol::EndReason;
use plinth_jobs::runner_client::{RunnerClient, RunnerClientError, RunnerRequest};
use plinth_jobs::spec::{GpuRequest, ImageRef, ImageSource, JobSpec, Network, Outputs, Resources};
use plinth_jobs::unpack::UnpackLimits;
use serde_json::{Value, json};

const NOBODY: u32 = 65534;
const WAIT: Duration = Duration::from_secs(60);

fn available() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipping: plinth-runner's tests need root (the runner is privileged)");
        return false;
    }
    if !plinth_tests::on_path("runc") {
        eprintln!("skipping: runc is not installed");
        return false;
    }
    if !Path::new("/bin/busybox").exists() {
        eprintln!("skipping: /bin/busybox (busybox-static) is not installed");
        return false;
    }
    true
}

/// A runner process on a socket in a temporary directory.
struct RunnerProcess {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl RunnerProcess {
    fn start(base: &Path, agent_user: &str, extra: &str) -> RunnerProcess {
        let socket = base.join("run/runner.sock");
        let config = base.join("runner.toml");
        fs::write(
            &config,
            format!(
                "socket = {socket:?}\nsocket_group = \"0\"\nagent_user = {agent_user:?}\n\
                 state_dir = {:?}\nimage_dirs = [{:?}]\nrunner_dir = {:?}\n\
                 runtime_root = {:?}\ncdi_dirs = [{:?}]\ncgroup_parent = {:?}\n{extra}",
                base.join("state/jobs"),
                base.join("state/images"),
                base.join("runner"),
                base.join("runc"),
                base.join("cdi"),
                cgroup_parent(),
            ),
        )
        .unwrap();
        let log = base.join("runner.log");
        let child = Command::new(env!("CARGO_BIN_EXE_plinth-runner"))
            .arg("--config")
            .arg(&config)
            .arg("run")
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let began = Instant::now();
        while !socket.exists() {
            assert!(
                began.elapsed() < WAIT,
                "the runner never listened: {}",
                fs::read_to_string(&log).unwrap()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        RunnerProcess { child, socket, log }
    }

    fn client(&self) -> RunnerClient {
        RunnerClient::new(&self.socket)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RunnerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn cgroup_parent() -> String {
    // The agent role (a child process) uses its parent's, which the runner was given.
    std::env::var("PLINTH_RUNNER_TEST_CGROUP_PARENT")
        .unwrap_or_else(|_| format!("plinth-runner-test-{}", std::process::id()))
}

fn engine_config(base: &Path, runner_socket: Option<PathBuf>) -> EngineConfig {
    EngineConfig {
        jobs_dir: base.join("state/jobs"),
        image_store: base.join("state/images"),
        image_roots: vec![base.join("import")],
        runtime_binary: PathBuf::from("runc"),
        runtime_root: base.join("runc"),
        shim_binary: PathBuf::from("/nonexistent/plinth-job-shim"),
        shim_args: Vec::new(),
        cdi_dirs: vec![base.join("cdi")],
        cgroup_parent: cgroup_parent(),
        log_cap_bytes: 64 * 1024,
        kill_grace: Duration::from_millis(300),
        unpack_limits: UnpackLimits::default(),
        registry: Default::default(),
        cache_max_bytes: 0,
        runner_socket,
    }
}

fn spec(base: &Path, command: &[&str]) -> JobSpec {
    JobSpec {
        format: "plinth-job/1".into(),
        image: ImageRef {
            source: ImageSource::OciLayout,
            path: base.join("import/busybox"),
            reference: Some("latest".into()),
            digest: None,
        },
        command: command.iter().map(|s| s.to_string()).collect(),
        env: Default::default(),
        workdir: None,
        gpus: GpuRequest::default(),
        resources: Resources {
            cpu: Some(1.0),
            memory_bytes: 64 * 1024 * 1024,
            pids: 64,
            max_duration_s: 60,
        },
        network: Network::None,
        outputs: Outputs::default(),
    }
}

/// The directories of a test: state, image import, CDI (with a fixture spec).
fn layout(base: &Path) {
    for dir in ["state/jobs", "state/images", "import", "cdi", "run"] {
        fs::create_dir_all(base.join(dir)).unwrap();
    }
    plinth_tests::busybox_layout(
        &base.join("work"),
        &base.join("import/busybox"),
        &["sh", "echo", "sleep", "cat"],
    )
    .unwrap();
    // TEST FIXTURE: a fake "GPU" vendor whose device node is /dev/null.
    fs::write(
        base.join("cdi/fixture-gpu.yaml"),
        "cdiVersion: \"0.6.0\"\nkind: test.plinth.invalid/gpu\ndevices:\n  - name: \"0\"\n    containerEdits:\n      deviceNodes:\n        - path: /dev/fixture-gpu0\n          hostPath: /dev/null\n",
    )
    .unwrap();
}

fn config_path(engine: &Engine, job: &str) -> PathBuf {
    engine.job_dir(job).unwrap().join("bundle/config.json")
}

fn tamper(engine: &Engine, job: &str, edit: impl FnOnce(&mut Value)) {
    let path = config_path(engine, job);
    let mut value: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_vec(&value).unwrap()).unwrap();
}

fn refusal(result: Result<(), RunnerClientError>) -> String {
    match result {
        Err(RunnerClientError::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn pushed(value: &mut Value, pointer: &str, item: Value) {
    value
        .pointer_mut(pointer)
        .and_then(Value::as_array_mut)
        .unwrap_or_else(|| panic!("{pointer} is not an array"))
        .push(item);
}

#[test]
fn tampered_bundles_are_refused_over_the_socket() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    layout(base);
    // The "agent" here is this test (root), so the credential check passes and only
    // the re-validation stands between a hostile bundle and the host.
    let runner = RunnerProcess::start(base, "0", "");
    let engine = Engine::new(engine_config(base, None)).unwrap();
    let client = runner.client();
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit, &str)> = vec![
        (
            "privileged",
            Box::new(|v: &mut Value| {
                let all = json!(["CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_SYS_MODULE"]);
                for set in ["bounding", "effective", "permitted"] {
                    v["process"]["capabilities"][set] = all.clone();
                }
                v["linux"]["maskedPaths"] = json!([]);
                v["linux"]["readonlyPaths"] = json!([]);
            }),
            "process.capabilities.bounding: CAP_NET_ADMIN is not allowed (allowed: none)",
        ),
        (
            "extra-cap",
            Box::new(|v: &mut Value| {
                v["process"]["capabilities"]["ambient"] = json!(["CAP_NET_RAW"]);
            }),
            "process.capabilities.ambient: CAP_NET_RAW is not allowed (allowed: none)",
        ),
        (
            "no-caps-field",
            Box::new(|v: &mut Value| {
                v["process"].as_object_mut().unwrap().remove("capabilities");
            }),
            "process.capabilities: missing",
        ),
        (
            "host-mount",
            Box::new(|v: &mut Value| {
                pushed(
                    v,
                    "/mounts",
                    json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rw"]}),
                );
            }),
            "mounts: /host from / (type bind) is not allowed",
        ),
        (
            "host-proc",
            Box::new(|v: &mut Value| {
                pushed(
                    v,
                    "/mounts",
                    json!({"destination": "/hostproc", "type": "proc", "source": "proc"}),
                );
            }),
            "proc belongs at /proc",
        ),
        (
            "host-pid",
            Box::new(|v: &mut Value| {
                let namespaces = v["linux"]["namespaces"].as_array_mut().unwrap();
                namespaces.retain(|n| n["type"] != "pid");
            }),
            "no new pid namespace: the job would share the host's",
        ),
        (
            "join-host-net",
            Box::new(|v: &mut Value| {
                for n in v["linux"]["namespaces"].as_array_mut().unwrap() {
                    if n["type"] == "network" {
                        n["path"] = json!("/proc/1/ns/net");
                    }
                }
            }),
            "joins the existing namespace /proc/1/ns/net",
        ),
        (
            "host-net",
            Box::new(|v: &mut Value| {
                let namespaces = v["linux"]["namespaces"].as_array_mut().unwrap();
                namespaces.retain(|n| n["type"] != "network");
            }),
            "allow_host_network = false",
        ),
        (
            "device",
            Box::new(|v: &mut Value| {
                v["linux"]["devices"] =
                    json!([{"path": "/dev/sda", "type": "b", "major": 8, "minor": 0}]);
            }),
            "linux.devices: /dev/sda (8:0) is not a device of the runner's CDI specs",
        ),
        (
            "device-rule",
            Box::new(|v: &mut Value| {
                pushed(
                    v,
                    "/linux/resources/devices",
                    json!({"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rwm"}),
                );
            }),
            "linux.resources.devices: allows",
        ),
        (
            "hook",
            Box::new(|v: &mut Value| {
                v["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "id > /tmp/pwned"]}]});
            }),
            "hooks.createRuntime: /bin/sh is not a hook of the runner's CDI specs",
        ),
        (
            "rootfs",
            Box::new(|v: &mut Value| {
                v["root"]["path"] = json!("/");
            }),
            "root.path /: is not an image of the runner's image_dirs",
        ),
        (
            "rootfs-rw",
            Box::new(|v: &mut Value| {
                v["root"]["readonly"] = json!(false);
            }),
            "root.readonly: must be true",
        ),
        (
            "no-seccomp",
            Box::new(|v: &mut Value| {
                v["linux"].as_object_mut().unwrap().remove("seccomp");
            }),
            "linux.seccomp: missing",
        ),
        (
            "cgroup",
            Box::new(|v: &mut Value| {
                v["linux"]["cgroupsPath"] = json!("/");
            }),
            "linux.cgroupsPath",
        ),
    ];
    for (job, edit, expected) in cases {
        engine
            .prepare(job, &spec(base, &["/bin/echo", "ran"]), &[], &mut |_| {})
            .unwrap();
        tamper(&engine, job, edit);
        let job_dir = engine.job_dir(job).unwrap();
        let reason = refusal(client.start(&job_dir));
        assert!(reason.contains(expected), "{job}: {reason}");
        // Nothing ran: no supervisor output, no container, and the runner logged why.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!job_dir.join("result.json").exists(), "{job} ran");
        assert!(
            engine
                .runtime()
                .state(&Engine::container_id(job))
                .unwrap()
                .is_none()
        );
        assert!(
            runner.log().contains(expected),
            "{job}: the runner did not log the reason: {}",
            runner.log()
        );
    }

    // Paths: outside the state directory, through a symlink, not a directory of the agent.
    let outside = base.join("elsewhere/jobs/j1");
    fs::create_dir_all(&outside).unwrap();
    let reason = refusal(client.start(&outside));
    assert!(
        reason.contains("is outside the state directory"),
        "{reason}"
    );
    let link = base.join("state/jobs/linked");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let reason = refusal(client.start(&link));
    assert!(reason.contains("through a symlink"), "{reason}");
    let reason = refusal(client.start(Path::new("relative/jobs/j1")));
    assert!(reason.contains("not absolute"), "{reason}");
    let reason = refusal(client.start(&base.join("state/jobs/../../elsewhere/jobs/j1")));
    assert!(
        reason.contains("through a symlink") || reason.contains("outside"),
        "{reason}"
    );
    // A symlinked bundle file is not followed.
    engine
        .prepare("linkedcfg", &spec(base, &["/bin/echo"]), &[], &mut |_| {})
        .unwrap();
    let cfg = config_path(&engine, "linkedcfg");
    fs::remove_file(&cfg).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", &cfg).unwrap();
    let reason = refusal(client.start(&engine.job_dir("linkedcfg").unwrap()));
    assert!(reason.contains("config.json"), "{reason}");
    // Container ids that are not jobs' are refused for state, kill and delete.
    for request in [
        RunnerRequest::Delete {
            container_id: "../../etc".into(),
        },
        RunnerRequest::State {
            container_id: "other-container".into(),
        },
    ] {
        let err = client.call(&request).unwrap_err();
        assert!(err.to_string().contains("is not a job's"), "{err}");
    }

    // The untampered bundle of a job with a CDI device runs.
    let mut with_gpu = spec(
        base,
        &["/bin/sh", "-c", "echo ok > /dev/fixture-gpu0 && echo ran"],
    );
    with_gpu.gpus.count = 1;
    engine
        .prepare(
            "good",
            &with_gpu,
            &["test.plinth.invalid/gpu=0".into()],
            &mut |_| {},
        )
        .unwrap();
    let runner_engine = Engine::new(engine_config(base, Some(runner.socket.clone()))).unwrap();
    runner_engine.start("good").unwrap();
    let result = runner_engine.wait("good", WAIT).unwrap();
    assert!(result.succeeded(), "{result:?} {}", runner.log());
    assert_eq!(
        fs::read_to_string(engine.log_path("good", false).unwrap()).unwrap(),
        "ran\n"
    );
}

#[test]
fn a_peer_that_is_not_the_agent_is_refused() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    layout(dir.path());
    let runner = RunnerProcess::start(dir.path(), &NOBODY.to_string(), "");
    let err = runner
        .client()
        .start(&dir.path().join("state/jobs/j1"))
        .unwrap_err();
    assert!(err.to_string().contains("peer uid 0"), "{err}");
    assert!(
        runner.log().contains("refused connection"),
        "{}",
        runner.log()
    );
}

/// Run as `nobody` by [`an_unprivileged_agent_runs_jobs_through_the_runner`].
fn agent_role(base: &Path, socket: &Path) {
    assert_eq!(nix::unistd::geteuid().as_raw(), NOBODY);
    let engine = Engine::new(engine_config(base, Some(socket.to_path_buf()))).unwrap();
    // Output, exit code, logs readable by the agent.
    let job = spec(
        base,
        &["/bin/sh", "-c", "echo hello; echo out > /scratch/f; exit 3"],
    );
    engine.prepare("plain", &job, &[], &mut |_| {}).unwrap();
    engine.start("plain").unwrap();
    let result = engine.wait("plain", WAIT).unwrap();
    assert_eq!(result.reason, EndReason::Exited, "{result:?}");
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(
        fs::read_to_string(engine.log_path("plain", false).unwrap()).unwrap(),
        "hello\n"
    );
    // Cancellation through the job directory.
    let job = spec(base, &["/bin/sh", "-c", "while true; do sleep 0.1; done"]);
    engine.prepare("long", &job, &[], &mut |_| {}).unwrap();
    engine.start("long").unwrap();
    let began = Instant::now();
    while !matches!(
        engine.state("long").unwrap(),
        plinth_jobs::engine::JobState::Running(Some(_))
    ) {
        assert!(began.elapsed() < WAIT, "long never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    // The agent cannot signal the runner's (root) supervisor itself.
    let identity: plinth_jobs::protocol::ShimIdentity = serde_json::from_slice(
        &fs::read(engine.job_dir("long").unwrap().join("shim.pid")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(identity.pid),
            nix::sys::signal::Signal::SIGKILL
        ),
        Err(nix::errno::Errno::EPERM)
    );
    engine.cancel("long").unwrap();
    let result = engine.wait("long", WAIT).unwrap();
    assert_eq!(result.reason, EndReason::Cancelled, "{result:?}");
    // Removal of a job whose outputs belong to the job's user goes through the runner.
    engine.remove("plain").unwrap();
    assert!(!engine.job_dir("plain").unwrap().exists());
    println!("agent role: all checks passed");
}

#[test]
fn an_unprivileged_agent_runs_jobs_through_the_runner() {
    if let (Some(base), Some(socket)) = (
        std::env::var_os("PLINTH_RUNNER_TEST_AGENT_BASE"),
        std::env::var_os("PLINTH_RUNNER_TEST_AGENT_SOCKET"),
    ) {
        agent_role(Path::new(&base), Path::new(&socket));
        return;
    }
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path();
    fs::set_permissions(base, fs::Permissions::from_mode(0o755)).unwrap();
    layout(base);
    // The agent's directories belong to the agent user, as the package's tmpfiles set up.
    for sub in ["state", "state/jobs", "state/images", "import"] {
        let path = base.join(sub);
        nix::unistd::chown(
            &path,
            Some(nix::unistd::Uid::from_raw(NOBODY)),
            Some(nix::unistd::Gid::from_raw(NOBODY)),
        )
        .unwrap();
    }
    Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(base.join("import"))
        .status()
        .unwrap();
    let runner = RunnerProcess::start(base, &NOBODY.to_string(), "");
    nix::unistd::chown(
        &runner.socket,
        Some(nix::unistd::Uid::from_raw(0)),
        Some(nix::unistd::Gid::from_raw(NOBODY)),
    )
    .unwrap();
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_unprivileged_agent_runs_jobs_through_the_runner",
            "--nocapture",
        ])
        .env("PLINTH_RUNNER_TEST_AGENT_BASE", base)
        .env("PLINTH_RUNNER_TEST_AGENT_SOCKET", &runner.socket)
        .env("PLINTH_RUNNER_TEST_CGROUP_PARENT", cgroup_parent())
        .env("HOME", "/nonexistent")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "agent role failed: {text}\nrunner log: {}",
        runner.log()
    );
    assert!(text.contains("agent role: all checks passed"), "{text}");
}
