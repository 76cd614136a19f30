local d = import 'lib.libsonnet';
local poolPanels = import 'pool_panels.libsonnet';

{
  grafanaDashboards+:: {
    local c = $._config,
    'overview.json': d.dashboard(
      c,
      'overview.json',
      'Claude budget: overview',
      'Remaining Claude credit per pool, billed vs estimated spend, drift, burn rate, forecast exhaustion, and the health of the exporters.',
      [
        d.queryVariable('pool', 'Pool', 'label_values(claude_pool_credit_usd{job=~"$job",instance=~"$instance"}, pool)', '.*'),
      ],
      poolPanels(c) + (import 'overview_panels.libsonnet'),
    ),
  },
}
