// What an installation changes: override any field with
//   (import 'mixin.libsonnet') + { _config+:: { exporterSelector: 'job="claude"' } }
// and generate again (`make mixin` writes the shipped files from the defaults below).
{
  _config+:: {
    // The exporters' series: every rule, alert and dashboard variable selects with it.
    // A label matcher list without braces, never empty.
    exporterSelector: 'job="claude-budget-exporter"',

    // The labels a fleet is grouped by: the fleet recording rules add up every instance
    // with the same values of these (one fleet per job by default; add 'cluster' when one
    // Prometheus sees several clusters), and the pool alerts carry them.
    fleetLabels: ['job'],

    // Pool credit left (fleet view), as a fraction of the credit, and how long it must hold.
    creditWarningRatio: 0.20,
    creditWarningFor: '5m',
    creditCriticalRatio: 0.10,  // the critical alert carries breaker="open"
    creditCriticalFor: '2m',
    exhaustionFor: '30m',  // runs dry before the period ends, at the 6h burn rate

    // Yesterday's estimate against the bill: outside [low, high] on a day billed at least
    // driftMinBilledUsd.
    driftLow: 0.85,
    driftHigh: 1.15,
    driftMinBilledUsd: 1,
    driftFor: '30m',

    // A pool on a subscription window (5-hour, weekly): fraction of the window left.
    windowHeadroomRatio: 0.20,
    windowHeadroomFor: '5m',

    // Sources and the exporters themselves.
    adminApiDownFor: '15m',
    adminApiStaleSeconds: 3600,
    adminApiStaleFor: '5m',
    billedBehindHours: 36,  // yesterday still not billed at noon UTC
    billedBehindFor: '15m',
    logSourceDownFor: '15m',
    exporterDownFor: '5m',
    exporterAbsentFor: '10m',

    // Links in the alerts' annotations: runbook_url is runbookURL#<alertname, lower case>,
    // dashboard_url the overview dashboard on grafanaURL with the alert's job, instance or pool.
    runbookURL: 'https://github.com/claude-budget-exporter/claude-budget-exporter/blob/main/docs/runbook.md',
    grafanaURL: 'http://localhost:3000',

    // Dashboards.
    dashboardUIDs: {
      'overview.json': 'claude-budget-overview',
      'team.json': 'claude-budget-team',
    },
    dashboardTags: ['claude-budget'],
    dashboardTimezone: 'utc',
    dashboardRefresh: '1m',
    dashboardPeriod: 'now-7d',
    grafanaVersion: '10.0.0',  // the oldest Grafana the dashboards are written for (__requires)
  },
}
