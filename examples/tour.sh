#!/usr/bin/env bash
# The README tour as written, timed (policy ids filled in from the commands' output). From an empty folder:
#   python examples/hopper_file.py hopper-medium.hdf5 && bash examples/tour.sh
set -euo pipefail
export REPLAYBANK_ADMIN_TOKEN=change-me-0123456789
export REPLAYBANK_DATA_DIR=$PWD/.replaybank
PORT=${PORT:-8765}
export REPLAYBANK_URL=http://127.0.0.1:$PORT
start=$(date +%s)
replaybank serve --port $PORT 2> serve.log &
SERVE=$!
trap 'kill $SERVE $WORKER 2>/dev/null || true' EXIT
WORKER=
for _ in $(seq 100); do curl -sf $REPLAYBANK_URL/healthz >/dev/null && break; sleep 0.2; done
export REPLAYBANK_TOKEN=$REPLAYBANK_ADMIN_TOKEN
replaybank upload hopper hopper-medium.hdf5 --create --env-id Hopper-v5
replaybank upload hopper hopper-medium.hdf5
echo "# Hopper, generated" > hopper.md
replaybank datasets edit hopper --description-file hopper.md
replaybank versions hopper
replaybank stats hopper --version latest > /dev/null
replaybank query hopper "SELECT episode_id, sum(reward) AS ret FROM transitions GROUP BY 1 ORDER BY ret DESC LIMIT 5"
replaybank tag hopper baseline 1
replaybank pull hopper --version baseline --out hopper-v1.parquet
replaybank token create worker-1 --scope worker > worker.token
replaybank worker --token-file worker.token 2> worker.log &
WORKER=$!
t0=$(date +%s)
replaybank train hopper --algorithm iql --steps 5000 -p expectile=0.7 --watch > train.out
echo "train: $(( $(date +%s) - t0 )) s"
POLICY=$(tail -1 train.out | sed -n 's/.*policy \([^ ]*\).*/\1/p'); [ -n "$POLICY" ] || POLICY=$(grep -o "policy [a-z0-9_-]*" train.out | tail -1 | cut -d' ' -f2)
echo "policy $POLICY"
replaybank policies
replaybank download $POLICY --out policy/
replaybank evaluate --policy policy/ --env Hopper-v5 --episodes 10 > /dev/null
t0=$(date +%s)
replaybank collect hopper --policy $POLICY --episodes 10 --noise 0.1 --watch
echo "collect: $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
replaybank train hopper --algorithm iql --parent $POLICY --steps 2000 --watch
replaybank train hopper --algorithm iql --parent $POLICY --steps 2000 --online-fraction 0.5 --watch
echo "fine-tunes: $(( $(date +%s) - t0 )) s"
echo "TOUR: $(( $(date +%s) - start )) s"
