use crate::metrics::promql::testload::run_script;

#[test]
fn resets_and_changes() {
    run_script(
        r#"
load 5m
  http_requests{path="/foo"} 1 2 3 0 1 0 0 1 2 0
  http_requests{path="/bar"} 1 2 3 4 5 1 2 3 4 5
  http_requests{path="/biz"} 0 0 0 0 0 1 1 1 1 1

eval instant at 50m resets(http_requests[5m])
  {path="/foo"} 0
  {path="/bar"} 0
  {path="/biz"} 0

eval instant at 50m resets(http_requests[20m])
  {path="/foo"} 1
  {path="/bar"} 0
  {path="/biz"} 0

eval instant at 50m resets(http_requests[30m])
  {path="/foo"} 2
  {path="/bar"} 1
  {path="/biz"} 0

eval instant at 50m resets(http_requests[50m])
  {path="/foo"} 3
  {path="/bar"} 1
  {path="/biz"} 0

eval instant at 50m resets(nonexistent_metric[50m])

eval instant at 50m changes(http_requests[5m])
  {path="/foo"} 0
  {path="/bar"} 0
  {path="/biz"} 0

eval instant at 50m changes(http_requests[20m])
  {path="/foo"} 3
  {path="/bar"} 3
  {path="/biz"} 0

eval instant at 50m changes(http_requests[30m])
  {path="/foo"} 4
  {path="/bar"} 5
  {path="/biz"} 1

eval instant at 50m changes(http_requests[50m])
  {path="/foo"} 8
  {path="/bar"} 9
  {path="/biz"} 1
"#,
    );
}

#[test]
fn rate_increase_delta_extrapolation() {
    run_script(
        r#"
load 5m
  http_requests{path="/foo"} 0+10x10
  http_requests{path="/bar"} 0+10x5 0+10x5

eval instant at 50m increase(http_requests[50m])
  {path="/foo"} 100
  {path="/bar"} 90

eval instant at 51m increase(http_requests[50m])
  {path="/foo"} 100
  {path="/bar"} 88.88888888888889

eval instant at 50m rate(http_requests[50m])
  {path="/foo"} 0.03333333333333333
  {path="/bar"} 0.03

eval instant at 50m irate(http_requests[50m])
  {path="/foo"} .03333333333333333333
  {path="/bar"} .03333333333333333333

eval instant at 30m irate(http_requests[50m])
  {path="/foo"} .03333333333333333333
  {path="/bar"} 0

eval instant at 50m idelta(http_requests[50m])
  {path="/foo"} 10
  {path="/bar"} 10

clear
load 5m
  http_requests{job="api-server", instance="0", group="production"} 0+10x10
  http_requests{job="app-server", instance="1", group="canary"} 0+80x10
  testcounter_reset_middle 0+10x4 0+10x5
  testcounter_reset_end 0+10x9 0 10
  counter_full 100+100x4
  counter_late _ 10+100x3

eval instant at 50m delta(http_requests{group="canary"}[50m])
  {job="app-server", instance="1", group="canary"} 800

eval instant at 50m rate(http_requests{group="canary", instance="1", job="app-server"}[50m])
  {group="canary", instance="1", job="app-server"} 0.26666666666666666

eval instant at 50m deriv(http_requests{group="canary", instance="1", job="app-server"}[50m])
  {group="canary", instance="1", job="app-server"} 0.26666666666666666

eval instant at 50m rate(testcounter_reset_middle[50m])
  {} 0.03

eval instant at 50m rate(testcounter_reset_end[5m])
  {} 0

eval instant at 50m increase(testcounter_reset_end[10m])
  {} 10

eval instant at 22m increase(counter_full[20m])
  {} 400

eval instant at 22m increase(counter_late[20m])
  {} 350

eval instant at 30m increase(counter_late[30m])
  {} 360

eval instant at 50m deriv(testcounter_reset_middle[100m])
  {} 0.010606060606060607

eval instant at 50m predict_linear(testcounter_reset_middle[100m], 3600)
  {} 76.81818181818181

eval instant at 50m predict_linear(http_requests[50m], 3600) - (http_requests + deriv(http_requests[50m]) * 3600)
  {group="canary", instance="1", job="app-server"} 0
  {group="production", instance="0", job="api-server"} 0

eval range from 0 to 20m step 5m rate(http_requests{group="canary"}[10m])
  {group="canary", instance="1", job="app-server"} _ 0.13333333333333333 0.26666666666666666 0.26666666666666666 0.26666666666666666
"#,
    );
}

