//! docs/deploy.md and the files under docs/deploy/ name only settings, commands, flags and
//! variables ringcache has, and their configs are ones `serve` accepts: a deploy guide whose
//! unit or StatefulSet would not start fails this test instead of a reader's rollout.
//!
//! What is checked, and how:
//! - every ```toml block of the guide, `deploy/ringcache.toml` and the config inside
//!   `deploy/kubernetes.yaml`'s ConfigMap parse with the config-file loader (known keys, right
//!   types);
//! - the systemd unit's `ExecStart=` and the StatefulSet's `args` are read by `serve`'s own
//!   flags, layered over their config file as `serve` layers them, made into a peer
//!   configuration and validated (with the secrets the environment would give, and the pod's
//!   name and address put in for `$(POD_NAME)` and `$(POD_IP)`); the unit keeps the hardening
//!   the guide describes;
//! - every `ringcache SUBCOMMAND --flag …` in the guide and the files uses a subcommand and
//!   flags that `ringcache SUBCOMMAND --help` lists, every other `--flag` in the guide is a flag of
//!   some subcommand (or of the other tools the guide runs, listed here), and every
//!   `RINGCACHE_*` variable is one some `--help` names;
//! - the Dockerfile (which cannot be built here: no Docker engine) builds this package's binary
//!   with a Rust at least `Cargo.toml`'s `rust-version`, installs it where the unit runs it,
//!   and runs it as a non-root user.
//!
//! Starts no peer: each `--help` is one short run of the binary.

use ringcache::config::{ConfigFile, EffectiveConfig, PeerConfig, ServeArgs};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

const SECRET: &str = "a-cluster-secret-for-the-deploy-doc-test";
const TOKEN: &str = "a-client-token-for-the-deploy-doc-test";
/// Where the guide installs the config file; the test reads the repository's copy instead.
const INSTALLED_CONFIG: &str = "/etc/ringcache/ringcache.toml";
/// Where the image and the unit put the binary.
const INSTALLED_BINARY: &str = "/usr/local/bin/ringcache";

/// Flags of other programs the guide runs (cargo, systemctl, docker and its Dockerfile, kubectl),
/// which are not ringcache's.
const OTHER_TOOLS_FLAGS: &[&str] = &[
    "--release",
    "--locked",
    "--bin",
    "--mount",
    "--from",
    "--network",
    "--env-file",
    "--memory",
    "--stop-timeout",
    "--name",
    "--from-literal",
    "--for",
    "--timeout",
    "--replicas",
    "--now",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// The files the guide consists of, with their contents.
fn guide_files() -> Vec<(String, String)> {
    let mut files = vec![("docs/deploy.md".to_string(), read("docs/deploy.md"))];
    let mut names: Vec<String> = std::fs::read_dir(repo().join("docs/deploy"))
        .expect("docs/deploy exists")
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = format!("docs/deploy/{name}");
        files.push((path.clone(), read(&path)));
    }
    files
}

/// The ```toml blocks of a markdown text, each with the line it starts on.
fn toml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) if line.trim() == "```toml" => current = Some((i + 1, String::new())),
            (Some(_), true) => blocks.push(current.take().unwrap()),
            (Some((_, text)), false) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    blocks
}

/// The text of the `ringcache.toml: |` entry of the ConfigMap in `yaml`, unindented.
fn configmap_toml(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "ringcache.toml: |");
    let key = lines
        .next()
        .expect("the ConfigMap has a ringcache.toml entry");
    let key_indent = key.len() - key.trim_start().len();
    let body: Vec<&str> = lines
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > key_indent)
        .collect();
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    body.iter()
        .map(|l| format!("{}\n", l.get(indent..).unwrap_or("")))
        .collect()
}

/// The container's `args: [...]` of the StatefulSet, one flow list of quoted strings.
fn statefulset_args(yaml: &str) -> Vec<String> {
    let line = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("args: ["))
        .expect("the container has `args: [...]` on one line");
    let list = line
        .trim()
        .trim_start_matches("args: [")
        .trim_end_matches(']');
    list.split(", ")
        .map(|s| s.trim().trim_matches('"').to_string())
        .collect()
}

