//! Writes slotctl's man pages and shell completions, rendered from its
//! command line, into a directory (`cargo xtask dist` runs it).
use std::path::PathBuf;

mod render;

fn main() -> std::io::Result<()> {
    let Some(out) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: dist OUT_DIR");
        std::process::exit(2);
    };
    let (man, completions) = render::write_all(&out)?;
    println!("wrote {} and {}", man.display(), completions.display());
    Ok(())
}
