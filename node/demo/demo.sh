#!/usr/bin/env bash
# make demo: four nodes in a line on loopback (A-B-C-D, each linked only to
# its neighbours), two users, and a direct message from the user at A to the
# user at D while D's user is offline; then D's user comes online and the
# message arrives. Prints each step and stops every process it started.
# Every node listens on 127.0.0.1 only; nothing leaves this machine.
set -euo pipefail

qpq=${QPQ_BIN:-./qpq}
work=$(mktemp -d "${TMPDIR:-/tmp}/qpq-demo-XXXXXX")
pids=()
cleanup() {
	for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT INT TERM

step() { printf '\n== %s\n' "$*"; }
# str KEY: the first string value of KEY in the JSON on stdin (the
# top-level one: qpq prints a struct's own fields before its lists). Plain
# grep, so the demo needs nothing beyond coreutils.
str() { grep -o "\"$1\":\"[^\"]*\"" | head -n 1 | cut -d '"' -f 4; }

# start NAME [--peer ADDR#FP]: runs a node (--max-links 1 keeps peer
# exchange from adding shortcuts to the line), waits for its control
# socket, and sets $addr to "ADDR#FP" for the next node to link to. It runs
# in this shell, not a $(...) subshell, so that cleanup knows every pid.
start() {
	local name=$1; shift
	"$qpq" node --data "$work/$name" --listen 127.0.0.1:0 --mdns=false --max-links 1 "$@" >"$work/$name.out" 2>"$work/$name.log" &
	pids+=($!)
	for _ in $(seq 100); do
		if st=$("$qpq" status --data "$work/$name" --json 2>/dev/null); then
			addr=$(echo "$st" | str listen)#$(echo "$st" | str fingerprint)
			return
		fi
		sleep 0.1
	done
	echo "node $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1
}

links() { "$qpq" status --data "$work/$1" | awk '$1 == "peers" { print $2 }'; }
# held NODE KIND: how many envelopes of KIND the node's store holds.
held() {
	local n
	n=$("$qpq" status --data "$work/$1" --json | grep -o '"kinds":{[^}]*}' | grep -o "\"$2\":[0-9]*" | cut -d : -f 2)
	echo "${n:-0}"
}

step "Starting four nodes in a line: A - B - C - D (loopback only)"
start A; A=$addr
start B --peer "$A"; B=$addr
start C --peer "$B"; C=$addr
start D --peer "$C"; D=$addr
for _ in $(seq 100); do
	[ "$(links A)" = 1 ] && [ "$(links B)" = 2 ] && [ "$(links C)" = 2 ] && [ "$(links D)" = 1 ] && break
	sleep 0.1
done
for n in A B C D; do echo "node $n: $(links $n) link(s)"; done

step "Creating two users: alice (will use node A) and bob (will use node D)"
export QPQ_PASSPHRASE=  # demo keys are stored unencrypted
"$qpq" id new --home "$work/alice" 2>/dev/null | sed 's/^/alice /'
"$qpq" id new --home "$work/bob" 2>/dev/null | sed 's/^/bob   /'
bob=$("$qpq" id show --home "$work/bob" --json | str fingerprint)
"$qpq" contact add "$bob" bob --home "$work/alice" >/dev/null
echo "alice added bob as a contact"

step "bob connects once at D (publishes his key bundle), then goes offline"
"$qpq" recv --home "$work/bob" --node "$D"
echo "bob is offline now"

step "alice, at A, sends bob a message (the key bundle travels A<-B<-C<-D first)"
for _ in $(seq 50); do
	if id=$("$qpq" send --home "$work/alice" --node "$A" --to bob --text "Hello bob, this crossed four routers while you were away." 2>"$work/send.err"); then
		break
	fi
	sleep 0.2
done
[ -n "${id:-}" ] || { cat "$work/send.err" >&2; exit 1; }
echo "message id $id"

step "The message is carried hop by hop and held for bob"
for _ in $(seq 100); do [ "$(held D dm)" -ge 1 ] && break; sleep 0.1; done
for n in A B C D; do echo "node $n holds $(held $n dm) sealed message(s) and $(held $n bundle) key bundle(s)"; done

step "bob comes online at D"
"$qpq" recv --home "$work/bob" --node "$D" --json

step "bob's acknowledgement (a receipt) deletes every copy along the line"
for _ in $(seq 100); do [ "$(held A dm)" = 0 ] && break; sleep 0.1; done
for n in A B C D; do echo "node $n holds $(held $n dm) sealed message(s) and $(held $n receipt) receipt(s)"; done

step "Done; stopping the four nodes"
