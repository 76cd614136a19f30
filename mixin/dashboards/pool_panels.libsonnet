// The pool panels both dashboards show (rows "Pools" and "Spend"): the fleet view of the
// recording rules, per pool. The overview shows them first; the team dashboard below its table.
function(c)
[
  {
    type: 'row',
    title: 'Pools',
    id: 1,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 0 },
    panels: [],
  },
  {
    type: 'stat',
    title: 'Remaining credit',
    description: 'Credit minus spend this period, fleet-wide (recording rule claude:pool_remaining_usd:hybrid). Negative means overage.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_remaining_usd:hybrid{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'green', value: 0 },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
        decimals: 2,
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 2,
    gridPos: { h: 5, w: 6, x: 0, y: 1 },
  },
  {
    type: 'bargauge',
    title: 'Credit left',
    description: "Share of the pool's credit left. The warning alert fires under 20%, the critical alert (and the breaker) under 10%.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_remaining_ratio:hybrid{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'percentunit',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'orange', value: c.creditCriticalRatio },
            { color: 'yellow', value: c.creditWarningRatio },
            { color: 'green', value: 0.4 },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
        min: 0,
        max: 1,
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      displayMode: 'gradient',
      orientation: 'horizontal',
      showUnfilled: true,
    },
    id: 3,
    gridPos: { h: 5, w: 6, x: 6, y: 1 },
  },
  {
    type: 'stat',
    title: 'Circuit breaker',
    description: 'Breaker state reported by the exporters (open on any instance counts).',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (pool) (claude_breaker_open{job=~"$job",instance=~"$instance",pool=~"$pool"})',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'none',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'green', value: null },
            { color: 'red', value: 1 },
          ],
        },
        mappings: [
          {
            type: 'value',
            options: {
              '0': { text: 'closed', color: 'green', index: 0 },
              '1': { text: 'OPEN', color: 'red', index: 1 },
            },
          },
        ],
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 4,
    gridPos: { h: 5, w: 4, x: 12, y: 1 },
  },
  {
    type: 'stat',
    title: 'Forecast exhaustion',
    description: 'When the credit runs out at the burn rate of the last 6 hours. No value: nothing is being spent.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_exhaustion_timestamp_seconds:projected{job=~"$job",pool=~"$pool"} * 1000',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'dateTimeAsIso',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'blue', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 5,
    gridPos: { h: 5, w: 4, x: 16, y: 1 },
  },
  {
    type: 'stat',
    title: 'Margin at period end',
    description: 'Forecast exhaustion minus the period end: negative means the pool runs dry before it resets.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_exhaustion_timestamp_seconds:projected{job=~"$job",pool=~"$pool"} - on (job, pool) claude:pool_period_end_timestamp_seconds:max{job=~"$job"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 's',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'green', value: 0 },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 6,
    gridPos: { h: 5, w: 4, x: 20, y: 1 },
  },
  {
    type: 'stat',
    title: 'Period ends',
    description: "When each pool's credit resets.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_period_end_timestamp_seconds:max{job=~"$job",pool=~"$pool"} * 1000',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'dateTimeAsIso',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'blue', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 7,
    gridPos: { h: 4, w: 6, x: 0, y: 6 },
  },
  {
    type: 'stat',
    title: 'Spend today (estimated)',
    description: 'Fleet estimate for the current UTC day: the part of the spend the bill has not reached yet.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_estimated_spend_usd:sum{job=~"$job",pool=~"$pool",window="today"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'blue', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
        decimals: 2,
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 8,
    gridPos: { h: 4, w: 6, x: 6, y: 6 },
  },
  {
    type: 'stat',
    title: 'Billed yesterday',
    description: 'Cost-report USD for yesterday (UTC), from the exporter with the admin key.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_billed_spend_usd:max{job=~"$job",pool=~"$pool",window="yesterday"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'blue', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
        decimals: 2,
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 9,
    gridPos: { h: 4, w: 6, x: 12, y: 6 },
  },
  {
    type: 'stat',
    title: 'Drift yesterday',
    description: 'Fleet estimate / bill for yesterday (UTC). The alert fires outside 85%..115%.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_spend_drift:ratio{job=~"$job",pool=~"$pool",window="yesterday"}',
        legendFormat: '{{pool}}',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'percentunit',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'green', value: 0.85 },
            { color: 'red', value: 1.15 },
          ],
        },
        mappings: [],
        color: { mode: 'thresholds' },
        decimals: 1,
      },
      overrides: [],
    },
    options: {
      reduceOptions: {
        calcs: ['lastNotNull'],
        fields: '',
        values: false,
      },
      colorMode: 'background',
      graphMode: 'none',
      justifyMode: 'auto',
      textMode: 'value_and_name',
      orientation: 'auto',
    },
    id: 10,
    gridPos: { h: 4, w: 6, x: 18, y: 6 },
  },
  {
    type: 'row',
    title: 'Spend',
    id: 11,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 10 },
    panels: [],
  },
  {
    type: 'timeseries',
    title: 'Spend this period: billed vs estimated vs hybrid',
    description: "Hybrid spend = billed complete days + estimate since; billed covers complete UTC days only; estimated is the sum of every exporter's local-log estimate.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_spend_usd:hybrid{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}} spend (hybrid)',
        range: true,
        instant: false,
        editorMode: 'code',
      },
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'B',
        expr: 'claude:pool_billed_spend_usd:max{job=~"$job",pool=~"$pool",window="period"}',
        legendFormat: '{{pool}} billed',
        range: true,
        instant: false,
        editorMode: 'code',
      },
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'C',
        expr: 'claude:pool_estimated_spend_usd:sum{job=~"$job",pool=~"$pool",window="period"}',
        legendFormat: '{{pool}} estimated',
        range: true,
        instant: false,
        editorMode: 'code',
      },
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'D',
        expr: 'claude:pool_credit_usd:max{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}} credit',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'green', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'palette-classic' },
        custom: {
          drawStyle: 'line',
          lineWidth: 2,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: true,
          thresholdsStyle: { mode: 'off' },
        },
        decimals: 2,
      },
      overrides: [
        {
          matcher: { id: 'byRegexp', options: '.* credit' },
          properties: [
            {
              id: 'custom.lineStyle',
              value: {
                fill: 'dash',
                dash: [10, 10],
              },
            },
            { id: 'custom.fillOpacity', value: 0 },
          ],
        },
      ],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    id: 12,
    gridPos: { h: 9, w: 12, x: 0, y: 11 },
  },
  {
    type: 'timeseries',
    title: 'Remaining credit',
    description: 'Credit minus hybrid spend. Thresholds: the warning line (20%) and critical line (10%) are on the next panel.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_remaining_usd:hybrid{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'green', value: 0 },
          ],
        },
        mappings: [],
        color: { mode: 'palette-classic' },
        custom: {
          drawStyle: 'line',
          lineWidth: 2,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: true,
          thresholdsStyle: { mode: 'line' },
        },
        decimals: 2,
      },
      overrides: [],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    id: 13,
    gridPos: { h: 9, w: 12, x: 12, y: 11 },
  },
  {
    type: 'timeseries',
    title: 'Burn rate (USD per hour)',
    description: "Growth of the fleet's period estimate: 1h reacts fast, 6h drives the exhaustion forecast.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_burn_rate_usd_per_hour:rate1h{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}} 1h',
        range: true,
        instant: false,
        editorMode: 'code',
      },
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'B',
        expr: 'claude:pool_burn_rate_usd_per_hour:rate6h{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}} 6h',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'currencyUSD',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'green', value: null },
          ],
        },
        mappings: [],
        color: { mode: 'palette-classic' },
        custom: {
          drawStyle: 'line',
          lineWidth: 2,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: true,
          thresholdsStyle: { mode: 'off' },
        },
        decimals: 2,
      },
      overrides: [],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    id: 14,
    gridPos: { h: 8, w: 12, x: 0, y: 20 },
  },
  {
    type: 'timeseries',
    title: 'Drift: estimated / billed',
    description: 'Fleet estimate over the bill for complete days (yesterday, and the period so far). 100% means the estimates match the bill.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_spend_drift:ratio{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}} {{window}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'percentunit',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'green', value: 0.85 },
            { color: 'red', value: 1.15 },
          ],
        },
        mappings: [],
        color: { mode: 'palette-classic' },
        custom: {
          drawStyle: 'line',
          lineWidth: 2,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: true,
          thresholdsStyle: { mode: 'line+area' },
        },
        decimals: 1,
      },
      overrides: [],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    id: 15,
    gridPos: { h: 8, w: 12, x: 12, y: 20 },
  },
  {
    type: 'timeseries',
    title: 'Credit left',
    description: 'Share of the credit left over time, with the 10% and 20% alert lines.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:pool_remaining_ratio:hybrid{job=~"$job",pool=~"$pool"}',
        legendFormat: '{{pool}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'percentunit',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'red', value: null },
            { color: 'orange', value: c.creditCriticalRatio },
            { color: 'yellow', value: c.creditWarningRatio },
            { color: 'green', value: 0.4 },
          ],
        },
        mappings: [],
        color: { mode: 'palette-classic' },
        custom: {
          drawStyle: 'line',
          lineWidth: 2,
          fillOpacity: 10,
          showPoints: 'never',
          spanNulls: true,
          thresholdsStyle: { mode: 'line' },
        },
        min: 0,
      },
      overrides: [],
    },
    options: {
      legend: {
        displayMode: 'table',
        placement: 'bottom',
        calcs: ['lastNotNull'],
      },
      tooltip: { mode: 'multi', sort: 'desc' },
    },
    id: 16,
    gridPos: { h: 8, w: 12, x: 0, y: 28 },
  },
]