//! amoCRM webhooks: `POST /hooks/amocrm/{tenant}/{secret}`; a webhook only wakes the
//! tenant's cycle early.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::response::Response;

use super::{Delivery, Reject, bad, body_of, check_secret, finish, form, hooks_of, record, wake};
use crate::service::server::ServerState;

/// The groups amoCRM posts (`leads[add][0][id]`, `contacts[update][0][id]`, `task[add][0][id]`).
pub(super) const AMO_GROUPS: [&str; 8] = [
    "leads",
    "contacts",
    "companies",
    "customers",
    "task",
    "tasks",
    "unsorted",
    "catalogs",
];

/// The delivery an amoCRM webhook form describes: every entity `group[action][n][id]` names
/// (`group[action][n][uid]` for unsorted items, whose key is a string), with its change time.
/// The `account[...]` block is optional (the docs' own examples omit it; the secret in the
/// address authenticates the delivery); when present it must name the tenant's account.
/// `expected_subdomain` is the tenant's account, when its address tells it.
/// Pure, so the fuzz target reaches it without the HTTP layer.
pub(super) fn amocrm_delivery(
    f: &BTreeMap<String, String>,
    expected_subdomain: Option<&str>,
) -> Result<Delivery, Reject> {
    let sub = f.get("account[subdomain]").filter(|v| !v.is_empty());
    if let (Some(expected), Some(sub)) = (expected_subdomain, sub)
        && !sub.eq_ignore_ascii_case(expected)
    {
        return Err(Reject::Forbidden(
            "account[subdomain] is not this tenant's account",
        ));
    }
    let mut items: Vec<String> = Vec::new();
    for (k, v) in f {
        if let Some(item) = amo_item(f, k, v)? {
            items.push(item);
        }
    }
    if items.is_empty() {
        return Err(bad(
            "no entity in the body: expected fields like `leads[add][0][id]` or `unsorted[add][0][uid]`",
        ));
    }
    items.sort();
    let events: Vec<&str> = items
        .iter()
        .map(|i| i.split('@').next().unwrap_or(i))
        .collect();
    Ok(Delivery {
        source: "amocrm",
        event: events
            .iter()
            .map(|e| e.rsplit_once(':').map_or(*e, |x| x.0))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
            .join(","),
        entity: events.join(","),
        ts: items.join(","),
    })
}

/// `group:action:key@time` for a field naming an entity (`leads[status][0][id]`,
/// `unsorted[delete][0][uid]`), `None` for any other field (nested custom fields, names, the
/// account block). An unsorted deletion is named by what ended it (`unsorted:accept:UID`).
pub(super) fn amo_item(
    f: &BTreeMap<String, String>,
    k: &str,
    v: &str,
) -> Result<Option<String>, Reject> {
    let Some((rest, field)) = k
        .strip_suffix("][id]")
        .map(|r| (r, "id"))
        .or_else(|| k.strip_suffix("][uid]").map(|r| (r, "uid")))
    else {
        return Ok(None);
    };
    let parts: Vec<&str> = rest.split(['[', ']']).filter(|p| !p.is_empty()).collect();
    // A note added to an entity nests the note once more (`leads[note][0][note][id]`, with the
    // entity in `[element_id]`): it names that entity.
    let (group, action, n, note) = match parts.as_slice() {
        [group, action, n] => (group, action, n, false),
        [group, action, n, last] if *action == "note" && *last == "note" => {
            (group, action, n, true)
        }
        _ => return Ok(None),
    };
    if !AMO_GROUPS.contains(group) || !n.chars().all(|c| c.is_ascii_digit()) {
        return Ok(None);
    }
    // Unsorted items are keyed by their uid; any other entity by its numeric id.
    match (*group == "unsorted", field) {
        (true, "uid") if is_amo_uid(v) => {}
        (true, "uid") => {
            return Err(bad(format!(
                "field `{k}` must be an unsorted item's uid (1 to 128 letters, digits, `-`, `_`, `:` or `.`)"
            )));
        }
        (false, "id") if !v.is_empty() && v.chars().all(|c| c.is_ascii_digit()) => {}
        (false, "id") => return Err(bad(format!("field `{k}` must be a number"))),
        _ => return Ok(None),
    }
    let prefix = format!("{group}[{action}][{n}]");
    if note {
        if v.is_empty() || !v.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(format!("field `{k}` must be a number")));
        }
        let entity = f
            .get(&format!("{prefix}[note][element_id]"))
            .map_or(v, String::as_str);
        if entity.is_empty() || !entity.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad(format!(
                "field `{prefix}[note][element_id]` must be a number"
            )));
        }
        let ts = f
            .get(&format!("{prefix}[note][created_at]"))
            .or_else(|| f.get(&format!("{prefix}[note][date_create]")))
            .map_or("", String::as_str);
        return Ok(Some(format!("{group}:note:{entity}@{ts}")));
    }
    let action = if *group == "unsorted" && *action == "delete" {
        match f.get(&format!("{prefix}[action]")) {
            None => "delete",
            Some(a) if is_amo_word(a) => a.as_str(),
            Some(_) => {
                return Err(bad(format!(
                    "field `{prefix}[action]` must name what ended the unsorted item (accept, decline, link)"
                )));
            }
        }
    } else {
        action
    };
    let ts = ["last_modified", "updated_at", "date_create", "created_at"]
        .iter()
        .find_map(|t| f.get(&format!("{prefix}[{t}]")))
        .map_or("", String::as_str);
    Ok(Some(format!("{group}:{action}:{v}@{ts}")))
}

/// An unsorted item's uid as amoCRM writes it (hex, or `amojo:...` style for chats).
pub(super) fn is_amo_uid(v: &str) -> bool {
    (1..=128).contains(&v.len())
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
}

/// An action word (`accept`, `decline`, `link`): short, lower-case letters and `_`.
pub(super) fn is_amo_word(v: &str) -> bool {
    (1..=32).contains(&v.len()) && v.chars().all(|c| c.is_ascii_lowercase() || c == '_')
}

pub(super) async fn amocrm(
    State(s): State<ServerState>,
    Path((tenant, secret)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let result = async {
        let h = hooks_of(&s, &tenant)?;
        let expected = h.cfg.amocrm_secret.as_ref().ok_or(Reject::NotFound)?;
        check_secret(Some(&secret), expected)?;
        let body = body_of(body)?;
        let f = form(&body);
        let d = amocrm_delivery(&f, h.amo_subdomain.as_deref())?;
        if !record(&s.store, &tenant, &d).await? {
            return Ok(("duplicate", d.entity));
        }
        wake(h);
        Ok(("accepted", d.entity))
    }
    .await;
    finish(&s, &tenant, "amocrm", result).await
}
