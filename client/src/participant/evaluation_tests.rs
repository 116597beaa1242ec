use cohort_evaluation::{ClassificationShape, Shape};
use cohort_privacy::EpsDelta;
use cohort_privacy::integer_release::{Placement, ReleasePlan};
use cohort_protocol::FederationId;
use cohort_protocol::evaluation::{EvaluationTask, TaskNoise};
use tch::{Kind, Tensor};

use super::{HeldOut, group_indices, local_plan};
use crate::data::Dataset;

fn task(groups: Option<(&str, &[&str])>, noise: TaskNoise) -> EvaluationTask {
    let g = groups.map_or(1, |(_, v)| v.len() as u32);
    EvaluationTask {
        federation: FederationId::parse("f").unwrap(),
        evaluation: 1,
        model_version: 0,
        shape: Shape::Classification(ClassificationShape::new(2, g, 10, 5.0, 4).unwrap()),
        group_column: groups.map(|(c, _)| c.to_owned()),
        group_values: groups.map_or(vec!["all".into()], |(_, v)| {
            v.iter().map(|s| (*s).to_owned()).collect()
        }),
        noise,
        epsilon_after: None,
        upload_deadline_ms: 0,
        model_spec: None,
        config: Default::default(),
    }
}

fn held_out(groups: Option<(&str, &[&str])>) -> HeldOut {
    let n = groups.map_or(3, |(_, v)| v.len() as i64);
    HeldOut {
        data: Dataset {
            features: Tensor::zeros([n, 2], (Kind::Float, tch::Device::Cpu)),
            labels: Tensor::zeros([n], (Kind::Int64, tch::Device::Cpu)),
            num_classes: 2,
        },
        groups: groups.map(|(c, v)| (c.to_owned(), v.iter().map(|s| (*s).to_owned()).collect())),
    }
}

#[test]
fn records_are_grouped_by_the_tasks_values_and_unknown_values_refused() {
    let t = task(Some(("sex", &["F", "M"])), TaskNoise::Off);
    assert_eq!(
        group_indices(&held_out(Some(("sex", &["M", "F", "M"]))), &t).unwrap(),
        vec![1, 0, 1]
    );
    assert!(
        group_indices(&held_out(Some(("sex", &["M", "X"]))), &t)
            .unwrap_err()
            .contains("\"X\"")
    );
    assert!(group_indices(&held_out(Some(("site", &["M"]))), &t).is_err());
    assert!(
        group_indices(&held_out(None), &t)
            .unwrap_err()
            .contains("group=sex")
    );
    let ungrouped = task(None, TaskNoise::Off);
    assert_eq!(
        group_indices(&held_out(None), &ungrouped).unwrap(),
        vec![0, 0, 0]
    );
}

#[test]
fn a_site_recalibrates_the_noise_and_refuses_a_task_that_differs() {
    let target = EpsDelta::new(1.0, 1e-6).unwrap();
    let t = task(None, TaskNoise::Off);
    let plan =
        ReleasePlan::calibrate(target, t.shape.sensitivity().unwrap(), Placement::Local).unwrap();
    let honest = task(
        None,
        TaskNoise::Local {
            target,
            per_site_mu: plan.per_site_mu(),
        },
    );
    assert_eq!(local_plan(&honest).unwrap(), Some(plan));
    let quiet = task(
        None,
        TaskNoise::Local {
            target,
            per_site_mu: plan.per_site_mu() / 4.0,
        },
    );
    assert!(
        local_plan(&quiet).is_err(),
        "less noise than the budget needs is refused"
    );
    assert_eq!(local_plan(&t).unwrap(), None);
}