/// `serve ARGS` as `serve` reads them — clap's flags, then the config file they name, layered —
/// made into a peer configuration and validated.
fn load_serve(args: &[String], what: &str) -> PeerConfig {
    let mut argv = vec!["serve".to_string()];
    argv.extend(args.iter().cloned());
    // What the environment gives a real peer (EnvironmentFile=, the Secret): as flags here,
    // so the test's own environment plays no part.
    argv.extend(["--cluster-secret", SECRET, "--client-token", TOKEN].map(String::from));
    let matches = ServeArgs::command()
        .mut_args(|a| a.env(None::<&str>))
        .try_get_matches_from(&argv)
        .unwrap_or_else(|e| panic!("{what}: `serve` does not take {argv:?}: {e}"));
    let given = <ServeArgs as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
    let settings = EffectiveConfig::resolve(given, &matches)
        .unwrap_or_else(|e| panic!("{what}: the config file is refused: {e}"));
    let config = settings
        .args
        .into_config()
        .unwrap_or_else(|e| panic!("{what}: not a whole configuration: {e}"));
    config
        .validate()
        .unwrap_or_else(|e| panic!("{what}: does not validate: {e}"));
    for (socket, addr) in [
        ("gossip", config.gossip_addr),
        ("peer-addr", config.peer_addr),
        ("http", config.http_addr),
    ] {
        config
            .advertised(socket, addr)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
    }
    config
}

/// `args` with the config file's installed path replaced by `file`.
fn with_config_at(args: &[String], file: &Path) -> Vec<String> {
    args.iter()
        .map(|a| match a.as_str() {
            INSTALLED_CONFIG => file.to_string_lossy().into_owned(),
            _ => a.clone(),
        })
        .collect()
}

#[test]
fn every_config_in_the_guide_parses_as_a_config_file() {
    let mut checked = 0;
    for (file, text) in guide_files() {
        let mut configs: Vec<(String, String)> = Vec::new();
        if file.ends_with(".md") {
            for (line, block) in toml_blocks(&text) {
                configs.push((format!("{file}:{line}"), block));
            }
        } else if file.ends_with(".toml") {
            configs.push((file.clone(), text.clone()));
        } else if file.ends_with("kubernetes.yaml") {
            configs.push((format!("{file} (ConfigMap)"), configmap_toml(&text)));
        }
        for (label, config) in configs {
            ConfigFile::parse(Path::new(&label), &config)
                .unwrap_or_else(|e| panic!("{label}: {e}\n{config}"));
            checked += 1;
        }
    }
    // The guide's host config, the TLS snippet, the two files' configs at least.
    assert!(checked >= 4, "only {checked} configs found");
}

#[test]
fn the_systemd_unit_runs_a_serve_the_loader_accepts() {
    let unit = read("docs/deploy/ringcache.service");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart=");
    let argv: Vec<String> = exec.split_whitespace().map(String::from).collect();
    assert_eq!(argv[0], INSTALLED_BINARY, "{exec}");
    assert_eq!(argv[1], "serve", "{exec}");
    assert!(argv.contains(&INSTALLED_CONFIG.to_string()), "{exec}");
    let config = load_serve(
        &with_config_at(&argv[2..], &repo().join("docs/deploy/ringcache.toml")),
        "the systemd unit",
    );
    // A host peer binds its own address, so needs no --advertise.
    assert!(!config.http_addr.ip().is_loopback() && !config.http_addr.ip().is_unspecified());
    assert!(
        config.core.max_memory_bytes.is_some(),
        "set max-memory under systemd"
    );
    // What the guide says the unit does.
    for setting in [
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "LimitNOFILE=",
        "Restart=on-failure",
        "EnvironmentFile=",
        "MemoryMax=",
        "CapabilityBoundingSet=\n",
    ] {
        assert!(unit.contains(setting), "the unit lacks {setting:?}");
    }
}

