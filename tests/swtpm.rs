//! A real software TPM for tests: swtpm manufactured by `swtpm_setup --create-ek-cert`,
//! so its EK certificates chain to a real local CA (swtpm_localca: root -> intermediate
//! -> EK), and served on TCP for libtss2's `swtpm` TCTI and tpm2-tools.
//!
//! Manufacturing takes a few seconds, so each test process manufactures one TPM and
//! [`Swtpm::start`] starts copies of it (same seeds, same EK, fresh PCRs);
//! [`Swtpm::start_distinct`] manufactures a TPM of its own, with other seeds but
//! certificates from the same CA (the "second TPM" an attacker would bring).
//! [`available`] says, with the reason printed, whether swtpm and its tools are here.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::on_path;

/// The tools these helpers run.
const TOOLS: &[(&str, &str)] = &[
    ("swtpm", "swtpm"),
    ("swtpm_setup", "swtpm-tools"),
    ("swtpm_localca", "swtpm-tools"),
    ("certtool", "gnutls-bin"),
    ("tpm2_quote", "tpm2-tools"),
];

/// Whether swtpm, swtpm-tools, gnutls' certtool and tpm2-tools are installed; prints
/// why `what` is skipped when not.
pub fn available(what: &str) -> bool {
    match TOOLS.iter().find(|(tool, _)| !on_path(tool)) {
        Some((tool, package)) => {
            eprintln!("SKIP {what}: {tool} is not installed (apt-get install {package})");
            false
        }
        None => true,
    }
}

/// The local CA that signs every EK certificate of this process's TPMs.
#[derive(Debug)]
pub struct LocalCa {
    dir: PathBuf,
}

impl LocalCa {
    /// The root CA certificate (PEM).
    pub fn root(&self) -> PathBuf {
        self.dir.join("swtpm-localca-rootca-cert.pem")
    }

    /// The intermediate (issuer) certificate (PEM).
    pub fn intermediate(&self) -> PathBuf {
        self.dir.join("issuercert.pem")
    }

    /// Intermediate then root, as one PEM bundle (what a verifier is given as EK CAs).
    pub fn bundle(&self) -> io::Result<Vec<u8>> {
        let mut bundle = std::fs::read(self.intermediate())?;
        bundle.extend(std::fs::read(self.root())?);
        Ok(bundle)
    }
}

struct Manufactured {
    _work: tempfile::TempDir,
    ca: LocalCa,
    template: PathBuf,
    setup_conf: PathBuf,
}

static MANUFACTURED: OnceLock<Result<Manufactured, String>> = OnceLock::new();
/// swtpm_localca keeps a serial-number file: one manufacture at a time.
static MANUFACTURING: Mutex<()> = Mutex::new(());

fn manufactured() -> io::Result<&'static Manufactured> {
    MANUFACTURED
        .get_or_init(|| manufacture_template().map_err(|err| err.to_string()))
        .as_ref()
        .map_err(|err| io::Error::other(err.clone()))
}

fn manufacture_template() -> io::Result<Manufactured> {
    let work = tempfile::tempdir()?;
    let dir = work.path();
    let ca_dir = dir.join("ca");
    std::fs::create_dir_all(&ca_dir)?;
    let ca_text = ca_dir.display();
    std::fs::write(
        dir.join("localca.conf"),
        format!(
            "statedir = {ca_text}\nsigningkey = {ca_text}/signkey.pem\nissuercert = {ca_text}/issuercert.pem\ncertserial = {ca_text}/certserial\n"
        ),
    )?;
    std::fs::write(dir.join("localca.options"), "")?;
    let setup_conf = dir.join("setup.conf");
    std::fs::write(
        &setup_conf,
        format!(
            "create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = {0}/localca.conf\ncreate_certs_tool_options = {0}/localca.options\nactive_pcr_banks = sha256,sha1\n",
            dir.display()
        ),
    )?;
    let template = dir.join("template");
    run_setup(&setup_conf, &template)?;
    Ok(Manufactured {
        ca: LocalCa { dir: ca_dir },
        template,
        setup_conf,
        _work: work,
    })
}

