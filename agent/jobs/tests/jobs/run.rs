//! Jobs run by the real OCI runtime (runc): output and exit codes, limits,
//! isolation, cancellation, deadlines, CDI injection and crash recovery.
//! Each test skips with a printed reason when runc or root is missing.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use plinth_jobs::engine::{Engine, JobState};
use plinth_jobs::protocol::{EndReason, JobResult, ShimIdentity, process_start_time};
use plinth_jobs::spec::JobSpec;

use crate::common::{TestEnv, runtime_available};

const WAIT: Duration = Duration::from_secs(60);

fn run_job(env: &TestEnv, job_id: &str, spec: &JobSpec) -> JobResult {
    env.engine.prepare(job_id, spec, &[], &mut |_| {}).unwrap();
    env.engine.start(job_id).unwrap();
    env.engine.wait(job_id, WAIT).unwrap()
}

fn stdout(env: &TestEnv, job_id: &str) -> String {
    // The log appears when the supervisor starts.
    fs::read_to_string(env.engine.log_path(job_id, false).unwrap()).unwrap_or_default()
}

fn stderr(env: &TestEnv, job_id: &str) -> String {
    fs::read_to_string(env.engine.log_path(job_id, true).unwrap()).unwrap()
}

fn assert_container_gone(env: &TestEnv, job_id: &str) {
    let state = env
        .engine
        .runtime()
        .state(&Engine::container_id(job_id))
        .unwrap();
    assert!(
        state.is_none(),
        "container of {job_id} still exists: {state:?}"
    );
}

#[test]
fn output_and_exit_code_are_recorded() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let spec = env.spec(&[
        "/bin/sh",
        "-c",
        "echo hello; echo oops >&2; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; exit 3",
    ]);
    let result = run_job(&env, "exit3", &spec);
    assert_eq!(result.reason, EndReason::Exited, "{result:?}");
    assert_eq!(result.exit_code, Some(3));
    assert_eq!(stdout(&env, "exit3"), "hello\n");
    assert_eq!(stderr(&env, "exit3"), "oops\n");
    assert!(result.usage.cpu_ns > 0, "{:?}", result.usage);
    assert!(result.usage.peak_memory_bytes > 0, "{:?}", result.usage);
    assert!(result.usage.peak_pids >= 1, "{:?}", result.usage);
    assert!(
        result
            .started_at_ms
            .is_some_and(|s| s <= result.ended_at_ms)
    );
    assert!(matches!(
        result.usage.gpu,
        plinth_jobs::meter::GpuUsage::Absent { .. }
    ));
    assert_container_gone(&env, "exit3");
    // A clean exit is a success.
    let result = run_job(&env, "exit0", &env.spec(&["/bin/true"]));
    assert!(result.succeeded(), "{result:?}");
}

#[test]
fn rootfs_is_read_only_scratch_is_writable_and_user_is_not_root() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let spec = env.spec(&[
        "/bin/sh",
        "-c",
        "touch /bin/evil 2>/dev/null && echo rootfs-writable; \
         touch /etc/evil 2>/dev/null && echo etc-writable; \
         echo data > /scratch/out/result.txt && echo scratch-ok; \
         touch /tmp/t && echo tmp-ok; grep ' / ' /proc/mounts | grep -q ' ro,' && echo root-ro; id -u; id -g",
    ]);
    let result = run_job(&env, "ro", &spec);
    assert!(result.succeeded(), "{result:?} {}", stderr(&env, "ro"));
    let out = stdout(&env, "ro");
    assert_eq!(out, "scratch-ok\ntmp-ok\nroot-ro\n65534\n65534\n", "{out}");
    let job_dir = env.engine.job_dir("ro").unwrap();
    assert_eq!(
        fs::read_to_string(job_dir.join("scratch/out/result.txt")).unwrap(),
        "data\n"
    );
    let image = env
        .engine
        .images()
        .import(&spec.image, &mut |_| {})
        .unwrap();
    assert!(!image.rootfs.join("bin/evil").exists());
}

#[test]
fn network_is_only_loopback() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let result = run_job(
        &env,
        "net",
        &env.spec(&["/bin/sh", "-c", "ls /sys/class/net; cat /proc/net/dev"]),
    );
    assert!(result.succeeded(), "{result:?} {}", stderr(&env, "net"));
    let out = stdout(&env, "net");
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("lo"), "{out}");
    let interfaces: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split_once(':').map(|(name, _)| name.trim()))
        .filter(|name| !name.contains('|') && !name.is_empty())
        .collect();
    assert_eq!(interfaces, vec!["lo"], "{out}");
}

