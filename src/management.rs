//! The management HTTP API, shaped like RabbitMQ's (`/api/...` on the HTTP port): vhosts,
//! users, permissions and policies, created and deleted at run time, and the definitions
//! export. Every change is stored with the durable definitions, so it survives a restart.
//!
//! Requests authenticate with HTTP basic auth as a user tagged `administrator`, through the
//! broker's auth backends (`auth_backends`: the internal database, then plugins such as LDAP,
//! whose tag queries can grant `administrator`), as RabbitMQ's management plugin does.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value as JsonValue};
use warren_core::auth::{Credentials, InternalUsers, Permissions, User, PASSWORD_HASHING};
use warren_core::definitions::{Definitions, PolicyDefinition};
use warren_core::name::{UserName, VhostName};
use warren_core::policy::{ApplyTo, Policy};
use warren_core::value::{Table, Value};
use warren_core::Broker;

/// What the API works on, shared with the definitions hook.
#[derive(Debug)]
pub struct Management {
    pub broker: Arc<Broker>,
    pub users: Arc<InternalUsers>,
    /// (vhost, name) of the policies set through the API (or restored from the definitions):
    /// the ones stored with them. Config-file policies are not stored: the file is their source.
    pub runtime_policies: Mutex<HashSet<(VhostName, String)>>,
}

impl Management {
    pub fn new(broker: Arc<Broker>, users: Arc<InternalUsers>) -> Arc<Management> {
        Arc::new(Management { broker, users, runtime_policies: Mutex::new(HashSet::new()) })
    }

    fn runtime_policies(&self) -> std::sync::MutexGuard<'_, HashSet<(VhostName, String)>> {
        self.runtime_policies.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Everything to store: the broker's durable definitions, the users and the runtime
    /// policies.
    pub fn snapshot(&self) -> Definitions {
        let mut definitions = self.broker.durable_definitions();
        definitions.users = Some(self.users.list());
        let runtime = self.runtime_policies().clone();
        for vhost in self.broker.vhost_names() {
            let Some(handle) = self.broker.vhost(&vhost) else { continue };
            for policy in handle.policies() {
                if runtime.contains(&(vhost.clone(), policy.name.clone())) {
                    definitions.policies.push(policy_definition(&vhost, &policy));
                }
            }
        }
        definitions
    }

    /// Restores the users and runtime policies of stored definitions (the broker restores the
    /// rest). Returns the policies that could not be set.
    pub fn restore(&self, definitions: &Definitions) -> Vec<String> {
        if let Some(users) = &definitions.users {
            self.users.replace_all(users.clone());
        }
        let mut failures = Vec::new();
        for stored in &definitions.policies {
            match self.set_policy(stored) {
                Ok(()) => {}
                Err(reason) => failures.push(format!("policy '{}' in vhost '{}': {reason}", stored.name, stored.vhost)),
            }
        }
        failures
    }

    fn set_policy(&self, definition: &PolicyDefinition) -> Result<(), String> {
        let vhost = self.broker.vhost(&definition.vhost).ok_or("no such vhost")?;
        let apply_to = ApplyTo::from_name(&definition.apply_to).ok_or("apply-to must be queues, exchanges or all")?;
        let policy = Policy::new(
            &definition.name,
            &definition.pattern,
            apply_to,
            definition.priority,
            definition.definition.clone(),
        )
        .map_err(|error| error.to_string())?;
        vhost.set_policy(policy);
        self.runtime_policies().insert((definition.vhost.clone(), definition.name.clone()));
        Ok(())
    }
}

fn policy_definition(vhost: &VhostName, policy: &Policy) -> PolicyDefinition {
    PolicyDefinition {
        vhost: vhost.clone(),
        name: policy.name.clone(),
        pattern: policy.pattern().to_owned(),
        apply_to: match policy.apply_to {
            ApplyTo::Queues => "queues",
            ApplyTo::Exchanges => "exchanges",
            ApplyTo::All => "all",
        }
        .to_owned(),
        priority: policy.priority,
        definition: policy.definition.clone(),
    }
}

/// The API's routes, to merge into the HTTP port's router.
pub fn routes(management: Arc<Management>) -> Router {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/vhosts", get(list_vhosts))
        .route("/api/vhosts/{vhost}", get(get_vhost).put(put_vhost).delete(delete_vhost))
        .route("/api/users", get(list_users))
        .route("/api/users/{user}", get(get_user).put(put_user).delete(delete_user))
        .route("/api/permissions", get(list_permissions))
        .route("/api/permissions/{vhost}/{user}", get(get_permissions).put(put_permissions).delete(delete_permissions))
        .route("/api/policies", get(list_policies))
        .route("/api/policies/{vhost}", get(list_vhost_policies))
        .route("/api/policies/{vhost}/{name}", get(get_policy).put(put_policy).delete(delete_policy))
        .route("/api/definitions", get(export_definitions))
        .with_state(management)
}

