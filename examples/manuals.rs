//! Writes the man pages (one for `bucketfront`, one per subcommand) and the bash, zsh and
//! fish completions, generated from the command line's own definition, into a directory
//! (`packaging/build-deb` puts them into the Debian package):
//!
//! ```text
//! cargo run --example manuals -- target/manuals
//! ```

use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

fn main() -> std::io::Result<()> {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or("target/manuals".into()));
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    let cli = bucketfront::cli::Cli::command();
    write_man(&cli, &man, "bucketfront")?;
    for sub in cli.get_subcommands() {
        // clap takes names as 'static (without its `string` feature): this runs once.
        let name: &'static str = format!("bucketfront-{}", sub.get_name()).leak();
        let sub = sub.clone().name(name).version(env!("CARGO_PKG_VERSION"));
        write_man(&sub, &man, name)?;
    }
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        clap_complete::generate_to(shell, &mut cli.clone(), "bucketfront", &completions)?;
    }
    println!("{}", out.display());
    Ok(())
}

fn write_man(cmd: &clap::Command, dir: &Path, name: &str) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .section("1")
        .manual("bucketfront manual")
        .render(&mut page)?;
    std::fs::write(dir.join(format!("{name}.1")), page)
}
