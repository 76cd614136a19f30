// What every dashboard of the mixin shares: the frame (uid, time, refresh, links), the
// variables (data source, job, instance), the firing-alert annotation, and the __inputs and
// __requires that grafana.com asks of an uploaded dashboard.
local u = import '../lib/utils.libsonnet';

{
  // the data source every panel, target and query variable reads
  datasource:: { type: 'prometheus', uid: '${datasource}' },

  // A query variable; allValue null makes "All" the regex of every value found, never ".*"
  // (which would match other jobs' series too).
  queryVariable(name, label, query, allValue=null):: {
    name: name,
    label: label,
    type: 'query',
    datasource: $.datasource,
    query: { query: query, refId: name + '-var', qryType: 1 },
    definition: query,
    refresh: 2,
    sort: 1,
    includeAll: true,
    multi: true,
    current: { selected: true, text: ['All'], value: ['$__all'] },
    options: [],
    hide: 0,
    regex: '',
  } + (if allValue == null then {} else { allValue: allValue }),

  variables(c):: [
    {
      name: 'datasource',
      label: 'Data source',
      type: 'datasource',
      query: 'prometheus',
      // an import from grafana.com puts the data source chosen for DS_PROMETHEUS here
      current: { selected: false, text: '${DS_PROMETHEUS}', value: '${DS_PROMETHEUS}' },
      hide: 0,
      refresh: 1,
      regex: '',
      includeAll: false,
      multi: false,
      options: [],
    },
    // the exporters' jobs: those the mixin's selector picks
    $.queryVariable('job', 'Job', 'label_values(up%s, job)' % u.sel(c)),
    $.queryVariable('instance', 'Instance', 'label_values(up%s, instance)' % u.sel(c, 'job=~"$job"')),
  ],

  annotations(c):: {
    list: [
      {
        builtIn: 1,
        datasource: { type: 'grafana', uid: '-- Grafana --' },
        enable: true,
        hide: true,
        iconColor: 'rgba(0, 211, 255, 1)',
        name: 'Annotations & Alerts',
        type: 'dashboard',
      },
      {
        // the mixin's alerts while they fire: pool alerts carry the pool, health alerts the instance
        datasource: $.datasource,
        enable: true,
        hide: false,
        iconColor: 'red',
        name: 'Firing alerts',
        expr: 'ALERTS{alertstate="firing",alertname=~"Claude.+",job=~"$job"}',
        step: '1m',
        titleFormat: '{{alertname}}',
        textFormat: '{{severity}} {{pool}}{{instance}}',
        tagKeys: 'severity,pool,instance',
        useValueForTime: false,
      },
    ],
  },

  // Move panels down by y rows and number them from id on: a block of panels shared by two
  // dashboards at different places.
  shift(panels, id, y):: [p { id: p.id + id, gridPos+: { y: p.gridPos.y + y } } for p in panels],

  local panelNames = {
    bargauge: 'Bar gauge',
    stat: 'Stat',
    table: 'Table',
    timeseries: 'Time series',
  },

  dashboard(c, file, title, description, variables, panels):: {
    __inputs: [
      {
        name: 'DS_PROMETHEUS',
        label: 'Prometheus',
        description: 'The Prometheus that scrapes the exporters and evaluates the mixin rules',
        type: 'datasource',
        pluginId: 'prometheus',
        pluginName: 'Prometheus',
      },
    ],
    __requires: [
      { type: 'grafana', id: 'grafana', name: 'Grafana', version: c.grafanaVersion },
      { type: 'datasource', id: 'prometheus', name: 'Prometheus', version: '1.0.0' },
    ] + [
      { type: 'panel', id: t, name: panelNames[t], version: '' }
      for t in std.set([p.type for p in panels if p.type != 'row'])
    ],
    uid: c.dashboardUIDs[file],
    title: title,
    description: description,
    tags: c.dashboardTags,
    timezone: c.dashboardTimezone,
    editable: true,
    graphTooltip: 1,
    schemaVersion: 39,
    version: 1,
    refresh: c.dashboardRefresh,
    time: { from: c.dashboardPeriod, to: 'now' },
    fiscalYearStartMonth: 0,
    liveNow: false,
    weekStart: '',
    annotations: $.annotations(c),
    links: [
      {
        title: 'Claude budget',
        type: 'dashboards',
        tags: c.dashboardTags,
        asDropdown: false,
        includeVars: true,
        keepTime: true,
      },
    ],
    templating: { list: $.variables(c) + variables },
    panels: panels,
  },
}
