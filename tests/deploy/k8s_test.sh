#!/usr/bin/env bash
# tests/deploy/k8s_test.sh — every manifest in deploy/k8s validates against the Kubernetes API schemas, offline
# (tests/deploy/node/validate.mjs, with the kubernetes-models validators and TypeScript declarations that
# scripts/setup.sh installs with npm). Then, so the check is known to bite, copies with one wrong field name or type
# each must be refused, naming the manifest. Registered in ctest (label "deploy").
set -euo pipefail
repo="$(cd "$(dirname "$0")/../.." && pwd)"
node_dir="$repo/tests/deploy/node"
command -v node >/dev/null || { echo "SKIP: node not installed"; exit 77; }
[ -d "$node_dir/node_modules/kubernetes-models" ] || {
  echo "SKIP: npm packages missing in tests/deploy/node (scripts/setup.sh runs npm ci there)"
  exit 77
}
fail() { echo "k8s test: $*" >&2; exit 1; }

node "$node_dir/validate.mjs" "$repo/deploy/k8s" || fail "the manifests do not validate"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# file | sed expression | what the finding must mention
mutations=(
  'deployment.yaml|s/^  replicas: 2/  replica: 2/|deployment.yaml'                     # unknown field
  'deployment.yaml|s/^  replicas: 2/  replicas: "2"/|replicas must be integer'           # wrong type
  'deployment.yaml|s/containerPort: 8080/containerPort: "8080"/|deployment.yaml'        # wrong type, deep
  'deployment.yaml|s/initialDelaySeconds: 120/initialDelaySecond: 120/|initialDelaySecond' # nested unknown field
  'deployment.yaml|s/readOnly: true/readonly: true/|readonly'                           # wrong case
  'hpa.yaml|s/averageUtilization: 80/averageUtilization: "80%"/|hpa.yaml'               # wrong type
  'pdb.yaml|s/minAvailable: 1/minAvaliable: 1/|minAvaliable'                            # typo
  'servicemonitor.yaml|s/interval: 15s/intervall: 15s/|intervall'                        # CRD field typo
  'service.yaml|s/targetPort: http/targetPort: metrics/|targetPort metrics'             # dangling reference
  'hpa.yaml|s/name: ernie_num_requests_waiting/name: ernie_requests_waiting/|served by no adapter rule'
)
for m in "${mutations[@]}"; do
  IFS='|' read -r file expr expected <<<"$m"
  rm -rf "$tmp/k8s" && cp -r "$repo/deploy/k8s" "$tmp/k8s"
  sed -i "$expr" "$tmp/k8s/$file"
  ! cmp -s "$repo/deploy/k8s/$file" "$tmp/k8s/$file" || fail "mutation '$expr' matched nothing in $file"
  if node "$node_dir/validate.mjs" "$tmp/k8s" >"$tmp/out.txt" 2>&1; then
    fail "the validation accepts $file with '$expr'"
  fi
  grep -q -- "$expected" "$tmp/out.txt" || { cat "$tmp/out.txt" >&2; fail "'$expr' refused without naming '$expected'"; }
done
echo "k8s test: manifests valid, ${#mutations[@]} broken copies refused"
