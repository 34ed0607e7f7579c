use crate::metrics::promql::testload::run_script;

const DATA: &str = r#"
load 5m
  http_requests{job="api-server", instance="0", group="production"} 0+10x10
  http_requests{job="api-server", instance="1", group="production"} 0+20x10
  http_requests{job="api-server", instance="0", group="canary"} 0+30x10
  http_requests{job="api-server", instance="1", group="canary"} 0+40x10
  http_requests{job="app-server", instance="0", group="production"} 0+50x10
  http_requests{job="app-server", instance="1", group="production"} 0+60x10
  http_requests{job="app-server", instance="0", group="canary"} 0+70x10
  http_requests{job="app-server", instance="1", group="canary"} 0+80x10
  vector_matching_a{l="x"} 0+1x100
  vector_matching_a{l="y"} 0+2x50
  vector_matching_b{l="x"} 0+4x25
"#;

#[test]
fn arithmetic_and_precedence() {
    run_script(&format!(
        "{DATA}{}",
        r#"
eval instant at 50m SUM(http_requests) BY (job) - COUNT(http_requests) BY (job)
  {job="api-server"} 996
  {job="app-server"} 2596

eval instant at 50m 2 - SUM(http_requests) BY (job)
  {job="api-server"} -998
  {job="app-server"} -2598

eval instant at 50m -http_requests{job="api-server",instance="0",group="production"}
  {job="api-server",instance="0",group="production"} -100

eval instant at 50m +http_requests{job="api-server",instance="0",group="production"}
  http_requests{job="api-server",instance="0",group="production"} 100

eval instant at 50m - - - SUM(http_requests) BY (job)
  {job="api-server"} -1000
  {job="app-server"} -2600

eval instant at 50m 1000 / SUM(http_requests) BY (job)
  {job="api-server"} 1
  {job="app-server"} 0.38461538461538464

eval instant at 50m SUM(http_requests) BY (job) - 2
  {job="api-server"} 998
  {job="app-server"} 2598

eval instant at 50m SUM(http_requests) BY (job) % 3
  {job="api-server"} 1
  {job="app-server"} 2

eval instant at 50m SUM(http_requests) BY (job) % 0.3
  {job="api-server"} 0.1
  {job="app-server"} 0.2

eval instant at 50m SUM(http_requests) BY (job) ^ 2
  {job="api-server"} 1000000
  {job="app-server"} 6760000

eval instant at 50m SUM(http_requests) BY (job) % 3 ^ 2
  {job="api-server"} 1
  {job="app-server"} 8

eval instant at 50m SUM(http_requests) BY (job) % 2 ^ (3 ^ 2)
  {job="api-server"} 488
  {job="app-server"} 40

eval instant at 50m SUM(http_requests) BY (job) % 2 ^ 3 ^ 2
  {job="api-server"} 488
  {job="app-server"} 40

eval instant at 50m SUM(http_requests) BY (job) % 2 ^ 3 ^ 2 ^ 2
  {job="api-server"} 1000
  {job="app-server"} 2600

eval instant at 50m COUNT(http_requests) BY (job) ^ COUNT(http_requests) BY (job)
  {job="api-server"} 256
  {job="app-server"} 256

eval instant at 50m SUM(http_requests) BY (job) / 0
  {job="api-server"} +Inf
  {job="app-server"} +Inf

eval instant at 50m http_requests{group="canary", instance="0", job="api-server"} / 0
  {group="canary", instance="0", job="api-server"} +Inf

eval instant at 50m -1 * http_requests{group="canary", instance="0", job="api-server"} / 0
  {group="canary", instance="0", job="api-server"} -Inf

eval instant at 50m 0 * http_requests{group="canary", instance="0", job="api-server"} / 0
  {group="canary", instance="0", job="api-server"} NaN

eval instant at 50m 0 * http_requests{group="canary", instance="0", job="api-server"} % 0
  {group="canary", instance="0", job="api-server"} NaN

eval instant at 50m SUM(http_requests) BY (job) + SUM(http_requests) BY (job)
  {job="api-server"} 2000
  {job="app-server"} 5200

eval instant at 50m (SUM((http_requests)) BY (job)) + SUM(http_requests) BY (job)
  {job="api-server"} 2000
  {job="app-server"} 5200

eval instant at 50m http_requests{job="api-server", group="canary"}
  http_requests{group="canary", instance="0", job="api-server"} 300
  http_requests{group="canary", instance="1", job="api-server"} 400

eval instant at 50m http_requests{job="api-server", group="canary"} + rate(http_requests{job="api-server"}[5m]) * 5 * 60
  {group="canary", instance="0", job="api-server"} 330
  {group="canary", instance="1", job="api-server"} 440

eval instant at 50m rate(http_requests[25m]) * 25 * 60
  {group="canary", instance="0", job="api-server"} 150
  {group="canary", instance="0", job="app-server"} 350
  {group="canary", instance="1", job="api-server"} 200
  {group="canary", instance="1", job="app-server"} 400
  {group="production", instance="0", job="api-server"} 50
  {group="production", instance="0", job="app-server"} 249.99999999999997
  {group="production", instance="1", job="api-server"} 100
  {group="production", instance="1", job="app-server"} 300

eval instant at 50m (rate((http_requests[25m])) * 25) * 60
  {group="canary", instance="0", job="api-server"} 150
  {group="canary", instance="0", job="app-server"} 350
  {group="canary", instance="1", job="api-server"} 200
  {group="canary", instance="1", job="app-server"} 400
  {group="production", instance="0", job="api-server"} 50
  {group="production", instance="0", job="app-server"} 249.99999999999997
  {group="production", instance="1", job="api-server"} 100
  {group="production", instance="1", job="app-server"} 300

eval instant at 0m 2 ^ 3 ^ 2
  512

eval instant at 0m -2 ^ 2
  -4

eval instant at 0m 1 atan2 1
  0.7853981633974483
"#
    ));
}

