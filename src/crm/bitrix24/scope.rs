//! Which Bitrix24 scopes dozor needs, and what stops working without each.
//!
//! Scopes are ticked when an inbound webhook is created or listed in an application's card
//! (bitrix24/b24restdocs `api-reference/scopes/permissions.md`). The `scope` method answers the
//! granted ones, `basic` never listed (`api-reference/common/system/scope.md`). A method outside
//! them is refused with `insufficient_scope`, inside a `batch` per command
//! (`settings/how-to-call-rest-api/batch.md`), or is unknown (`ERROR_METHOD_NOT_FOUND`: "unavailable
//! without the required scope", `_includes/system-errors.md`).

use crate::domain::EntityKind;
use crate::http::Error;

/// A scope dozor uses and what its absence blocks.
struct Need {
    scope: &'static str,
    /// Narrower scopes that serve dozor as well (`user.get` works with `user_basic`).
    or: &'static [&'static str],
    /// Without it the mirror is incomplete: `check` fails. Otherwise a warning.
    required: bool,
    blocks: &'static str,
}

const NEEDS: [Need; 4] = [
    Need {
        scope: "crm",
        or: &[],
        required: true,
        blocks: "leads, deals, contacts, companies and activities are not mirrored and nothing is written to the CRM: no rule can work",
    },
    Need {
        scope: "task",
        or: &[],
        required: true,
        blocks: "tasks are not mirrored and none can be created: deal_without_task and overdue_tasks cannot work, missed_call, lead_without_deal, unknown_caller and no_activity cannot set their tasks",
    },
    Need {
        scope: "user",
        or: &["user_basic", "user_brief"],
        required: true,
        blocks: "employees are not read: managers cannot be named in reports and messages (each is shown as «сотрудник N»), the per-manager report and /manager cannot find them by name, and telephony employees are matched to users only through the configured `employees` map",
    },
    Need {
        scope: "telephony",
        or: &[],
        required: false,
        blocks: "call_not_in_crm and unknown_caller cannot register calls through telephony.externalCall (an OAuth application cannot register them; a webhook writes call activities instead)",
    },
];

const FIX: &str = "tick the scope in the inbound webhook's settings (Developer resources → the webhook) or add it to the application's scopes and reinstall the application";

fn granted_has(granted: &[String], n: &Need) -> bool {
    granted
        .iter()
        .any(|g| g == n.scope || n.or.contains(&g.as_str()))
}

/// `who` with the optional scopes missing, or every required scope missing with what it
/// blocks (the credentials need fixing before dozor can work).
pub(super) fn verdict(who: &str, granted: &[String]) -> Result<String, String> {
    let missing = |required: bool| -> Vec<String> {
        NEEDS
            .iter()
            .filter(|n| n.required == required && !granted_has(granted, n))
            .map(|n| format!("no `{}` scope: {}", n.scope, n.blocks))
            .collect()
    };
    let required = missing(true);
    if !required.is_empty() {
        return Err(format!(
            "the credentials lack scopes dozor needs: {}; {FIX}",
            required.join("; ")
        ));
    }
    let optional = missing(false);
    if optional.is_empty() {
        Ok(who.to_string())
    } else {
        Ok(format!("{who}; warning: {}", optional.join("; ")))
    }
}

/// Whether `e` refuses a method for lack of a scope.
pub(super) fn is_refusal(e: &Error) -> bool {
    matches!(
        e.code.as_deref(),
        Some("insufficient_scope" | "ERROR_METHOD_NOT_FOUND")
    )
}

/// The scope the list method of `kind` needs.
pub(super) fn of_kind(kind: EntityKind) -> &'static str {
    match kind {
        EntityKind::Task => "task",
        _ => "crm",
    }
}

/// `e` (a refused list command of `kind`) reworded for the operator: the kind, the scope, what
/// it blocks.
pub(super) fn kind_refused(kind: EntityKind, e: Error) -> Error {
    refused_for(of_kind(kind), e)
}

/// `e` (a call refused for lack of `scope`) reworded for the operator: the scope and what it
/// blocks. What was refused is named by the caller (the sync names the kind).
pub(super) fn refused_for(scope: &str, mut e: Error) -> Error {
    let blocks = NEEDS
        .iter()
        .find(|n| n.scope == scope)
        .map_or("", |n| n.blocks);
    e.message = format!(
        "not mirrored: the credentials lack the `{scope}` scope ({}); {blocks}; {FIX}",
        e.message
    );
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// The example answer of `api-reference/common/system/scope.md` (`department, entity, log,
    /// user`): no crm, no task.
    #[test]
    fn names_every_missing_scope_and_what_it_blocks() {
        let e = verdict("Ivan (id 1)", &s(&["department", "entity", "log", "user"])).unwrap_err();
        assert!(e.contains("no `crm` scope"), "{e}");
        assert!(
            e.contains("no `task` scope") && e.contains("deal_without_task"),
            "{e}"
        );
        assert!(e.contains("overdue_tasks"), "{e}");
        assert!(!e.contains("no `user` scope"), "{e}");
        let ok = verdict("Ivan (id 1)", &s(&["crm", "task", "user_basic"])).unwrap();
        assert!(
            ok.starts_with("Ivan (id 1); warning: no `telephony` scope"),
            "{ok}"
        );
        assert_eq!(
            verdict("Ivan", &s(&["crm", "task", "user", "telephony"])).unwrap(),
            "Ivan"
        );
    }
}
