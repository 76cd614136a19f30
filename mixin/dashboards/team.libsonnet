local d = import 'lib.libsonnet';
local poolPanels = import 'pool_panels.libsonnet';

{
  grafanaDashboards+:: {
    local c = $._config,
    'team.json': d.dashboard(
      c,
      'team.json',
      'Claude budget: team',
      "One team's Claude credit pools: remaining credit, spend, drift, burn rate and forecast.",
      [
        d.queryVariable('team', 'Team', 'label_values(claude_pool_info{job=~"$job",instance=~"$instance"}, team)', '.*'),
        d.queryVariable('pool', 'Pool', 'label_values(claude_pool_info{job=~"$job",instance=~"$instance",team=~"$team"}, pool)', '.*'),
      ],
      (import 'team_panels.libsonnet') + d.shift(poolPanels(c), 2, 6),
    ),
  },
}
