#!/usr/bin/env bash
# build.sh: installs dependencies, configures (once per set of arguments) and builds pgmux in the
# source tree.  Extra configure arguments come from $CONFIGURE_ARGS (e.g. "--enable-asan").
# Usage: [CONFIGURE_ARGS=...] [SKIP_DEPS=1] scripts/build.sh [make targets...]
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${SKIP_DEPS:-0}" = 1 ] || bash scripts/deps.sh

targets=("$@")
read -r -a args <<<"${CONFIGURE_ARGS:-}"
want="${args[*]+"${args[*]}"}"

# What the tree is configured with now: config.status --config prints configure's arguments in
# shell quoting; eval turns them back into words.
configured=0
have=""
if [ -x configure ] && [ -x config.status ] && [ -f Makefile ]; then
	configured=1
	eval "set -- $(./config.status --config 2>/dev/null)"
	have="$*"
fi

if [ "$configured" = 0 ] || [ "$have" != "$want" ]; then
	if [ "$configured" = 1 ]; then
		# different flags (say, ASan on or off): the old objects must not be reused
		echo "build: configure arguments changed ('$have' -> '$want'); cleaning"
		make -s clean >/dev/null 2>&1 || true
	fi
	echo "build: autoreconf -fi"
	autoreconf -fi
	echo "build: ./configure $want"
	./configure ${args[@]+"${args[@]}"}
fi

# make re-runs automake/autoconf by itself when configure.ac or Makefile.am change.
make -j"${MAKE_JOBS:-2}" ${targets[@]+"${targets[@]}"}
