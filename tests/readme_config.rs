//! The README's configuration tables name every flag and environment variable of `run` and
//! `dev`, with the defaults the CLI really has (all read from the CLI definition itself) and
//! the ranges the config enforces, so the tables cannot fall behind the code.

use clap::CommandFactory;

/// The lines of the README between the heading `from` and the next `### ` heading.
fn section<'a>(readme: &'a str, from: &str) -> Vec<&'a str> {
    readme
        .lines()
        .skip_while(|line| *line != from)
        .skip(1)
        .take_while(|line| !line.starts_with("### "))
        .collect()
}

/// The table row of `--long` in `lines`: it starts with the flag in backticks.
fn row<'a>(lines: &[&'a str], long: &str) -> Option<&'a str> {
    let (with_value, bare) = (format!("| `--{long} "), format!("| `--{long}`"));
    lines
        .iter()
        .copied()
        .find(|line| line.starts_with(&with_value) || line.starts_with(&bare))
}

#[test]
fn readme_names_every_flag_and_env_var_with_its_default() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let run_table = section(&readme, "### `grexal-sidecar run`");
    let dev_table = section(&readme, "### `grexal-sidecar dev`");
    assert!(
        run_table.len() > 20 && dev_table.len() > 5,
        "README sections not found"
    );
    let cli = grexal_sidecar::cli::Cli::command();
    let mut wrong = Vec::new();
    let mut seen = 0;
    for sub in ["run", "dev"] {
        let command = cli.find_subcommand(sub).expect(sub);
        for arg in command.get_arguments() {
            let Some(long) = arg.get_long() else { continue };
            if long == "help" || long == "version" {
                continue;
            }
            seen += 1;
            // `dev`'s table lists what differs from `run`'s; the rest is in `run`'s.
            let found = match sub {
                "dev" => row(&dev_table, long).or_else(|| row(&run_table, long)),
                _ => row(&run_table, long),
            };
            let Some(row) = found else {
                wrong.push(format!("{sub}: --{long} has no row"));
                continue;
            };
            let cells: Vec<&str> = row.split(" | ").collect();
            if let Some(env) = arg.get_env() {
                let env = env.to_string_lossy();
                if cells.get(1).is_none_or(|c| c.trim() != format!("`{env}`")) {
                    wrong.push(format!("{sub}: --{long}'s variable is {env}"));
                }
            }
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            let is_switch = matches!(
                arg.get_action(),
                clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
            );
            if !defaults.is_empty() && !is_switch {
                let want = format!("`{}`", defaults.join(","));
                if cells.get(2).is_none_or(|c| c.trim() != want) {
                    wrong.push(format!(
                        "{sub}: --{long}'s default is {want}, the README says {:?}",
                        cells.get(2)
                    ));
                }
            }
        }
    }
    assert!(seen > 30, "only {seen} flags found: the CLI was not read");
    assert!(wrong.is_empty(), "the README's tables disagree: {wrong:#?}");
}

/// Every bounded numeric flag's row in `run`'s table gives its range as the code has it.
#[test]
fn readme_gives_every_bounded_flags_range() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let run_table = section(&readme, "### `grexal-sidecar run`");
    let mut wrong = Vec::new();
    let ranges = grexal_sidecar::config::DURATION_FLAGS.iter().chain([
        &grexal_sidecar::config::API_MAX_CONNECTIONS,
        &grexal_sidecar::config::CONTROL_MAX_CONNECTIONS,
    ]);
    for range in ranges {
        let want = format!("{}..={}", range.min, range.max);
        match row(&run_table, range.flag) {
            Some(row) if row.contains(&want) => {}
            Some(row) => wrong.push(format!("--{}: no {want} in {row:?}", range.flag)),
            None => wrong.push(format!("--{} has no row", range.flag)),
        }
    }
    assert!(wrong.is_empty(), "the README's ranges disagree: {wrong:#?}");
}

/// The desktop run dir's length limit, in both tables and in `--help`, is the one the
/// desktop enforces (Chromium's profile-lock socket in it must fit a socket address).
#[test]
fn readme_and_help_give_the_desktop_run_dirs_limit() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let want = format!(
        "at most {} bytes",
        grexal_sidecar::desktop::MAX_RUN_DIR_BYTES
    );
    let mut wrong = Vec::new();
    for table in ["### `grexal-sidecar run`", "### `grexal-sidecar dev`"] {
        match row(&section(&readme, table), "desktop-run-dir") {
            Some(row) if row.contains(&want) => {}
            other => wrong.push(format!("{table}: no {want:?} in {other:?}")),
        }
    }
    let cli = grexal_sidecar::cli::Cli::command();
    for sub in ["run", "dev"] {
        let arg = cli
            .find_subcommand(sub)
            .expect(sub)
            .get_arguments()
            .find(|a| a.get_long() == Some("desktop-run-dir"))
            .expect("--desktop-run-dir");
        let help = [arg.get_help(), arg.get_long_help()]
            .into_iter()
            .flatten()
            .map(|h| h.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        if !help.contains(&want) {
            wrong.push(format!("{sub} --help: no {want:?} in {help:?}"));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
