//! The path the generated code names Stockroom by: `::stockroom` in an application (the facade),
//! `::stockroom_core` in a crate that depends on the core only (an adapter, the conformance
//! suite, the core itself), whatever name the crate was given in `Cargo.toml`.

use proc_macro2::{Span, TokenStream};
use proc_macro_crate::{crate_name, FoundCrate};
use quote::quote;
use syn::Ident;

/// The path of the crate that holds `Entity` and `schema`, as the calling crate names it.
pub(crate) fn stockroom() -> TokenStream {
    let named = |name: &str| {
        let ident = Ident::new(name, Span::call_site());
        quote!(::#ident)
    };
    match crate_name("stockroom") {
        Ok(FoundCrate::Name(name)) => return named(&name),
        // The facade's own examples and tests link it as `stockroom`.
        Ok(FoundCrate::Itself) => return named("stockroom"),
        Err(_) => {}
    }
    match crate_name("stockroom-core") {
        Ok(FoundCrate::Name(name)) => named(&name),
        // The core names itself `stockroom_core` too (`extern crate self as stockroom_core`).
        Ok(FoundCrate::Itself) => named("stockroom_core"),
        Err(_) => named("stockroom"),
    }
}
