//! Where Chatwoot runs (issue 19): the container image, the Compose service
//! and the Kubernetes manifests, checked against what a runtime, Compose
//! and the API server take, and the image's root filesystem running the
//! binary against the interop Rails app and Dovecot.
//!
//! CI cannot pull the Containerfile's base images, so the Containerfile is
//! parsed and its instructions checked, and the image is the one
//! scripts/container-image builds FROM scratch out of this build, with the
//! Containerfile's own last stage. `podman run` cannot start it here: the
//! sandbox refuses the setrlimit the OCI runtime makes (crun: setrlimit
//! RLIMIT_NOFILE: Operation not permitted). So its exported root filesystem
//! runs under chroot, as the image's user; chroot shares the host's network,
//! so Rails and Dovecot on 127.0.0.1 are reachable from it.

use crate::common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::{json, Value};

use common::imap::Dovecot;
use common::rails::Rails;
use common::{corpus, require, BIN, PASSWORD};

/// The image's user: not root, and fixed, so that volumes can be given to it.
const UID: u32 = 10001;
const STATE: &str = "/var/lib/chatwoot-ingress";
const CONFIG: &str = "/etc/chatwoot-ingress/config.toml";
/// Debian's Python, with Debian's python3-yaml and python3-jsonschema.
const PYTHON: &str = "/usr/bin/python3";
const KUBERNETES_VALIDATE: &str = "/opt/kubernetes-validate/bin/kubernetes-validate";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn read(path: &str) -> String {
    fs::read_to_string(repo().join(path)).unwrap()
}

// --- Containerfile --------------------------------------------------------

/// One instruction: its keyword (upper case) and the rest, continuation
/// lines joined, comments dropped.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn instructions(text: &str) -> Vec<Instruction> {
    let mut all = Vec::new();
    let mut line = String::new();
    for raw in text.lines() {
        if line.is_empty() && (raw.trim_start().starts_with('#') || raw.trim().is_empty()) {
            continue;
        }
        match raw.strip_suffix('\\') {
            Some(part) => line.push_str(part),
            None => {
                line.push_str(raw);
                let (keyword, args) = line.trim().split_once(char::is_whitespace).unwrap();
                all.push(Instruction { keyword: keyword.to_uppercase(), args: args.trim().to_string() });
                line.clear();
            }
        }
    }
    all
}

/// The stages, each beginning with its FROM.
fn stages(all: &[Instruction]) -> Vec<&[Instruction]> {
    let starts: Vec<usize> =
        all.iter().enumerate().filter(|(_, i)| i.keyword == "FROM").map(|(n, _)| n).collect();
    starts
        .iter()
        .enumerate()
        .map(|(k, &start)| &all[start..*starts.get(k + 1).unwrap_or(&all.len())])
        .collect()
}

fn args_of<'a>(stage: &'a [Instruction], keyword: &str) -> Vec<&'a str> {
    stage.iter().filter(|i| i.keyword == keyword).map(|i| i.args.as_str()).collect()
}

/// (major, minor) of "1.95" or "1.95-slim-bookworm".
fn rust_version(text: &str) -> (u32, u32) {
    let mut parts = text.split(|c: char| !c.is_ascii_digit()).map(|p| p.parse().unwrap());
    (parts.next().unwrap(), parts.next().unwrap())
}

