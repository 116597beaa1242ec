use cohort_privacy::EpsDelta;
use serde_json::json;

use super::EvaluationConfig;

fn config(extra: serde_json::Value) -> EvaluationConfig {
    let mut c = json!({
        "shape": {"task": "classification", "classes": 2, "groups": 1, "bins": 20,
                  "loss_clip": 5.0, "loss_units": 4},
        "noise": {"placement": "local", "budget": {"epsilon": 1.0, "delta": 1e-6}}
    });
    if let (Some(c), Some(e)) = (c.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    serde_json::from_value(c).unwrap()
}

fn budget() -> EpsDelta {
    EpsDelta::new(8.0, 1e-5).unwrap()
}

fn refused(extra: serde_json::Value) -> String {
    config(extra)
        .validate(budget())
        .unwrap_err()
        .field()
        .to_owned()
}

#[test]
fn a_valid_section_calibrates_a_plan_within_its_budget() {
    let c = config(json!({}));
    c.validate(budget()).unwrap();
    let plan = c.plan().unwrap().unwrap();
    assert!(plan.epsilon() <= 1.0);
    assert!(!c.per_site_allowed());
    assert!(config(json!({"per_site_release": true})).per_site_allowed());
}

#[test]
fn inconsistent_sections_are_refused_at_creation() {
    assert_eq!(
        refused(json!({"every_rounds": 0})),
        "evaluation.every_rounds"
    );
    assert_eq!(
        refused(json!({"client_sampling_rate": 0.0})),
        "evaluation.client_sampling_rate"
    );
    assert_eq!(refused(json!({"min_sites": 0})), "evaluation.min_sites");
    assert_eq!(
        refused(json!({"noise": {"placement": "distributed",
                                 "budget": {"epsilon": 1.0, "delta": 1e-6}}})),
        "evaluation.noise.placement"
    );
    assert_eq!(
        refused(json!({"noise": {"placement": "local",
                                 "budget": {"epsilon": 1.0, "delta": 1e-5}}})),
        "evaluation.noise.budget.delta",
        "the whole client delta leaves a site's ledger nothing to convert its RDP at"
    );
    assert_eq!(
        refused(json!({"noise": {"placement": "off"}, "per_site_release": true})),
        "evaluation.per_site_release"
    );
    assert_eq!(
        refused(json!({"group": {"column": "sex", "values": ["F", "M"]}})),
        "evaluation.group.values",
        "two values for a one-group shape"
    );
    let two_groups = json!({"task": "classification", "classes": 2, "groups": 2, "bins": 20,
                            "loss_clip": 5.0, "loss_units": 4});
    assert_eq!(
        refused(json!({"shape": two_groups})),
        "evaluation.shape.groups"
    );
    assert_eq!(
        refused(json!({"shape": two_groups, "group": {"column": "sex", "values": ["F", "F"]}})),
        "evaluation.group.values"
    );
    config(json!({"shape": two_groups, "group": {"column": "sex", "values": ["F", "M"]}}))
        .validate(budget())
        .unwrap();
    // Noise off is an accepted, explicit opt-out.
    config(json!({"noise": {"placement": "off"}}))
        .validate(budget())
        .unwrap();
}
