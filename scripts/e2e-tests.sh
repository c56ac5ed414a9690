#!/bin/sh
# e2e-tests.sh - the end-to-end tests with real peers: the second phase of `npm test`, and
# `npm run test:e2e`. Arguments go to tap (a reporter: -R tap).
#
# A guest under TCG keeps one CPU busy while it boots and runs, and a test often waits on one
# guest while the other CPU idles: most files run two at a time. The files listed in ALONE
# run one at a time after them: they check a rate or a time (a policer's rate, a forwarding
# rate under attack, an outage or a change seen within a second, a volume of offloaded
# frames that a slower TCP sender would pack into fewer super-frames, a BGP session whose
# connect timer is a second: two at a time, it was not established within a minute once),
# or their generator takes both CPUs (testpmd, and the examples' testpmd set-up).
set -u
cd "$(dirname "$0")/.."

ALONE="test/e2e/routing-rates.test.ts
test/e2e/bgp.test.ts
test/e2e/examples.test.ts
test/e2e/dataplane-restart.test.ts
test/e2e/offloads.test.ts
test/e2e/testpmd.test.ts
test/e2e/hostile-neighbours.test.ts
test/e2e/pmd-restart.test.ts
test/e2e/admin.test.ts"

. scripts/two-groups.sh
run_two_groups e2e-tests.sh 900 "$(ls test/e2e/*.test.ts)" "$@"
