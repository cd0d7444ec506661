#!/usr/bin/env bash
# Run the deploy/ checks by hand (the tests in tests/deploy do the same and more).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for target in base overlays/H1 overlays/L1; do
  out="$tmp/$(echo "$target" | tr / _).yaml"
  "$BIN/kubectl" kustomize "deploy/k8s/$target" > "$out"
  "$BIN/kubernetes-validate" --strict --quiet "$out"
  echo "k8s $target: ok"
done
promtool check rules deploy/prometheus/rules/idq.rules.yml
promtool test rules deploy/prometheus/tests/idq.rules.test.yml
IDQ_KAFKA__SASL_USERNAME=check IDQ_KAFKA__SASL_PASSWORD=check "$BIN/idq" config check deploy/k8s/base/idq.toml
