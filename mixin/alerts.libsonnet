// Alerts on the fleet view (rules.libsonnet) and on the exporters' health. Written to
// deploy/prometheus/alert_rules.yml. Each alert has a static summary, a description with the
// figures, a runbook_url (a section of docs/runbook.md per alert) and a dashboard_url.
local u = import 'lib/utils.libsonnet';

{
  _files+:: {
    'alert_rules.yml': |||
      Alerts on the fleet view (recording_rules.yml) and on the exporters' health.

      Pool alerts page before the credit runs out: a warning at %(warn)s left, a
      critical at %(crit)s left (labelled breaker="open": Alertmanager forwards it to the
      exporters' breaker webhook, which stops agent pipelines from starting paid
      work), and a warning as soon as the 6h burn rate would exhaust the pool before
      its period ends. The exporters' own breaker (open_below, 5%% by default) is a
      last line behind these.

      The exporters' series are those of %(selector)s.
    ||| % {
      warn: u.percent($._config.creditWarningRatio),
      crit: u.percent($._config.creditCriticalRatio),
      selector: u.sel($._config),
    },
  },

  _comments+:: {
    ClaudeSpendDriftHigh: |||
      Complete days only (the recording rule exists once yesterday is billed);
      days billed under $%s are too small to judge.
    ||| % u.num($._config.driftMinBilledUsd),
    ClaudeWindowHeadroomLow: |||
      Pools on a subscription window (claude_pool_window_info): what Claude Code's
      statusline or the Agent SDK last said is left of a 5-hour or weekly window.
      Not summed over instances: a window belongs to one account, read by one exporter.
    |||,
    ClaudeBilledDataBehind: |||
      %sh after the end of the last complete day: yesterday is still not
      billed at noon UTC. A day later the fleet falls back to estimates only.
    ||| % u.num($._config.billedBehindHours),
  },

  prometheusAlerts+:: {
    local c = $._config,
    local p = {
      f: u.fleet(c),
      sel: u.sel(c),
      admin: u.sel(c, 'source=~"admin_api(:.+)?"'),
      logs: u.sel(c, 'source!~"admin_api(:.+)?"'),
      warn: u.num(c.creditWarningRatio),
      crit: u.num(c.creditCriticalRatio),
      low: u.num(c.driftLow),
      high: u.num(c.driftHigh),
      driftMin: u.num(c.driftMinBilledUsd),
      headroom: u.num(c.windowHeadroomRatio),
      stale: u.num(c.adminApiStaleSeconds),
      behind: u.num(c.billedBehindHours),
    },
    local money(metric, labels=['pool']) = u.queryValue(c, metric, labels, 'printf "$%.2f"'),
    local runbook(name) = c.runbookURL + '#' + std.asciiLower(name),
    local dashboard(vars) =
      c.grafanaURL + '/d/' + c.dashboardUIDs['overview.json']
      + (if vars == [] then '' else '?' + std.join('&', ['var-%s={{ $labels.%s }}' % [v, v] for v in vars])),
    // the dashboards' variables the alert's labels fill: job (a pool alert has it when the
    // fleet labels keep it), then the pool or the instance
    local poolLinks = (if std.member(c.fleetLabels, 'job') then ['job'] else []) + ['pool'],
    local instanceLinks = ['job', 'instance'],
    local annotate(name, summary, description, vars) = {
      summary: summary,
      description: std.rstripChars(description, '\n'),
      runbook_url: runbook(name),
      dashboard_url: dashboard(vars),
    },

    groups+: [
      {
        name: 'claude-budget-pools',
        rules: [
          {
            alert: 'ClaudePoolCreditLow',
            expr: 'claude:pool_remaining_ratio:hybrid < %(warn)s' % p,
            'for': c.creditWarningFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'A Claude pool has less than %s of its credit left.' % u.percent(c.creditWarningRatio),
              'Pool {{ $labels.pool }} has {{ $value | humanizePercentage }} of its credit left ('
              + money('claude:pool_remaining_usd:hybrid') + ' of ' + money('claude:pool_credit_usd:max')
              + '), under the %s warning line. At %s the breaker opens.'
                % [u.percent(c.creditWarningRatio), u.percent(c.creditCriticalRatio)],
              poolLinks,
            ),
          },
          {
            alert: 'ClaudePoolCreditCritical',
            expr: 'claude:pool_remaining_ratio:hybrid < %(crit)s' % p,
            'for': c.creditCriticalFor,
            labels: { severity: 'critical', breaker: 'open' },
            annotations: annotate(
              self.alert,
              'A Claude pool has less than %s of its credit left: its breaker is open.'
              % u.percent(c.creditCriticalRatio),
              'Pool {{ $labels.pool }} has {{ $value | humanizePercentage }} of its credit left ('
              + money('claude:pool_remaining_usd:hybrid') + ' of ' + money('claude:pool_credit_usd:max')
              + '). The circuit breaker for the pool is open: pipelines that run '
              + '`claude-budget-exporter check --pool {{ $labels.pool }}` stop starting paid work.',
              poolLinks,
            ),
          },
          {
            alert: 'ClaudePoolProjectedExhaustion',
            expr: |||
              claude:pool_exhaustion_timestamp_seconds:projected
              < on (%(f)s, pool) claude:pool_period_end_timestamp_seconds:max
            ||| % p,
            'for': c.exhaustionFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'A Claude pool runs out of credit before its period ends.',
              'At the burn rate of the last 6 hours (' + money('claude:pool_burn_rate_usd_per_hour:rate6h')
              + ' per hour) pool {{ $labels.pool }} runs out of credit at {{ $value | humanizeTimestamp }}, '
              + 'before its period ends at '
              + u.queryValue(c, 'claude:pool_period_end_timestamp_seconds:max', ['pool'], 'humanizeTimestamp') + '.',
              poolLinks,
            ),
          },
          {
            alert: 'ClaudeSpendDriftHigh',
            expr: |||
              (
                claude:pool_spend_drift:ratio{window="yesterday"} > %(high)s
                or
                claude:pool_spend_drift:ratio{window="yesterday"} < %(low)s
              )
              and on (%(f)s, pool)
              (claude:pool_billed_spend_usd:max{window="yesterday"} >= %(driftMin)s)
            ||| % p,
            'for': c.driftFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              "Yesterday's spend estimate for a Claude pool is off the bill.",
              "The fleet's estimate for pool {{ $labels.pool }} over yesterday (UTC) was "
              + '{{ $value | printf "%.2f" }} times the billed cost (allowed ' + p.low + ' to ' + p.high + '). '
              + "Until yesterday is billed, today's part of the spend comes from these estimates, so the "
              + 'remaining credit is off by about as much.',
              poolLinks,
            ),
          },
          {
            alert: 'ClaudeWindowHeadroomLow',
            expr: |||
              min by (%(f)s, pool, source, window) (
                claude_pool_remaining_ratio%(sel)s
                * on (%(f)s, instance, pool) group_left (source, window)
                claude_pool_window_info%(sel)s
              ) < %(headroom)s
            ||| % p,
            'for': c.windowHeadroomFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'A Claude subscription window is nearly used up.',
              'The {{ $labels.window }} window that {{ $labels.source }} reports has '
              + '{{ $value | humanizePercentage }} left (pool {{ $labels.pool }}); it resets at '
              + u.queryValue(c, 'claude_rate_limit_resets_timestamp_seconds', ['source', 'window'],
                             'humanizeTimestamp', 'max')
              + ". The pool's breaker opens at its own threshold (claude_breaker_threshold_ratio).",
              poolLinks,
            ),
          },
        ],
      },
      {
        name: 'claude-budget-sources',
        rules: [
          {
            alert: 'ClaudeAdminApiDown',
            expr: 'claude_source_up%(admin)s == 0' % p,
            'for': c.adminApiDownFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'An exporter cannot read the Anthropic Admin API.',
              'The exporter on {{ $labels.instance }} has failed to read the Admin API ({{ $labels.source }}) '
              + 'for ' + u.duration(c.adminApiDownFor) + '. Billed spend is frozen at its last value; the fleet spend keeps '
              + 'growing from estimates.',
              instanceLinks,
            ),
          },
          {
            alert: 'ClaudeAdminApiStale',
            expr: 'time() - claude_source_last_success_timestamp_seconds%(admin)s > %(stale)s' % p,
            'for': c.adminApiStaleFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              "An exporter's Admin API data is stale.",
              'The last successful Admin API poll on {{ $labels.instance }} ({{ $labels.source }}) was '
              + '{{ $value | humanizeDuration }} ago (polls run every few minutes).',
              instanceLinks,
            ),
          },
          {
            alert: 'ClaudeBilledDataBehind',
            expr: |||
              (
                time() - claude_billed_complete_through_timestamp_seconds%(sel)s > %(behind)s * 3600
              )
              and on (%(f)s, instance) claude_source_up%(admin)s
            ||| % p,
            'for': c.billedBehindFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'The Anthropic cost report is behind: yesterday is not billed yet.',
              'The bill read by {{ $labels.instance }} is complete only up to {{ $value | humanizeDuration }} '
              + 'ago: yesterday (UTC) is still not billed. Spend uses estimates for the missing days.',
              instanceLinks,
            ),
          },
          {
            alert: 'ClaudeLogSourceDown',
            expr: 'claude_source_up%(logs)s == 0' % p,
            'for': c.logSourceDownFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'An exporter cannot read one of its Claude log sources.',
              'The exporter on {{ $labels.instance }} cannot read log source {{ $labels.source }}. Its spend '
              + "is missing from the estimates, so today's fleet spend is too low.",
              instanceLinks,
            ),
          },
        ],
      },
      {
        name: 'claude-budget-exporter',
        rules: [
          {
            alert: 'ClaudeExporterDown',
            expr: 'up%(sel)s == 0' % p,
            'for': c.exporterDownFor,
            labels: { severity: 'warning' },
            annotations: annotate(
              self.alert,
              'Prometheus cannot scrape a claude-budget-exporter.',
              'Prometheus cannot scrape the claude-budget-exporter on {{ $labels.instance }} (job '
              + '{{ $labels.job }}). Its estimates (and, for the instance with the admin key, the bill) are '
              + 'missing from the fleet spend.',
              instanceLinks,
            ),
          },
          {
            alert: 'ClaudeExporterAbsent',
            expr: 'absent(up%(sel)s)' % p,
            'for': c.exporterAbsentFor,
            labels: { severity: 'critical' },
            annotations: annotate(
              self.alert,
              'No claude-budget-exporter is scraped.',
              'Prometheus has no target matching up%(sel)s: no pool is watched and no budget alert can fire.'
              % p,
              [],
            ),
          },
        ],
      },
    ],
  },
}
