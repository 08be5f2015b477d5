//! Warren's plugin ABI: the only thing a plugin and the broker share.
//!
//! Rust has no stable ABI, so the boundary is plain C: `#[repr(C)]` structs of integers,
//! borrowed byte strings and `extern "C"` function pointers. Nothing of Rust's standard library,
//! no tokio object, no allocation crosses it in either direction: strings are borrowed for the
//! length of one call, and replies come back through callbacks the caller provides.
//!
//! A plugin writes ordinary Rust against the [`Plugin`], [`AuthBackend`] and [`Protocol`] traits
//! (and reaches the broker through [`Host`] and [`Session`]) and calls
//! [`export_plugin!`] once. The macro emits the two symbols the broker looks for and wraps every
//! entry point so that a panic becomes an error status instead of unwinding into the broker.
//! `docs/PLUGINS.md` is the guide for plugin authors.
//!
//! # Compatibility
//! The broker reads [`AbiDescriptor`] (a static, [`DESCRIPTOR_SYMBOL`]) before it calls anything.
//! [`ABI_VERSION`] changes only when a change is incompatible. Compatible changes append fields
//! at the end of a struct; every struct that may grow starts with its own `size`, and each side
//! checks the other's sizes before reading: the broker refuses a plugin whose structs are
//! smaller than its own, and a plugin refuses a broker whose host API or requests are smaller
//! than the ones it was built with.
//!
//! # Layout
//! - `abi`: the `#[repr(C)]` types, status codes and symbol names.
//! - `plugin`: the safe traits a plugin implements, and the [`Host`] and [`Session`] handles.
//! - `shim`: the `extern "C"` functions [`export_plugin!`] instantiates (panic-catching).

mod abi;
mod plugin;
#[doc(hidden)]
pub mod shim;

pub use abi::*;
pub use plugin::{
    Access, AuthBackend, Denial, Host, Level, Login, Message, OwnedMessage, Plugin, Protocol, Resource, ResourceKind,
    Session, SessionLogin, VhostAccess,
};

/// Exports a plugin type: `export_plugin!(MyPlugin)` for a plugin with no capability yet,
/// `export_plugin!(MyPlugin, auth)` for an authentication backend (the type implements
/// [`AuthBackend`]), `export_plugin!(MyPlugin, protocol)` for a protocol front-end (it implements
/// [`Protocol`]), or `export_plugin!(MyPlugin, auth, protocol)` for both. Use it once per library.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        $crate::export_plugin!(@emit $plugin, ::core::ptr::null(), ::core::ptr::null(), 0);
    };
    ($plugin:ty, auth) => {
        static WARREN_AUTH_VTABLE: $crate::AuthVtable = $crate::shim::auth_vtable::<$plugin>();
        $crate::export_plugin!(@emit $plugin, &WARREN_AUTH_VTABLE, ::core::ptr::null(), $crate::CAPABILITY_AUTH);
    };
    ($plugin:ty, protocol) => {
        static WARREN_PROTOCOL_VTABLE: $crate::ProtocolVtable = $crate::shim::protocol_vtable::<$plugin>();
        $crate::export_plugin!(@emit $plugin, ::core::ptr::null(), &WARREN_PROTOCOL_VTABLE, $crate::CAPABILITY_PROTOCOL);
    };
    ($plugin:ty, auth, protocol) => {
        static WARREN_AUTH_VTABLE: $crate::AuthVtable = $crate::shim::auth_vtable::<$plugin>();
        static WARREN_PROTOCOL_VTABLE: $crate::ProtocolVtable = $crate::shim::protocol_vtable::<$plugin>();
        $crate::export_plugin!(
            @emit $plugin,
            &WARREN_AUTH_VTABLE,
            &WARREN_PROTOCOL_VTABLE,
            $crate::CAPABILITY_AUTH | $crate::CAPABILITY_PROTOCOL
        );
    };
    (@emit $plugin:ty, $auth:expr, $protocol:expr, $capabilities:expr) => {
        /// Read by the broker as data, before it calls anything in this library.
        #[no_mangle]
        pub static WARREN_PLUGIN_DESCRIPTOR: $crate::AbiDescriptor = $crate::AbiDescriptor::current();

        static WARREN_PLUGIN_HEADER: $crate::PluginHeader = $crate::PluginHeader {
            size: ::core::mem::size_of::<$crate::PluginHeader>() as u32,
            name: $crate::StrRef::from_static(<$plugin as $crate::Plugin>::NAME),
            version: $crate::StrRef::from_static(<$plugin as $crate::Plugin>::VERSION),
            capabilities: $capabilities,
            init: $crate::shim::init::<$plugin>,
            auth: $auth,
            protocol: $protocol,
        };

        /// The broker's entry point: the header naming this plugin and its vtables.
        #[no_mangle]
        pub extern "C" fn warren_plugin_entry() -> *const $crate::PluginHeader {
            &WARREN_PLUGIN_HEADER
        }
    };
}
