//! The `ldap-auth` plugin against a real OpenLDAP server (Debian's slapd, started per test by
//! `scripts/slapd-fixture` on free ports with `examples/ldap/fixture.ldif`): users allowed and
//! refused, wrong passwords, group-based vhost access and tags, DN lookup by search, StartTLS and
//! LDAPS, the result cache, and a server that is down or hangs.
//!
//! The fixture: alice, bob and carol under `ou=people,dc=warren,dc=test` (passwords
//! `<name>-pass`); groups `warren-users` (alice, bob), `vhost-inventory` (alice) and `admins`
//! (alice); carol is in none.

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::logins::{amqp_login, build_plugins, management_status, mqtt_login, resp_port, stomp_login};
use common::Broker;

/// A private slapd, stopped on drop.
struct Slapd {
    dir: PathBuf,
    port: u16,
    tls_port: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("address").port()
}

fn fixture_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slapd-fixture")
}

impl Slapd {
    fn start() -> Slapd {
        let dir = std::env::temp_dir().join(format!("warren-slapd-{}-{}", std::process::id(), free_port()));
        let (port, tls_port) = (free_port(), free_port());
        let slapd = Slapd { dir, port, tls_port };
        slapd.run("start");
        slapd
    }

    fn run(&self, action: &str) {
        let mut command = Command::new(fixture_script());
        command.arg(action).arg(&self.dir);
        if action == "start" {
            command.arg(self.port.to_string()).arg(self.tls_port.to_string());
        }
        let output = command.output().expect("run scripts/slapd-fixture");
        assert!(
            output.status.success(),
            "slapd-fixture {action} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn stop(&self) {
        self.run("stop");
    }

    fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    fn certificate(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new(fixture_script()).arg("stop").arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GROUPS: &str = "ou=groups,dc=warren,dc=test";

/// A broker whose backends are the internal database, then LDAP with `servers` and `extra`
/// settings. The vhost `inventory` is created through the management API.
fn broker_with_ldap(servers: &str, extra: &str) -> Broker {
    build_plugins();
    let config = format!(
        r#"
auth_backends = ["internal", "ldap-auth"]

[plugins]
load = ["ldap-auth"]

[plugins.ldap-auth]
servers = [{servers}]
other_bind = {{ dn = "cn=admin,dc=warren,dc=test", password = "admin-pass" }}
timeout_ms = 2000
tag_queries = {{ administrator = {{ in_group = "cn=admins,{GROUPS}" }} }}
# "/" for members of warren-users; any other vhost for members of vhost-<name>.
vhost_access_query = {{ any = [
    {{ all = [{{ equals = ["${{vhost}}", "/"] }}, {{ in_group = "cn=warren-users,{GROUPS}" }}] }},
    {{ in_group = "cn=vhost-${{vhost}},{GROUPS}" }},
] }}
{extra}
"#
    );
    let broker = Broker::start_with_config(&config);
    create_vhost(&broker, "inventory");
    broker
}

fn create_vhost(broker: &Broker, name: &str) {
    use std::io::{Read, Write};
    let mut stream = TcpStream::connect(broker.http_addr).expect("connect to HTTP");
    let request = format!(
        "PUT /api/vhosts/{name} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
}

async fn can_log_in(broker: &Broker, vhost: &str, user: &str, password: &str) -> bool {
    match amqp_login(broker, vhost, user, password).await {
        Ok(connection) => {
            connection.close(200, "bye").await.expect("close");
            true
        }
        Err(_) => false,
    }
}

#[tokio::test]
async fn ldap_users_log_in_by_password_and_open_vhosts_by_group() {
    let slapd = Slapd::start();
    let broker = broker_with_ldap(
        &format!("\"{}\"", slapd.url()),
        "user_dn_pattern = \"uid=${username},ou=people,dc=warren,dc=test\"\ncache_ttl_ms = 0",
    );

    // Allowed: alice everywhere she has a group for, bob on "/".
    assert!(can_log_in(&broker, "/", "alice", "alice-pass").await);
    assert!(can_log_in(&broker, "inventory", "alice", "alice-pass").await);
    assert!(can_log_in(&broker, "/", "bob", "bob-pass").await);
    // Group-based vhost access: bob is not in vhost-inventory, carol in no group at all.
    assert!(!can_log_in(&broker, "inventory", "bob", "bob-pass").await);
    assert!(!can_log_in(&broker, "/", "carol", "carol-pass").await);
    // Wrong or empty passwords, and users LDAP does not know.
    assert!(!can_log_in(&broker, "/", "alice", "bob-pass").await);
    assert!(!can_log_in(&broker, "/", "alice", "").await);
    // The fixture accepts a bind with a DN and no password (as anonymous): it must not count.
    assert_eq!(stomp_login(broker.stomp_addr, "/", "alice", ""), "ERROR");
    assert!(!can_log_in(&broker, "/", "mallory", "mallory-pass").await);
    // The internal backend still comes first.
    assert!(can_log_in(&broker, "/", "guest", "guest").await);

    // MQTT (vhost:user) and STOMP (host header) go through the same backend.
    assert_eq!(mqtt_login(broker.mqtt_addr, "inventory:alice", "alice-pass"), 0);
    assert_eq!(mqtt_login(broker.mqtt_addr, "inventory:bob", "bob-pass"), 5, "not authorised");
    assert_eq!(mqtt_login(broker.mqtt_addr, "alice", "wrong"), 4, "bad user name or password");
    assert_eq!(stomp_login(broker.stomp_addr, "inventory", "alice", "alice-pass"), "CONNECTED");
    assert_eq!(stomp_login(broker.stomp_addr, "inventory", "bob", "bob-pass"), "ERROR");

    // Tags from groups: alice is in admins, so the management API lets her in; bob is not.
    assert_eq!(management_status(broker.http_addr, "alice", "alice-pass"), 200);
    assert_eq!(management_status(broker.http_addr, "bob", "bob-pass"), 401);
}

#[tokio::test]
async fn dn_lookup_by_search_over_starttls_and_ldaps() {
    let slapd = Slapd::start();
    let lookup = "dn_lookup_attribute = \"uid\"\ndn_lookup_base = \"ou=people,dc=warren,dc=test\"\ncache_ttl_ms = 0";

    // StartTLS on the plain port, verifying the server against the fixture's certificate.
    let starttls = broker_with_ldap(
        &format!("\"{}\"", slapd.url()),
        &format!("{lookup}\nuse_starttls = true\nca_certificate_file = \"{}\"", slapd.certificate()),
    );
    assert!(can_log_in(&starttls, "inventory", "alice", "alice-pass").await);
    assert!(!can_log_in(&starttls, "inventory", "bob", "bob-pass").await);
    assert!(!can_log_in(&starttls, "/", "bob", "wrong").await);
    drop(starttls);

    // LDAPS on its own port.
    let ldaps = broker_with_ldap(
        &format!("\"ldaps://127.0.0.1:{}\"", slapd.tls_port),
        &format!("{lookup}\nca_certificate_file = \"{}\"", slapd.certificate()),
    );
    assert!(can_log_in(&ldaps, "/", "bob", "bob-pass").await);
    assert!(!can_log_in(&ldaps, "/", "carol", "carol-pass").await);
    drop(ldaps);

    // A certificate the broker does not trust is a refusal, not a silent downgrade.
    let untrusted = broker_with_ldap(&format!("\"ldaps://127.0.0.1:{}\"", slapd.tls_port), lookup);
    assert!(!can_log_in(&untrusted, "/", "bob", "bob-pass").await);
    assert!(untrusted.log_tail().contains("plugin=\"ldap-auth\""), "{}", untrusted.log_tail());
}

#[tokio::test]
async fn a_server_that_is_down_or_hangs_means_a_prompt_denial() {
    let slapd = Slapd::start();
    let broker = broker_with_ldap(
        &format!("\"{}\"", slapd.url()),
        "user_dn_pattern = \"uid=${username},ou=people,dc=warren,dc=test\"\ncache_ttl_ms = 0",
    );
    assert!(can_log_in(&broker, "/", "alice", "alice-pass").await);

    slapd.stop();
    let started = Instant::now();
    assert!(!can_log_in(&broker, "/", "alice", "alice-pass").await, "no server, no login");
    assert!(started.elapsed() < Duration::from_secs(5), "refused promptly: {:?}", started.elapsed());
    // The broker goes on serving its own users.
    assert!(can_log_in(&broker, "/", "guest", "guest").await);
    let log = broker.log_tail();
    assert!(log.contains("ERROR") && log.contains("login of alice"), "the failure is logged as an error: {log}");
    drop(broker);

    // A server that accepts connections and never answers: the 2 s timeout ends the login.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().expect("address").port();
    let held = std::thread::spawn(move || silent.incoming().take(4).filter_map(Result::ok).collect::<Vec<_>>());
    let broker = broker_with_ldap(
        &format!("\"ldap://127.0.0.1:{silent_port}\""),
        "user_dn_pattern = \"uid=${username},ou=people,dc=warren,dc=test\"\ncache_ttl_ms = 0",
    );
    let started = Instant::now();
    assert!(!can_log_in(&broker, "/", "alice", "alice-pass").await, "a silent server, no login");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1900) && waited < Duration::from_secs(8),
        "bounded by the timeout: {waited:?}"
    );
    assert!(can_log_in(&broker, "/", "guest", "guest").await);
    drop(broker);
    drop(held);
}

#[tokio::test]
async fn answers_are_cached_for_their_ttl() {
    let slapd = Slapd::start();
    let broker = broker_with_ldap(
        &format!("\"{}\"", slapd.url()),
        "user_dn_pattern = \"uid=${username},ou=people,dc=warren,dc=test\"\ncache_ttl_ms = 60000",
    );
    assert!(can_log_in(&broker, "inventory", "alice", "alice-pass").await);
    slapd.stop();
    // The server is gone, but alice's login and vhost answers are still fresh.
    assert!(can_log_in(&broker, "inventory", "alice", "alice-pass").await, "served from the cache");
    // Nothing was cached for another password or another user.
    assert!(!can_log_in(&broker, "inventory", "alice", "other-pass").await);
    assert!(!can_log_in(&broker, "/", "bob", "bob-pass").await);
}

/// One RESP command over a raw connection, logged in as `user`; returns the command's reply line.
fn resp_command(port: u16, user: &str, password: &str, command: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to RESP");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(format!("AUTH {user} {password}\r\n{command}\r\n").as_bytes()).expect("send");
    let mut reader = BufReader::new(stream);
    let mut auth = String::new();
    reader.read_line(&mut auth).expect("AUTH reply");
    assert_eq!(auth, "+OK\r\n", "{user} logs in");
    let mut reply = String::new();
    reader.read_line(&mut reply).expect("command reply");
    reply.trim_end().to_owned()
}

#[tokio::test]
async fn the_example_config_runs_both_plugins_with_resource_access_from_ldap() {
    use lapin::options::QueueDeclareOptions;
    use lapin::types::FieldTable;
    let slapd = Slapd::start();
    build_plugins();
    let example = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/plugins.toml"))
        .expect("read examples/plugins.toml");
    assert!(example.contains("ldap://127.0.0.1:3890") && example.contains("port = 6379"));
    let config = example.replace("ldap://127.0.0.1:3890", &slapd.url()).replace("port = 6379", "port = 0");
    let broker = Broker::start_with_config(&config);
    let port = resp_port(&broker);

    // resource_access_query: bob configures only bob-* queues; alice (admins) anything.
    let bob = amqp_login(&broker, "/", "bob", "bob-pass").await.expect("bob logs in");
    let channel = bob.create_channel().await.expect("channel");
    channel.queue_declare("bob-work", QueueDeclareOptions::default(), FieldTable::default()).await.expect("his own");
    let refused = channel.queue_declare("alice-work", QueueDeclareOptions::default(), FieldTable::default()).await;
    assert_eq!(refused.err().and_then(|error| common::reply_code(&error)), Some(403));
    let alice = amqp_login(&broker, "/", "alice", "alice-pass").await.expect("alice logs in");
    let channel = alice.create_channel().await.expect("channel");
    channel.queue_declare("shared-work", QueueDeclareOptions::default(), FieldTable::default()).await.expect("admin");

    // The RESP front-end logs in through LDAP and is held to the same permissions.
    assert_eq!(resp_command(port, "bob", "bob-pass", "RPUSH bob-jobs one"), ":1");
    let refused = resp_command(port, "bob", "bob-pass", "RPUSH alice-jobs one");
    assert!(refused.starts_with("-ERR access to queue 'alice-jobs' in vhost '/' refused for user 'bob'"), "{refused}");
    assert_eq!(resp_command(port, "alice", "alice-pass", "RPUSH alice-jobs one"), ":1");
    // carol is in no group: LDAP knows her password, but she may not open "/", so the session
    // (which opens the vhost) is refused.
    let carol = resp_command_raw(port, "AUTH carol carol-pass\r\n");
    assert!(carol.starts_with("-WRONGPASS"), "{carol}");
}

/// Sends raw RESP and returns the first reply line.
fn resp_command_raw(port: u16, bytes: &str) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to RESP");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    stream.write_all(bytes.as_bytes()).expect("send");
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).expect("reply");
    reply.trim_end().to_owned()
}

#[tokio::test]
async fn ldap_alone_replaces_the_internal_users() {
    let slapd = Slapd::start();
    build_plugins();
    let config = format!(
        r#"
auth_backends = ["ldap-auth"]
[plugins]
load = ["ldap-auth"]
[plugins.ldap-auth]
servers = ["{}"]
user_dn_pattern = "uid=${{username}},ou=people,dc=warren,dc=test"
cache_ttl_ms = 0
"#,
        slapd.url()
    );
    let broker = Broker::start_with_config(&config);
    assert!(can_log_in(&broker, "/", "bob", "bob-pass").await, "LDAP users log in");
    assert!(!can_log_in(&broker, "/", "guest", "guest").await, "the internal guest is not a backend any more");
    assert_eq!(stomp_login(broker.stomp_addr, "/", "guest", "guest"), "ERROR");
}
