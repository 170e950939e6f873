#!/usr/bin/env bash
# The main job behind `make run`.  Runs every stage that this build has, on the
# built-in corpus (the King James Bible from Debian's bible-kjv) or DATA=path.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/main}
mkdir -p "$RUN"
corpus="$RUN/corpus.txt"
if [ -n "${DATA:-}" ]; then
  cp "$DATA" "$corpus"
elif [ ! -s "$corpus" ]; then
  echo "== corpus: King James Bible (bible-kjv)"
  # one verse a line; drop the "Ge1:1 " references
  bible -f gen1:1-rev22:21 | sed -E "s/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //" > "$corpus"
fi
echo "== corpus: $(wc -c < "$corpus") bytes in $corpus"
./dsv3 --version
echo "== stages after this one arrive as their issues land (see README status)"