#[test]
fn over_time_functions() {
    run_script(
        r#"
load 10s
  metric 1 2 3 4 5
  metric2 1 2 3 4 Inf
  metric3 1 2 3 4 -Inf
  metric4 1 2 3 Inf -Inf
  metric5 Inf 0 Inf
  metric6 1 2 NaN 4

eval instant at 1m avg_over_time(metric[1m])
  {} 3

eval instant at 1m sum_over_time(metric[1m])
  {} 15

eval instant at 1m count_over_time(metric[1m])
  {} 5

eval instant at 1m min_over_time(metric[1m])
  {} 1

eval instant at 1m max_over_time(metric[1m])
  {} 5

eval instant at 1m last_over_time(metric[1m])
  metric 5

eval instant at 1m present_over_time(metric[1m])
  {} 1

eval instant at 1m stdvar_over_time(metric[1m])
  {} 2

eval instant at 1m stddev_over_time(metric[1m])
  {} 1.4142135623730951

eval instant at 1m quantile_over_time(0.5, metric[1m])
  {} 3

eval instant at 1m quantile_over_time(0.25, metric[1m])
  {} 2

eval instant at 1m avg_over_time(metric2[1m])
  {} Inf

eval instant at 1m avg_over_time(metric3[1m])
  {} -Inf

eval instant at 1m avg_over_time(metric4[1m])
  {} NaN

eval instant at 1m avg_over_time(metric5[1m])
  {} Inf

eval instant at 1m max_over_time(metric6[1m])
  {} 4

eval instant at 1m min_over_time(metric6[1m])
  {} 1

eval instant at 1m absent_over_time(metric[1m])

eval instant at 1m absent_over_time(nonexistent{job="a", job2=~"b"}[1m])
  {job="a"} 1

eval instant at 10m absent_over_time(metric[1m])
  {} 1

eval range from 0 to 3m step 1m absent_over_time(metric[30s])
  {} _ _ 1 1

eval instant at 1m max_over_time(rate(metric[20s])[1m:10s])
  {} 0.1
"#,
    );
}

#[test]
fn stddev_precision_and_quantile_edges() {
    run_script(
        r#"
load 10s
  metric 1.5990505637277868 1.5990505637277868 1.5990505637277868

eval instant at 1m stdvar_over_time(metric[1m])
  {} 0

eval instant at 1m quantile_over_time(2, metric[1m])
  {} Inf

eval instant at 1m quantile_over_time(NaN, metric[1m])
  {} NaN
"#,
    );
}