#[test]
fn the_statefulset_runs_a_serve_the_loader_accepts() {
    let yaml = read("docs/deploy/kubernetes.yaml");
    let args = statefulset_args(&yaml);
    assert_eq!(args[0], "serve", "{args:?}");
    let dir = std::env::temp_dir().join(format!("ringcache-deploy-doc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ringcache.toml");
    std::fs::write(&file, configmap_toml(&yaml)).unwrap();
    let pod: Vec<String> = with_config_at(&args[1..], &file)
        .into_iter()
        .map(|a| {
            a.replace("$(POD_NAME)", "ringcache-0")
                .replace("$(POD_IP)", "10.244.1.7")
        })
        .collect();
    let config = load_serve(&pod, "the StatefulSet");
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(config.id.as_str(), "ringcache-0");
    assert_eq!(config.advertise, Some("10.244.1.7".parse().unwrap()));
    // Seeded through the headless Service's name, which must be the Service's.
    let seed = config.seeds[0].as_str().to_string();
    let service = seed.split(':').next().unwrap();
    assert!(
        yaml.contains(&format!("name: {service}\n")) && yaml.contains("clusterIP: None"),
        "the seed {seed} is not the headless Service"
    );
    // The secrets come from the Secret, under the variables `serve` reads.
    for key in ["cluster-secret", "client-token"] {
        let var = ServeArgs::env_var(key).unwrap();
        assert!(
            yaml.contains(&format!("name: {var}\n")),
            "no {var} in the pod"
        );
        assert!(
            read("docs/deploy/kubernetes-secret.yaml").contains(&format!("  {key}: \"\"")),
            "the Secret lacks {key}"
        );
    }
}

/// Every flag and variable `ringcache SUBCOMMAND --help` lists, by subcommand.
struct Cli {
    flags: BTreeMap<String, BTreeSet<String>>,
    variables: BTreeSet<String>,
}

impl Cli {
    fn read() -> Cli {
        let help = |args: &[&str]| {
            let out = Command::new(env!("CARGO_BIN_EXE_ringcache"))
                .args(args)
                .output()
                .expect("the binary runs");
            assert!(out.status.success(), "ringcache {args:?}: {out:?}");
            String::from_utf8(out.stdout).unwrap()
        };
        let top = help(&["--help"]);
        let subcommands = commands_in(&top);
        assert!(subcommands.contains(&"serve".to_string()), "{top}");
        let mut cli = Cli {
            flags: BTreeMap::new(),
            variables: BTreeSet::new(),
        };
        for sub in subcommands {
            let mut text = help(&[&sub, "--help"]);
            // A command of commands (`config print`): its flags are its subcommands'.
            for nested in commands_in(&text.clone()) {
                text.push_str(&help(&[&sub, &nested, "--help"]));
            }
            let mut flags = BTreeSet::new();
            for word in text.split(|c: char| c.is_whitespace() || c == ',' || c == '[') {
                if let Some(flag) = word.strip_prefix("--") {
                    let name: String = flag
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                        .collect();
                    if !name.is_empty() {
                        flags.insert(format!("--{name}"));
                    }
                }
                if let Some(var) = word.strip_prefix("RINGCACHE_") {
                    let var: String = var
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    cli.variables.insert(format!("RINGCACHE_{var}"));
                }
            }
            cli.flags.insert(sub, flags);
        }
        cli
    }
}

/// The subcommands a `--help` text lists, but `help`.
fn commands_in(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|s| s != "help")
        .collect()
}

/// `--flag` without `=value` or trailing punctuation, if `word` is one.
fn flag_of(word: &str) -> Option<String> {
    let word = word.trim_matches(|c: char| "`\"'(),.;:".contains(c));
    let name = word.strip_prefix("--")?;
    let name: String = name
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect();
    name.starts_with(|c: char| c.is_ascii_alphanumeric())
        .then(|| format!("--{name}"))
}