#[test]
fn the_containerfile_builds_from_source_and_runs_as_a_fixed_non_root_user_with_exec_form_commands() {
    let all = instructions(&read("packaging/container/Containerfile"));
    let stages = stages(&all);
    assert_eq!(stages.len(), 2, "a build stage and the runtime: {all:#?}");
    let (build, last) = (stages[0], stages[1]);

    // A Debian 12 Rust image no older than Cargo.toml's rust-version, and a
    // runtime of the same Debian: the glibc linked against is the one found.
    let from = args_of(build, "FROM")[0];
    let tag = from.strip_prefix("docker.io/library/rust:").expect(from).split_whitespace().next().unwrap();
    let manifest: toml::Value = toml::from_str(&read("Cargo.toml")).unwrap();
    let wanted = manifest["package"]["rust-version"].as_str().unwrap();
    assert!(rust_version(tag) >= rust_version(wanted), "{tag} is older than rust-version {wanted}");
    assert!(tag.ends_with("bookworm"), "{tag}");
    assert!(args_of(last, "FROM")[0].contains("debian12"), "{:?}", args_of(last, "FROM"));
    assert!(args_of(build, "RUN").iter().any(|r| r.contains("cargo build --release --locked")));
    // What the build stage copies from the context exists.
    for copy in args_of(build, "COPY") {
        let words: Vec<&str> = copy.split_whitespace().filter(|w| !w.starts_with("--")).collect();
        for source in &words[..words.len() - 1] {
            assert!(repo().join(source).exists(), "COPY {source}: not in the repository");
        }
    }

    // The last stage: what scripts/container-image copies must be all there is.
    assert!(args_of(last, "RUN").is_empty() && args_of(last, "ADD").is_empty());
    assert_eq!(args_of(last, "USER"), [format!("{UID}:{UID}")]);
    assert!(read("packaging/container/passwd")
        .lines()
        .any(|l| l.starts_with(&format!("chatwoot-ingress:x:{UID}:{UID}:"))));
    assert!(read("packaging/container/group").lines().any(|l| l == format!("chatwoot-ingress:x:{UID}:")));
    let json = |keyword: &str| -> Value { serde_json::from_str(args_of(last, keyword)[0]).unwrap() };
    assert_eq!(json("ENTRYPOINT"), json!(["chatwoot-ingress"]));
    assert_eq!(json("CMD"), json!(["watch"]));
    // No shell and no curl: exec form, our own subcommand.
    let health = args_of(last, "HEALTHCHECK")[0];
    let (_, command) = health.split_once(" CMD ").expect(health);
    assert_eq!(serde_json::from_str::<Value>(command).unwrap(), json!(["chatwoot-ingress", "health"]));
    let labels = args_of(last, "LABEL").join(" ");
    for key in ["title", "description", "source", "licenses", "version"] {
        assert!(labels.contains(&format!("org.opencontainers.image.{key}=")), "no {key} label: {labels}");
    }
    assert!(labels.contains("org.opencontainers.image.licenses=\"MIT\""), "{labels}");
    assert!(args_of(last, "ARG").contains(&format!("VERSION={}", env!("CARGO_PKG_VERSION")).as_str()));
    assert!(args_of(last, "ENV").contains(&format!("STATE_DIRECTORY={STATE}").as_str()));
    assert_eq!(args_of(last, "VOLUME"), [format!("[\"{STATE}\"]")]);
    assert!(args_of(last, "COPY").iter().any(|c| c.contains(&format!("--chown={UID}:{UID}"))));
}

// --- The image, built FROM scratch out of this build -----------------------

fn require_podman() {
    require("podman (Debian's package)", || {
        Command::new("podman").arg("info").output().is_ok_and(|o| o.status.success())
    });
}

/// An image scripts/container-image built, and its exported root filesystem;
/// removed on drop.
struct Image {
    tag: String,
    rootfs: tempfile::TempDir,
}

impl Image {
    fn build() -> Image {
        let rootfs = tempfile::tempdir().unwrap();
        let tag = format!("localhost/chatwoot-ingress-test:{}", std::process::id());
        let output = Command::new(repo().join("scripts/container-image"))
            .args(["--tool", "podman", "--binary", BIN, "--tag", &tag, "--export"])
            .arg(rootfs.path())
            .output()
            .unwrap();
        let image = Image { tag, rootfs };
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        assert_eq!(String::from_utf8_lossy(&output.stdout), format!("{}\n", image.tag));
        // An image's / is searchable by its user; a temporary directory is not.
        fs::set_permissions(image.rootfs.path(), fs::Permissions::from_mode(0o755)).unwrap();
        image
    }

    fn inspect(&self) -> Value {
        let output = Command::new("podman").args(["image", "inspect", &self.tag]).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice::<Value>(&output.stdout).unwrap()[0].clone()
    }

    fn path(&self, inside: &str) -> PathBuf {
        self.rootfs.path().join(inside.trim_start_matches('/'))
    }