#[test]
fn label_replace_and_join() {
    run_script(
        r#"
load 5m
  testmetric{src="source-value-10",dst="original-destination-value"} 0
  testmetric{src="source-value-20",dst="original-destination-value"} 1

eval instant at 0m label_replace(testmetric, "dst", "destination-value-$1", "src", "source-value-(.*)")
  testmetric{src="source-value-10",dst="destination-value-10"} 0
  testmetric{src="source-value-20",dst="destination-value-20"} 1

eval instant at 0m label_replace(testmetric, "dst", "destination-value-$1", "src", "value-(.*)")
  testmetric{src="source-value-10",dst="original-destination-value"} 0
  testmetric{src="source-value-20",dst="original-destination-value"} 1

eval instant at 0m label_replace(testmetric, "dst", "$1-value-$2", "src", "(.*)-value-(.*)")
  testmetric{src="source-value-10",dst="source-value-10"} 0
  testmetric{src="source-value-20",dst="source-value-20"} 1

eval instant at 0m label_replace(testmetric, "dst", "value-$1", "nonexistent-src", "source-value-(.*)")
  testmetric{src="source-value-10",dst="original-destination-value"} 0
  testmetric{src="source-value-20",dst="original-destination-value"} 1

eval instant at 0m label_replace(testmetric, "dst", "value-$1", "nonexistent-src", "(.*)")
  testmetric{src="source-value-10",dst="value-"} 0
  testmetric{src="source-value-20",dst="value-"} 1

eval instant at 0m label_replace(testmetric, "dst", "", "dst", ".*")
  testmetric{src="source-value-10"} 0
  testmetric{src="source-value-20"} 1

eval instant at 0m label_replace(testmetric, "__name__", "renamed", "src", ".*10")
  renamed{src="source-value-10",dst="original-destination-value"} 0
  testmetric{src="source-value-20",dst="original-destination-value"} 1

eval_fail instant at 0m label_replace(testmetric, "dst", "value-$1", "src", "(.*")

eval_fail instant at 0m label_replace(testmetric, "invalid-label-name", "", "src", "(.*)")

eval_fail instant at 0m label_replace(testmetric, "src", "", "", "")

clear
load 5m
  testmetric{src="a",src1="b",src2="c",dst="original-destination-value"} 0
  testmetric{src="d",src1="e",src2="f",dst="original-destination-value"} 1

eval instant at 0m label_join(testmetric, "dst", "-", "src", "src1", "src2")
  testmetric{src="a",src1="b",src2="c",dst="a-b-c"} 0
  testmetric{src="d",src1="e",src2="f",dst="d-e-f"} 1

eval instant at 0m label_join(testmetric, "dst", "", "emptysrc", "emptysrc1")
  testmetric{src="a",src1="b",src2="c"} 0
  testmetric{src="d",src1="e",src2="f"} 1

eval_fail instant at 0m label_join(testmetric, "dst", "-", "in-valid")
"#,
    );
}

#[test]
fn math_clamp_round_sort() {
    run_script(
        r#"
load 5m
  test_clamp{src="clamp-a"} -50
  test_clamp{src="clamp-b"} 0
  test_clamp{src="clamp-c"} 100
  test_round{a="1"} 1.5
  test_round{a="2"} -1.5
  test_round{a="3"} 2.4
  data{x="a"} 4
  data{x="b"} NaN
  data{x="c"} 1
  data{x="d"} 9

eval instant at 0m clamp_max(test_clamp, 75)
  {src="clamp-a"} -50
  {src="clamp-b"} 0
  {src="clamp-c"} 75

eval instant at 0m clamp_min(test_clamp, -25)
  {src="clamp-a"} -25
  {src="clamp-b"} 0
  {src="clamp-c"} 100

eval instant at 0m clamp(test_clamp, -25, 75)
  {src="clamp-a"} -25
  {src="clamp-b"} 0
  {src="clamp-c"} 75

eval instant at 0m clamp(test_clamp, 5, -5)

eval instant at 0m clamp_max(clamp_min(test_clamp, -20), 70)
  {src="clamp-a"} -20
  {src="clamp-b"} 0
  {src="clamp-c"} 70

eval instant at 0m round(test_round)
  {a="1"} 2
  {a="2"} -1
  {a="3"} 2

eval instant at 0m round(test_round, 0.5)
  {a="1"} 1.5
  {a="2"} -1.5
  {a="3"} 2.5

eval instant at 0m abs(test_clamp)
  {src="clamp-a"} 50
  {src="clamp-b"} 0
  {src="clamp-c"} 100

eval instant at 0m sgn(test_clamp)
  {src="clamp-a"} -1
  {src="clamp-b"} 0
  {src="clamp-c"} 1

eval instant at 0m sqrt(data{x="a"})
  {x="a"} 2

eval instant at 0m ln(data{x="c"})
  {x="c"} 0

eval instant at 0m log2(data{x="a"})
  {x="a"} 2

eval instant at 0m log10(data{x="c"} * 1000)
  {x="c"} 3

eval instant at 0m exp(data{x="c"} - 1)
  {x="c"} 1

eval instant at 0m ceil(test_round)
  {a="1"} 2
  {a="2"} -1
  {a="3"} 3

eval instant at 0m floor(test_round)
  {a="1"} 1
  {a="2"} -2
  {a="3"} 2

eval_ordered instant at 0m sort(data)
  data{x="c"} 1
  data{x="a"} 4
  data{x="d"} 9
  data{x="b"} NaN

eval_ordered instant at 0m sort_desc(data)
  data{x="d"} 9
  data{x="a"} 4
  data{x="c"} 1
  data{x="b"} NaN

eval instant at 0m deg(vector(pi()))
  {} 180

eval instant at 0m rad(data{x="c"} * 180)
  {x="c"} 3.141592653589793

eval instant at 0m cos(data{x="c"} - 1)
  {x="c"} 1

eval instant at 0m data{x="c"} atan2 data{x="c"}
  data{x="c"} 0.7853981633974483
"#,
    );
}

