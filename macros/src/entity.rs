//! `#[derive(Entity)]`: the declaration (`Schema`), the `Entity` implementation and the inputs.

use heck::ToSnakeCase;
use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    Data, DeriveInput, Expr, ExprLit, ExprUnary, Field, Fields, GenericArgument, Ident, Lit,
    PathArguments, Result, Type, UnOp,
};

use crate::attrs::{entity_attrs, field_attrs, EntityAttrs, FieldAttrs, TextKind};

/// The bookkeeping fields every entity struct has, by name.
const META: [&str; 4] = ["created_at", "updated_at", "deleted_at", "version"];

/// A declared field: one of the struct's fields besides the id and the bookkeeping.
struct Declared<'a> {
    ident: &'a Ident,
    ty: &'a Type,
    /// `T` of an `Option<T>` field, else the field's type.
    inner: &'a Type,
    optional: bool,
    attrs: FieldAttrs,
}

pub(crate) fn expand(input: &DeriveInput) -> Result<TokenStream> {
    let Data::Struct(data) = &input.data else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Entity)] is for a struct with named fields",
        ));
    };
    let Fields::Named(named) = &data.fields else {
        return Err(syn::Error::new(
            input.ident.span(),
            "#[derive(Entity)] is for a struct with named fields",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new(
            input.generics.span(),
            "an entity has no generic parameters",
        ));
    }
    let attrs = entity_attrs(&input.attrs)?;
    let krate = attrs
        .krate
        .clone()
        .map_or_else(crate::paths::stockroom, |p| quote!(#p));

    let mut id = None;
    let mut declared = Vec::new();
    for field in &named.named {
        let ident = field.ident.as_ref().expect("named fields");
        let fattrs = field_attrs(&field.attrs)?;
        if fattrs.id || (ident == "id" && id.is_none()) {
            id = Some(field);
        } else if META.contains(&ident.to_string().as_str()) {
            continue;
        } else {
            let (optional, inner) = option_inner(&field.ty);
            declared.push(Declared {
                ident,
                ty: &field.ty,
                inner,
                optional,
                attrs: fattrs,
            });
        }
    }
    let Some(id) = id else {
        return Err(syn::Error::new(
            input.ident.span(),
            "an entity needs an id field: `id`, or one marked #[entity(id)], of a type made by entity_id!",
        ));
    };
    for meta in META {
        if !named
            .named
            .iter()
            .any(|f| f.ident.as_ref().is_some_and(|i| i == meta))
        {
            return Err(syn::Error::new(
                input.ident.span(),
                format!(
                    "an entity needs the bookkeeping fields created_at: Timestamp, updated_at: Timestamp, deleted_at: Option<Timestamp> and version: i64 (missing {meta})"
                ),
            ));
        }
    }
    if declared.is_empty() {
        return Err(syn::Error::new(
            input.ident.span(),
            "an entity declares at least one field besides its id and bookkeeping",
        ));
    }

    let entity_name = attrs
        .name
        .as_ref()
        .map_or_else(|| input.ident.to_string().to_snake_case(), |n| n.value());
    let table = attrs
        .table
        .as_ref()
        .map_or_else(|| format!("{entity_name}s"), |t| t.value());

    let schema = schema_static(&krate, &attrs, &declared, &entity_name, &table)?;
    let inputs = Inputs::new(input, &attrs);
    let generated_inputs = generate_inputs(&krate, input, &attrs, &inputs, &declared);
    let entity_impl = entity_impl(&krate, input, id, &inputs, &declared);
    let reference_checks = reference_checks(&krate, &declared)?;

    Ok(quote! {
        #generated_inputs

        const _: () = {
            #schema
            #entity_impl
            #reference_checks
        };
    })
}

/// `(true, T)` for `Option<T>`, else `(false, ty)`.
fn option_inner(ty: &Type) -> (bool, &Type) {
    if let Type::Path(path) = ty {
        if let Some(last) = path.path.segments.last() {
            if last.ident == "Option" {
                if let PathArguments::AngleBracketed(args) = &last.arguments {
                    if let Some(GenericArgument::Type(inner)) = args.args.first() {
                        return (true, inner);
                    }
                }
            }
        }
    }
    (false, ty)
}

/// The names of the entity's input types, generated or given.
struct Inputs {
    new: TokenStream,
    patch: TokenStream,
    filter: TokenStream,
}

impl Inputs {
    fn new(input: &DeriveInput, attrs: &EntityAttrs) -> Self {
        let name = &input.ident;
        let pick = |given: &Option<syn::Path>, generated: Ident| {
            given
                .as_ref()
                .map_or_else(|| quote!(#generated), |p| quote!(#p))
        };
        Self {
            new: pick(&attrs.new, format_ident!("New{}", name)),
            patch: pick(&attrs.patch, format_ident!("{}Patch", name)),
            filter: pick(&attrs.filter, format_ident!("{}Filter", name)),
        }
    }
}

/// `static SCHEMA: Schema = …;`
fn schema_static(
    krate: &TokenStream,
    attrs: &EntityAttrs,
    declared: &[Declared<'_>],
    entity_name: &str,
    table: &str,
) -> Result<TokenStream> {
    let s = quote!(#krate::schema);
    let fields = declared
        .iter()
        .map(|d| field_declaration(krate, d))
        .collect::<Result<Vec<_>>>()?;

    let mut uniques = Vec::new();
    for d in declared {
        if let Some(rule) = &d.attrs.unique {
            let field = d.ident.to_string();
            let name = rule
                .as_ref()
                .map_or_else(|| format!("{entity_name}_{field}"), |r| r.value());
            let index = format!("{table}_{field}_live");
            uniques.push(quote!(#s::Unique { name: #name, fields: &[#field], index: #index }));
        }
    }
    for composite in &attrs.uniques {
        for field in &composite.fields {
            if !declared.iter().any(|d| d.ident == field) {
                return Err(syn::Error::new(
                    field.span(),
                    format!("the unique rule names `{field}`, which is not a declared field"),
                ));
            }
        }
        let name = composite.name.value();
        let names: Vec<String> = composite.fields.iter().map(Ident::to_string).collect();
        let index = composite.index.as_ref().map_or_else(
            || format!("{table}_{}_live", names.join("_")),
            |i| i.value(),
        );
        uniques.push(quote!(#s::Unique { name: #name, fields: &[#(#names),*], index: #index }));
    }

    let searched: Vec<String> = declared
        .iter()
        .filter(|d| d.attrs.search)
        .map(|d| d.ident.to_string())
        .collect();
    let search = if searched.is_empty() {
        quote!(::core::option::Option::None)
    } else {
        quote!(::core::option::Option::Some(#s::Search { fields: &[#(#searched),*] }))
    };
    let ddl = if attrs.builtin_ddl {
        quote!(#s::Ddl::BuiltIn)
    } else if attrs.application_ddl {
        quote!(#s::Ddl::Application)
    } else {
        quote!(#s::Ddl::Stockroom)
    };
    Ok(quote! {
        static SCHEMA: #s::Schema = #s::Schema {
            name: #entity_name,
            table: #table,
            fields: &[#(#fields),*],
            unique: &[#(#uniques),*],
            search: #search,
            ddl: #ddl,
        };
    })
}

/// The `Field { … }` of a declared field.
fn field_declaration(krate: &TokenStream, d: &Declared<'_>) -> Result<TokenStream> {
    let s = quote!(#krate::schema);
    let (ty, name) = (d.ty, d.ident.to_string());
    let a = &d.attrs;
    let field_type = if let Some(target) = &a.references {
        let set_null = match a.set_null {
            Some((true, span)) if !d.optional => {
                return Err(syn::Error::new(
                    span,
                    "on_delete = set_null needs an Option field (the reference is forgotten)",
                ))
            }
            Some((set_null, _)) => set_null,
            // Forgotten if it may be absent, else the row goes with the one it refers to.
            None => d.optional,
        };
        let on_delete = if set_null {
            quote!(#s::OnDelete::SetNull)
        } else {
            quote!(#s::OnDelete::Cascade)
        };
        quote!(#s::FieldType::Ref(#s::Reference {
            target: <#target as #krate::Entity>::schema,
            on_delete: #on_delete,
        }))
    } else if let Some(kind) = a.text {
        let rule = match kind {
            TextKind::Name => quote!(Name),
            TextKind::Slug => quote!(Slug),
            TextKind::Sku => quote!(Sku),
            TextKind::Email => quote!(Email),
            TextKind::Text => quote!(Text),
        };
        quote!(#s::FieldType::Text(#s::TextRule::#rule))
    } else if let Some(max_len) = &a.max_len {
        quote!(#s::FieldType::Text(#s::TextRule::Line { max_len: #max_len }))
    } else if a.min.is_some() || a.max.is_some() {
        let bound = |b: &Option<Expr>| match b {
            Some(e) => quote!(::core::option::Option::Some(#e)),
            None => quote!(::core::option::Option::None),
        };
        let (min, max) = (bound(&a.min), bound(&a.max));
        quote!(#s::FieldType::int_between(<#ty as #s::FieldValue>::TYPE, #min, #max))
    } else {
        quote!(<#ty as #s::FieldValue>::TYPE)
    };
    if a.set_null.is_some() && a.references.is_none() {
        return Err(syn::Error::new(
            a.set_null.map_or_else(Span::call_site, |(_, span)| span),
            "on_delete needs references = Entity",
        ));
    }
    let default = match &a.default {
        None => quote!(::core::option::Option::None),
        Some(expr) => {
            let value = default_value(krate, expr)?;
            quote!(::core::option::Option::Some(#value))
        }
    };
    Ok(quote_spanned! {ty.span()=>
        #s::Field {
            name: #name,
            ty: #field_type,
            nullable: <#ty as #s::FieldValue>::NULLABLE,
            default: #default,
        }
    })
}

/// The `DefaultValue` of a `default = …` literal.
fn default_value(krate: &TokenStream, expr: &Expr) -> Result<TokenStream> {
    let s = quote!(#krate::schema);
    let negative = matches!(
        expr,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            ..
        })
    );
    let lit = match expr {
        Expr::Lit(ExprLit { lit, .. }) => lit,
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match &**expr {
            Expr::Lit(ExprLit { lit, .. }) => lit,
            other => return Err(syn::Error::new(other.span(), "a default is a literal")),
        },
        other => return Err(syn::Error::new(other.span(), "a default is a literal")),
    };
    match lit {
        Lit::Int(i) if negative => Ok(quote!(#s::DefaultValue::Int(-#i))),
        Lit::Int(i) => Ok(quote!(#s::DefaultValue::Int(#i))),
        Lit::Bool(b) if !negative => Ok(quote!(#s::DefaultValue::Bool(#b))),
        Lit::Str(t) if !negative => Ok(quote!(#s::DefaultValue::Text(#t))),
        other => Err(syn::Error::new(
            other.span(),
            "a default is an integer, a boolean or a string (an enum's stored name)",
        )),
    }
}

/// The generated inputs (those not given) and their conversions.
fn generate_inputs(
    krate: &TokenStream,
    input: &DeriveInput,
    attrs: &EntityAttrs,
    inputs: &Inputs,
    declared: &[Declared<'_>],
) -> TokenStream {
    let (vis, name) = (&input.vis, &input.ident);
    let s = quote!(#krate::schema);
    let extra = &attrs.derive_inputs;
    let idents: Vec<&Ident> = declared.iter().map(|d| d.ident).collect();
    let types: Vec<&Type> = declared.iter().map(|d| d.ty).collect();
    let inners: Vec<&Type> = declared.iter().map(|d| d.inner).collect();
    let positions: Vec<usize> = (0..declared.len()).collect();
    let p = quote!(#krate::__private);
    let searchable = declared.iter().any(|d| d.attrs.search);
    let (search_field, search_condition, search_from) = if searchable {
        (
            quote!(
                /// Only rows whose search document contains this text (see `SearchText`).
                pub search: ::core::option::Option<#krate::SearchText>,
            ),
            quote!(
                if let ::core::option::Option::Some(query) = &self.search {
                    conditions.push(#s::Condition::Search(query.clone()));
                }
            ),
            quote!(filter.search = ::core::option::Option::Some(query);),
        )
    } else {
        (
            quote!(),
            quote!(),
            quote!({
                let _ = query;
                return ::core::result::Result::Err(#p::Inputs::no_search());
            }),
        )
    };
    let mut out = TokenStream::new();

    if attrs.new.is_none() {
        let new = &inputs.new;
        let doc = format!(
            "The input that creates a [`{name}`]: a value for every declared field, checked \
             against the declaration when the row is created."
        );
        out.extend(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, PartialEq, #(#extra),*)]
            #vis struct #new {
                #(#[allow(missing_docs)] pub #idents: #types,)*
            }

            impl #krate::NewInput for #new {
                fn into_values(self) -> #krate::Result<::std::vec::Vec<#s::Value>> {
                    #s::rules::check_all(
                        <#name as #krate::Entity>::schema(),
                        ::std::vec![#(#s::FieldValue::into_value(self.#idents)),*],
                    )
                }
                fn from_values(values: ::std::vec::Vec<#s::Value>) -> #krate::Result<Self> {
                    let schema = <#name as #krate::Entity>::schema();
                    #p::Inputs::check_len(schema, &values)?;
                    let mut values = values.into_iter();
                    ::core::result::Result::Ok(Self {
                        #(#idents: #p::Inputs::take_next(schema, #positions, &mut values)?,)*
                    })
                }
            }
        });
    }
    if attrs.patch.is_none() {
        let patch = &inputs.patch;
        let doc = format!(
            "A change to [`{name}`] rows: the fields it sets (`None` leaves a field as it is; \
             an optional field is cleared with `Some(None)`)."
        );
        out.extend(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, Default, PartialEq, #(#extra),*)]
            #vis struct #patch {
                #(#[allow(missing_docs)] pub #idents: ::core::option::Option<#types>,)*
            }

            impl #krate::PatchInput for #patch {
                fn sets(&self) -> #krate::Result<::std::vec::Vec<(usize, #s::Value)>> {
                    let schema = <#name as #krate::Entity>::schema();
                    let mut sets = ::std::vec::Vec::new();
                    #(
                        if let ::core::option::Option::Some(value) = &self.#idents {
                            let value = #s::FieldValue::to_value(value);
                            sets.push((#positions, #s::rules::check(&schema.fields[#positions], value)?));
                        }
                    )*
                    ::core::result::Result::Ok(sets)
                }
                fn from_sets(sets: ::std::vec::Vec<(usize, #s::Value)>) -> #krate::Result<Self> {
                    let schema = <#name as #krate::Entity>::schema();
                    let mut patch = Self::default();
                    for (field, value) in sets {
                        match field {
                            #(#positions => {
                                patch.#idents = ::core::option::Option::Some(
                                    #p::Inputs::take(schema, field, value)?,
                                );
                            })*
                            _ => return ::core::result::Result::Err(#p::Inputs::unsupported(schema, field)),
                        }
                    }
                    ::core::result::Result::Ok(patch)
                }
            }
        });
    }
    if attrs.filter.is_none() {
        let filter = &inputs.filter;
        let doc = format!(
            "Which [`{name}`] rows a list, count or exists covers: each field set narrows to rows \
             holding that value (a reference naming a row that is not live matches nothing)."
        );
        out.extend(quote! {
            #[doc = #doc]
            #[derive(Debug, Clone, Default, PartialEq, #(#extra),*)]
            #vis struct #filter {
                #(#[allow(missing_docs)] pub #idents: ::core::option::Option<#inners>,)*
                #search_field
            }

            impl #krate::FilterInput for #filter {
                fn conditions(&self) -> #krate::Result<::std::vec::Vec<#s::Condition>> {
                    let mut conditions = ::std::vec::Vec::new();
                    #(
                        if let ::core::option::Option::Some(value) = &self.#idents {
                            conditions.push(#s::Condition::Eq {
                                field: #positions,
                                value: #s::FieldValue::to_value(value),
                            });
                        }
                    )*
                    #search_condition
                    ::core::result::Result::Ok(conditions)
                }
                fn from_conditions(
                    conditions: ::std::vec::Vec<#s::Condition>,
                ) -> #krate::Result<Self> {
                    let schema = <#name as #krate::Entity>::schema();
                    let mut filter = Self::default();
                    for condition in conditions {
                        match condition {
                            #(#s::Condition::Eq { field: #positions, value } => {
                                filter.#idents = ::core::option::Option::Some(
                                    #p::Inputs::take(schema, #positions, value)?,
                                );
                            })*
                            #s::Condition::Eq { field, .. } => {
                                return ::core::result::Result::Err(#p::Inputs::unsupported(schema, field));
                            }
                            #s::Condition::Search(query) => { #search_from }
                        }
                    }
                    ::core::result::Result::Ok(filter)
                }
            }
        });
    }
    out
}

/// `impl Entity for …`.
fn entity_impl(
    krate: &TokenStream,
    input: &DeriveInput,
    id: &Field,
    inputs: &Inputs,
    declared: &[Declared<'_>],
) -> TokenStream {
    let s = quote!(#krate::schema);
    let name = &input.ident;
    let (id_ident, id_ty) = (id.ident.as_ref().expect("named"), &id.ty);
    let (new, patch, filter) = (&inputs.new, &inputs.patch, &inputs.filter);
    let idents: Vec<&Ident> = declared.iter().map(|d| d.ident).collect();
    let p = quote!(#krate::__private);
    quote! {
        impl #krate::Entity for #name {
            type Id = #id_ty;
            type New = #new;
            type Patch = #patch;
            type Filter = #filter;

            fn schema() -> &'static #s::Schema {
                &SCHEMA
            }
            fn id(&self) -> Self::Id {
                self.#id_ident
            }
            fn created_at(&self) -> #krate::Timestamp {
                self.created_at
            }
            fn updated_at(&self) -> #krate::Timestamp {
                self.updated_at
            }
            fn deleted_at(&self) -> ::core::option::Option<#krate::Timestamp> {
                self.deleted_at
            }
            fn version(&self) -> i64 {
                self.version
            }
            fn from_record(record: #s::Record) -> #krate::Result<Self> {
                let (created_at, updated_at, deleted_at, version) = #p::meta(&record);
                let id = <#id_ty as ::core::convert::From<#p::Uuid>>::from(record.id);
                let mut values = record.values;
                let mut fields = #p::Fields::new(&SCHEMA, &mut values);
                ::core::result::Result::Ok(Self {
                    #id_ident: id,
                    #(#idents: fields.take()?,)*
                    created_at,
                    updated_at,
                    deleted_at,
                    version,
                })
            }
            fn to_record(&self) -> #s::Record {
                #s::Record {
                    id: ::core::convert::Into::into(self.#id_ident),
                    values: <#s::Values as ::core::convert::From<_>>::from([#(#s::FieldValue::to_value(&self.#idents)),*]),
                    created_at: self.created_at,
                    updated_at: self.updated_at,
                    deleted_at: self.deleted_at,
                    version: self.version,
                }
            }
        }
    }
}

/// For each field, a check that Stockroom stores its type; for each reference, that the field
/// holds the referenced entity's id type.
fn reference_checks(krate: &TokenStream, declared: &[Declared<'_>]) -> Result<TokenStream> {
    let mut checks = TokenStream::new();
    for d in declared {
        // Every field's type is one Stockroom stores: an error here points at the field.
        let ty = d.ty;
        checks.extend(quote_spanned! {ty.span()=>
            const _: () = {
                const fn stored<T: #krate::schema::FieldValue>() {}
                stored::<#ty>()
            };
        });
        if let Some(target) = &d.attrs.references {
            let inner = d.inner;
            checks.extend(quote_spanned! {inner.span()=>
                const _: fn(<#target as #krate::Entity>::Id) -> #inner = |id| id;
            });
        }
    }
    Ok(checks)
}
