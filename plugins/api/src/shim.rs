//! The `extern "C"` entry points [`crate::export_plugin!`] instantiates for a plugin type. Each
//! catches panics: unwinding across `extern "C"` would abort the broker, so a panic becomes
//! `STATUS_PANICKED` with its message, and the broker refuses that one request.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::*;
use crate::plugin::{Access, AuthBackend, Denial, Host, Login, Plugin, Protocol, Resource, ResourceKind, VhostAccess};

/// The auth vtable of a plugin type, built at compile time by the export macro.
pub const fn auth_vtable<P: AuthBackend>() -> AuthVtable {
    AuthVtable {
        size: std::mem::size_of::<AuthVtable>() as u32,
        authenticate: authenticate::<P>,
        authorize_vhost: authorize_vhost::<P>,
        authorize_resource: authorize_resource::<P>,
    }
}

/// The protocol vtable of a plugin type, built at compile time by the export macro.
pub const fn protocol_vtable<P: Protocol>() -> ProtocolVtable {
    ProtocolVtable { size: std::mem::size_of::<ProtocolVtable>() as u32, start: start::<P>, stop: stop::<P> }
}

/// # Safety
/// Called by the broker with an instance from `init::<P>`.
pub unsafe extern "C" fn start<P: Protocol>(instance: *mut c_void, reply: *const Reply) -> Status {
    guarded(reply, || {
        // SAFETY: the instance is this plugin's.
        match unsafe { plugin::<P>(instance) }.start() {
            Ok(()) => STATUS_OK,
            Err(message) => {
                set_message(reply, &message);
                STATUS_FAILED
            }
        }
    })
}

/// # Safety
/// As [`start`].
pub unsafe extern "C" fn stop<P: Protocol>(instance: *mut c_void) {
    // SAFETY: the instance is this plugin's.
    guarded(std::ptr::null(), || {
        unsafe { plugin::<P>(instance) }.stop();
        STATUS_OK
    });
}

/// Runs `body`, turning a panic into `STATUS_PANICKED` with the panic's message.
fn guarded(reply: *const Reply, body: impl FnOnce() -> Status) -> Status {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(status) => status,
        Err(payload) => {
            let text = payload
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            set_message(reply, &text);
            STATUS_PANICKED
        }
    }
}

/// Whether a request from the broker is as large as this plugin's build of it: a smaller one
/// comes from an older broker and lacks fields this plugin would read.
fn sized(found: u32, expected: usize, reply: *const Reply) -> bool {
    if (found as usize) < expected {
        set_message(reply, &format!("request of {found} bytes from an older broker; this plugin needs {expected}"));
        return false;
    }
    true
}

fn set_message(reply: *const Reply, message: &str) {
    // SAFETY: the broker passes a valid reply (or null) that lives for the call.
    if let Some(reply) = unsafe { reply.as_ref() } {
        // SAFETY: the callback and context are the broker's; the message is borrowed for the call.
        unsafe { (reply.set_message)(reply.context, StrRef::new(message)) }
    }
}

fn add_tag(reply: *const Reply, tag: &str) {
    // SAFETY: as in `set_message`.
    if let Some(reply) = unsafe { reply.as_ref() } {
        // SAFETY: as in `set_message`.
        unsafe { (reply.add_tag)(reply.context, StrRef::new(tag)) }
    }
}

fn denial_status(reply: *const Reply, denial: Denial) -> Status {
    match denial {
        Denial::Refused(message) => {
            set_message(reply, &message);
            STATUS_DENIED
        }
        Denial::Failed(message) => {
            set_message(reply, &message);
            STATUS_FAILED
        }
    }
}

/// Reads a borrowed string argument; a non-UTF-8 one is a failed request.
///
/// # Safety
/// As [`StrRef::as_str`].
unsafe fn text<'a>(value: StrRef, field: &str, reply: *const Reply) -> Result<&'a str, Status> {
    // SAFETY: forwarded to the caller.
    unsafe { value.as_str() }.ok_or_else(|| {
        set_message(reply, &format!("{field} is not UTF-8"));
        STATUS_FAILED
    })
}

/// # Safety
/// Called by the broker with a valid host API, config string and out pointer.
pub unsafe extern "C" fn init<P: Plugin>(
    host: *const HostApi,
    config_json: StrRef,
    instance: *mut *mut c_void,
    reply: *const Reply,
) -> Status {
    guarded(reply, || {
        // SAFETY: the broker's host API is 'static.
        let Some(host) = (unsafe { Host::from_raw(host) }) else {
            set_message(reply, "no host API");
            return STATUS_FAILED;
        };
        if let Err(message) = host.check_size() {
            set_message(reply, &message);
            return STATUS_FAILED;
        }
        // SAFETY: the config string is borrowed for this call.
        let config = match unsafe { text(config_json, "config", reply) } {
            Ok(config) => config,
            Err(status) => return status,
        };
        if instance.is_null() {
            set_message(reply, "no instance pointer");
            return STATUS_FAILED;
        }
        match P::init(config, host) {
            Ok(plugin) => {
                // SAFETY: checked non-null above; the broker owns the slot.
                unsafe { *instance = Box::into_raw(Box::new(plugin)).cast() };
                STATUS_OK
            }
            Err(message) => {
                set_message(reply, &message);
                STATUS_FAILED
            }
        }
    })
}

