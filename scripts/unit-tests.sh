#!/bin/sh
# unit-tests.sh - the unit, hostile-input and plugin tests: the first phase of `npm test`, and
# `npm run test:unit`. Arguments go to tap (a reporter: -R tap).
#
# The phase is bound by CPU, and most of its files run two at a time. The files listed in
# ALONE run one at a time after them: they check time, rates, deaths and hand-overs, or flood
# vrouter on purpose, and another file's work (whose vrouter runs its control threads at
# nice -10) can hold a test's threads off the CPUs for hundreds of milliseconds.
set -u
cd "$(dirname "$0")/.."

ALONE="test/hostile/admin-connections.test.ts
test/hostile/closed-connections.test.ts
test/hostile/descriptor-chains.test.ts
test/hostile/floods.test.ts
test/hostile/memory-tables.test.ts
test/hostile/punt-flood.test.ts
test/hostile/socket-access.test.ts
test/hostile/uplinks.test.ts
test/hostile/vring-fds.test.ts
test/unit/pipeline.test.ts
test/unit/capture.test.ts
test/unit/upgrade.test.ts
test/unit/life-locks.test.ts
test/unit/dataplane-death.test.ts
test/unit/process-life.test.ts
test/unit/inflight-restart.test.ts
test/unit/multi-pmd.test.ts
test/unit/control-nice.test.ts
test/unit/thread-cpus.test.ts
test/unit/quarantine.test.ts
test/unit/pmd-commands.test.ts
plugins/ratelimit/policer.test.ts
plugins/routing/lpm-update.test.ts"

. scripts/two-groups.sh
run_two_groups unit-tests.sh 300 "$(ls test/unit/*.test.ts test/hostile/*.test.ts plugins/*/*.test.ts examples/plugins/*/*.test.ts)" "$@"