type Shared = State<Arc<Management>>;

/// An API error: its status and RabbitMQ's `{"error", "reason"}` body.
struct ApiError(StatusCode, &'static str, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.0, Json(json!({"error": self.1, "reason": self.2}))).into_response();
        if self.0 == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Warren\""));
        }
        response
    }
}

type ApiResult = Result<Response, ApiError>;

fn not_found(what: impl Into<String>) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "Object Not Found", what.into())
}

fn bad_request(reason: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request", reason.into())
}

/// A request made by an administrator: HTTP basic auth as an internal user tagged
/// `administrator`. Every handler takes one, so none can forget the check.
struct Admin;

impl FromRequestParts<Arc<Management>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, management: &Arc<Management>) -> Result<Admin, ApiError> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|info| info.0);
        let peer =
            peer.ok_or_else(|| ApiError(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no peer address".into()))?;
        authorize(management, &parts.headers, peer).await?;
        Ok(Admin)
    }
}

/// Checks basic auth through the broker's auth backends: a user tagged `administrator`.
async fn authorize(management: &Management, headers: &HeaderMap, peer: SocketAddr) -> Result<(), ApiError> {
    let unauthorized = |reason: &str| ApiError(StatusCode::UNAUTHORIZED, "not_authorised", reason.to_owned());
    let header = headers.get(header::AUTHORIZATION).and_then(|value| value.to_str().ok());
    let encoded = header.and_then(|value| value.strip_prefix("Basic ")).ok_or_else(|| unauthorized("Login failed"))?;
    let decoded =
        base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| unauthorized("Login failed"))?;
    let decoded = String::from_utf8(decoded).map_err(|_| unauthorized("Login failed"))?;
    let (user, password) = decoded.split_once(':').ok_or_else(|| unauthorized("Login failed"))?;
    let credentials = Credentials { username: UserName::new(user), password: password.to_owned(), peer };
    let principal = management.broker.authenticate(&credentials).await.map_err(|_| unauthorized("Login failed"))?;
    if !principal.tags.iter().any(|tag| tag == "administrator") {
        return Err(unauthorized("Not administrator user"));
    }
    Ok(())
}

fn created(new: bool) -> Response {
    if new { StatusCode::CREATED } else { StatusCode::NO_CONTENT }.into_response()
}

async fn overview(_: Admin, State(management): Shared) -> ApiResult {
    Ok(Json(json!({
        "product_name": management.broker.config().product,
        "product_version": management.broker.config().version,
    }))
    .into_response())
}

async fn list_vhosts(_: Admin, State(management): Shared) -> ApiResult {
    let vhosts: Vec<JsonValue> =
        management.broker.vhost_names().iter().map(|name| json!({"name": name.as_str()})).collect();
    Ok(Json(vhosts).into_response())
}

async fn get_vhost(_: Admin, State(management): Shared, Path(vhost): Path<String>) -> ApiResult {
    management.broker.vhost(&VhostName::new(&vhost)).ok_or_else(|| not_found("vhost"))?;
    Ok(Json(json!({"name": vhost})).into_response())
}

async fn put_vhost(_: Admin, State(management): Shared, Path(vhost): Path<String>) -> ApiResult {
    if vhost.is_empty() || vhost.len() > 255 {
        return Err(bad_request("vhost names are 1 to 255 bytes"));
    }
    Ok(created(management.broker.create_vhost(VhostName::new(&vhost))))
}

