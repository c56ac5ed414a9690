# two-groups.sh - sourced by unit-tests.sh and e2e-tests.sh, each of which sets ALONE (paths,
# one a line) and calls run_two_groups NAME TIMEOUT FILES [tap arguments]: the FILES not in
# ALONE run two at a time, then those of ALONE one at a time, each file given TIMEOUT
# seconds. Exits with 2 if a file of ALONE does not exist, else with tap's status.

run_two_groups() {
  name=$1
  timeout=$2
  files=$3
  shift 3
  alone=$(for f in $ALONE; do echo "$f"; done)
  for f in $alone; do
    if [ ! -f "$f" ]; then
      echo "$name: $f, listed to run alone, does not exist" >&2
      exit 2
    fi
  done
  # Node's module compile cache for the test processes (not for the vrouter processes they
  # start: daemonEnv): each test file loads much of src/ as TypeScript, and the cache keeps
  # the code stripped of its types, and V8's compiled code, from one file to the next
  # (about 0.2 s a file). Entries are checked against the file's contents as they load.
  export NODE_COMPILE_CACHE="${NODE_COMPILE_CACHE:-${TMPDIR:-/tmp}/vrouter-test-compile-cache}"
  # tap's process-info hook records nothing (test/support/no-process-info.mjs).
  export NODE_OPTIONS="${NODE_OPTIONS:+$NODE_OPTIONS }--import=$(pwd)/test/support/no-process-info.mjs"
  # tap runs the files of a list in the order of their names, whatever order they are given in.
  together=$(echo "$files" | tr ' ' '\n' | grep -vxF "$alone")
  status=0
  # shellcheck disable=SC2086 # the lists are paths without spaces, one word each
  tap --disable-coverage --jobs=2 --timeout="$timeout" "$@" $together || status=$?
  # shellcheck disable=SC2086
  tap --disable-coverage --jobs=1 --timeout="$timeout" "$@" $alone || status=$?
  exit "$status"
}
