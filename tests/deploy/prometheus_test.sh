#!/usr/bin/env bash
# tests/deploy/prometheus_test.sh — deploy/prometheus passes Prometheus's own checks: the scrape config and the alert
# rules lint clean (`promtool check config`, `promtool check rules`), and every alert fires as its unit tests on
# synthetic series say (`promtool test rules`). Then, so that those tests are known to be able to fail, each alert's
# threshold is loosened in a copy and the unit tests must catch it. Registered in ctest (label "deploy").
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
dir="$repo/deploy/prometheus"
command -v promtool >/dev/null || { echo "SKIP: promtool not installed (Debian package prometheus; scripts/setup.sh)"; exit 77; }
fail() { echo "prometheus test: $*" >&2; exit 1; }

promtool check config "$dir/prometheus.yml" || fail "promtool check config failed"
promtool check rules "$dir/ernie-rules.yml" || fail "promtool check rules failed"
promtool test rules "$dir/ernie-rules.test.yml" || fail "promtool test rules failed"

# The k8s ServiceMonitor and the scrape config must scrape what the rules select.
grep -q 'job_name: ernie' "$dir/prometheus.yml" || fail "the scrape job is not named ernie, which the rules select"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# The Grafana dashboard is not tried in Grafana here, but its queries must be PromQL that Prometheus parses: each
# becomes a recording rule (with Grafana's $__rate_interval as 5m) for `promtool check rules`.
dashboard="$repo/deploy/grafana/ernie-dashboard.json"
if command -v jq >/dev/null; then
  {
    echo "groups:"
    echo "  - name: dashboard"
    echo "    rules:"
    jq -r '.panels[].targets[].expr' "$dashboard" | sed 's/\$__rate_interval/5m/g' | awk '{
      gsub(/\x27/, "\x27\x27"); printf "      - record: dashboard:query%d\n        expr: \x27%s\x27\n", NR, $0 }'
  } >"$tmp/dashboard-rules.yml"
  promtool check rules "$tmp/dashboard-rules.yml" >/dev/null || { cat "$tmp/dashboard-rules.yml" >&2; fail "a dashboard query is not valid PromQL"; }
fi
mutations=(
  's/up{job="ernie"} == 0/up{job="ernie"} == 2/'
  's/\[5m\]))) > 2$/[5m]))) > 5/'
  's/delta(ernie_num_requests_waiting{job="ernie"}\[10m\]) > 0/delta(ernie_num_requests_waiting{job="ernie"}[10m]) > 100/'
  's/ernie_kv_cache_usage_perc{job="ernie"} > 0.9/ernie_kv_cache_usage_perc{job="ernie"} > 0.99/'
  's/ernie_memory_limit_bytes{job="ernie"} > 0.9/ernie_memory_limit_bytes{job="ernie"} > 0.99/'
  's/rate(ernie_http_requests_total{job="ernie"}\[5m\])) > 0.05/rate(ernie_http_requests_total{job="ernie"}[5m])) > 0.5/'
)
for m in "${mutations[@]}"; do
  cp "$dir/ernie-rules.yml" "$dir/ernie-rules.test.yml" "$tmp/"
  sed -i "$m" "$tmp/ernie-rules.yml"
  ! cmp -s "$dir/ernie-rules.yml" "$tmp/ernie-rules.yml" || fail "mutation '$m' matched nothing in ernie-rules.yml"
  if promtool test rules "$tmp/ernie-rules.test.yml" >"$tmp/out.txt" 2>&1; then
    fail "the rule unit tests pass even with '$m'"
  fi
done
echo "prometheus test: config, rules and ${#mutations[@]} alert mutations checked"
