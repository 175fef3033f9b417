#!/bin/sh
# Akash-style pricing script for the benchmark: one process per quote, request JSON on
# stdin, price on stdout. It implements the example pricing plugin's formula with shell
# builtins only (no jq, no bc), so it is the cheapest possible process-per-quote.
json=$(cat)
field() { v=${json#*\"$1\":}; v=${v%%[,\}]*}; printf '%s' "$v"; }
gpu_count=$(field gpu_count)
duration_s=$(field duration_s)
memory_mib=$(field memory_mib)
model=$(field model)
util=${json##*\"utilisation_pct\":}; util=${util%%[,\}]*}
case "$model" in
  *H200*|*h200*) rate=3200000 ;;
  *H100*|*h100*) rate=2500000 ;;
  *A100*|*a100*) rate=1400000 ;;
  *L40S*|*l40s*) rate=900000 ;;
  *) rate=600000 ;;
esac
rate=$((rate + memory_mib / 1024 * 5000))
if [ "$util" -ge 75 ]; then rate=$((rate + rate * 20 / 100)); fi
billable=$duration_s
if [ "$billable" -lt 600 ]; then billable=600; fi
total=$((rate * gpu_count * billable))
price=$(((total + 3599) / 3600))
printf '{"price_micros":%s,"billable_s":%s,"gpu_hour_micros":%s}\n' "$price" "$billable" "$rate"
