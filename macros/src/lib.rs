//! # stockroom-macros
//!
//! The derive macros of Stockroom, re-exported by the `stockroom` facade (and by
//! `stockroom-core`): use them from there.
//!
//! - `#[derive(Entity)]` declares an entity once, from a struct and its `#[entity(...)]`
//!   attributes: its table, its fields and their rules, its unique values among live rows and
//!   its references. It implements `Entity` and writes the entity's inputs: `New<Name>` (every
//!   field), `<Name>Patch` (each field optional) and `<Name>Filter` (equality on any field). See
//!   the facade crate's documentation, "Your own entities", for every attribute.
//! - `#[derive(TextEnum)]` stores a fieldless enum as text: each variant by its `snake_case`
//!   name, or `#[text_enum(rename = "...")]`.
//!
//! A declaration the macro can tell is wrong (a unique rule naming an unknown field,
//! `on_delete = set_null` on a required field, a field type Stockroom cannot store, a
//! reference whose id type is not the referenced entity's) fails to compile, pointing at the
//! attribute. What needs the whole store to check (a table name taken by another entity, a
//! reference to an entity the store does not hold) is a typed error when the store is built.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod attrs;
mod entity;
mod paths;
mod text_enum;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Declares an entity: implements `Entity` for the struct and writes its inputs. See the crate
/// docs, and the `stockroom` facade's "Your own entities".
#[proc_macro_derive(Entity, attributes(entity))]
pub fn derive_entity(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    entity::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}

/// Stores a fieldless enum as text: implements `TextEnum` and `FieldValue`. Each variant is
/// stored as its `snake_case` name unless `#[text_enum(rename = "...")]` names it.
#[proc_macro_derive(TextEnum, attributes(text_enum))]
pub fn derive_text_enum(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    text_enum::expand(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
