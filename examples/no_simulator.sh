#!/usr/bin/env bash
# The README's "no simulator" walk-through as written, timed: logged data with no env_id, a sweep of
# IQL and AWAC settings estimated by FQE on held-out episodes, the leaderboard, the winner downloaded.
# From an empty folder, after `make install` and `source .venv/bin/activate`:
#   python examples/hopper_file.py robot-log.hdf5 && bash examples/no_simulator.sh
set -euo pipefail
export REPLAYBANK_ADMIN_TOKEN=change-me-0123456789
export REPLAYBANK_DATA_DIR=$PWD/.replaybank
PORT=${PORT:-8766}
export REPLAYBANK_URL=http://127.0.0.1:$PORT
STEPS=${STEPS:-2000}
start=$(date +%s)
replaybank serve --port $PORT 2> serve.log &
SERVE=$!
WORKER=
trap 'kill $SERVE $WORKER 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf $REPLAYBANK_URL/healthz >/dev/null && break; sleep 0.2; done
export REPLAYBANK_TOKEN=$REPLAYBANK_ADMIN_TOKEN
replaybank upload robot robot-log.hdf5 --create          # no --env-id: nothing to evaluate in
replaybank token create worker-1 --scope worker > worker.token
replaybank worker --token-file worker.token 2> worker.log &
WORKER=$!
replaybank sweep robot -a iql -a awac -p expectile=0.7,0.9 --seeds 0 --steps "$STEPS" \
    --validation-fraction 0.2 --ope-steps "$STEPS" --watch | tee sweep.out
sweep_id=$(head -1 sweep.out)                             # the sweep id comes first, then the leaderboard
replaybank leaderboard "$sweep_id" --json > leaderboard.json
winner=$(python -c "import json; print(json.load(open('leaderboard.json'))['leaderboard']['entries'][0]['policy_id'])")
replaybank download "$winner" --out chosen-policy/
ls chosen-policy/
echo "walk-through: $(( $(date +%s) - start )) s"