#[test]
fn scalar_vector_time_timestamp_absent() {
    run_script(
        r#"
load 10s
  metric 1 2
  single{a="x"} 7

eval instant at 0m vector(1)
  {} 1

eval instant at 60m vector(time())
  {} 3600

eval instant at 60m time()
  3600

eval instant at 0m scalar(single)
  7

eval instant at 0m scalar(metric or single)
  NaN

eval instant at 0m timestamp(metric)
  {} 0

eval instant at 10s timestamp(metric)
  {} 10

eval instant at 1m timestamp(metric)
  {} 10

eval instant at 1m timestamp(metric offset 50s)
  {} 10

eval instant at 1m timestamp(-metric)
  {} 60

eval instant at 0m absent(nonexistent)
  {} 1

eval instant at 0m absent(nonexistent{job="testjob", instance="testinstance", method=~".x"})
  {instance="testinstance", job="testjob"} 1

eval instant at 0m absent(nonexistent{job="testjob",job="testjob2",foo="bar"})
  {foo="bar"} 1

eval instant at 0m absent(sum(nonexistent{job="testjob"}))
  {} 1

eval instant at 0m absent(metric)

eval instant at 0m absent(metric{job="x"} or vector(1))
"#,
    );
}

#[test]
fn date_functions() {
    // 1136239445 = 2006-01-02T22:04:05Z, a Monday.
    run_script(
        r#"
load 5m
  t{a="x"} 1136239445
  leap 1709208000

eval instant at 0m year(t)
  {a="x"} 2006

eval instant at 0m month(t)
  {a="x"} 1

eval instant at 0m day_of_month(t)
  {a="x"} 2

eval instant at 0m day_of_week(t)
  {a="x"} 1

eval instant at 0m day_of_year(t)
  {a="x"} 2

eval instant at 0m hour(t)
  {a="x"} 22

eval instant at 0m minute(t)
  {a="x"} 4

eval instant at 0m days_in_month(t)
  {a="x"} 31

eval instant at 0m days_in_month(leap)
  {} 29

eval instant at 0m day_of_year(leap)
  {} 60

eval instant at 0m year()
  {} 1970

eval instant at 0m day_of_week()
  {} 4
"#,
    );
}

