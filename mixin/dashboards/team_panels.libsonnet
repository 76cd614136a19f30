// The team dashboard's own panels: its pools with their team and plan.
[
  {
    type: 'row',
    title: 'Team pools',
    id: 1,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 0 },
    panels: [],
  },
  {
    type: 'table',
    title: 'Pools of the team',
    description: 'Pools with their team and plan, as configured on the exporters.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (pool, team, plan) (claude_pool_info{job=~"$job",instance=~"$instance",team=~"$team",pool=~"$pool"})',
        legendFormat: '',
        range: false,
        instant: true,
        editorMode: 'code',
        format: 'table',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'none',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'green', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: { showHeader: true },
    id: 2,
    gridPos: { h: 5, w: 24, x: 0, y: 1 },
  },
]