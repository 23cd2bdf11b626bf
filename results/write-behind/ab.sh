#!/usr/bin/env bash
# A/B of two loadgen builds (embedded engine), alternated, at a fixed rate:
#   BASE_LOADGEN=... NEW_LOADGEN=... [RATE=2000000 ROUNDS=3 DUR=20 OUT=/tmp/abwb] results/write-behind/ab.sh
RATE=${RATE:-2000000}; ROUNDS=${ROUNDS:-3}; DUR=${DUR:-20}
mkdir -p "${OUT:-/tmp/abwb}"
W=$(dirname "$0")/../../scripts/versus-workloads/produce-100b-acks-all.yaml
for r in $(seq 1 $ROUNDS); do
  for arm in base new; do
    LG=${BASE_LOADGEN:?}; [[ $arm == new ]] && LG=${NEW_LOADGEN:?}
    D=${OUT:-/tmp/abwb}/data-$arm-$r; rm -rf $D
    timeout 120 $LG run -w $W --rate $RATE --duration $DUR --warmup 2 --no-calibrate --data-dir $D -o ${OUT:-/tmp/abwb}/$arm-$r.json >${OUT:-/tmp/abwb}/$arm-$r.log 2>&1
    echo "round $r $arm exit $?"
    rm -rf $D
    python3 - ${OUT:-/tmp/abwb}/$arm-$r.json $arm $r <<'PY'
import json,sys
d=json.load(open(sys.argv[1])); p=d['publish']
ms=[t for t in d['timeseries'] if t['phase']=='measure']
worst=max(t['publish_p99_us'] for t in ms)/1000
low=min(t['publish_records_per_s'] for t in ms)/1e6
lat=p.get('latency_us') or p.get('latency') or {}
print(f"round={sys.argv[3]} arm={sys.argv[2]} complete={d['complete']} target_met={d['target_met']} achieved={p.get('records_per_s',0)/1e6:.2f}M "
      f"p50={lat.get('p50',0)/1000:.2f} p99={lat.get('p99',0)/1000:.1f} p99.9={lat.get('p99_9',lat.get('p999',0))/1000:.1f} max={lat.get('max',0)/1000:.1f} ms; worst second p99 {worst:.1f} ms, slowest second {low:.2f}M")
PY
  done
done
