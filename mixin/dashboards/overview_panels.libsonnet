// The overview's panels after the pool panels: spend by model and workspace, data freshness
// and exporter health, subscription windows and 5-hour blocks.
[
  {
    type: 'timeseries',
    title: 'Estimated spend rate by model (USD per hour)',
    description: 'Local-log estimates by model, all instances.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: '3600 * sum by (model) (rate(claude_estimated_cost_usd_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))',
        legendFormat: '{{model}}',
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
    id: 17,
    gridPos: { h: 8, w: 12, x: 12, y: 28 },
  },
  {
    type: 'row',
    title: 'Spend by model and workspace (Admin API)',
    id: 18,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 36 },
    panels: [],
  },
  {
    type: 'bargauge',
    title: 'Billed this month by model',
    description: 'Cost-report USD for the current UTC calendar month so far (today partial), all workspaces.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (model) (claude_billed_cost_usd{job=~"$job",instance=~"$instance",window="period"})',
        legendFormat: '{{model}}',
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
      displayMode: 'gradient',
      orientation: 'horizontal',
      showUnfilled: true,
    },
    id: 19,
    gridPos: { h: 8, w: 8, x: 0, y: 37 },
  },
  {
    type: 'bargauge',
    title: 'Billed this month by workspace',
    description: 'Cost-report USD for the current UTC calendar month by workspace ("default" is the default workspace).',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (workspace_id) (claude_billed_cost_usd{job=~"$job",instance=~"$instance",window="period"})',
        legendFormat: '{{workspace_id}}',
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
      displayMode: 'gradient',
      orientation: 'horizontal',
      showUnfilled: true,
    },
    id: 20,
    gridPos: { h: 8, w: 8, x: 8, y: 37 },
  },
  {
    type: 'bargauge',
    title: 'Estimated in the selected range by model',
    description: "Local-log estimate by model over the dashboard's time range, all instances.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (model) (increase(claude_estimated_cost_usd_total{job=~"$job",instance=~"$instance"}[$__range]))',
        legendFormat: '{{model}}',
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
      displayMode: 'gradient',
      orientation: 'horizontal',
      showUnfilled: true,
    },
    id: 21,
    gridPos: { h: 8, w: 8, x: 16, y: 37 },
  },
  {
    type: 'timeseries',
    title: 'Estimated tokens by type (per second)',
    description: 'Token throughput from the local logs, by token type.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (token_type) (rate(claude_estimated_tokens_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))',
        legendFormat: '{{token_type}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'short',
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
    id: 22,
    gridPos: { h: 8, w: 12, x: 0, y: 45 },
  },
  {
    type: 'timeseries',
    title: 'Billed by token type today',
    description: 'Cost-report USD for today (partial) by token type.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (token_type) (claude_billed_cost_usd{job=~"$job",instance=~"$instance",window="today"})',
        legendFormat: '{{token_type}}',
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
    id: 23,
    gridPos: { h: 8, w: 12, x: 12, y: 45 },
  },
  {
    type: 'row',
    title: 'Data freshness and exporter health',
    id: 24,
    collapsed: false,
    gridPos: { h: 1, w: 24, x: 0, y: 53 },
    panels: [],
  },
  {
    type: 'stat',
    title: 'Exporters',
    description: 'Prometheus scrape status of every exporter instance (job claude-budget-exporter).',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'up{job=~"$job",instance=~"$instance"}',
        legendFormat: '{{instance}}',
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
            { color: 'red', value: null },
            { color: 'green', value: 1 },
          ],
        },
        mappings: [
          {
            type: 'value',
            options: {
              '0': { text: 'down', color: 'red', index: 0 },
              '1': { text: 'up', color: 'green', index: 1 },
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
    id: 25,
    gridPos: { h: 5, w: 6, x: 0, y: 54 },
  },
  {
    type: 'stat',
    title: 'Sources',
    description: "Whether each instance's last read of each source (Admin API, log sources) succeeded.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude_source_up{job=~"$job",instance=~"$instance"}',
        legendFormat: '{{instance}} {{source}}',
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
            { color: 'red', value: null },
            { color: 'green', value: 1 },
          ],
        },
        mappings: [
          {
            type: 'value',
            options: {
              '0': { text: 'down', color: 'red', index: 0 },
              '1': { text: 'up', color: 'green', index: 1 },
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
    id: 26,
    gridPos: { h: 5, w: 6, x: 6, y: 54 },
  },
  {
    type: 'stat',
    title: 'Data age',
    description: 'Time since each source was last read successfully. Admin API data older than 1h alerts.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'time() - claude_source_last_success_timestamp_seconds{job=~"$job",instance=~"$instance"}',
        legendFormat: '{{instance}} {{source}}',
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
            { color: 'green', value: null },
            { color: 'orange', value: 900 },
            { color: 'red', value: 3600 },
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
    id: 27,
    gridPos: { h: 5, w: 6, x: 12, y: 54 },
  },
  {
    type: 'stat',
    title: 'Bill complete through',
    description: 'End of the last complete UTC day in the cost report; spend after it is estimated.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'claude:billed_complete_through_timestamp_seconds:max{job=~"$job"} * 1000',
        legendFormat: 'complete through',
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
    id: 28,
    gridPos: { h: 5, w: 6, x: 18, y: 54 },
  },
  {
    type: 'timeseries',
    title: 'Admin API requests',
    description: 'Admin API requests by endpoint and HTTP status (429: rate limited, 5xx/529: retried).',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (endpoint, code) (rate(claude_admin_api_requests_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))',
        legendFormat: '{{endpoint}} {{code}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'reqps',
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
    id: 29,
    gridPos: { h: 8, w: 8, x: 0, y: 59 },
  },
  {
    type: 'timeseries',
    title: 'Log lines by result',
    description: 'Lines read from the local logs: counted, duplicate, skipped, malformed...',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (source, result) (rate(claude_log_lines_total{job=~"$job",instance=~"$instance"}[$__rate_interval]))',
        legendFormat: '{{source}} {{result}}',
        range: true,
        instant: false,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'cps',
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
    id: 30,
    gridPos: { h: 8, w: 8, x: 8, y: 59 },
  },
  {
    type: 'stat',
    title: 'Unpriced tokens',
    description: 'Tokens of models without a price: their spend is missing from the estimates. Should be 0.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum(claude_unpriced_tokens_total{job=~"$job",instance=~"$instance"}) or vector(0)',
        legendFormat: 'unpriced',
        range: false,
        instant: true,
        editorMode: 'code',
      },
    ],
    fieldConfig: {
      defaults: {
        unit: 'short',
        thresholds: {
          mode: 'absolute',
          steps: [
            { color: 'green', value: null },
            { color: 'orange', value: 1 },
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
    id: 31,
    gridPos: { h: 4, w: 4, x: 16, y: 59 },
  },
  {
    type: 'stat',
    title: 'Exporter versions',
    description: 'Number of instances per exporter version and source revision.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'count by (version, revision) (claude_exporter_build_info{job=~"$job",instance=~"$instance"})',
        legendFormat: '{{version}} {{revision}}',
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
    id: 32,
    gridPos: { h: 4, w: 4, x: 20, y: 59 },
  },
  {
    type: 'row',
    title: 'Subscription windows and 5-hour blocks',
    collapsed: false,
    panels: [],
    id: 33,
    gridPos: { h: 1, w: 24, x: 0, y: 67 },
  },
  {
    type: 'bargauge',
    title: 'Window used',
    description: "How much of each subscription window (5-hour, weekly, weekly Opus or Sonnet) the account has used, as Claude Code's statusline or the Agent SDK last reported it; 0 once the window has reset.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (source, window) (claude_rate_limit_used_ratio{job=~"$job",instance=~"$instance"})',
        legendFormat: '{{source}} {{window}}',
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
            { color: 'green', value: null },
            { color: 'yellow', value: 0.8 },
            { color: 'red', value: 0.95 },
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
    id: 34,
    gridPos: { h: 6, w: 8, x: 0, y: 68 },
  },
  {
    type: 'bargauge',
    title: 'Window pools left',
    description: "What is left of the window each window pool reads (1 - used), whatever pools are selected above. ClaudeWindowHeadroomLow fires under 20%; the pool's breaker opens at its own threshold.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'min by (pool) (claude_pool_remaining_ratio{job=~"$job",instance=~"$instance"} * on (job, instance, pool) group_left () claude_pool_window_info{job=~"$job",instance=~"$instance"})',
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
            { color: 'orange', value: 0.05 },
            { color: 'yellow', value: 0.2 },
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
    id: 35,
    gridPos: { h: 6, w: 8, x: 8, y: 68 },
  },
  {
    type: 'stat',
    title: 'Windows reset',
    description: 'When each window resets, as last reported.',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (source, window) (claude_rate_limit_resets_timestamp_seconds{job=~"$job",instance=~"$instance"}) * 1000',
        legendFormat: '{{source}} {{window}}',
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
    id: 36,
    gridPos: { h: 6, w: 8, x: 16, y: 68 },
  },
  {
    type: 'stat',
    title: 'Window reports',
    description: 'Whether each window has been reported on within its length (a stale one has reset since).',
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (source, window) (claude_rate_limit_stale{job=~"$job",instance=~"$instance"})',
        legendFormat: '{{source}} {{window}}',
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
            { color: 'orange', value: 1 },
          ],
        },
        mappings: [
          {
            type: 'value',
            options: {
              '0': { text: 'fresh', color: 'green', index: 0 },
              '1': { text: 'stale', color: 'orange', index: 1 },
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
    id: 37,
    gridPos: { h: 4, w: 6, x: 0, y: 74 },
  },
  {
    type: 'stat',
    title: 'Current 5-hour block',
    description: "Estimated spend of each log source's current 5-hour block (as ccusage counts blocks), at list price.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (source) (claude_block_cost_usd{job=~"$job",instance=~"$instance"})',
        legendFormat: '{{source}}',
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
    id: 38,
    gridPos: { h: 4, w: 6, x: 6, y: 74 },
  },
  {
    type: 'stat',
    title: 'Block projected',
    description: "The current block's spend at its end, at its burn rate so far.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'sum by (source) (claude_block_projected_cost_usd{job=~"$job",instance=~"$instance"})',
        legendFormat: '{{source}}',
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
    id: 39,
    gridPos: { h: 4, w: 6, x: 12, y: 74 },
  },
  {
    type: 'stat',
    title: 'Block ends',
    description: "When each source's current 5-hour block ends.",
    datasource: { type: 'prometheus', uid: '${datasource}' },
    targets: [
      {
        datasource: { type: 'prometheus', uid: '${datasource}' },
        refId: 'A',
        expr: 'max by (source) (claude_block_end_timestamp_seconds{job=~"$job",instance=~"$instance"}) * 1000',
        legendFormat: '{{source}}',
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
    id: 40,
    gridPos: { h: 4, w: 6, x: 18, y: 74 },
  },
]