//! `#[derive(TextEnum)]`: a fieldless enum stored as text.

use heck::ToSnakeCase;
use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Fields, LitStr, Result};

pub(crate) fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let Data::Enum(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(TextEnum)] is for an enum whose variants have no fields",
        ));
    };
    let krate = crate::paths::stockroom();
    let s = quote!(#krate::schema);
    let name = &input.ident;
    let mut variants = Vec::new();
    let mut names = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new(
                variant.ident.span(),
                "a TextEnum variant has no fields",
            ));
        }
        let mut stored = variant.ident.to_string().to_snake_case();
        for attr in variant
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("text_enum"))
        {
            attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("rename") {
                    stored = meta.value()?.parse::<LitStr>()?.value();
                    Ok(())
                } else {
                    Err(meta.error("expected rename = \"...\""))
                }
            })?;
        }
        if names.contains(&stored) {
            return Err(syn::Error::new(
                variant.ident.span(),
                format!("two variants are stored as {stored:?}"),
            ));
        }
        variants.push(&variant.ident);
        names.push(stored);
    }
    if variants.is_empty() {
        return Err(syn::Error::new(
            input.ident.span(),
            "a TextEnum has at least one variant",
        ));
    }
    Ok(quote! {
        impl #s::TextEnum for #name {
            const VALUES: &'static [&'static str] = &[#(#names),*];
            fn as_str(&self) -> &'static str {
                match self {
                    #(Self::#variants => #names,)*
                }
            }
            fn from_name(name: &str) -> ::core::option::Option<Self> {
                match name {
                    #(#names => ::core::option::Option::Some(Self::#variants),)*
                    _ => ::core::option::Option::None,
                }
            }
        }

        impl #s::FieldValue for #name {
            const TYPE: #s::FieldType =
                #s::FieldType::Enum(<Self as #s::TextEnum>::VALUES);
            fn to_value(&self) -> #s::Value {
                #s::Value::Name(<Self as #s::TextEnum>::as_str(self))
            }
            fn from_value(value: #s::Value) -> ::core::option::Option<Self> {
                value.as_text().and_then(<Self as #s::TextEnum>::from_name)
            }
        }
    })
}
