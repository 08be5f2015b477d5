//! A plugin built against a future ABI: its descriptor claims `ABI_VERSION + 1`. The broker must
//! refuse it before calling anything, so its entry point panics if it is ever called.

use warren_plugin_api::{AbiDescriptor, PluginHeader, ABI_VERSION};

#[no_mangle]
pub static WARREN_PLUGIN_DESCRIPTOR: AbiDescriptor =
    AbiDescriptor { abi_version: ABI_VERSION + 1, ..AbiDescriptor::current() };

#[no_mangle]
pub extern "C" fn warren_plugin_entry() -> *const PluginHeader {
    // Reaching this would be the broker's bug; abort loudly rather than unwind across the ABI.
    std::process::abort()
}