fn run_setup(setup_conf: &Path, state: &Path) -> io::Result<()> {
    let _serial = MANUFACTURING
        .lock()
        .map_err(|_| io::Error::other("swtpm manufacturing lock poisoned"))?;
    std::fs::create_dir_all(state)?;
    let output = Command::new("swtpm_setup")
        .args(["--tpm2", "--create-ek-cert", "--overwrite", "--tpmstate"])
        .arg(state)
        .arg("--config")
        .arg(setup_conf)
        .output()?;
    if !output.status.success() {
        return Err(io::Error::other(format!(
            "swtpm_setup failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    Ok(())
}

/// A running swtpm, killed on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    port: u16,
    state: tempfile::TempDir,
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port_pair() -> io::Result<u16> {
    for _attempt in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        if port < u16::MAX && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(io::Error::other("no free pair of TCP ports"))
}

impl Swtpm {
    /// Starts a copy of this process's manufactured TPM (its EK certificates signed by
    /// [`Swtpm::ca`]).
    pub fn start() -> io::Result<Self> {
        let template = &manufactured()?.template;
        Self::start_from(Some(template))
    }

    /// Manufactures and starts a TPM of its own: other endorsement seeds, certificates
    /// from the same CA.
    pub fn start_distinct() -> io::Result<Self> {
        let manufactured = manufactured()?;
        let fresh = tempfile::tempdir()?;
        run_setup(&manufactured.setup_conf, fresh.path())?;
        Self::start_from(Some(fresh.path()))
    }

    /// Starts an unmanufactured TPM (no EK certificates).
    pub fn start_blank() -> io::Result<Self> {
        Self::start_from(None)
    }

    /// The CA that signed the EK certificates of [`Swtpm::start`] and
    /// [`Swtpm::start_distinct`] TPMs.
    pub fn ca() -> io::Result<&'static LocalCa> {
        Ok(&manufactured()?.ca)
    }

    fn start_from(initial_state: Option<&Path>) -> io::Result<Self> {
        let mut last_error = io::Error::other("swtpm did not start");
        for _attempt in 0..5 {
            let state = tempfile::tempdir()?;
            if let Some(initial) = initial_state {
                for entry in std::fs::read_dir(initial)? {
                    let entry = entry?;
                    std::fs::copy(entry.path(), state.path().join(entry.file_name()))?;
                }
            }
            let port = free_port_pair()?;
            let child = Command::new("swtpm")
                .args(["socket", "--tpm2", "--server"])
                .arg(format!("type=tcp,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={}", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state.path().display()))
                .args(["--flags", "not-need-init,startup-clear"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let mut swtpm = Self { child, port, state };
            for _ in 0..100 {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Ok(swtpm);
                }
                if let Ok(Some(status)) = swtpm.child.try_wait() {
                    // The port was taken in the meantime: retry with another.
                    last_error = io::Error::other(format!("swtpm exited: {status}"));
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(last_error)
    }

    /// The TCP port of the TPM command channel (the control channel is `port + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The TCTI string for libtss2 and tpm2-tools.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The directory holding the TPM's state.
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Runs a tpm2-tools command (`args[0]` is the tool) in `dir` against this TPM and
    /// flushes transient objects and sessions afterwards (swtpm has no resource
    /// manager). Fails with the tool's stderr when it fails.
    pub fn tpm2(&self, dir: &Path, args: &[&str]) -> io::Result<Output> {
        let (tool, rest) = args
            .split_first()
            .ok_or_else(|| io::Error::other("no tpm2 tool named"))?;
        let output = Command::new(tool)
            .args(rest)
            .current_dir(dir)
            .env("TPM2TOOLS_TCTI", self.tcti())
            .output()?;
        for flag in ["-t", "-s"] {
            let _ = Command::new("tpm2_flushcontext")
                .arg(flag)
                .current_dir(dir)
                .env("TPM2TOOLS_TCTI", self.tcti())
                .output();
        }
        if !output.status.success() {
            return Err(io::Error::other(format!(
                "{args:?} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            )));
        }
        Ok(output)
    }

    /// Extends `pcr` in the SHA-256 bank with `digest` (32 bytes, as hex).
    pub fn extend_sha256(&self, pcr: u32, digest_hex: &str) -> io::Result<()> {
        let dir = self.state.path();
        self.tpm2(
            dir,
            &["tpm2_pcrextend", &format!("{pcr}:sha256={digest_hex}")],
        )
        .map(|_| ())
    }
}
