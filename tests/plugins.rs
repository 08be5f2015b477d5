//! Plugins loaded from shared libraries: a good auth plugin used by every protocol and the
//! management API, and the failures startup must name clearly (another ABI version, a missing
//! file, a library that is not a plugin, a panic in init). A panic inside a call denies that one
//! login and the broker keeps serving.
//!
//! The plugin libraries are workspace crates built as cdylibs next to the `warren` binary, which
//! is where the broker looks by default. `cargo test` does not build cdylibs, so the tests build
//! them first (a no-op when they are fresh).

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use common::logins::{amqp_login, build_plugins, management_status, mqtt_login, stomp_login};
use common::Broker;

const SKELETON_CONFIG: &str = r#"
auth_backends = ["internal", "plugin-skeleton"]

[plugins]
load = ["plugin-skeleton"]

[plugins.plugin-skeleton.users.alice]
password = "alice-secret"
vhosts = ["/"]
tags = ["administrator"]

[plugins.plugin-skeleton.users.bob]
password = "bob-secret"
vhosts = ["elsewhere"]
"#;

#[tokio::test]
async fn an_auth_plugin_serves_every_protocol_after_the_internal_backend() {
    build_plugins();
    let broker = Broker::start_with_config(SKELETON_CONFIG);
    assert!(broker.log_tail().contains("plugin loaded plugin=plugin-skeleton"), "{}", broker.log_tail());

    // AMQP: the plugin's user logs in; a wrong password and the wrong vhost are refused.
    let alice = amqp_login(&broker, "/", "alice", "alice-secret").await.expect("alice logs in over AMQP");
    alice.close(200, "bye").await.expect("close");
    let wrong = amqp_login(&broker, "/", "alice", "nope").await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let bob = amqp_login(&broker, "/", "bob", "bob-secret").await;
    assert!(bob.is_err(), "bob may not open /");
    // The internal backend still comes first.
    amqp_login(&broker, "/", "guest", "guest").await.expect("guest logs in").close(200, "bye").await.expect("close");

    // MQTT and STOMP go through the same chain.
    assert_eq!(mqtt_login(broker.mqtt_addr, "alice", "alice-secret"), 0, "MQTT CONNACK accepted");
    assert_eq!(mqtt_login(broker.mqtt_addr, "alice", "nope"), 4, "MQTT: bad user name or password");
    assert_eq!(stomp_login(broker.stomp_addr, "/", "alice", "alice-secret"), "CONNECTED");
    assert_eq!(stomp_login(broker.stomp_addr, "/", "alice", "nope"), "ERROR");

    // The management API too: the plugin gave alice the administrator tag.
    assert_eq!(management_status(broker.http_addr, "alice", "alice-secret"), 200);
    assert_eq!(management_status(broker.http_addr, "alice", "nope"), 401);
}

/// Runs `warren` with `config` and expects it to refuse to start; returns its stderr.
fn startup_failure(config: &str) -> String {
    build_plugins();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let run = RUNS.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("warren-plugin-fail-{}-{run}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config_path = dir.join("warren.toml");
    std::fs::write(&config_path, config).expect("write the config");
    let output = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--amqp-port", "0", "--mqtt-port", "0", "--stomp-port", "0", "--http-port", "0", "--bind", "127.0.0.1"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::null())
        .output()
        .expect("run warren");
    std::fs::remove_dir_all(&dir).ok();
    assert!(!output.status.success(), "warren started with a bad plugin");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_plugin_built_for_another_abi_version_stops_startup_before_any_call() {
    let stderr = startup_failure("[plugins]\nload = [\"test-wrong-abi\"]\n");
    assert!(stderr.contains("plugin 'test-wrong-abi'"), "{stderr}");
    assert!(stderr.contains("libwarren_test_wrong_abi"), "names the file: {stderr}");
    assert!(stderr.contains("built for plugin ABI version 2, but this broker speaks version 1"), "{stderr}");
}

#[test]
fn a_missing_file_or_a_library_that_is_no_plugin_stops_startup() {
    let stderr = startup_failure("[plugins]\nload = [\"no-such-plugin\"]\n");
    assert!(stderr.contains("plugin 'no-such-plugin'") && stderr.contains("does not exist"), "{stderr}");
    let stderr = startup_failure("[plugins]\nload = [\"test-not-a-plugin\"]\n");
    assert!(stderr.contains("is not a Warren plugin (no symbol WARREN_PLUGIN_DESCRIPTOR)"), "{stderr}");
    let stderr = startup_failure("auth_backends = [\"internal\", \"ldap\"]\n");
    assert!(stderr.contains("auth backend 'ldap' is neither 'internal' nor a loaded plugin"), "{stderr}");
}

#[test]
fn a_panic_in_init_stops_startup_with_its_message() {
    let stderr = startup_failure("[plugins]\nload = [\"test-panicky\"]\n[plugins.test-panicky]\npanic_in = \"init\"\n");
    assert!(stderr.contains("plugin 'test-panicky': init panicked: told to panic in init"), "{stderr}");
}

#[tokio::test]
async fn a_panic_in_a_call_denies_that_login_and_the_broker_keeps_serving() {
    build_plugins();
    let broker = Broker::start_with_config(
        "auth_backends = [\"test-panicky\", \"internal\"]\n[plugins]\nload = [\"test-panicky\"]\n\
         [plugins.test-panicky]\npanic_in = \"authenticate\"\n",
    );
    for _ in 0..3 {
        // The plugin panics on every login; the chain goes on to the internal backend.
        let guest = amqp_login(&broker, "/", "guest", "guest").await.expect("guest logs in after the plugin panicked");
        guest.close(200, "bye").await.expect("close");
        assert!(amqp_login(&broker, "/", "panicky", "panicky").await.is_err(), "the panicking backend denies");
        assert_eq!(mqtt_login(broker.mqtt_addr, "panicky", "panicky"), 4);
    }
    let log = broker.log_tail();
    assert!(log.contains("plugin panicked") && log.contains("told to panic in authenticate"), "{log}");
}

#[test]
fn warren_plugins_lists_what_is_loaded() {
    build_plugins();
    let dir = std::env::temp_dir().join(format!("warren-plugin-list-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config_path = dir.join("warren.toml");
    std::fs::write(&config_path, SKELETON_CONFIG).expect("write the config");
    let output = Command::new(env!("CARGO_BIN_EXE_warren"))
        .arg("--config")
        .arg(&config_path)
        .arg("plugins")
        .env("NO_COLOR", "1")
        .output()
        .expect("run warren plugins");
    std::fs::remove_dir_all(&dir).ok();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout} {}", String::from_utf8_lossy(&output.stderr));
    let line = stdout.lines().find(|line| line.starts_with("plugin-skeleton")).expect("a line for the plugin");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[..4], ["plugin-skeleton", env!("CARGO_PKG_VERSION"), "1", "auth"], "{line}");
    assert!(fields[4].ends_with("libwarren_plugin_skeleton.so"), "{line}");
}