    /// `chatwoot-ingress ARGS` from the root filesystem, as the image's
    /// user, with the image's environment, HOME from its passwd (as a
    /// runtime sets it) and `env`.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut command = Command::new("/usr/sbin/chroot");
        command
            .arg(format!("--userspec={UID}:{UID}"))
            .arg(self.rootfs.path())
            .arg("chatwoot-ingress")
            .args(args);
        command.env_clear().env("HOME", "/nonexistent");
        for pair in self.inspect()["Config"]["Env"].as_array().unwrap() {
            let (name, value) = pair.as_str().unwrap().split_once('=').unwrap();
            command.env(name, value);
        }
        command.envs(env.iter().copied());
        command
    }

    /// [`Image::command`] to its end, at most two minutes.
    fn run(&self, args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
        let mut command = self.command(args, env);
        let mut child =
            command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let mut input = child.stdin.take().unwrap();
        let bytes = stdin.to_vec();
        thread::spawn(move || input.write_all(&bytes));
        let pid = child.id() as libc::pid_t;
        let (done, finished) = mpsc::channel();
        thread::spawn(move || done.send(child.wait_with_output().unwrap()));
        finished.recv_timeout(Duration::from_secs(120)).unwrap_or_else(|_| {
            // SAFETY: the child has not been waited for, so its pid is still its own.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("chatwoot-ingress {args:?} in the image did not end within 2 minutes")
        })
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = Command::new("podman").args(["rmi", "-f", &self.tag]).output();
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
#[ignore = "needs podman, Dovecot and Rails"]
fn the_image_has_the_containerfiles_metadata_and_its_root_filesystem_delivers_as_its_user() {
    require_podman();
    let image = Image::build();

    // What a runtime reads, as issue 19 asks for it.
    let inspect = image.inspect();
    let config = &inspect["Config"];
    assert_eq!(config["User"], format!("{UID}:{UID}"));
    assert_eq!(config["Entrypoint"], json!(["chatwoot-ingress"]));
    assert_eq!(config["Cmd"], json!(["watch"]));
    assert_eq!(inspect["Healthcheck"]["Test"], json!(["CMD", "chatwoot-ingress", "health"]), "{inspect:#}");
    let labels = &config["Labels"];
    assert_eq!(labels["org.opencontainers.image.title"], "chatwoot-ingress");
    assert_eq!(labels["org.opencontainers.image.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(labels["org.opencontainers.image.licenses"], "MIT");
    assert!(labels["org.opencontainers.image.description"].as_str().unwrap().contains("Chatwoot"));
    assert!(labels["org.opencontainers.image.source"].is_string(), "{labels:#}");
    assert!(config["Env"].as_array().unwrap().contains(&json!(format!("STATE_DIRECTORY={STATE}"))));
    assert!(config["Volumes"][STATE].is_object(), "{config:#}");
    assert!(config["ExposedPorts"]["9898/tcp"].is_object(), "{config:#}");
    // Besides the binary only the C runtime (libc, libgcc_s and the loader:
    // 2.3 MiB on Debian 12), the CA bundle (0.2 MiB) and a few lines of
    // /etc: 4 MiB more than the binary means something else got in.
    let binary = fs::metadata(BIN).unwrap().len();
    let size = inspect["Size"].as_u64().unwrap();
    assert!(size <= binary + (4 << 20), "{size} bytes, the binary {binary}");

    // No shell to exec into; the state directory is the user's alone.
    assert!(!image.path("/bin/sh").exists() && !image.path("/usr/bin/sh").exists());
    let state = fs::metadata(image.path(STATE)).unwrap();
    assert_eq!((state.uid(), state.gid(), state.mode() & 0o777), (UID, UID, 0o700));
    let version = image.run(&["--version"], &[], b"");
    assert_eq!(
        (version.status.code(), text(&version.stdout)),
        (Some(0), format!("chatwoot-ingress {}\n", env!("CARGO_PKG_VERSION"))),
        "{}",
        text(&version.stderr)
    );

    // deliver, the entrypoint with no command: exit 0, Rails stored the bytes.
    let rails = Rails::start(Some(PASSWORD), "relay");
    // The password as Compose and Kubernetes hand it over: Chatwoot's own variable.
    let ingress =
        [("CHATWOOT_INGRESS_URL", rails.url()), ("RAILS_INBOUND_EMAIL_PASSWORD", PASSWORD.to_string())];
    let ingress: Vec<(&str, &str)> = ingress.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let message = corpus("8bit-headers.eml");
    let delivered = image.run(&[], &ingress, &message);
    assert_eq!((delivered.status.code(), text(&delivered.stderr)), (Some(0), String::new()));
    assert!(rails.stored() == [message.clone()], "{}", rails.errors());

    // watch --once from Dovecot, with the configuration where the image
    // looks for it and the state in its volume.
    let dovecot = Dovecot::start(None);
    let (user, imap_password) = ("catchall", "imap pass");
    dovecot.user(user, imap_password);
    let mut expected = vec![message];
    for n in 1..=2 {
        let mail = format!(
            "From: a@sender.test\r\nTo: reply+{n}@reply.example.com\r\nSubject: container {n}\r\nMessage-ID: <container-{n}@sender.test>\r\n\r\nbody {n}\r\n"
        );
        let uid = dovecot.append(user, "INBOX", mail.as_bytes());
        expected.push(dovecot.body(user, "INBOX", uid));
    }
    let secret = "/etc/chatwoot-ingress/imap.password";
    fs::create_dir_all(image.path("/etc/chatwoot-ingress")).unwrap();
    fs::write(image.path(secret), format!("{imap_password}\n")).unwrap();
    fs::set_permissions(image.path(secret), fs::Permissions::from_mode(0o640)).unwrap();
    chown(image.path(secret), Some(0), Some(UID)).unwrap();
    fs::write(
        image.path(CONFIG),
        format!(
            "[[mailbox]]\nname = \"support\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nuser = \"{user}\"\npassword_file = \"{secret}\"\n",
            dovecot.plain_port
        ),
    )
    .unwrap();
    let watched = image.run(&["watch", "--once"], &ingress, b"");
    let log = format!("{}{}", text(&watched.stdout), text(&watched.stderr));
    assert_eq!(watched.status.code(), Some(0), "{log}");
    let (mut stored, mut expected) = (rails.stored(), expected);
    stored.sort();
    expected.sort();
    assert!(stored == expected, "stored {} of {}: {log}\n{}", stored.len(), expected.len(), rails.errors());
    assert!(dovecot.uids(user, "INBOX").iter().all(|(_, flags)| flags.contains("\\Seen")), "{log}");
    let saved: Vec<_> = fs::read_dir(image.path(&format!("{STATE}/watch"))).unwrap().flatten().collect();
    assert!(!saved.is_empty() && saved.iter().all(|f| f.metadata().unwrap().uid() == UID), "{saved:?}");

    // The HEALTHCHECK's command runs from the image; with no watch
    // listening, the container is unhealthy.
    let listen = format!("127.0.0.1:{}", common::imap::free_port());
    let unhealthy = image.run(&["health", "--metrics-listen", &listen], &[], b"");
    let said = text(&unhealthy.stderr);
    assert_eq!(unhealthy.status.code(), Some(1), "{said}");
    assert!(said.starts_with("unhealthy: ") && said.contains("connection refused"), "{said}");

    // With watch serving its health (as the image's CMD runs it, with
    // [metrics] in the configuration), it is healthy.
    let config = fs::read_to_string(image.path(CONFIG)).unwrap();
    fs::write(image.path(CONFIG), format!("[metrics]\nlisten = \"{listen}\"\n{config}")).unwrap();
    let mut watching =
        image.command(&["watch"], &ingress).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let started = std::time::Instant::now();
    let healthy = loop {
        let asked = image.run(&["health", "--metrics-listen", &listen], &[], b"");
        if asked.status.success() || started.elapsed() > Duration::from_secs(30) {
            break asked;
        }
        thread::sleep(Duration::from_millis(200));
    };
    // SAFETY: the child has not been waited for, so its pid is still its own.
    unsafe { libc::kill(watching.id() as libc::pid_t, libc::SIGTERM) };
    let stopped = watching.wait().unwrap();
    assert_eq!(healthy.status.code(), Some(0), "{}{}", text(&healthy.stdout), text(&healthy.stderr));
    assert!(text(&healthy.stdout).starts_with("healthy"), "{}", text(&healthy.stdout));
    assert_eq!(stopped.code(), Some(0), "a clean stop on SIGTERM");
}

// --- Compose ----------------------------------------------------------------

fn require_python() {
    require("python3-jsonschema and python3-yaml", || {
        Command::new(PYTHON).args(["-c", "import jsonschema, yaml"]).status().is_ok_and(|s| s.success())
    });
}

/// A YAML file as JSON, read by PyYAML.
fn yaml(path: &Path) -> Value {
    let script = "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)";
    let output = Command::new(PYTHON).args(["-c", script]).arg(path).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What the Compose Specification's schema (tests/schemas) finds wrong
/// with `document`, one line each: empty when it is valid.
fn compose_errors(document: &str) -> String {
    let script = "import json, sys, yaml
from jsonschema import Draft7Validator
schema = json.load(open(sys.argv[1]))
Draft7Validator.check_schema(schema)
errors = Draft7Validator(schema).iter_errors(yaml.safe_load(sys.stdin))
for e in sorted(errors, key=lambda e: list(map(str, e.path))):
    print('/'.join(map(str, e.path)) + ': ' + e.message)";
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .arg(repo().join("tests/schemas/compose-spec.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(document.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    text(&output.stdout)
}

#[test]
#[ignore = "needs python3-jsonschema and python3-yaml"]
fn the_compose_file_is_valid_against_the_compose_specification() {
    require_python();
    let compose = read("packaging/compose/compose.yaml");
    assert_eq!(compose_errors(&compose), "");
    // The validator does look: a key Compose does not know is an error.
    let wrong =
        compose.replace("    restart: unless-stopped\n", "    restart: unless-stopped\n    restarts: 3\n");
    assert_eq!(
        compose_errors(&wrong),
        "services/chatwoot-ingress: 'restarts' does not match any of the regexes: '^x-'\n"
    );
}

#[test]
#[ignore = "needs python3-yaml"]
fn the_compose_service_reads_chatwoots_environment_and_runs_two_replicas_sharing_the_mailboxes() {
    require_python();
    let compose = yaml(&repo().join("packaging/compose/compose.yaml"));
    let service = &compose["services"]["chatwoot-ingress"];
    assert_eq!(service["env_file"], ".env", "Chatwoot's own .env");
    assert_eq!(
        service["environment"],
        json!({"CHATWOOT_INGRESS_URL": "http://rails:3000"}),
        "no second password"
    );
    assert_eq!(service["depends_on"], json!(["rails", "redis"]));
    assert_eq!(service["deploy"]["replicas"], 2, "replicas sharing the mailboxes through Redis");
    assert_eq!(service["restart"], "unless-stopped");
    assert_eq!(service["healthcheck"]["test"], json!(["CMD", "chatwoot-ingress", "health"]));
    assert_eq!((&service["pull_policy"], &service["read_only"]), (&json!("never"), &json!(true)));
    let volumes: Vec<&str> =
        service["volumes"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(volumes.contains(&format!("./chatwoot-ingress.toml:{CONFIG}:ro").as_str()), "{volumes:?}");
    // The place in each folder is in Redis: each replica's state directory
    // is its own (a shared one would be locked by the first).
    assert!(!volumes.iter().any(|v| v.contains(STATE)), "{volumes:?}");
    let tmpfs = service["tmpfs"].as_array().unwrap();
    assert!(tmpfs.iter().any(|t| t.as_str().unwrap().starts_with(&format!("{STATE}:"))), "{tmpfs:?}");

    // Its configuration: metrics reachable for the health check, and each
    // mailbox's password one of the service's secrets.
    let config: toml::Value = toml::from_str(&read("packaging/compose/config.toml")).unwrap();
    assert_eq!(config["metrics"]["listen"].as_str(), Some("0.0.0.0:9898"));
    assert_eq!(config["metrics"]["allow_remote"].as_bool(), Some(true));
    assert!(config["cluster"].is_table(), "cluster mode, Redis from Chatwoot's .env");
    for mailbox in config["mailbox"].as_array().unwrap() {
        let file = mailbox["password_file"].as_str().unwrap();
        let secret = file.strip_prefix("/run/secrets/").expect(file);
        assert!(service["secrets"].as_array().unwrap().contains(&json!(secret)), "{secret}");
        assert!(compose["secrets"][secret]["file"].is_string(), "{secret}");
    }
}

// --- Kubernetes -------------------------------------------------------------

fn require_kubernetes_validate() {
    require("kubernetes-validate (tests/interop/install-deps)", || {
        Command::new(KUBERNETES_VALIDATE).arg("--version").output().is_ok_and(|o| o.status.success())
    });
}

/// kubernetes-validate --strict (unknown fields are errors) for `version`:
/// (success, what it said).
fn kubernetes_validate(version: &str, files: &[PathBuf]) -> (bool, String) {
    let output = Command::new(KUBERNETES_VALIDATE)
        .args(["--strict", "--kubernetes-version", version])
        .args(files)
        .output()
        .unwrap();
    (output.status.success(), format!("{}{}", text(&output.stdout), text(&output.stderr)))
}

#[test]
#[ignore = "needs python3-yaml and kubernetes-validate"]
fn the_kubernetes_manifests_are_valid_for_kubernetes_1_30_to_1_37() {
    require_python();
    require_kubernetes_validate();
    let dir = repo().join("packaging/kubernetes");
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    let mut files: Vec<PathBuf> = kustomization["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| dir.join(r.as_str().unwrap()))
        .collect();
    // The ConfigMap kustomize generates (JSON is YAML).
    let scratch = tempfile::tempdir().unwrap();
    for generator in kustomization["configMapGenerator"].as_array().unwrap() {
        let data: serde_json::Map<String, Value> = generator["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f.as_str().unwrap().to_string(),
                    json!(fs::read_to_string(dir.join(f.as_str().unwrap())).unwrap()),
                )
            })
            .collect();
        let name = generator["name"].as_str().unwrap();
        let map = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data});
        let path = scratch.path().join(format!("{name}.yaml"));
        fs::write(&path, map.to_string()).unwrap();
        files.push(path);
    }
    for version in ["1.30.0", "1.37.0"] {
        let (valid, said) = kubernetes_validate(version, &files);
        assert!(valid, "{said}");
        assert_eq!(said.matches(" passed for resource ").count(), files.len(), "{said}");
    }
    // The validator does look: a field Kubernetes does not know is an error.
    let wrong = scratch.path().join("wrong.yaml");
    fs::write(
        &wrong,
        read("packaging/kubernetes/deployment.yaml")
            .replace("runAsNonRoot: true", "runAsNonRoot: true\n        runAsRoot: false"),
    )
    .unwrap();
    let (valid, said) = kubernetes_validate("1.37.0", &[wrong]);
    assert!(!valid && said.contains("'runAsRoot' was unexpected"), "{said}");
}

#[test]
#[ignore = "needs python3-yaml"]
fn the_deployment_reads_the_charts_secret_probes_health_and_runs_locked_down() {
    require_python();
    let dir = repo().join("packaging/kubernetes");
    let deployment = yaml(&dir.join("deployment.yaml"));
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2, "replicas sharing the mailboxes through Redis");
    assert_eq!(spec["strategy"]["rollingUpdate"]["maxUnavailable"], 0, "one joins before one leaves");
    let pod = &spec["template"]["spec"];
    let spread = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(spread["podAffinityTerm"]["topologyKey"], "kubernetes.io/hostname", "on different nodes");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], UID, "the image's user");
    assert_eq!(pod["securityContext"]["fsGroup"], UID, "the volume is the user's");
    assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    // The chart's Secret <fullname>-env and web Service <fullname>:3000,
    // for a release named chatwoot; no password of our own.
    assert_eq!(container["envFrom"], json!([{"secretRef": {"name": "chatwoot-env"}}]));
    assert_eq!(container["env"], json!([{"name": "CHATWOOT_INGRESS_URL", "value": "http://chatwoot:3000"}]));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(container["resources"][kind][resource].is_string(), "{kind} {resource}");
        }
    }
    // Probes on the metrics port.
    let port = |name: &Value| -> u64 {
        match name.as_u64() {
            Some(number) => number,
            None => container["ports"].as_array().unwrap().iter().find(|p| &p["name"] == name).unwrap()
                ["containerPort"]
                .as_u64()
                .unwrap(),
        }
    };
    for (probe, path) in [("livenessProbe", "/healthz/live"), ("readinessProbe", "/healthz/ready")] {
        assert_eq!(container[probe]["httpGet"]["path"], path);
        assert_eq!(port(&container[probe]["httpGet"]["port"]), 9898, "{probe}");
    }
    // The mounts: configuration read-only from the generated ConfigMap,
    // state in the pod's own emptyDir (the place in each folder is in
    // Redis), passwords from a Secret the config names.
    let volume = |mount: &str| -> &Value {
        let found = container["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == mount);
        let name = &found.unwrap_or_else(|| panic!("nothing mounted at {mount}"))["name"];
        pod["volumes"].as_array().unwrap().iter().find(|v| &v["name"] == name).unwrap()
    };
    let kustomization = yaml(&dir.join("kustomization.yaml"));
    assert_eq!(
        volume("/etc/chatwoot-ingress")["configMap"]["name"],
        kustomization["configMapGenerator"][0]["name"]
    );
    assert!(volume(STATE)["emptyDir"].is_object());
    assert_eq!(container["image"], kustomization["images"][0]["name"]);
    let config: toml::Value = toml::from_str(&read("packaging/kubernetes/config.toml")).unwrap();
    assert_eq!(config["metrics"]["listen"].as_str(), Some("0.0.0.0:9898"));
    assert_eq!(config["metrics"]["allow_remote"].as_bool(), Some(true));
    assert!(config["cluster"].is_table(), "cluster mode, Redis from the chart's Secret");
    for mailbox in config["mailbox"].as_array().unwrap() {
        let file = Path::new(mailbox["password_file"].as_str().unwrap());
        assert!(volume(file.parent().unwrap().to_str().unwrap())["secret"].is_object(), "{file:?}");
    }
}

