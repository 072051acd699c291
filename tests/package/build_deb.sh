#!/usr/bin/env bash
# build_deb.sh: builds the pgmux .deb from a copy of the tree (dpkg-buildpackage -us -uc -b),
# checks its contents and metadata (dpkg-deb -c / -I), and runs lintian on it.
#
# The build runs in a scratch copy so that the developer's configured tree is not cleaned by
# dh_auto_clean.  Exit status 0 when the package builds, holds what it must and lintian reports
# no error; the last line says so.
#
# Environment:
#   DEB_OUT=DIR          copy the .deb files, the build log and lintian's report to DIR (the
#                        scratch directory is removed, unless the build itself failed)
#   DEB_BUILD_OPTIONS    passed through; default "nocheck" (the unit tests run in make check
#                        already; set it empty to run them inside the package build too)
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)

fail=0
bad() { echo "FAIL: $*"; fail=1; }

work=$(mktemp -d /tmp/pgmux-deb.XXXXXX)
keep=${DEB_OUT:-}
keep_work=   # set when the build fails: its tree and log stay for a look
trap '[ -n "$keep_work" ] || rm -rf "$work"' EXIT
src="$work/pgmux-src"
mkdir -p "$src"

# The tracked files (and untracked ones git does not ignore); without .git, what is here minus
# build products, by way of a clean copy that distclean tidies.
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
	git -C "$ROOT" ls-files -z -c -o --exclude-standard |
		(cd "$ROOT" && xargs -0 cp --parents -t "$src" 2>/dev/null)
	# ls-files lists deleted-but-tracked files too; cp skips them, which is what we want.
else
	cp -a "$ROOT/." "$src"
	(cd "$src" && { [ ! -f Makefile ] || make -s distclean >/dev/null 2>&1; })
fi

export DEB_BUILD_OPTIONS=${DEB_BUILD_OPTIONS-"nocheck parallel=$(nproc)"}
echo "build_deb: dpkg-buildpackage -us -uc -b in $src (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS)"
t0=$(date +%s)
if ! (cd "$src" && dpkg-buildpackage -us -uc -b) >"$work/build.log" 2>&1; then
	tail -40 "$work/build.log"
	echo "build_deb: FAIL (dpkg-buildpackage; log: $work/build.log)"
	keep_work=1
	exit 1
fi
echo "build_deb: built in $(( $(date +%s) - t0 ))s"
deb=$(ls "$work"/pgmux_*.deb 2>/dev/null | grep -v dbgsym | head -1)
[ -n "$deb" ] || { echo "build_deb: FAIL (no .deb produced)"; exit 1; }
echo "build_deb: $(basename "$deb")"

contents=$(dpkg-deb -c "$deb")
info=$(dpkg-deb -I "$deb")
conffiles=$(dpkg-deb -I "$deb" conffiles 2>/dev/null || true)

# What the package must hold.
for path in ./usr/bin/pgmux ./usr/share/man/man1/pgmux.1.gz ./usr/share/man/man5/pgmux.ini.5.gz \
	./usr/bin/pgmux-reshard ./usr/share/man/man1/pgmux-reshard.1.gz \
	./etc/pgmux/pgmux.ini ./etc/pgmux/userlist.txt ./lib/systemd/system/pgmux.service \
	./etc/logrotate.d/pgmux ./usr/share/doc/pgmux/examples/pgmux.ini ./usr/share/doc/pgmux/copyright; do
	grep -q " $path\$" <<<"$contents" || bad "missing $path"
done
for f in /etc/pgmux/pgmux.ini /etc/pgmux/userlist.txt /etc/logrotate.d/pgmux; do
	grep -qx "$f" <<<"$conffiles" || bad "$f is not a conffile"
done
grep -q "^ Package: pgmux$" <<<"$info" || bad "control: no Package: pgmux"
grep -q "^ Depends:.*libsystemd0" <<<"$info" || bad "control: Depends lacks libsystemd0 (built without --with-systemd?)"
grep -q "^ Depends:.*adduser" <<<"$info" || bad "control: Depends lacks adduser"
for script in postinst postrm prerm; do
	grep -q "^ *[0-9]* bytes, *[0-9]* lines *\* *$script" <<<"$info" || bad "no $script"
done

# The unit as installed: the final paths, Type=notify, the check before start and reload.
unit=$(dpkg-deb --fsys-tarfile "$deb" | tar -xO ./lib/systemd/system/pgmux.service)
grep -qx "Type=notify" <<<"$unit" || bad "unit: not Type=notify"
grep -qx "ExecStartPre=/usr/bin/pgmux --check /etc/pgmux/pgmux.ini" <<<"$unit" || bad "unit: ExecStartPre"
grep -qx "ExecReload=/usr/bin/pgmux --check /etc/pgmux/pgmux.ini" <<<"$unit" || bad "unit: ExecReload check"
grep -q "ExecStart=/usr/bin/pgmux " <<<"$unit" || bad "unit: ExecStart"
# The binary really speaks sd_notify.
dpkg-deb --fsys-tarfile "$deb" | tar -xO ./usr/bin/pgmux >"$work/pgmux.bin"
grep -q "NOTIFY_SOCKET\|sd_notify" "$work/pgmux.bin" || bad "binary: no sd_notify"

echo "--- dpkg-deb -I"; echo "$info"
echo "--- dpkg-deb -c"; echo "$contents"

if command -v lintian >/dev/null; then
	echo "--- lintian"
	changes=$(ls "$work"/pgmux_*.changes | head -1)
	lintian --info --display-info "$changes" | tee "$work/lintian.txt"
	grep -q "^E: " "$work/lintian.txt" && bad "lintian reports errors"
else
	echo "build_deb: lintian is not installed; skipped"
fi

if [ -n "$keep" ]; then
	mkdir -p "$keep" && cp "$work"/*.deb "$work/build.log" "$keep"/ &&
		{ [ ! -f "$work/lintian.txt" ] || cp "$work/lintian.txt" "$keep"/; }
fi
if [ "$fail" -ne 0 ]; then
	echo "build_deb: FAIL"
	exit 1
fi
echo "build_deb: ok"
