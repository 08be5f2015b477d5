//! A shared library that is not a Warren plugin: it exports neither plugin symbol.

#[no_mangle]
pub extern "C" fn not_a_warren_plugin() -> u32 {
    42
}
