use crate::metrics::promql::testload::run_script;

const REQUESTS: &str = r#"
load 5m
  http_requests{job="api-server", instance="0", group="production"} 0+10x10
  http_requests{job="api-server", instance="1", group="production"} 0+20x10
  http_requests{job="api-server", instance="0", group="canary"}   0+30x10
  http_requests{job="api-server", instance="1", group="canary"}   0+40x10
  http_requests{job="app-server", instance="0", group="production"} 0+50x10
  http_requests{job="app-server", instance="1", group="production"} 0+60x10
  http_requests{job="app-server", instance="0", group="canary"}   0+70x10
  http_requests{job="app-server", instance="1", group="canary"}   0+80x10
  foo{job="api-server", instance="0", region="europe"} 0+90x10
  foo{job="api-server"} 0+100x10
"#;

#[test]
fn sum_avg_count_by_and_without() {
    run_script(&format!(
        "{REQUESTS}{}",
        r#"
eval instant at 50m SUM BY (group) (http_requests{job="api-server"})
  {group="canary"} 700
  {group="production"} 300

eval instant at 50m sum by (group) (((http_requests{job="api-server"})))
  {group="canary"} 700
  {group="production"} 300

eval instant at 50m avg by (group) (http_requests{job="api-server"})
  {group="canary"} 350
  {group="production"} 150

eval instant at 50m count by (group) (http_requests{job="api-server"})
  {group="canary"} 2
  {group="production"} 2

eval instant at 50m sum without (instance) (http_requests{job="api-server"})
  {group="canary",job="api-server"} 700
  {group="production",job="api-server"} 300

eval instant at 50m sum by () (http_requests{job="api-server"})
  {} 1000

eval instant at 50m sum(http_requests{job="api-server"})
  {} 1000

eval instant at 50m sum without () (http_requests{job="api-server",group="production"})
  {group="production",job="api-server",instance="0"} 100
  {group="production",job="api-server",instance="1"} 200

eval instant at 50m sum without (instance) (http_requests{job="api-server"} or foo)
  {group="canary",job="api-server"} 700
  {group="production",job="api-server"} 300
  {region="europe",job="api-server"} 900
  {job="api-server"} 1000

eval instant at 50m sum(http_requests) by (job) + min(http_requests) by (job) + max(http_requests) by (job) + avg(http_requests) by (job)
  {job="app-server"} 4550
  {job="api-server"} 1750

eval instant at 50m sum(sum by (group) (http_requests{job="api-server"})) by (job)
  {} 1000

eval instant at 50m stddev(http_requests)
  {} 229.12878474779

eval instant at 50m stddev by (instance)(http_requests)
  {instance="0"} 223.60679774998
  {instance="1"} 223.60679774998

eval instant at 50m stdvar(http_requests)
  {} 52500

eval instant at 50m stdvar by (instance)(http_requests)
  {instance="0"} 50000
  {instance="1"} 50000

eval instant at 50m sum by (__name__) (http_requests)
  http_requests 3600

eval instant at 50m group by (job) (http_requests)
  {job="api-server"} 1
  {job="app-server"} 1
"#
    ));
}

#[test]
fn min_max_skip_nan() {
    run_script(
        r#"
load 5m
  http_requests{job="api-server", instance="0", group="production"} 1
  http_requests{job="api-server", instance="1", group="production"} 2
  http_requests{job="api-server", instance="0", group="canary"} NaN
  http_requests{job="api-server", instance="1", group="canary"} 3
  http_requests{job="api-server", instance="2", group="canary"} 4

eval instant at 0m max(http_requests)
  {} 4

eval instant at 0m min(http_requests)
  {} 1

eval instant at 0m max by (group) (http_requests)
  {group="production"} 2
  {group="canary"} 4

eval instant at 0m min by (group) (http_requests)
  {group="production"} 1
  {group="canary"} 3
"#,
    );
}

