//! `plinth-dist-docs DIR`: writes what the packages ship that is generated from
//! the command-line definitions (the xtask-style step of `make dist`): man pages of
//! every binary and subcommand into `DIR/man/`, shell completions into
//! `DIR/completions/{bash,zsh,fish}/`. Not installed; see docs/packaging.md.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

fn write_completions(dir: &Path, command: &mut clap::Command, name: &str) -> anyhow::Result<()> {
    use clap_complete::Shell;
    for (shell, sub, file) in [
        (Shell::Bash, "bash", name.to_owned()),
        (Shell::Zsh, "zsh", format!("_{name}")),
        (Shell::Fish, "fish", format!("{name}.fish")),
    ] {
        let out = dir.join("completions").join(sub);
        fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        let mut buffer = Vec::new();
        clap_complete::generate(shell, command, name, &mut buffer);
        let path = out.join(file);
        fs::write(&path, buffer).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

fn write_runner_man(dir: &Path) -> anyhow::Result<PathBuf> {
    let command = plinth_runner::cli::RunnerCli::command();
    let mut buffer = Vec::new();
    clap_mangen::Man::new(command)
        .section("8")
        .render(&mut buffer)
        .context("cannot render the plinth-runner man page")?;
    let path = dir.join("plinth-runner.8");
    fs::write(&path, buffer).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(dir), None) = (args.next(), args.next()) else {
        anyhow::bail!("usage: plinth-dist-docs DIR");
    };
    let dir = PathBuf::from(dir);
    let man = dir.join("man");
    let mut written = plinth_agent::cli::write_man_pages(&man)
        .with_context(|| format!("cannot write man pages into {}", man.display()))?;
    written.push(write_runner_man(&man)?);
    write_completions(&dir, &mut plinth_agent::cli::CtlCli::command(), "plinthctl")?;
    write_completions(
        &dir,
        &mut plinth_agent::cli::AgentCli::command(),
        "plinth-agent",
    )?;
    write_completions(
        &dir,
        &mut plinth_runner::cli::RunnerCli::command(),
        "plinth-runner",
    )?;
    write_completions(
        &dir,
        &mut plinth_agent::cli::verify_command(),
        "plinth-verify",
    )?;
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
