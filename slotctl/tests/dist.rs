//! The man pages and completions `cargo xtask dist` ships, rendered into a
//! temporary directory and read back: a page per command, every command
//! and exit status named, a completion file per shell that knows every
//! command.
#[path = "../examples/dist/render.rs"]
mod render;

use clap::CommandFactory as _;
use slotctl::exit::Exit;

#[test]
fn man_pages_and_completions_cover_every_command() {
    let out = std::env::temp_dir().join(format!("slotctl-dist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (man, completions) = render::write_all(&out).unwrap();
    let cmd = slotctl::cli::Cli::command();
    let top = std::fs::read_to_string(man.join("slotctl.1")).unwrap();
    assert!(top.contains(".TH slotctl 1"), "{top}");
    assert!(top.contains("EXIT STATUS"), "{top}");
    for e in Exit::ALL {
        assert!(
            top.contains(&format!("\\fB{}\\fR", e.code())),
            "exit status {} missing from slotctl.1",
            e.code()
        );
    }
    let shells = ["slotctl.bash", "_slotctl", "slotctl.fish"].map(|f| {
        std::fs::read_to_string(completions.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"))
    });
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        let name = sub.get_name();
        let page = man.join(format!("slotctl-{name}.1"));
        let text =
            std::fs::read_to_string(&page).unwrap_or_else(|e| panic!("{}: {e}", page.display()));
        assert!(text.contains(".SH NAME"), "{}", page.display());
        assert!(
            top.contains(&format!("slotctl\\-{name}")),
            "slotctl.1 lists {name}"
        );
        for (file, text) in ["bash", "zsh", "fish"].iter().zip(&shells) {
            assert!(text.contains(name), "the {file} completion lacks {name}");
        }
    }
    std::fs::remove_dir_all(&out).unwrap();
}