#[test]
fn topk_bottomk_order_nan_and_k() {
    run_script(
        r#"
load 5m
  http_requests{job="api-server", instance="0", group="production"} 0+10x10
  http_requests{job="api-server", instance="1", group="production"} 0+20x10
  http_requests{job="api-server", instance="2", group="production"} NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN
  http_requests{job="api-server", instance="0", group="canary"} 0+30x10
  http_requests{job="api-server", instance="1", group="canary"} 0+40x10
  http_requests{job="app-server", instance="0", group="production"} 0+50x10
  http_requests{job="app-server", instance="1", group="production"} 0+60x10
  http_requests{job="app-server", instance="0", group="canary"} 0+70x10
  http_requests{job="app-server", instance="1", group="canary"} 0+80x10
  foo 3+0x10

eval_ordered instant at 50m topk(3, http_requests)
  http_requests{group="canary", instance="1", job="app-server"} 800
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="production", instance="1", job="app-server"} 600

eval_ordered instant at 50m topk((3), (http_requests))
  http_requests{group="canary", instance="1", job="app-server"} 800
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="production", instance="1", job="app-server"} 600

eval_ordered instant at 50m topk(5, http_requests{group="canary",job="app-server"})
  http_requests{group="canary", instance="1", job="app-server"} 800
  http_requests{group="canary", instance="0", job="app-server"} 700

eval_ordered instant at 50m bottomk(3, http_requests)
  http_requests{group="production", instance="0", job="api-server"} 100
  http_requests{group="production", instance="1", job="api-server"} 200
  http_requests{group="canary", instance="0", job="api-server"} 300

eval instant at 50m topk by (group) (1, http_requests)
  http_requests{group="production", instance="1", job="app-server"} 600
  http_requests{group="canary", instance="1", job="app-server"} 800

eval instant at 50m bottomk by (group) (2, http_requests)
  http_requests{group="canary", instance="0", job="api-server"} 300
  http_requests{group="canary", instance="1", job="api-server"} 400
  http_requests{group="production", instance="0", job="api-server"} 100
  http_requests{group="production", instance="1", job="api-server"} 200

eval_ordered instant at 50m topk(3, http_requests{job="api-server",group="production"})
  http_requests{job="api-server", instance="1", group="production"} 200
  http_requests{job="api-server", instance="0", group="production"} 100
  http_requests{job="api-server", instance="2", group="production"} NaN

eval_ordered instant at 50m bottomk(3, http_requests{job="api-server",group="production"})
  http_requests{job="api-server", instance="0", group="production"} 100
  http_requests{job="api-server", instance="1", group="production"} 200
  http_requests{job="api-server", instance="2", group="production"} NaN

eval_ordered instant at 50m bottomk(9999999999, http_requests{job="app-server",group="canary"})
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="canary", instance="1", job="app-server"} 800

eval_ordered instant at 50m topk(scalar(foo), http_requests)
  http_requests{group="canary", instance="1", job="app-server"} 800
  http_requests{group="canary", instance="0", job="app-server"} 700
  http_requests{group="production", instance="1", job="app-server"} 600

eval instant at 50m topk(0, http_requests)

eval_fail instant at 50m topk(NaN, http_requests)

eval range from 40m to 50m step 5m topk(1, http_requests{job="api-server", group="production"})
  http_requests{group="production", instance="1", job="api-server"} 160 180 200
"#,
    );
}

