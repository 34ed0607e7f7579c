use crate::metrics::promql::testload::run_script;

#[test]
fn matchers_offset_and_lookback() {
    run_script(
        r#"
load 10s
  http_requests{job="api-server", instance="0", group="production"} 0+10x1000 100+30x1000
  http_requests{job="api-server", instance="1", group="production"} 0+20x1000 200+30x1000
  http_requests{job="api-server", instance="0", group="canary"} 0+30x1000 300+80x1000
  http_requests{job="api-server", instance="1", group="canary"} 0+40x2000

eval instant at 8000s rate(http_requests[1m])
  {job="api-server", instance="0", group="production"} 1
  {job="api-server", instance="1", group="production"} 2
  {job="api-server", instance="0", group="canary"} 3
  {job="api-server", instance="1", group="canary"} 4

eval instant at 18000s rate(http_requests[1m])
  {job="api-server", instance="0", group="production"} 3
  {job="api-server", instance="1", group="production"} 3
  {job="api-server", instance="0", group="canary"} 8
  {job="api-server", instance="1", group="canary"} 4

eval instant at 8000s rate(http_requests{group=~"pro.*"}[1m])
  {job="api-server", instance="0", group="production"} 1
  {job="api-server", instance="1", group="production"} 2

eval instant at 18000s rate(http_requests{group=~".*ry", instance="1"}[1m])
  {job="api-server", instance="1", group="canary"} 4

eval instant at 18000s rate(http_requests{instance!="3"}[1m] offset 10000s)
  {job="api-server", instance="0", group="production"} 1
  {job="api-server", instance="1", group="production"} 2
  {job="api-server", instance="0", group="canary"} 3
  {job="api-server", instance="1", group="canary"} 4

eval instant at 4000s rate(http_requests{instance!="3"}[1m] offset -4000s)
  {job="api-server", instance="0", group="production"} 1
  {job="api-server", instance="1", group="production"} 2
  {job="api-server", instance="0", group="canary"} 3
  {job="api-server", instance="1", group="canary"} 4

eval instant at 18000s rate(http_requests[40s]) - rate(http_requests[1m] offset 10000s)
  {job="api-server", instance="0", group="production"} 2
  {job="api-server", instance="1", group="production"} 1
  {job="api-server", instance="0", group="canary"} 5
  {job="api-server", instance="1", group="canary"} 0

eval instant at 18000s rate(http_requests{group=~"(?i:PRO).*"}[1m])
  {job="api-server", instance="0", group="production"} 3
  {job="api-server", instance="1", group="production"} 3

eval instant at 18000s rate(http_requests{group!~".*a.*", instance=~"0|1"}[1m])
  {job="api-server", instance="0", group="production"} 3
  {job="api-server", instance="1", group="production"} 3

eval instant at 8000s http_requests{group="canary", instance="0"} offset 1000s
  http_requests{job="api-server", instance="0", group="canary"} 21000

eval instant at 8000s {__name__="http_requests", group="canary", instance="0"}
  http_requests{job="api-server", instance="0", group="canary"} 24000

eval instant at 8000s {__name__=~"http_req.*", group="canary", instance="0"}
  http_requests{job="api-server", instance="0", group="canary"} 24000

eval_fail instant at 0s {__name__=~".*"}

eval_fail instant at 0s {job=~".*", instance=""}

eval instant at 8000s http_requests{group="nonexistent"}
"#,
    );
}

#[test]
fn staleness_markers_end_series() {
    run_script(
        r#"
load 10s
  metric 0 1 stale 2

eval instant at 10s metric
  metric 1

eval instant at 20s metric

eval instant at 30s metric
  metric 2

eval instant at 40s metric
  metric 2

eval instant at 20s count_over_time(metric[1s])

eval instant at 30s count_over_time(metric[1m])
  {} 3

eval instant at 20s last_over_time(metric[15s])
  metric 1

eval instant at 20s timestamp(metric)

eval range from 0 to 40s step 10s metric
  metric 0 1 _ 2 2

clear
load 1m
  old 1

eval instant at 5m old
  old 1

eval instant at 5m1s old

eval instant at 6m count_over_time(old[6m])
  {} 1
"#,
    );
}

#[test]
fn at_modifier_and_step_alignment() {
    run_script(
        r#"
load 10s
  metric{job="1"} 0+1x1000
  metric{job="2"} 0+2x1000

eval instant at 10s metric @ 100
  metric{job="1"} 10
  metric{job="2"} 20

eval instant at 10000s metric @ 100
  metric{job="1"} 10
  metric{job="2"} 20

eval instant at 10s metric @ 100 offset 50s
  metric{job="1"} 5
  metric{job="2"} 10

eval instant at 10s metric offset 50s @ 100
  metric{job="1"} 5
  metric{job="2"} 10

eval instant at 10s metric @ 0 offset -50s
  metric{job="1"} 5
  metric{job="2"} 10

eval instant at 25s sum_over_time(metric{job="1"}[100s] @ 100)
  {job="1"} 55

eval instant at 25s sum_over_time(metric{job="1"}[100s:25s] @ 100)
  {job="1"} 24

eval instant at 500s metric{job="1"} @ start()
  metric{job="1"} 50

eval range from 10s to 30s step 10s metric{job="1"} @ end()
  metric{job="1"} 3 3 3

eval range from 10s to 30s step 10s metric{job="1"} @ start()
  metric{job="1"} 1 1 1

eval range from 10s to 30s step 10s metric{job="1"} @ 20 + metric{job="1"}
  {job="1"} 3 4 5

eval range from 10s to 40s step 10s rate(metric{job="1"}[20s] @ 100)
  {job="1"} 0.1 0.1 0.1 0.1

eval instant at 0s time()
  0

eval range from 5s to 25s step 10s metric{job="2"}
  metric{job="2"} 0 2 4
"#,
    );
}

#[test]
fn subqueries() {
    run_script(
        r#"
load 10s
  metric 1 2

eval instant at 10s sum_over_time(metric[50s:5s])
  {} 4

eval instant at 10s sum_over_time(metric[50s:10s])
  {} 3

eval instant at 5m sum_over_time(metric[50s:10s])
  {} 12

eval instant at 20s sum_over_time(metric[50s:5s])
  {} 8

eval instant at 20s sum_over_time(metric[50s:10s])
  {} 5

eval instant at 20s sum_over_time(metric[50s:10s] offset 10s)
  {} 3

eval instant at 10s count_over_time(metric[1m:1s])
  {} 11

eval instant at 20s metric[20s:10s]
  metric 1@0 2@10000 2@20000

clear
load 10s
  http_requests{job="api-server", instance="1", group="production"} 0+20x1000 200+30x1000

eval instant at 8000s rate(http_requests[1m])
  {job="api-server", instance="1", group="production"} 2

eval instant at 8000s min_over_time(rate(http_requests[1m])[5m:30s])
  {job="api-server", instance="1", group="production"} 2

eval instant at 8000s max_over_time(rate(http_requests[1m])[5m:])
  {job="api-server", instance="1", group="production"} 2

eval instant at 20000s min_over_time(rate(http_requests[1m])[5m:1m] offset 2000s)
  {job="api-server", instance="1", group="production"} 3

eval instant at 10000s max_over_time(rate(http_requests[1m])[1000s:1m])
  {job="api-server", instance="1", group="production"} 2

eval range from 8000s to 8060s step 30s avg_over_time(http_requests[1m:1m])
  {job="api-server", instance="1", group="production"} 15960 15960 16080
"#,
    );
}
