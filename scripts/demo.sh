#!/usr/bin/env bash
# One command, end to end, on a fresh machine with no sound card and no broker:
#   1. set up (system packages, .venv, torch, weldmon with the train and console extras),
#   2. generate a small synthetic labelled dataset (python -m training.synthetic),
#   3. train the MIL CNN on it for a minute (weldmon train) and export the deploy artifact
#      (weldmon export),
#   4. build a synthetic shift: six welds with idle gaps (scripts/make_demo_shift.py),
#   5. run the monitor over it (weldmon replay, arc-gate segmentation, the daemon's pipeline):
#      each weld's result is printed as one JSON line as soon as the weld ends; when a Mosquitto
#      broker answers on 127.0.0.1:1883, every event is published there too
#      (mosquitto_sub -t 'weldmon/#' -v to watch),
#   6. end with a table: each weld's true label beside the monitor's verdict,
#   7. and say how to open the web console on this shift (the venv has the console extra).
# DEMO_REALTIME=1 replays the shift at real-time pace (about 95 s) instead of full speed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/system-deps.sh
bash scripts/venv.sh train,console
py=.venv/bin/python
weldmon=.venv/bin/weldmon

work=".weldmon-demo"
rm -rf "$work"
mkdir -p "$work/state"

echo "== 1/4 synthetic dataset" >&2
$py -m training.synthetic "$work/data" --duration 10 --idle 1.5 --seed 0 >&2
# The generated tiny config, trained a little longer so the demo model is confident.
sed 's/^epochs: .*/epochs: 8/' "$work/data/train.tiny.yaml" > "$work/train.yaml"

echo "== 2/4 train and export" >&2
$weldmon train --config "$work/train.yaml" --run-dir "$work/run" --no-progress >&2
$weldmon export --checkpoint "$work/run/best_model.pt" \
  --output "$work/run/deploy_single_label.pt" --name "demo synthetic" --model-version 1 >&2

echo "== 3/4 synthetic shift" >&2
$py scripts/make_demo_shift.py "$work/data" "$work/shift.flac" >&2

mqtt_enabled=false
if $py -c "import socket; socket.create_connection(('127.0.0.1', 1883), timeout=1).close()" \
  2>/dev/null; then
  mqtt_enabled=true
  echo "(a broker answers on 127.0.0.1:1883: events are published under weldmon/#)" >&2
fi
cat > "$work/monitor.yaml" <<YAML
model:
  path: run/deploy_single_label.pt
segmentation:
  mode: gate
mqtt:
  enabled: $mqtt_enabled
  host: 127.0.0.1
  port: 1883
  client_id: weldmon-demo
http:
  enabled: false
state_dir: state
logging:
  level: warning
  format: console
YAML

echo "== 4/4 monitor: weldmon replay (one JSON result per weld)" >&2
realtime=()
if [ "${DEMO_REALTIME:-0}" = "1" ]; then realtime=(--realtime); fi
$weldmon replay --config "$work/monitor.yaml" "${realtime[@]}" "$work/shift.flac" \
  | tee "$work/results.jsonl"

echo "== each weld's truth beside the monitor's verdict" >&2
$py scripts/demo_table.py "$work/shift.truth.csv" "$work/results.jsonl"

cat >&2 <<TEXT

== the web console on this shift (docs/console.md)
1. start it (it listens on 127.0.0.1:8080 and follows the broker):
     $weldmon console --broker 127.0.0.1:1883 --db $work/console.sqlite3 \\
       --clips $work/clips --dataset $work/reviewed
2. in another terminal, replay the shift into it, keeping every weld's clip for review:
     $weldmon replay --config $work/monitor.yaml --publish --broker 127.0.0.1:1883 \\
       --clips $work/clips --clip-policy all $work/shift.flac
3. open http://127.0.0.1:8080/ : each weld's page plays its clip over its spectrogram, and a
   review moves the clip into $work/reviewed (the training dataset layout).
TEXT
if [ "$mqtt_enabled" != true ]; then
  echo "(no broker answered on 127.0.0.1:1883: start one first, e.g. mosquitto -p 1883)" >&2
fi