/// # Safety
/// `instance` must come from `init::<P>`.
unsafe fn plugin<'a, P>(instance: *mut c_void) -> &'a P {
    // SAFETY: the instance was made by `init::<P>` from a `Box<P>` and is never freed.
    unsafe { &*instance.cast::<P>() }
}

/// # Safety
/// Called by the broker with an instance from `init::<P>` and a valid request and reply.
pub unsafe extern "C" fn authenticate<P: AuthBackend>(
    instance: *mut c_void,
    request: *const AuthRequest,
    reply: *const Reply,
) -> Status {
    guarded(reply, || {
        // SAFETY: the broker passes a valid request for the call.
        let Some(request) = (unsafe { request.as_ref() }) else { return STATUS_FAILED };
        if !sized(request.size, std::mem::size_of_val(request), reply) {
            return STATUS_FAILED;
        }
        // SAFETY: the request's strings are borrowed for the call.
        let login = unsafe {
            match (
                text(request.username, "username", reply),
                text(request.password, "password", reply),
                text(request.peer_address, "peer address", reply),
            ) {
                (Ok(username), Ok(password), Ok(peer_address)) => Login { username, password, peer_address },
                _ => return STATUS_FAILED,
            }
        };
        // SAFETY: the instance is this plugin's.
        match unsafe { plugin::<P>(instance) }.authenticate(&login) {
            Ok(tags) => {
                for tag in &tags {
                    add_tag(reply, tag);
                }
                STATUS_OK
            }
            Err(denial) => denial_status(reply, denial),
        }
    })
}

/// # Safety
/// As [`authenticate`].
pub unsafe extern "C" fn authorize_vhost<P: AuthBackend>(
    instance: *mut c_void,
    request: *const VhostRequest,
    reply: *const Reply,
) -> Status {
    guarded(reply, || {
        // SAFETY: the broker passes a valid request for the call.
        let Some(request) = (unsafe { request.as_ref() }) else { return STATUS_FAILED };
        if !sized(request.size, std::mem::size_of_val(request), reply) {
            return STATUS_FAILED;
        }
        // SAFETY: the request's strings are borrowed for the call.
        let access = unsafe {
            match (
                text(request.username, "username", reply),
                text(request.vhost, "vhost", reply),
                text(request.peer_address, "peer address", reply),
            ) {
                (Ok(username), Ok(vhost), Ok(peer_address)) => VhostAccess { username, vhost, peer_address },
                _ => return STATUS_FAILED,
            }
        };
        // SAFETY: the instance is this plugin's.
        match unsafe { plugin::<P>(instance) }.authorize_vhost(&access) {
            Ok(()) => STATUS_OK,
            Err(denial) => denial_status(reply, denial),
        }
    })
}

/// # Safety
/// As [`authenticate`].
pub unsafe extern "C" fn authorize_resource<P: AuthBackend>(
    instance: *mut c_void,
    request: *const ResourceRequest,
    reply: *const Reply,
) -> Status {
    guarded(reply, || {
        // SAFETY: the broker passes a valid request for the call.
        let Some(request) = (unsafe { request.as_ref() }) else { return STATUS_FAILED };
        if !sized(request.size, std::mem::size_of_val(request), reply) {
            return STATUS_FAILED;
        }
        let kind = match request.kind {
            RESOURCE_QUEUE => ResourceKind::Queue,
            RESOURCE_EXCHANGE => ResourceKind::Exchange,
            other => {
                set_message(reply, &format!("unknown resource kind {other}"));
                return STATUS_FAILED;
            }
        };
        let access = match request.permission {
            PERMISSION_CONFIGURE => Access::Configure,
            PERMISSION_WRITE => Access::Write,
            PERMISSION_READ => Access::Read,
            other => {
                set_message(reply, &format!("unknown permission {other}"));
                return STATUS_FAILED;
            }
        };
        // SAFETY: the request's strings are borrowed for the call.
        let resource = unsafe {
            match (
                text(request.username, "username", reply),
                text(request.vhost, "vhost", reply),
                text(request.name, "name", reply),
            ) {
                (Ok(username), Ok(vhost), Ok(name)) => Resource { username, vhost, kind, name, access },
                _ => return STATUS_FAILED,
            }
        };
        // SAFETY: the instance is this plugin's.
        match unsafe { plugin::<P>(instance) }.authorize_resource(&resource) {
            Ok(()) => STATUS_OK,
            Err(denial) => denial_status(reply, denial),
        }
    })
}
