//! The README's configuration tables name every flag and environment variable of `run` and
//! `dev` (from the CLI definition itself), so the table cannot fall behind the code.

use clap::CommandFactory;

#[test]
fn readme_names_every_flag_and_env_var() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let cli = grexal_sidecar::cli::Cli::command();
    let mut missing = Vec::new();
    let mut seen = 0;
    for sub in ["run", "dev"] {
        let command = cli.find_subcommand(sub).expect(sub);
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            seen += 1;
            // A table row starts with the flag in backticks; its variable is in the next cell.
            let (with_value, bare) = (format!("| `--{long} "), format!("| `--{long}`"));
            let Some(row) = readme
                .lines()
                .find(|line| line.starts_with(&with_value) || line.starts_with(&bare))
            else {
                missing.push(format!("{sub}: --{long}"));
                continue;
            };
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if !row.contains(&format!("`{env}`")) {
                    missing.push(format!("{sub}: --{long}'s variable {env}"));
                }
            }
        }
    }
    assert!(seen > 30, "only {seen} flags found: the CLI was not read");
    assert!(
        missing.is_empty(),
        "not in the README's tables: {missing:#?}"
    );
}
