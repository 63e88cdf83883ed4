#!/bin/sh
# check-layers.sh SRCDIR FILE... - the engine library stays below the daemon.
#
# FILE... are the sources of libtollgate (engine_sources in engine/meson.build).
# None of them may include, directly or through another header of the tree,
# a header of libtollgated (the server, the network, RESP, credentials,
# settings, the refill publisher, durability) or a socket or Redis header:
# the engine reaches the layer above only through a hook it was given
# (struct tg_refill_hook, struct tg_net_handler).  A file that breaks the
# rule is printed with the chain of includes that leads to the header.
set -eu
src=${1:?usage: check-layers.sh SRCDIR FILE...}
shift
# The daemon's headers, as include/ spells them: the settings' tables, and
# include/tg_X.h of every engine/X.c that is not an engine source (the
# daemon's, so a header added with a daemon file is covered without a word
# here); and system headers the engine must not need.
daemon='tbl/tg_config.h tbl/tg_config_limits.h'
mine=
for f in "$@"; do mine="$mine $(basename "$f")"; done
for c in "$src"/engine/*.c; do
	case " $mine " in *" $(basename "$c") "*) continue ;; esac
	h=tg_$(basename "$c" .c).h
	[ ! -f "$src/include/$h" ] || daemon="$daemon $h"
done
system='hiredis/ sys/socket.h netinet/ arpa/inet.h'

fail=0
# walk FILE CHAIN: every header FILE reaches, each checked once per source.
walk() {
	case " $seen " in *" $1 "*) return 0 ;; esac
	seen="$seen $1"
	for h in $(sed -n 's/^#[ \t]*include[ \t]*"\([^"]*\)".*/\1/p' "$1"); do
		for bad in $daemon; do
			if [ "$h" = "$bad" ]; then
				echo "$top: includes $h ($2 -> $h): the engine library may not"
				fail=1
			fi
		done
		next=
		if [ -f "$src/include/$h" ]; then
			next=$src/include/$h
		elif [ -f "$(dirname "$1")/$h" ]; then
			next=$(dirname "$1")/$h
		fi
		[ -n "$next" ] && walk "$next" "$2 -> $h"
	done
	for h in $(sed -n 's/^#[ \t]*include[ \t]*<\([^>]*\)>.*/\1/p' "$1"); do
		for bad in $system; do
			case "$h" in "$bad"*)
				echo "$top: includes <$h> ($2 -> <$h>): the engine library may not"
				fail=1
				;;
			esac
		done
	done
	return 0
}

n=0
for f in "$@"; do
	top=${f#"$src"/}
	seen=
	walk "$f" "$top"
	n=$((n + 1))
done
[ "$n" -gt 0 ] || { echo "check-layers.sh: no engine sources given"; exit 1; }
exit $fail
