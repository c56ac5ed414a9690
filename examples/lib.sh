# What the examples' run.sh scripts share, sourced from the project's root with WORK set.

# start_vrouter CONFIG: the built daemon (built first if dist/ is older than the sources: a
# pull may have changed them) on CONFIG, its log in $WORK/vrouter.log, its pid in VROUTER;
# returns once it is ready, or stops the script with its log if it is gone before (a config
# it refuses, a socket in use).
start_vrouter() {
  if [ ! -f dist/bin/vrouter.js ] || [ -n "$(find src bin plugins -name '*.ts' -newer dist/bin/vrouter.js -print -quit)" ]; then
    npm run build > /dev/null
  fi
  node_modules/.bin/node dist/bin/vrouter.js --config "$1" --log-format text 2> "$WORK/vrouter.log" &
  VROUTER=$!
  until grep -q 'supervisor: ready' "$WORK/vrouter.log"; do
    kill -0 $VROUTER 2> /dev/null || { cat "$WORK/vrouter.log" >&2; exit 1; }
    sleep 0.1
  done
}