#[test]
fn memory_limit_is_enforced() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let mut spec = env.spec(&[
        "/bin/sh",
        "-c",
        "dd if=/dev/zero of=/dev/null bs=96M count=1 && echo survived",
    ]);
    spec.resources.memory_bytes = 32 * 1024 * 1024;
    let result = run_job(&env, "oom", &spec);
    assert_eq!(
        result.reason,
        EndReason::OomKilled,
        "{result:?} {}",
        stderr(&env, "oom")
    );
    assert!(result.usage.oom_kills >= 1);
    assert!(!stdout(&env, "oom").contains("survived"));
    assert!(
        result.usage.peak_memory_bytes <= 32 * 1024 * 1024,
        "{:?}",
        result.usage
    );
}

#[test]
fn pids_limit_is_enforced() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let mut spec = env.spec(&[
        "/bin/sh",
        "-c",
        "n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16; do sleep 2 & n=$((n+1)); done; wait; echo done",
    ]);
    spec.resources.pids = 6;
    let result = run_job(&env, "pids", &spec);
    let err = stderr(&env, "pids");
    assert!(err.contains("fork"), "no fork failure in stderr: {err:?}");
    assert!(result.usage.peak_pids <= 6, "{:?}", result.usage);
}

#[test]
fn deadline_sends_term_then_kill() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    // The shell is the namespace's init: it ignores SIGTERM, so SIGKILL follows the grace period.
    let mut spec = env.spec(&["/bin/sh", "-c", "echo started; sleep 60; echo not-reached"]);
    spec.resources.max_duration_s = 1;
    let began = Instant::now();
    let result = run_job(&env, "deadline", &spec);
    let elapsed = began.elapsed();
    assert_eq!(result.reason, EndReason::TimedOut, "{result:?}");
    assert_eq!(result.signal, Some(9), "{result:?}");
    assert!(
        result.usage.wall_ms >= 1000 && result.usage.wall_ms < 5000,
        "{:?}",
        result.usage
    );
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(stdout(&env, "deadline"), "started\n");
    assert_container_gone(&env, "deadline");
}

#[test]
fn cancellation_stops_the_job() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    // This init traps SIGTERM and exits cleanly: the grace period is honoured.
    let spec = env.spec(&[
        "/bin/sh",
        "-c",
        "trap 'echo got-term; exit 143' TERM; echo ready; while true; do sleep 0.05; done",
    ]);
    env.engine
        .prepare("cancel", &spec, &[], &mut |_| {})
        .unwrap();
    env.engine.start("cancel").unwrap();
    let began = Instant::now();
    while !stdout(&env, "cancel").contains("ready") {
        assert!(began.elapsed() < WAIT, "job never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(matches!(
        env.engine.state("cancel").unwrap(),
        JobState::Running(_)
    ));
    env.engine.cancel("cancel").unwrap();
    let result = env.engine.wait("cancel", WAIT).unwrap();
    assert_eq!(result.reason, EndReason::Cancelled, "{result:?}");
    assert_eq!(result.exit_code, Some(143), "{result:?}");
    assert!(stdout(&env, "cancel").contains("got-term"));
}

#[test]
fn logs_are_capped_with_a_marker() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let spec = env.spec(&["/bin/sh", "-c", "seq 1 100000"]);
    let result = run_job(&env, "biglog", &spec);
    assert!(result.succeeded(), "{result:?}");
    let out = stdout(&env, "biglog");
    assert!(out.len() as u64 <= 64 * 1024 + 128, "{}", out.len());
    assert!(out.starts_with("[plinth: "), "{}", &out[..80]);
    assert!(out.ends_with("\n100000\n"));
    assert!(result.stdout_dropped_bytes > 500_000, "{result:?}");
}

#[test]
fn cdi_fixture_device_is_injected() {
    if !runtime_available() {
        return;
    }
    let cdi = tempfile::tempdir().unwrap();
    // Against a runner, the spec must be in one of the runner's CDI directories (it
    // trusts no other), which its test set-up names.
    let cdi_dir = std::env::var_os("PLINTH_TEST_CDI_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| cdi.path().to_path_buf());
    // TEST FIXTURE: a fake "GPU" vendor whose device node is /dev/null.
    fs::write(
        cdi_dir.join("fixture-gpu.yaml"),
        "cdiVersion: \"0.6.0\"\nkind: test.plinth.invalid/gpu\ndevices:\n  - name: \"0\"\n    containerEdits:\n      deviceNodes:\n        - path: /dev/fixture-gpu0\n          hostPath: /dev/null\n      env: [\"FIXTURE_GPU_VISIBLE=0\"]\n  - name: \"1\"\n    containerEdits:\n      deviceNodes:\n        - path: /dev/fixture-gpu1\n          hostPath: /dev/null\n",
    )
    .unwrap();
    let env = TestEnv::new(Some(cdi_dir.clone()));
    let mut spec = env.spec(&[
        "/bin/sh",
        "-c",
        "echo $FIXTURE_GPU_VISIBLE; ls /dev | grep fixture; echo x > /dev/fixture-gpu0 && echo writable",
    ]);
    spec.gpus.count = 1;
    env.engine
        .prepare(
            "cdi",
            &spec,
            &["test.plinth.invalid/gpu=0".to_string()],
            &mut |_| {},
        )
        .unwrap();
    env.engine.start("cdi").unwrap();
    let result = env.engine.wait("cdi", WAIT).unwrap();
    assert!(result.succeeded(), "{result:?} {}", stderr(&env, "cdi"));
    assert_eq!(stdout(&env, "cdi"), "0\nfixture-gpu0\nwritable\n");
    // A device the host does not define is refused before anything runs.
    let err = env
        .engine
        .prepare(
            "cdi2",
            &spec,
            &["test.plinth.invalid/gpu=9".to_string()],
            &mut |_| {},
        )
        .unwrap_err();
    assert!(plinth_toolbox::error_chain(&err).contains("gpu=9"), "{err}");
}

#[test]
fn second_job_on_the_same_image_uses_the_cache() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    let spec = env.spec(&["/bin/true"]);
    let mut first = Vec::new();
    env.engine
        .prepare("c1", &spec, &[], &mut |e| first.push(e))
        .unwrap();
    let mut second = Vec::new();
    env.engine
        .prepare("c2", &spec, &[], &mut |e| second.push(e))
        .unwrap();
    assert!(first.len() > 1, "{first:?}");
    assert_eq!(second, vec![plinth_jobs::image::ImportProgress::CacheHit]);
}

