// Small helpers the rules, alerts and dashboards share.
{
  // "job" or "cluster, job": the fleet labels, for by () and on () clauses.
  fleet(c):: std.join(', ', c.fleetLabels),
  // the fleet labels and more: by(c, ['pool']) is "job, pool"
  by(c, extra):: std.join(', ', c.fleetLabels + extra),
  // a selector: sel(c, 'source="x"') is {job="claude-budget-exporter",source="x"}
  sel(c, extra=''):: '{' + std.join(',', [c.exporterSelector] + (if extra == '' then [] else [extra])) + '}',
  // a number as PromQL and people write it: 0.2, 36, 1.15
  num(x):: '%g' % x,
  // a Prometheus duration in words where it is one unit: '15m' is "15 minutes", '1h' "1 hour"
  duration(d)::
    local units = { s: 'second', m: 'minute', h: 'hour', d: 'day', w: 'week' };
    local n = std.substr(d, 0, std.length(d) - 1), unit = std.substr(d, std.length(d) - 1, 1);
    if std.objectHas(units, unit) && std.length(n) > 0 && std.all([std.member('0123456789', x) for x in std.stringChars(n)])
    then n + ' ' + units[unit] + (if n == '1' then '' else 's')
    else d,
  // a fraction as a whole percentage: 0.2 is "20%"
  percent(x):: '%d%%' % std.round(x * 100),

  // A Go template that queries Prometheus for one value of metric at the alert's fleet
  // labels and the given others, piped through fmt:
  //   {{ with printf "m{job='%s',pool='%s'}" $labels.job $labels.pool | query }}{{ . | first | value | fmt }}{{ end }}
  queryValue(c, metric, labels, fmt, agg='')::
    local all = c.fleetLabels + labels;
    local matchers = std.join(',', [l + "='%s'" for l in all]);
    local args = std.join(' ', ['$labels.' + l for l in all]);
    local selector = metric + '{' + matchers + '}';
    '{{ with printf "' + (if agg == '' then selector else agg + '(' + selector + ')') + '" ' + args
    + ' | query }}{{ . | first | value | ' + fmt + ' }}{{ end }}',
}