#[test]
fn every_command_flag_and_variable_the_guide_names_exists() {
    let cli = Cli::read();
    let every_flag: BTreeSet<&String> = cli.flags.values().flatten().collect();
    let mut commands = 0;
    for (file, text) in guide_files() {
        let mut fenced = false;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{file}:{}", n + 1);
            let words: Vec<&str> = line.split_whitespace().collect();
            // Where a word after `ringcache` must be a subcommand: in code (a markdown code
            // block, an example command in a comment, a line of a unit or manifest), and at the
            // start of inline code; elsewhere `ringcache` may be the project's name.
            let code = if file.ends_with(".md") {
                if line.starts_with("```") {
                    fenced = !fenced;
                }
                fenced || line.starts_with("    ")
            } else {
                !line.trim_start().starts_with('#') || line.starts_with("#   ")
            };
            // `ringcache SUBCOMMAND --flag …`, up to the end of a shell command or of a span of
            // inline code.
            for (i, word) in words.iter().enumerate() {
                let program = word.trim_matches(|c| c == '`' || c == '"');
                if !(program == "ringcache" || program.ends_with("/ringcache"))
                    || word.ends_with('`')
                {
                    continue;
                }
                let Some(sub) = words.get(i + 1) else {
                    continue;
                };
                let sub_name = sub.trim_end_matches('`');
                if !sub_name.chars().all(|c| c.is_ascii_lowercase()) || sub_name.is_empty() {
                    continue;
                }
                let Some(flags) = cli.flags.get(sub_name) else {
                    assert!(
                        !(code || word.starts_with('`')),
                        "{at}: `ringcache {sub_name}` is no subcommand"
                    );
                    continue;
                };
                commands += 1;
                if sub.ends_with('`') {
                    continue;
                }
                for rest in &words[i + 2..] {
                    if matches!(*rest, "|" | "&&" | "||" | ";") {
                        break;
                    }
                    if let Some(flag) = flag_of(rest) {
                        assert!(
                            flags.contains(&flag),
                            "{at}: `ringcache {sub_name}` has no {flag}"
                        );
                    }
                    if rest.ends_with('`') {
                        break;
                    }
                }
            }
            // Any other flag: ringcache's somewhere, or another tool's.
            for word in &words {
                if let Some(flag) = flag_of(word) {
                    assert!(
                        every_flag.contains(&flag) || OTHER_TOOLS_FLAGS.contains(&flag.as_str()),
                        "{at}: no ringcache command has {flag}"
                    );
                }
                if let Some(at_var) = word.find("RINGCACHE_") {
                    let var: String = word[at_var..]
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                        .collect();
                    // `RINGCACHE_*` names them all.
                    if var != "RINGCACHE_" {
                        assert!(
                            cli.variables.contains(&var),
                            "{at}: no ringcache variable {var}"
                        );
                    }
                }
            }
        }
    }
    assert!(commands >= 10, "only {commands} ringcache commands found");
}

/// `1.95` → (1, 95).
fn version(text: &str) -> (u32, u32) {
    let mut parts = text
        .split('.')
        .map(|p| p.parse::<u32>().expect("a version number"));
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

#[test]
fn the_dockerfile_builds_this_binary_with_a_recent_enough_rust_and_runs_it_unprivileged() {
    let dockerfile = read("docs/deploy/Dockerfile");
    let froms: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .collect();
    assert_eq!(froms.len(), 2, "a build stage and a runtime stage");
    let rust = froms[0]
        .strip_prefix("rust:")
        .and_then(|tag| tag.split('-').next())
        .expect("the build stage is an official rust image with a version");
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let needed = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(
        version(rust) >= version(needed),
        "the image's Rust {rust} is older than rust-version {needed}"
    );
    assert!(dockerfile.contains("cargo build --release --locked --bin ringcache"));
    let bins = manifest["bin"]
        .as_array()
        .expect("Cargo.toml names its binaries");
    assert!(bins.iter().any(|b| b["name"].as_str() == Some("ringcache")));
    // Only the binary goes into the image, where the unit and the entry point run it.
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY --from="))
        .collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    assert!(
        copies[0].ends_with(&format!(" {INSTALLED_BINARY}")),
        "{copies:?}"
    );
    assert!(dockerfile.contains(&format!("ENTRYPOINT [\"{INSTALLED_BINARY}\"]")));
    // The last USER of the image is not root.
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("the image names its user");
    assert!(
        !matches!(user.split(':').next(), Some("root" | "0")),
        "USER {user}"
    );
    // The StatefulSet runs it as that user.
    let uid = user.split(':').next().unwrap();
    assert!(read("docs/deploy/kubernetes.yaml").contains(&format!("runAsUser: {uid}\n")));
}
