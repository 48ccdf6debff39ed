use super::*;
use serde_json::json;

#[test]
fn won_and_lost_statuses() {
    let v = json!({"id": 1, "name": "x", "status_id": 142, "pipeline_id": 7000000,
                   "created_at": 1700000000, "updated_at": 1700000100, "closed_at": 1700000100,
                   "custom_fields_values": null,
                   "_embedded": {"tags": [{"id": 1, "name": "vip"}], "companies": [{"id": 9}],
                                 "contacts": [{"id": 5, "is_main": false}, {"id": 6, "is_main": true}]}});
    let d = deal(&v, "RUB").unwrap();
    assert_eq!(d.semantics, Semantics::Won);
    assert_eq!(d.contact_id.as_deref(), Some("6"));
    assert_eq!(d.company_id.as_deref(), Some("9"));
    assert_eq!(d.tags, vec!["vip".to_string()]);
    assert!(d.closed_at.is_some());
}

#[test]
fn missing_id_is_a_decode_error() {
    let err = contact(&json!({"name": "x", "created_at": 1, "updated_at": 2})).unwrap_err();
    assert!(err.contains("id"), "{err}");
}

/// An item of the list example on the API "Неразобранное" / "Incoming leads" page
/// (https://www.amocrm.ru/developers/content/crm_platform/unsorted-api,
/// https://www.amocrm.com/developers/content/api_v4/incoming-leads/): it holds its lead
/// (236768) from creation. Where it stands is what that lead's status says, with the
/// unsorted column read from a pipelines answer shaped as on the pipelines page
/// (https://www.amocrm.ru/developers/content/crm_platform/leads_pipelines: `type` 1).
#[test]
fn documented_unsorted_item_is_pending_until_its_lead_moves_on() {
    let item = json!({
        "uid": "5af9dedb6f2c6a29eaac6ee37fc75ffbb66e139e4603bdd0e14e39d4b319",
        "source_uid": null, "source_name": null, "category": "forms",
        "pipeline_id": 6950551, "created_at": 1686819152,
        "metadata": {"form_id": "1115559", "form_name": "Form #1686818993",
            "form_page": "Site request #1115559 from form «Form #1686818993»",
            "ip": "212.46.197.210", "form_sent_at": "1686819152",
            "referer": "https://devteam.kommo.com/", "visitor_uid": null},
        "account_id": 31361463, "_links": {"self": {"href": "LINK"}},
        "_embedded": {
            "contacts": [{"id": 583338, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/contacts/583338"}}}],
            "leads": [{"id": 236768, "_links": {"self": {"href": "https://devteam.kommo.com/api/v4/leads/236768"}}}],
            "companies": []
        }
    });
    let pipelines = json!({"_total_items": 1, "_embedded": {"pipelines": [{
        "id": 6950551, "name": "Воронка", "sort": 1, "is_main": true, "is_unsorted_on": true,
        "is_archive": false, "account_id": 31361463,
        "_embedded": {"statuses": [
            {"id": 58560479, "name": "Неразобранное", "sort": 10, "is_editable": false,
             "pipeline_id": 6950551, "color": "#c1c1c1", "type": 1, "account_id": 31361463},
            {"id": 58560483, "name": "Первичный контакт", "sort": 20, "is_editable": true,
             "pipeline_id": 6950551, "color": "#99ccff", "type": 0, "account_id": 31361463},
            {"id": 142, "name": "Успешно реализовано", "sort": 10000, "is_editable": false,
             "pipeline_id": 6950551, "color": "#CCFF66", "type": 0, "account_id": 31361463},
            {"id": 143, "name": "Закрыто и не реализовано", "sort": 11000,
             "is_editable": false, "pipeline_id": 6950551, "color": "#D5D8DB", "type": 0,
             "account_id": 31361463}
        ]}
    }]}});
    let column = unsorted_statuses(&pipelines);
    assert_eq!(column, [58560479].into_iter().collect());
    assert_eq!(unsorted_lead_id(&item), Some(236768));
    let lead = |status: u64| json!({"id": 236768, "status_id": status, "pipeline_id": 6950551});

    // Listed, holding a lead: pending, not won.
    let l = unsorted(&item).unwrap();
    assert_eq!(
        (l.status_id.as_str(), l.semantics),
        (UNSORTED_OPEN, Semantics::Open)
    );
    assert_eq!(l.contact_id.as_deref(), Some("583338"));
    assert_eq!(l.source.as_deref(), Some("WEB"));
    let pending = unsorted_state(Some(&lead(58560479)), &column);
    assert_eq!(pending, UnsortedState::Pending);
    assert_eq!(
        unsorted_in(&item, pending).unwrap().semantics,
        Semantics::Open
    );

    // Accepted: the lead moved on (to the next status, or later to won or lost).
    for status in [58560483, 142, 143] {
        let s = unsorted_state(Some(&lead(status)), &column);
        assert_eq!(s, UnsortedState::Accepted, "status {status}");
        let l = unsorted_in(&item, s).unwrap();
        assert_eq!(
            (l.status_id.as_str(), l.semantics),
            (UNSORTED_ACCEPTED, Semantics::Won)
        );
    }

    // Declined: the lead is no longer there.
    let s = unsorted_state(None, &column);
    assert_eq!(s, UnsortedState::Declined);
    let l = unsorted_in(&item, s).unwrap();
    assert_eq!(
        (l.status_id.as_str(), l.semantics),
        (UNSORTED_DECLINED, Semantics::Lost)
    );
    assert!(
        lead_pipeline()
            .stages
            .iter()
            .any(|st| st.id == UNSORTED_DECLINED)
    );
}
