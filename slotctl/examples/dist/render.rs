//! slotctl's man pages and shell completions, rendered from its command
//! line: shared by the `dist` example (`cargo xtask dist`) and the test
//! that checks them.
//!
//! ```text
//! OUT/man/man1/slotctl.1, slotctl-claim.1, ...   one page per command
//! OUT/completions/slotctl.bash, _slotctl, slotctl.fish
//! ```
use std::path::{Path, PathBuf};

use clap::CommandFactory as _;
use clap_complete::Shell;
use roff::{Roff, bold, roman};
use slotctl::exit::{Exit, REFUSAL};

/// slotctl.1: clap_mangen's sections, with the exit statuses as a list
/// of their own (its "extra" section would run them together).
fn top_page(cmd: &clap::Command) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone());
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut exit = Roff::new();
    exit.control("SH", ["EXIT STATUS"]);
    for e in Exit::ALL {
        exit.control("TP", []);
        exit.text([bold(e.code().to_string())]);
        exit.text([roman(e.meaning())]);
    }
    exit.control("PP", []);
    exit.text([roman(REFUSAL)]);
    exit.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// Writes the man pages and completions under `out`; returns the two
/// directories written.
pub fn write_all(out: &Path) -> std::io::Result<(PathBuf, PathBuf)> {
    let mut cmd = slotctl::cli::Cli::command();
    let man = out.join("man").join("man1");
    std::fs::create_dir_all(&man)?;
    clap_mangen::generate_to(cmd.clone(), &man)?;
    std::fs::write(man.join("slotctl.1"), top_page(&cmd)?)?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cmd, "slotctl", &completions)?;
    }
    Ok((man, completions))
}
