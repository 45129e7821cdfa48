//! The `#[entity(...)]` attributes of a struct and of its fields.

use syn::{Attribute, Expr, Ident, LitInt, LitStr, Path, Result};

/// What the struct's `#[entity(...)]` says.
#[derive(Default)]
pub(crate) struct EntityAttrs {
    /// `name = "warehouse"`: the entity's name.
    pub(crate) name: Option<LitStr>,
    /// `table = "warehouses"`.
    pub(crate) table: Option<LitStr>,
    /// `unique(name = "...", fields(a, b), index = "...")`, each.
    pub(crate) uniques: Vec<CompositeUnique>,
    /// `ddl = "application"`: the application owns the table.
    pub(crate) application_ddl: bool,
    /// `ddl = "builtin"`: one of Stockroom's own entities, whose table its migrations make.
    pub(crate) builtin_ddl: bool,
    /// `new = Type`, `patch = Type`, `filter = Type`: inputs written by hand.
    pub(crate) new: Option<Path>,
    pub(crate) patch: Option<Path>,
    pub(crate) filter: Option<Path>,
    /// `derive_inputs(A, B)`: more derives for the generated inputs.
    pub(crate) derive_inputs: Vec<Path>,
    /// `crate = "path"`: where Stockroom is.
    pub(crate) krate: Option<Path>,
}

/// A unique rule over several fields.
pub(crate) struct CompositeUnique {
    pub(crate) name: LitStr,
    pub(crate) fields: Vec<Ident>,
    pub(crate) index: Option<LitStr>,
}

/// The rule of a text field.
#[derive(Clone, Copy)]
pub(crate) enum TextKind {
    Name,
    Slug,
    Sku,
    Email,
    Text,
}

/// What a field's `#[entity(...)]` says.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    pub(crate) id: bool,
    pub(crate) text: Option<TextKind>,
    pub(crate) max_len: Option<LitInt>,
    pub(crate) min: Option<Expr>,
    pub(crate) max: Option<Expr>,
    /// `unique` (`Some(None)`) or `unique = "rule"`.
    pub(crate) unique: Option<Option<LitStr>>,
    pub(crate) references: Option<Path>,
    /// `on_delete = set_null | cascade`: `Some(true)` for set_null.
    pub(crate) set_null: Option<(bool, proc_macro2::Span)>,
    pub(crate) search: bool,
    pub(crate) default: Option<Expr>,
}

fn is_entity(attr: &Attribute) -> bool {
    attr.path().is_ident("entity")
}

/// Parses the struct's `#[entity(...)]` attributes.
pub(crate) fn entity_attrs(attrs: &[Attribute]) -> Result<EntityAttrs> {
    let mut out = EntityAttrs::default();
    for attr in attrs.iter().filter(|a| is_entity(a)) {
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
            match key.as_str() {
                "name" => out.name = Some(meta.value()?.parse()?),
                "table" => out.table = Some(meta.value()?.parse()?),
                "ddl" => {
                    let ddl: LitStr = meta.value()?.parse()?;
                    match ddl.value().as_str() {
                        "application" => out.application_ddl = true,
                        "stockroom" => out.application_ddl = false,
                        "builtin" => out.builtin_ddl = true,
                        _ => return Err(syn::Error::new(ddl.span(), "ddl is \"stockroom\" (the default) or \"application\"")),
                    }
                }
                "new" => out.new = Some(meta.value()?.parse()?),
                "patch" => out.patch = Some(meta.value()?.parse()?),
                "filter" => out.filter = Some(meta.value()?.parse()?),
                "crate" => {
                    let path: LitStr = meta.value()?.parse()?;
                    out.krate = Some(path.parse()?);
                }
                "derive_inputs" => meta.parse_nested_meta(|inner| {
                    out.derive_inputs.push(inner.path.clone());
                    Ok(())
                })?,
                "unique" => {
                    let mut name = None;
                    let mut fields = Vec::new();
                    let mut index = None;
                    meta.parse_nested_meta(|inner| {
                        if inner.path.is_ident("name") {
                            name = Some(inner.value()?.parse::<LitStr>()?);
                        } else if inner.path.is_ident("index") {
                            index = Some(inner.value()?.parse::<LitStr>()?);
                        } else if inner.path.is_ident("fields") {
                            inner.parse_nested_meta(|field| {
                                let ident = field.path.get_ident().cloned().ok_or_else(|| {
                                    field.error("a field name")
                                })?;
                                fields.push(ident);
                                Ok(())
                            })?;
                        } else {
                            return Err(inner.error("expected name = \"...\", fields(...) or index = \"...\""));
                        }
                        Ok(())
                    })?;
                    let name = name.ok_or_else(|| meta.error("a unique rule needs name = \"...\""))?;
                    if fields.is_empty() {
                        return Err(meta.error("a unique rule needs fields(...)"));
                    }
                    out.uniques.push(CompositeUnique { name, fields, index });
                }
                _ => {
                    return Err(meta.error(
                        "unknown entity attribute: expected name, table, unique(...), ddl, new, patch, filter, derive_inputs(...) or crate",
                    ))
                }
            }
            Ok(())
        })?;
    }
    Ok(out)
}

/// Parses a field's `#[entity(...)]` attributes.
pub(crate) fn field_attrs(attrs: &[Attribute]) -> Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| is_entity(a)) {
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(Ident::to_string).unwrap_or_default();
            let text = |kind| -> Result<Option<TextKind>> {
                if out.text.is_some() {
                    return Err(meta.error("a field has one text rule"));
                }
                Ok(Some(kind))
            };
            match key.as_str() {
                "id" => out.id = true,
                "name" => out.text = text(TextKind::Name)?,
                "slug" => out.text = text(TextKind::Slug)?,
                "sku" => out.text = text(TextKind::Sku)?,
                "email" => out.text = text(TextKind::Email)?,
                "text" => out.text = text(TextKind::Text)?,
                "max_len" => out.max_len = Some(meta.value()?.parse()?),
                "min" => out.min = Some(meta.value()?.parse()?),
                "max" => out.max = Some(meta.value()?.parse()?),
                "unique" => {
                    out.unique = Some(if meta.input.peek(syn::Token![=]) {
                        Some(meta.value()?.parse()?)
                    } else {
                        None
                    })
                }
                "references" => out.references = Some(meta.value()?.parse()?),
                "on_delete" => {
                    let value: Ident = meta.value()?.parse()?;
                    let set_null = match value.to_string().as_str() {
                        "set_null" => true,
                        "cascade" => false,
                        _ => return Err(syn::Error::new(value.span(), "on_delete is set_null or cascade")),
                    };
                    out.set_null = Some((set_null, value.span()));
                }
                "search" => out.search = true,
                "default" => out.default = Some(meta.value()?.parse()?),
                _ => {
                    return Err(meta.error(
                        "unknown field attribute: expected id, name, slug, sku, email, text, max_len, min, max, unique, references, on_delete, search or default",
                    ))
                }
            }
            Ok(())
        })?;
    }
    if out.text.is_some() && out.max_len.is_some() {
        return Err(syn::Error::new(
            out.max_len
                .as_ref()
                .map_or_else(proc_macro2::Span::call_site, |l| l.span()),
            "max_len is for plain text; name, slug, sku, email and text have their own limits",
        ));
    }
    Ok(out)
}