#[test]
fn histogram_quantile_classic_buckets() {
    run_script(
        r#"
load 5m
  testhistogram_bucket{le="0.1", start="positive"} 0+5x10
  testhistogram_bucket{le=".2", start="positive"} 0+7x10
  testhistogram_bucket{le="1e0", start="positive"} 0+11x10
  testhistogram_bucket{le="+Inf", start="positive"} 0+12x10
  testhistogram_bucket{le="-.2", start="negative"} 0+1x10
  testhistogram_bucket{le="-0.1", start="negative"} 0+2x10
  testhistogram_bucket{le="0.3", start="negative"} 0+2x10
  testhistogram_bucket{le="+Inf", start="negative"} 0+3x10
  request_duration_seconds_bucket{job="job1", instance="ins1", le="0.1"} 0+1x10
  request_duration_seconds_bucket{job="job1", instance="ins1", le="0.2"} 0+3x10
  request_duration_seconds_bucket{job="job1", instance="ins1", le="+Inf"} 0+4x10
  request_duration_seconds_bucket{job="job1", instance="ins2", le="0.1"} 0+2x10
  request_duration_seconds_bucket{job="job1", instance="ins2", le="0.2"} 0+5x10
  request_duration_seconds_bucket{job="job1", instance="ins2", le="+Inf"} 0+6x10
  request_duration_seconds_bucket{job="job2", instance="ins1", le="0.1"} 0+3x10
  request_duration_seconds_bucket{job="job2", instance="ins1", le="0.2"} 0+4x10
  request_duration_seconds_bucket{job="job2", instance="ins1", le="+Inf"} 0+6x10
  mixed_bucket{job="job1", instance="ins1", le="0.1"} 0+1x10
  mixed_bucket{job="job1", instance="ins1", le="0.2"} 0+1x10
  mixed_bucket{job="job1", instance="ins1", le="2e-1"} 0+1x10
  mixed_bucket{job="job1", instance="ins1", le="2.0e-1"} 0+1x10
  mixed_bucket{job="job1", instance="ins1", le="+Inf"} 0+4x10
  nonmonotonic_bucket{le="0.1"} 0+2x10
  nonmonotonic_bucket{le="1"} 0+1x10
  nonmonotonic_bucket{le="10"} 0+2x10
  nonmonotonic_bucket{le="100"} 0+1x10
  nonmonotonic_bucket{le="1000"} 0+9x10
  nonmonotonic_bucket{le="+Inf"} 0+8x10
  noinf_bucket{le="1"} 0+1x10

eval instant at 50m histogram_quantile(0, testhistogram_bucket)
  {start="positive"} 0
  {start="negative"} -0.2

eval instant at 50m histogram_quantile(0.2, testhistogram_bucket)
  {start="positive"} 0.048
  {start="negative"} -0.2

eval instant at 50m histogram_quantile(0.5, testhistogram_bucket)
  {start="positive"} 0.15
  {start="negative"} -0.15

eval instant at 50m histogram_quantile(0.8, testhistogram_bucket)
  {start="positive"} 0.72
  {start="negative"} 0.3

eval instant at 50m histogram_quantile(1, testhistogram_bucket)
  {start="positive"} 1
  {start="negative"} 0.3

eval instant at 50m histogram_quantile(-0.1, testhistogram_bucket)
  {start="positive"} -Inf
  {start="negative"} -Inf

eval instant at 50m histogram_quantile(1.01, testhistogram_bucket)
  {start="positive"} +Inf
  {start="negative"} +Inf

eval instant at 50m histogram_quantile(0.8, rate(testhistogram_bucket[5m]))
  {start="positive"} 0.72
  {start="negative"} 0.3

eval instant at 50m histogram_quantile(0.3, sum(rate(request_duration_seconds_bucket[5m])) by (le))
  {} 0.08

eval instant at 50m histogram_quantile(0.5, sum(rate(request_duration_seconds_bucket[5m])) by (le))
  {} 0.13333333333333333

eval instant at 50m histogram_quantile(0.5, sum(rate(request_duration_seconds_bucket[5m])) by (le, instance))
  {instance="ins1"} 0.13333333333333333
  {instance="ins2"} 0.13333333333333333

eval instant at 50m histogram_quantile(0.5, rate(mixed_bucket[5m]))
  {instance="ins1", job="job1"} 0.15

eval instant at 50m histogram_quantile(0.75, nonmonotonic_bucket)
  {} 710.7142857142857

eval instant at 50m histogram_quantile(0.5, noinf_bucket)
  {} NaN

eval instant at 0m histogram_quantile(0.5, testhistogram_bucket)
  {start="positive"} NaN
  {start="negative"} NaN
"#,
    );
}

#[test]
fn holt_winters_is_supported_as_in_2_42() {
    run_script(
        r#"
load 10s
  http_requests 0+10x10

eval instant at 100s holt_winters(http_requests[100s], 0.5, 0.5)
  {} 100

eval_fail instant at 100s holt_winters(http_requests[100s], 1.5, 0.5)
"#,
    );
}