#[test]
fn count_values_and_quantile() {
    run_script(
        r#"
load 5m
  version{job="api-server", instance="0", group="production"} 6
  version{job="api-server", instance="1", group="production"} 6
  version{job="api-server", instance="2", group="production"} 6
  version{job="api-server", instance="0", group="canary"} 8
  version{job="api-server", instance="1", group="canary"} 8
  version{job="app-server", instance="0", group="production"} 6
  version{job="app-server", instance="1", group="production"} 6
  version{job="app-server", instance="0", group="canary"} 7
  version{job="app-server", instance="1", group="canary"} 7

eval instant at 5m count_values("version", version)
  {version="6"} 5
  {version="7"} 2
  {version="8"} 2

eval instant at 5m count_values without (instance)("version", version)
  {job="api-server", group="production", version="6"} 3
  {job="api-server", group="canary", version="8"} 2
  {job="app-server", group="production", version="6"} 2
  {job="app-server", group="canary", version="7"} 2

eval instant at 5m count_values without (instance)("job", version)
  {job="6", group="production"} 5
  {job="8", group="canary"} 2
  {job="7", group="canary"} 2

eval instant at 5m count_values by (job, group)("job", version)
  {job="6", group="production"} 5
  {job="8", group="canary"} 2
  {job="7", group="canary"} 2

eval_fail instant at 5m count_values("in-valid", version)

clear
load 10s
  data{test="two samples",point="a"} 0
  data{test="two samples",point="b"} 1
  data{test="three samples",point="a"} 0
  data{test="three samples",point="b"} 1
  data{test="three samples",point="c"} 2
  data{test="uneven samples",point="a"} 0
  data{test="uneven samples",point="b"} 1
  data{test="uneven samples",point="c"} 4
  foo .8

eval instant at 1m quantile without(point)(0.8, data)
  {test="two samples"} 0.8
  {test="three samples"} 1.6
  {test="uneven samples"} 2.8

eval instant at 1m quantile without(point)((scalar(foo)), data)
  {test="two samples"} 0.8
  {test="three samples"} 1.6
  {test="uneven samples"} 2.8

eval instant at 1m quantile without(point)(2, data)
  {test="two samples"} Inf
  {test="three samples"} Inf
  {test="uneven samples"} Inf

eval instant at 1m quantile without(point)(-1, data)
  {test="two samples"} -Inf
  {test="three samples"} -Inf
  {test="uneven samples"} -Inf

eval instant at 1m group without(point)(data)
  {test="two samples"} 1
  {test="three samples"} 1
  {test="uneven samples"} 1
"#,
    );
}

#[test]
fn avg_with_infinities_and_huge_values() {
    run_script(
        r#"
load 10s
  data{test="ten",point="a"} 8
  data{test="ten",point="b"} 10
  data{test="ten",point="c"} 12
  data{test="inf",point="a"} 0
  data{test="inf",point="b"} Inf
  data{test="inf",point="d"} Inf
  data{test="inf",point="c"} 0
  data{test="-inf",point="a"} -Inf
  data{test="-inf",point="b"} -Inf
  data{test="-inf",point="c"} 0
  data{test="nan",point="a"} -Inf
  data{test="nan",point="b"} 0
  data{test="nan",point="c"} Inf
  data{test="big",point="a"} 9.988465674311579e+307
  data{test="big",point="b"} 9.988465674311579e+307
  data{test="big",point="c"} 9.988465674311579e+307
  data{test="big",point="d"} 9.988465674311579e+307
  data{test="bigzero",point="a"} -9.988465674311579e+307
  data{test="bigzero",point="b"} -9.988465674311579e+307
  data{test="bigzero",point="c"} 9.988465674311579e+307
  data{test="bigzero",point="d"} 9.988465674311579e+307

eval instant at 1m avg(data{test="ten"})
  {} 10

eval instant at 1m avg(data{test="inf"})
  {} Inf

eval instant at 1m avg(data{test="-inf"})
  {} -Inf

eval instant at 1m avg(data{test="nan"})
  {} NaN

eval instant at 1m avg(data{test="big"})
  {} 9.988465674311579e+307

eval instant at 1m avg(data{test="bigzero"})
  {} 0

eval instant at 1m sum(data{test="big"})
  {} Inf
"#,
    );
}

#[test]
fn aggregation_over_range_query_steps() {
    run_script(
        r#"
load 1m
  m{a="1"} 1 2 3 _ _ _ _ _ _ 10
  m{a="2"} 10 20 30 40

eval range from 0 to 4m step 1m sum(m)
  {} 11 22 33 43 43

eval range from 0 to 4m step 2m count(m)
  {} 2 2 2
"#,
    );
}