/// The README's walk-throughs name only files that exist, and the names the
/// Compose walk-through copies the files to are the ones compose.yaml mounts.
#[test]
fn the_readmes_container_walk_throughs_name_the_shipped_files() {
    let readme = read("README.md");
    let section =
        readme.split("## Beside Chatwoot, in containers").nth(1).unwrap().split("\n## ").next().unwrap();
    let mut named = 0;
    for word in section.split(|c: char| !(c.is_ascii_alphanumeric() || "/._-".contains(c))) {
        if word.starts_with("packaging/") || word.starts_with("scripts/") {
            assert!(
                repo().join(word.trim_end_matches('.')).exists(),
                "README names {word}, which does not exist"
            );
            named += 1;
        }
    }
    assert!(named > 10, "only {named} paths found");
    let compose = read("packaging/compose/compose.yaml");
    for copy in ["compose.yaml chatwoot-ingress.yaml", "config.toml chatwoot-ingress.toml"] {
        assert!(section.contains(&format!("packaging/compose/{copy}")), "{copy}");
    }
    assert!(compose.contains(&format!("./chatwoot-ingress.toml:{CONFIG}:ro")));
    assert!(compose.contains("file: ./imap-support.password") && section.contains("imap-support.password"));
}

/// The configurations the Compose service and the Deployment mount load as
/// shipped ([metrics] on every address, allowed; the password from
/// Chatwoot's variable), once the secrets they name exist.
#[test]
fn the_shipped_container_configurations_load() {
    for shipped in ["packaging/compose/config.toml", "packaging/kubernetes/config.toml"] {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("imap.password");
        fs::write(&secret, "imap pass\n").unwrap();
        let text = read(shipped);
        let named = text.lines().find_map(|l| l.strip_prefix("password_file = ")).expect(shipped);
        let config = dir.path().join("config.toml");
        fs::write(&config, text.replace(named, &format!("{:?}", secret.display().to_string()))).unwrap();
        let run = common::ingress(&["--config", config.to_str().unwrap(), "check", "--json"])
            .env("RAILS_INBOUND_EMAIL_PASSWORD", PASSWORD)
            .env("CHATWOOT_INGRESS_URL", "http://127.0.0.1:9")
            .run();
        let report: Value =
            serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{shipped}: {e}: {run:?}"));
        let steps = report["steps"].as_array().unwrap();
        let step = |name: &str| {
            steps.iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("{name}: {report:#}"))
        };
        assert_eq!(step("configuration")["status"], "ok", "{shipped}: {report:#}");
        let password = step("password");
        assert!(
            password["detail"].as_str().unwrap().contains("RAILS_INBOUND_EMAIL_PASSWORD"),
            "{password:#}"
        );
    }
}