async fn delete_vhost(_: Admin, State(management): Shared, Path(vhost): Path<String>) -> ApiResult {
    let name = VhostName::new(&vhost);
    management.users.remove_vhost(&name);
    management.runtime_policies().retain(|(policy_vhost, _)| *policy_vhost != name);
    if !management.broker.delete_vhost(&name) {
        return Err(not_found("vhost"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn user_json(user: &User) -> JsonValue {
    json!({
        "name": user.name.as_str(),
        "password_hash": user.password_hash,
        "hashing_algorithm": PASSWORD_HASHING,
        "tags": user.tags,
    })
}

async fn list_users(_: Admin, State(management): Shared) -> ApiResult {
    Ok(Json(management.users.list().iter().map(user_json).collect::<Vec<_>>()).into_response())
}

async fn get_user(_: Admin, State(management): Shared, Path(user): Path<String>) -> ApiResult {
    let user = management.users.get(&UserName::new(&user)).ok_or_else(|| not_found("user"))?;
    Ok(Json(user_json(&user)).into_response())
}

/// Tags as RabbitMQ takes them: a comma-separated string, or a list.
fn tags_of(body: &JsonValue) -> Vec<String> {
    match &body["tags"] {
        JsonValue::String(text) => {
            text.split(',').map(str::trim).filter(|tag| !tag.is_empty()).map(str::to_owned).collect()
        }
        JsonValue::Array(tags) => tags.iter().filter_map(|tag| tag.as_str().map(str::to_owned)).collect(),
        _ => Vec::new(),
    }
}

async fn put_user(
    _: Admin,
    State(management): Shared,
    Path(user): Path<String>,
    Json(body): Json<JsonValue>,
) -> ApiResult {
    if user.is_empty() || user.len() > 255 {
        return Err(bad_request("user names are 1 to 255 bytes"));
    }
    let name = UserName::new(&user);
    let existing = management.users.get(&name);
    let password_hash = match (body["password"].as_str(), body["password_hash"].as_str()) {
        (Some(password), _) => warren_core::auth::hash_password(password),
        (None, Some(hash)) => {
            let algorithm = body["hashing_algorithm"].as_str().unwrap_or(PASSWORD_HASHING);
            if algorithm != PASSWORD_HASHING {
                return Err(bad_request(format!("unsupported hashing algorithm {algorithm}")));
            }
            hash.to_owned()
        }
        (None, None) => match &existing {
            Some(existing) => existing.password_hash.clone(),
            None => return Err(bad_request("password or password_hash is required")),
        },
    };
    let permissions = existing.as_ref().map(|user| user.permissions.clone()).unwrap_or_default();
    management.users.put(User { name, password_hash, tags: tags_of(&body), permissions });
    management.broker.definitions_changed();
    Ok(created(existing.is_none()))
}

async fn delete_user(_: Admin, State(management): Shared, Path(user): Path<String>) -> ApiResult {
    if !management.users.delete(&UserName::new(&user)) {
        return Err(not_found("user"));
    }
    management.broker.definitions_changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn permissions_json(user: &UserName, vhost: &VhostName, permissions: &Permissions) -> JsonValue {
    json!({
        "user": user.as_str(),
        "vhost": vhost.as_str(),
        "configure": permissions.configure,
        "write": permissions.write,
        "read": permissions.read,
    })
}

async fn list_permissions(_: Admin, State(management): Shared) -> ApiResult {
    let mut list = Vec::new();
    for user in management.users.list() {
        let mut permissions: Vec<_> = user.permissions.iter().collect();
        permissions.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        list.extend(
            permissions.into_iter().map(|(vhost, permissions)| permissions_json(&user.name, vhost, permissions)),
        );
    }
    Ok(Json(list).into_response())
}

async fn get_permissions(
    _: Admin,
    State(management): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    let (vhost, user) = (VhostName::new(&vhost), UserName::new(&user));
    let found = management.users.get(&user).and_then(|found| found.permissions.get(&vhost).cloned());
    let permissions = found.ok_or_else(|| not_found("permissions"))?;
    Ok(Json(permissions_json(&user, &vhost, &permissions)).into_response())
}

async fn put_permissions(
    _: Admin,
    State(management): Shared,
    Path((vhost, user)): Path<(String, String)>,
    Json(body): Json<JsonValue>,
) -> ApiResult {
    let (vhost, user) = (VhostName::new(&vhost), UserName::new(&user));
    if management.broker.vhost(&vhost).is_none() {
        return Err(bad_request("vhost_not_found"));
    }
    let pattern = |field: &str| -> Result<String, ApiError> {
        let text = body[field].as_str().ok_or_else(|| bad_request(format!("{field} is required")))?;
        regex_check(text).map_err(|error| bad_request(format!("{field}: {error}")))?;
        Ok(text.to_owned())
    };
    let permissions =
        Permissions { configure: pattern("configure")?, write: pattern("write")?, read: pattern("read")? };
    let existed = management.users.get(&user).is_some_and(|found| found.permissions.contains_key(&vhost));
    if !management.users.set_permissions(&user, &vhost, permissions) {
        return Err(bad_request("user_not_found"));
    }
    management.broker.definitions_changed();
    Ok(created(!existed))
}

/// Permission patterns are regular expressions, checked when set.
fn regex_check(pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern).map(|_| ()).map_err(|error| error.to_string())
}

async fn delete_permissions(
    _: Admin,
    State(management): Shared,
    Path((vhost, user)): Path<(String, String)>,
) -> ApiResult {
    if !management.users.clear_permissions(&UserName::new(&user), &VhostName::new(&vhost)) {
        return Err(not_found("permissions"));
    }
    management.broker.definitions_changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn policy_json(definition: &PolicyDefinition) -> JsonValue {
    json!({
        "vhost": definition.vhost.as_str(),
        "name": definition.name,
        "pattern": definition.pattern,
        "apply-to": definition.apply_to,
        "priority": definition.priority,
        "definition": table_json(&definition.definition),
    })
}

/// A policy definition as plain JSON (numbers, strings, booleans).
fn table_json(table: &Table) -> JsonValue {
    let mut object = serde_json::Map::new();
    for (key, value) in table.iter() {
        let value = match value {
            Value::Bool(flag) => json!(flag),
            other => match (other.as_i64(), other.as_str()) {
                (Some(number), _) => json!(number),
                (None, Some(text)) => json!(text),
                _ => json!(format!("{other:?}")),
            },
        };
        object.insert(key.to_owned(), value);
    }
    JsonValue::Object(object)
}

fn policies_of(management: &Management, only: Option<&VhostName>) -> Vec<JsonValue> {
    let mut list = Vec::new();
    for vhost in management.broker.vhost_names() {
        if only.is_some_and(|only| *only != vhost) {
            continue;
        }
        let Some(handle) = management.broker.vhost(&vhost) else { continue };
        list.extend(handle.policies().iter().map(|policy| policy_json(&policy_definition(&vhost, policy))));
    }
    list
}

async fn list_policies(_: Admin, State(management): Shared) -> ApiResult {
    Ok(Json(policies_of(&management, None)).into_response())
}

async fn list_vhost_policies(_: Admin, State(management): Shared, Path(vhost): Path<String>) -> ApiResult {
    let vhost = VhostName::new(&vhost);
    management.broker.vhost(&vhost).ok_or_else(|| not_found("vhost"))?;
    Ok(Json(policies_of(&management, Some(&vhost))).into_response())
}

async fn get_policy(_: Admin, State(management): Shared, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    let vhost = VhostName::new(&vhost);
    let handle = management.broker.vhost(&vhost).ok_or_else(|| not_found("vhost"))?;
    let policies = handle.policies();
    let policy = policies.iter().find(|policy| policy.name == name).ok_or_else(|| not_found("policy"))?;
    Ok(Json(policy_json(&policy_definition(&vhost, policy))).into_response())
}

async fn put_policy(
    _: Admin,
    State(management): Shared,
    Path((vhost, name)): Path<(String, String)>,
    Json(body): Json<JsonValue>,
) -> ApiResult {
    let vhost = VhostName::new(&vhost);
    let handle = management.broker.vhost(&vhost).ok_or_else(|| not_found("vhost"))?;
    let existed = handle.policies().iter().any(|policy| policy.name == name);
    let pattern = body["pattern"].as_str().ok_or_else(|| bad_request("pattern is required"))?;
    let JsonValue::Object(fields) = &body["definition"] else { return Err(bad_request("definition is required")) };
    let mut definition = Table::new();
    for (key, value) in fields {
        let value = match value {
            JsonValue::Number(number) => {
                Value::I64(number.as_i64().ok_or_else(|| bad_request(format!("{key}: not an integer")))?)
            }
            JsonValue::String(text) => Value::string(text),
            JsonValue::Bool(flag) => Value::Bool(*flag),
            _ => return Err(bad_request(format!("{key}: unsupported value"))),
        };
        definition.insert(key.as_str(), value);
    }
    let stored = PolicyDefinition {
        vhost,
        name,
        pattern: pattern.to_owned(),
        apply_to: body["apply-to"].as_str().unwrap_or("all").to_owned(),
        priority: body["priority"].as_i64().and_then(|priority| i32::try_from(priority).ok()).unwrap_or(0),
        definition,
    };
    management.set_policy(&stored).map_err(bad_request)?;
    management.broker.definitions_changed();
    Ok(created(!existed))
}

async fn delete_policy(_: Admin, State(management): Shared, Path((vhost, name)): Path<(String, String)>) -> ApiResult {
    let vhost = VhostName::new(&vhost);
    let handle = management.broker.vhost(&vhost).ok_or_else(|| not_found("vhost"))?;
    if !handle.clear_policy(&name) {
        return Err(not_found("policy"));
    }
    management.runtime_policies().remove(&(vhost, name));
    management.broker.definitions_changed();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn export_definitions(_: Admin, State(management): Shared) -> ApiResult {
    Ok(Json(crate::definitions::to_json(&management.snapshot())).into_response())
}