#[test]
fn set_operators() {
    run_script(&format!(
        "{DATA}{}",
        r#"
eval instant at 50m http_requests{group="canary"} and http_requests{instance="0"}
  http_requests{group="canary", instance="0", job="api-server"} 300
  http_requests{group="canary", instance="0", job="app-server"} 700

eval instant at 50m (http_requests{group="canary"} + 1) and http_requests{instance="0"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701

eval instant at 50m (http_requests{group="canary"} + 1) and on(instance, job) http_requests{instance="0", group="production"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701

eval instant at 50m (http_requests{group="canary"} + 1) and on(instance) http_requests{instance="0", group="production"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701

eval instant at 50m (http_requests{group="canary"} + 1) and ignoring(group) http_requests{instance="0", group="production"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701

eval instant at 50m (http_requests{group="canary"} + 1) and ignoring(group, job) http_requests{instance="0", group="production"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701

eval instant at 50m http_requests{group="canary"} or http_requests{group="production"}
  http_requests{group="canary", instance="0", job="api-server"} 300
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="canary", instance="1", job="app-server"} 800
  http_requests{group="production", instance="0", job="api-server"} 100
  http_requests{group="production", instance="0", job="app-server"} 500
  http_requests{group="production", instance="1", job="api-server"} 200
  http_requests{group="production", instance="1", job="app-server"} 600

eval instant at 50m (http_requests{group="canary"} + 1) or http_requests{instance="1"}
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701
  {group="canary", instance="1", job="api-server"} 401
  {group="canary", instance="1", job="app-server"} 801
  http_requests{group="production", instance="1", job="api-server"} 200
  http_requests{group="production", instance="1", job="app-server"} 600

eval instant at 50m (http_requests{group="canary"} + 1) or on(instance) (http_requests or cpu_count or vector_matching_a)
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701
  {group="canary", instance="1", job="api-server"} 401
  {group="canary", instance="1", job="app-server"} 801
  vector_matching_a{l="x"} 10
  vector_matching_a{l="y"} 20

eval instant at 50m (http_requests{group="canary"} + 1) or ignoring(l, group, job) (http_requests or cpu_count or vector_matching_a)
  {group="canary", instance="0", job="api-server"} 301
  {group="canary", instance="0", job="app-server"} 701
  {group="canary", instance="1", job="api-server"} 401
  {group="canary", instance="1", job="app-server"} 801
  vector_matching_a{l="x"} 10
  vector_matching_a{l="y"} 20

eval instant at 50m http_requests{group="canary"} unless http_requests{instance="0"}
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="canary", instance="1", job="app-server"} 800

eval instant at 50m http_requests{group="canary"} unless on(job) http_requests{instance="0"}

eval instant at 50m http_requests{group="canary"} unless on(job, instance) http_requests{instance="0"}
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="canary", instance="1", job="app-server"} 800

eval instant at 50m http_requests{group="canary"} unless ignoring(group, instance) http_requests{instance="0"}

eval instant at 50m http_requests{group="canary"} unless ignoring(group) http_requests{instance="0"}
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="canary", instance="1", job="app-server"} 800

eval instant at 50m http_requests{group="canary"} unless nonexistent
  http_requests{group="canary", instance="0", job="api-server"} 300
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="canary", instance="1", job="app-server"} 800
"#
    ));
}

