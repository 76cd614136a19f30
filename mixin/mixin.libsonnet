// The claude-budget-exporter monitoring mixin: recording rules, alerts and Grafana dashboards
// for the exporter, generated from one config (config.libsonnet), the way node-mixin and
// kubernetes-mixin ship theirs.
//
//   prometheusRules    the fleet recording rules          -> deploy/prometheus/recording_rules.yml
//   prometheusAlerts   the pool, source and health alerts -> deploy/prometheus/alert_rules.yml
//   grafanaDashboards  overview.json and team.json        -> grafana/dashboards/
//
// `make mixin` writes those files (and deploy/kubernetes/prometheusrule.yaml) from the
// defaults; mixin/README.md says how to generate them with your own config.
(import 'config.libsonnet')
+ (import 'rules.libsonnet')
+ (import 'alerts.libsonnet')
+ (import 'dashboards/dashboards.libsonnet')