fn wait_for_running(env: &TestEnv, job_id: &str) {
    let began = Instant::now();
    loop {
        if let Ok(JobState::Running(Some(state))) = env.engine.state(job_id)
            && state.started_at_ms.is_some()
        {
            return;
        }
        assert!(began.elapsed() < WAIT, "{job_id} never ran");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn agent_restart_re_adopts_and_supervisor_loss_is_accounted_once() {
    if !runtime_available() {
        return;
    }
    let env = TestEnv::new(None);
    // 1. The agent restarts while the supervisor lives: the job is re-adopted.
    env.engine
        .prepare(
            "adopt",
            &env.spec(&["/bin/sh", "-c", "sleep 1; echo finished"]),
            &[],
            &mut |_| {},
        )
        .unwrap();
    env.engine.start("adopt").unwrap();
    wait_for_running(&env, "adopt");
    let restarted = Engine::new(env.config.clone()).unwrap();
    assert!(matches!(
        restarted.recover("adopt").unwrap(),
        JobState::Running(_)
    ));
    let result = restarted.wait("adopt", WAIT).unwrap();
    assert!(result.succeeded(), "{result:?}");
    assert_eq!(stdout(&env, "adopt"), "finished\n");

    // 2. The supervisor is killed with SIGKILL: the container is ended and
    //    billed exactly once, by whichever recovery gets there first.
    if crate::common::runner_socket().is_some() {
        // An unprivileged agent cannot signal the runner's (root) supervisors, which
        // is the point; plinth-runner's own tests kill one as root.
        eprintln!("skipping the supervisor-loss half: the supervisor belongs to plinth-runner");
        return;
    }
    env.engine
        .prepare(
            "lost",
            &env.spec(&["/bin/sh", "-c", "while true; do sleep 0.1; done"]),
            &[],
            &mut |_| {},
        )
        .unwrap();
    env.engine.start("lost").unwrap();
    wait_for_running(&env, "lost");
    std::thread::sleep(Duration::from_millis(1200));
    let job_dir = env.engine.job_dir("lost").unwrap();
    let identity: ShimIdentity =
        serde_json::from_slice(&fs::read(job_dir.join("shim.pid")).unwrap()).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(identity.pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Wait until the supervisor is reaped, not merely a zombie: a killed process's
    // leader reads as a zombie while its other threads may still be exiting (and
    // holding its descriptors); the kernel lets the parent reap it only once the
    // whole thread group is gone.
    let began = Instant::now();
    while process_start_time(identity.pid) == Some(identity.start_time) {
        // Our engine is its parent: reaping happens in state().
        let _ = env.engine.state("lost");
        assert!(began.elapsed() < WAIT, "the supervisor was never reaped");
        std::thread::sleep(Duration::from_millis(10));
    }
    let restarted = Engine::new(env.config.clone()).unwrap();
    // The supervisor is gone, so its lock is gone: the engine only tests the lock
    // (F_OFD_GETLK) and never holds it, so no child another test thread forks can
    // keep it alive. The job is orphaned at once, without retrying.
    assert_eq!(restarted.state("lost").unwrap(), JobState::Orphaned);
    let JobState::Finished(first) = restarted.recover("lost").unwrap() else {
        panic!("recovery did not finish the job");
    };
    assert_eq!(first.reason, EndReason::SupervisorLost, "{first:?}");
    assert!(first.usage.wall_ms >= 1000, "{:?}", first.usage);
    assert_container_gone(&env, "lost");
    let JobState::Finished(again) = restarted.recover("lost").unwrap() else {
        panic!("second recovery changed the state");
    };
    assert_eq!(again, first, "a second recovery must not bill again");
    assert!(Path::new(&job_dir.join("result.json")).exists());
}
