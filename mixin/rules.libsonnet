// The fleet recording rules: every exporter instance's estimates added up per pool, the bill
// taken from the instances with the admin key, and the hybrid spend, remaining credit, drift,
// burn rate and forecast computed from them. Written to deploy/prometheus/recording_rules.yml.
local u = import 'lib/utils.libsonnet';

{
  _files+:: {
    'recording_rules.yml': |||
      Fleet view of every Claude credit pool, computed from all exporter instances.

      One exporter runs per machine for that machine's logs, and one (or more) runs
      with the Admin API key. Day windows are UTC on every instance, so the
      per-instance estimates add up. Billed USD comes only from instances that poll
      the Admin API (they expose claude_source_up{source="admin_api"}); other
      instances may expose claude_billed_spend_usd as 0 or not at all, so billed is
      the max over the instances with the key, never a sum.

      Every series here keeps the fleet labels (%(fleet)s): each distinct value is
      its own fleet, added up apart.

      Windows are UTC days as the exporters expose them: "today" and "yesterday",
      and "period" = every day of the pool's current period so far. A billed window
      holds whatever the cost report says, so today (and yesterday, until the bill
      closes it) are partial there.

      claude_billed_complete_through_timestamp_seconds is the exclusive end of the
      last complete billed UTC day (a midnight).

      Spend (the hybrid), per pool:
        settled billed USD: the period's complete billed days
        + the fleet's estimate for the rest: today, and yesterday too while the
          bill has not closed yesterday (never reaching back before the period).
      When there is no usable bill for a pool (no instance with the key, a pool
      that matches no workspace or API key, or a bill more than a day behind),
      spend is the fleet's estimate for the whole period.
      Estimates are not calibrated by the drift here: the drift is its own series.
    ||| % { fleet: u.fleet($._config) },
  },

  _comments+:: {
    'claude:pool_estimated_spend_usd:sum': "Per pool and window: the sum of every instance's estimate.",
    'claude:pool_billed_spend_usd:max': 'Per pool and window: billed USD from the instances that hold the admin key.',
    'claude:billed_complete_through_timestamp_seconds:max':
      'How far the bill reaches (exclusive end of the last complete UTC day).',
    'claude:pool_credit_usd:max': 'Every instance exposes the same credit and period end; max ignores a stale one.',
    'claude:billed_yesterday_open:bool':
      "1 while the bill has not closed yesterday (complete_through before today's midnight).",
    'claude:pool_unbilled_estimated_spend_usd:sum': |||
      The estimate for what the bill has not settled: today, plus yesterday
      while the bill is open on it, both only as far as they lie in the
      current period. Today in the period is min(today, period): a period that
      began during today (a reset at a local midnight east or west of UTC)
      holds less than the whole UTC day. Yesterday in the period is
      min(yesterday, max(period - today, 0)).
    |||,
    'claude:pool_billed_settled_spend_usd:max': |||
      The period's complete billed days: billed period minus today's partial
      bill, and minus yesterday's while the bill is open on it, each only as far
      as it lies in the period, as above (a billed day belongs to the period
      holding its noon, so today may not be in it yet).
    |||,
    'claude:pool_spend_usd:hybrid': |||
      Spend: settled bill + unbilled estimate, or the period estimate when
      there is no usable bill (see the header).
    |||,
    'claude:pool_spend_drift:ratio{window="yesterday"}': |||
      Drift = fleet estimate / bill over complete days where both exist.
      Yesterday: only once the bill is complete through yesterday.
    |||,
    'claude:pool_spend_drift:ratio{window="period"}':
      'Period: the estimate for the settled days (period minus unbilled) / settled bill.',
    'claude:pool_burn_rate_usd_per_hour:rate1h': |||
      Fleet burn rate in USD per hour, from the growth of every instance's
      period estimate (rate() treats the drop at a period reset as a restart
      from zero, which is what it is). 1h reacts, 6h is what forecasts use.
    |||,
    'claude:pool_exhaustion_timestamp_seconds:projected': |||
      When the remaining credit runs out at the 6h burn rate (now if already
      spent; no series while nothing is being spent).
    |||,
  },

  prometheusRules+:: {
    local c = $._config,
    local p = {
      f: u.fleet(c),
      sel: u.sel(c),
      period: u.sel(c, 'window="period"'),
      admin: u.sel(c, 'source=~"admin_api(:.+)?"'),
    },
    // the same clipped window sums the unbilled estimate and the settled bill use:
    // min(today, period) and min(yesterday, max(period - today, 0)) of one recorded series
    local clipped(series) = {
      today: |||
        (
          sum by (%(f)s, pool) (%(s)s{window="today"})
          <= on (%(f)s, pool)
          sum by (%(f)s, pool) (%(s)s{window="period"})
          or on (%(f)s, pool)
          sum by (%(f)s, pool) (%(s)s{window="period"})
        )
      ||| % (p { s: series }),
      yesterday_if_open: |||
        (
          (
            (
              sum by (%(f)s, pool) (%(s)s{window="yesterday"})
              <= on (%(f)s, pool)
              clamp_min(
                sum by (%(f)s, pool) (%(s)s{window="period"})
                - on (%(f)s, pool)
                sum by (%(f)s, pool) (%(s)s{window="today"}),
                0
              )
            )
            or on (%(f)s, pool)
            clamp_min(
              sum by (%(f)s, pool) (%(s)s{window="period"})
              - on (%(f)s, pool)
              sum by (%(f)s, pool) (%(s)s{window="today"}),
              0
            )
          )
          * on (%(f)s) group_left ()
          claude:billed_yesterday_open:bool
        )
      ||| % (p { s: series }),
    },
    local est = clipped('claude:pool_estimated_spend_usd:sum'),
    local billed = clipped('claude:pool_billed_spend_usd:max'),

    groups+: [
      {
        name: 'claude-budget-fleet',
        rules: [
          {
            record: 'claude:pool_estimated_spend_usd:sum',
            expr: 'sum by (%(f)s, pool, window) (claude_estimated_spend_usd%(sel)s)' % p,
          },
          {
            record: 'claude:pool_billed_spend_usd:max',
            expr: |||
              max by (%(f)s, pool, window) (
                claude_billed_spend_usd%(sel)s
                and on (%(f)s, instance) claude_source_up%(admin)s
              )
            ||| % p,
          },
          {
            record: 'claude:billed_complete_through_timestamp_seconds:max',
            expr: |||
              max by (%(f)s) (
                claude_billed_complete_through_timestamp_seconds%(sel)s
                and on (%(f)s, instance) claude_source_up%(admin)s
              )
            ||| % p,
          },
          {
            record: 'claude:pool_credit_usd:max',
            expr: 'max by (%(f)s, pool) (claude_pool_credit_usd%(sel)s)' % p,
          },
          {
            record: 'claude:pool_period_end_timestamp_seconds:max',
            expr: 'max by (%(f)s, pool) (claude_pool_period_end_timestamp_seconds%(sel)s)' % p,
          },
          {
            record: 'claude:billed_yesterday_open:bool',
            expr: 'claude:billed_complete_through_timestamp_seconds:max < bool (time() - time() % 86400)\n',
          },
          {
            record: 'claude:pool_unbilled_estimated_spend_usd:sum',
            expr: est.today + '+ on (%(f)s, pool)\n' % p + est.yesterday_if_open,
          },
          {
            record: 'claude:pool_billed_settled_spend_usd:max',
            expr: 'sum by (%(f)s, pool) (claude:pool_billed_spend_usd:max{window="period"})\n- on (%(f)s, pool)\n' % p
                  + billed.today + '- on (%(f)s, pool)\n' % p + billed.yesterday_if_open,
          },
          {
            record: 'claude:pool_spend_usd:hybrid',
            expr: |||
              (
                claude:pool_billed_settled_spend_usd:max
                + on (%(f)s, pool)
                claude:pool_unbilled_estimated_spend_usd:sum
                and on (%(f)s)
                (claude:billed_complete_through_timestamp_seconds:max >= time() - time() %% 86400 - 86400)
              )
              or on (%(f)s, pool)
              sum by (%(f)s, pool) (claude:pool_estimated_spend_usd:sum{window="period"})
            ||| % p,
          },
          {
            record: 'claude:pool_remaining_usd:hybrid',
            expr: 'claude:pool_credit_usd:max - on (%(f)s, pool) claude:pool_spend_usd:hybrid' % p,
          },
          {
            record: 'claude:pool_remaining_ratio:hybrid',
            expr: 'claude:pool_remaining_usd:hybrid / on (%(f)s, pool) (claude:pool_credit_usd:max > 0)' % p,
          },
          {
            record: 'claude:pool_spend_drift:ratio',
            labels: { window: 'yesterday' },
            expr: |||
              sum by (%(f)s, pool) (claude:pool_estimated_spend_usd:sum{window="yesterday"})
              / on (%(f)s, pool)
              sum by (%(f)s, pool) (claude:pool_billed_spend_usd:max{window="yesterday"} > 0)
              and on (%(f)s)
              (claude:billed_complete_through_timestamp_seconds:max >= time() - time() %% 86400)
            ||| % p,
          },
          {
            record: 'claude:pool_spend_drift:ratio',
            labels: { window: 'period' },
            expr: |||
              (
                sum by (%(f)s, pool) (claude:pool_estimated_spend_usd:sum{window="period"})
                - on (%(f)s, pool)
                claude:pool_unbilled_estimated_spend_usd:sum
              )
              / on (%(f)s, pool)
              (claude:pool_billed_settled_spend_usd:max > 0)
              and on (%(f)s)
              (claude:billed_complete_through_timestamp_seconds:max >= time() - time() %% 86400 - 86400)
            ||| % p,
          },
          {
            record: 'claude:pool_burn_rate_usd_per_hour:rate1h',
            expr: '3600 * sum by (%(f)s, pool) (rate(claude_estimated_spend_usd%(period)s[1h]))' % p,
          },
          {
            record: 'claude:pool_burn_rate_usd_per_hour:rate6h',
            expr: '3600 * sum by (%(f)s, pool) (rate(claude_estimated_spend_usd%(period)s[6h]))' % p,
          },
          {
            record: 'claude:pool_exhaustion_timestamp_seconds:projected',
            expr: |||
              time()
              + 3600 * clamp_min(claude:pool_remaining_usd:hybrid, 0)
              / on (%(f)s, pool) (claude:pool_burn_rate_usd_per_hour:rate6h > 0)
            ||| % p,
          },
        ],
      },
    ],
  },
}
