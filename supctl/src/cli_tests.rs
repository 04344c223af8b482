//! The command line's shape: every flag the contract names still parses,
//! and the new ones (`-o`, `--detach`, `--timeout` with units,
//! `completions`) do.

use std::time::Duration;

use clap::{CommandFactory, Parser};

use crate::output::Format;
use crate::{Cli, Cmd};

fn parse(args: &[&str]) -> Cli {
    let mut all = vec!["supctl"];
    all.extend_from_slice(args);
    Cli::try_parse_from(all).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[test]
fn the_command_line_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn old_and_new_flags_parse() {
    let cli = parse(&["--json", "modules"]);
    assert!(cli.json && matches!(cli.cmd, Cmd::Modules));
    let cli = parse(&["modules", "-o", "yaml"]);
    assert_eq!(cli.output, Some(Format::Yaml));
    let cli = parse(&["-o", "wide", "nodes"]);
    assert_eq!(cli.output, Some(Format::Wide));
    // A bare number of seconds, as before; units now too.
    match parse(&["update", "web.json", "--timeout", "60"]).cmd {
        Cmd::Update {
            timeout, detach, ..
        } => {
            assert_eq!((timeout, detach), (Duration::from_secs(60), false))
        }
        other => panic!("{other:?}"),
    }
    match parse(&["deploy", "web.json"]).cmd {
        Cmd::Deploy {
            timeout, detach, ..
        } => {
            assert_eq!((timeout, detach), (Duration::from_secs(120), false))
        }
        other => panic!("{other:?}"),
    }
    match parse(&["drain", "b", "--detach", "--timeout", "10m"]).cmd {
        Cmd::Drain {
            timeout, detach, ..
        } => {
            assert_eq!((timeout, detach), (Duration::from_secs(600), true))
        }
        other => panic!("{other:?}"),
    }
    match parse(&["rollback", "web", "--revision", "2", "--timeout", "90s"]).cmd {
        Cmd::Rollback {
            timeout, revision, ..
        } => {
            assert_eq!((timeout, revision), (Duration::from_secs(90), Some(2)))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse(&["completions", "zsh"]).cmd,
        Cmd::Completions {
            shell: clap_complete::Shell::Zsh
        }
    ));
    assert!(Cli::try_parse_from(["supctl", "-o", "xml", "modules"]).is_err());
    assert!(Cli::try_parse_from(["supctl", "deploy", "x", "--timeout", "soon"]).is_err());
}

#[test]
fn completions_name_the_commands() {
    let mut out = Vec::new();
    clap_complete::generate(
        clap_complete::Shell::Bash,
        &mut Cli::command(),
        "supctl",
        &mut out,
    );
    let script = String::from_utf8(out).expect("utf-8");
    for word in ["deploy", "drain", "--detach", "--output", "completions"] {
        assert!(script.contains(word), "{word} not in the bash completions");
    }
}
