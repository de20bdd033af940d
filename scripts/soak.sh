#!/usr/bin/env bash
# The long forms of the crash, damage and model tests. CI runs each in a short form (the
# defaults of `cargo test`); this runs them at length:
#
#   scripts/soak.sh                 # 200 kill -9 cycles, 2000 cases per model, 30 concurrent rounds
#   SOAK_CYCLES=500 PROPTEST_CASES=10000 scripts/soak.sh
#
# - syncbrok/tests/kill9_soak.rs: the real binary killed with SIGKILL under parented publishing
#   with reclaiming on; every acknowledged message delivered to both subscribers, no child
#   before its parent, no dead letter.
# - space/tests/space_model.rs: live state = replay = snapshot restore + replay; nothing
#   acknowledged lost in a power loss; parent order; and the concurrent variant.
# - storage/tests/crash_model.rs, damage_model.rs: the log crashed at random on the simulated
#   disk; a bit flipped anywhere reported or harmless.
# - space/tests/scheduler_model.rs: the scheduler against its rules on random DAGs.
set -euo pipefail
cd "$(dirname "$0")/.."
export SOAK_CYCLES="${SOAK_CYCLES:-200}"
export PROPTEST_CASES="${PROPTEST_CASES:-2000}"
export SPACE_MODEL_ROUNDS="${SPACE_MODEL_ROUNDS:-30}"
echo "== kill -9 soak: $SOAK_CYCLES cycles"
cargo test --release -p syncbrok --test kill9_soak -- --nocapture
echo "== model tests: $PROPTEST_CASES cases, $SPACE_MODEL_ROUNDS concurrent rounds"
cargo test --release -p syncbrok-space --test space_model --test scheduler_model
cargo test --release -p syncbrok-storage --test crash_model --test damage_model