#[test]
fn vector_matching_and_grouping() {
    run_script(&format!(
        "{DATA}{}",
        r#"
eval instant at 50m http_requests{group="canary"} / on(instance,job) http_requests{group="production"}
  {instance="0", job="api-server"} 3
  {instance="0", job="app-server"} 1.4
  {instance="1", job="api-server"} 2
  {instance="1", job="app-server"} 1.3333333333333333

eval instant at 50m http_requests{group="canary"} / ignoring(group) http_requests{group="production"}
  {instance="0", job="api-server"} 3
  {instance="0", job="app-server"} 1.4
  {instance="1", job="api-server"} 2
  {instance="1", job="app-server"} 1.3333333333333333

eval instant at 50m sum by (job) (http_requests) / on(job) group_left sum by (job) (http_requests)
  {job="api-server"} 1
  {job="app-server"} 1

eval instant at 50m http_requests / on(job) group_left sum by (job) (http_requests)
  {group="canary", instance="0", job="api-server"} 0.3
  {group="canary", instance="0", job="app-server"} 0.2692307692307692
  {group="canary", instance="1", job="api-server"} 0.4
  {group="canary", instance="1", job="app-server"} 0.3076923076923077
  {group="production", instance="0", job="api-server"} 0.1
  {group="production", instance="0", job="app-server"} 0.19230769230769232
  {group="production", instance="1", job="api-server"} 0.2
  {group="production", instance="1", job="app-server"} 0.23076923076923078

eval instant at 50m sum by (job) (http_requests) / on(job) group_right http_requests
  {group="canary", instance="0", job="api-server"} 3.3333333333333335
  {group="canary", instance="0", job="app-server"} 3.7142857142857144
  {group="canary", instance="1", job="api-server"} 2.5
  {group="canary", instance="1", job="app-server"} 3.25
  {group="production", instance="0", job="api-server"} 10
  {group="production", instance="0", job="app-server"} 5.2
  {group="production", instance="1", job="api-server"} 5
  {group="production", instance="1", job="app-server"} 4.333333333333333

eval instant at 50m http_requests{group="canary", job="api-server"} * on(instance) group_left(job) max by (instance, job) (http_requests{group="production", job="api-server"})
  {group="canary", instance="0", job="api-server"} 30000
  {group="canary", instance="1", job="api-server"} 80000

eval instant at 50m vector_matching_a - on(l) vector_matching_b
  {l="x"} -30

eval instant at 50m vector_matching_a - on() group_left vector_matching_b
  {l="x"} -30
  {l="y"} -20

eval_fail instant at 50m vector_matching_a - on() vector_matching_b

eval_fail instant at 50m http_requests / on(group) http_requests

eval_fail instant at 50m http_requests / on(job) group_left http_requests

eval_fail instant at 50m vector_matching_a * on() group_left vector_matching_a
"#
    ));
}

#[test]
fn comparisons_filter_or_bool() {
    run_script(&format!(
        "{DATA}{}",
        r#"
eval instant at 50m SUM(http_requests) BY (job) > 1000
  {job="app-server"} 2600

eval instant at 50m 1000 < SUM(http_requests) BY (job)
  {job="app-server"} 2600

eval instant at 50m SUM(http_requests) BY (job) <= 1000
  {job="api-server"} 1000

eval instant at 50m SUM(http_requests) BY (job) != 1000
  {job="app-server"} 2600

eval instant at 50m SUM(http_requests) BY (job) == 1000
  {job="api-server"} 1000

eval instant at 50m SUM(http_requests) BY (job) == bool 1000
  {job="api-server"} 1
  {job="app-server"} 0

eval instant at 50m SUM(http_requests) BY (job) == bool SUM(http_requests) BY (job)
  {job="api-server"} 1
  {job="app-server"} 1

eval instant at 50m SUM(http_requests) BY (job) != bool SUM(http_requests) BY (job)
  {job="api-server"} 0
  {job="app-server"} 0

eval instant at 50m 0 == bool 1
  0

eval instant at 50m 1 == bool 1
  1

eval instant at 50m http_requests{job="api-server", instance="0", group="production"} == bool 100
  {job="api-server", instance="0", group="production"} 1

eval instant at 50m http_requests{job="api-server", group="production"} > 150
  http_requests{job="api-server", instance="1", group="production"} 200

eval instant at 50m http_requests{job="api-server", group="production"} > bool 150
  {job="api-server", instance="0", group="production"} 0
  {job="api-server", instance="1", group="production"} 1

eval instant at 50m http_requests{job="api-server", group="production"} > on(instance) group_left http_requests{job="api-server", group="canary"} - 250
  http_requests{job="api-server", instance="0", group="production"} 100
  http_requests{job="api-server", instance="1", group="production"} 200

eval instant at 50m http_requests{group="canary"} > ignoring(group) http_requests{group="production"}
  http_requests{instance="0", job="api-server"} 300
  http_requests{instance="0", job="app-server"} 700
  http_requests{instance="1", job="api-server"} 400
  http_requests{instance="1", job="app-server"} 800

eval_fail instant at 50m 1 == 1
"#
    ));
}

#[test]
fn operators_in_range_queries() {
    run_script(
        r#"
load 1m
  a{x="1"} 1 2 3 4
  b{x="1"} 10 _ 30 40
  a{x="2"} 5 5

eval range from 0 to 3m step 1m a + b
  {x="1"} 11 12 33 44

eval range from 0 to 3m step 1m a > 2
  a{x="1"} _ _ 3 4
  a{x="2"} 5 5 5 5

eval range from 0 to 3m step 1m a or b
  a{x="1"} 1 2 3 4
  a{x="2"} 5 5 5 5

eval range from 0 to 2m step 1m b unless a
"#,
    );
}
