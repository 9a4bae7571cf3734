"""Parses a Prometheus text exposition from stdin with prometheus_client's parser (the
reference Python implementation) and prints every sample as one JSON list:
[{"family", "type", "name", "labels", "value"}, ...]. Also checks what the parser leaves
to the producer: each histogram's buckets are cumulative (never decreasing) and its +Inf
bucket equals its _count. Exit status 1 with the reason on stderr when the text is bad."""

import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
out = []
try:
    families = list(text_string_to_metric_families(text))
except Exception as e:  # the parser raises ValueError and friends on bad input
    print(f"parse error: {e}", file=sys.stderr)
    sys.exit(1)
for fam in families:
    series = {}
    for s in fam.samples:
        out.append({"family": fam.name, "type": fam.type, "name": s.name,
                    "labels": s.labels, "value": s.value})
        if fam.type == "histogram":
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            series.setdefault(key, {"buckets": [], "count": None})
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
    for key, h in series.items():
        b = sorted(h["buckets"])
        if not b or not math.isinf(b[-1][0]):
            print(f"{fam.name}{key}: no +Inf bucket", file=sys.stderr)
            sys.exit(1)
        if any(b[i][1] > b[i + 1][1] for i in range(len(b) - 1)):
            print(f"{fam.name}{key}: buckets not cumulative: {b}", file=sys.stderr)
            sys.exit(1)
        if b[-1][1] != h["count"]:
            print(f"{fam.name}{key}: +Inf {b[-1][1]} != count {h['count']}", file=sys.stderr)
            sys.exit(1)
json.dump(out, sys.stdout)
