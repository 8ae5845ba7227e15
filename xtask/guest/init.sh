#!/bin/sh
# The kernel matrix's in-guest check (`cargo xtask kernel-matrix`,
# xtask/src/matrix/): run as /init of a QEMU guest, or on the host itself
# with KM_HOST=1. For each run it starts `procmond watch --source ebpf`,
# waits for "monitoring started", runs a known workload, stops procmond,
# and writes what it saw as sections (gzip, then base64) to $KM_OUT (the
# guest's second serial port). The host checks them (matrix/check.rs):
# nothing here decides pass or fail.
#
# Settings come as environment variables (on the guest's kernel command
# line): KM_SPAWNS (/bin/true per spawner), KM_PROBES (ebpf_probes for the
# default run), KM_RUNS (which runs, comma-separated: "auto,classic").
set -u
export PATH=/bin:/sbin:/usr/bin:/usr/sbin

KM_SPAWNS=${KM_SPAWNS:-150}
KM_PROBES=${KM_PROBES:-auto}
KM_RUNS=${KM_RUNS:-auto,classic}
KM_WORK=${KM_WORK:-/tmp/km}
PROCMOND=${PROCMOND:-/bin/procmond}

if [ "${KM_HOST:-0}" != 1 ]; then
	mount -t proc proc /proc
	mount -t sysfs sys /sys
	mount -t devtmpfs dev /dev
	mount -t tmpfs tmp /tmp
	mkdir -p /sys/fs/cgroup /var/lib /run
	mount -t cgroup2 cgroup2 /sys/fs/cgroup
	# As an init system would: the active LSM list lives here.
	mount -t securityfs securityfs /sys/kernel/security
	KM_OUT=${KM_OUT:-/dev/ttyS1}
fi
: "${KM_OUT:?KM_OUT names where the sections go}"
mkdir -p "$KM_WORK"
cd /

# One section: a name line, the file gzipped and base64-encoded, an end line.
section() {
	echo "KM-SECTION $1"
	gzip -c "$2" | base64
	echo "KM-END"
}

# pid and comm of every process, from /proc.
list_procs() {
	for p in /proc/[0-9]*; do
		c=$(cat "$p/comm" 2>/dev/null) && echo "${p#/proc/} $c"
	done
}

# The workload: two spawners of /bin/true in parallel, a non-zero exit, a
# kill by signal, a fork without exec, an orphan reparented to init, and a
# drop from root to nobody (setpriv: setresgid, setresuid, then exec).
# Each process carries a km-* marker in its argv for the checker.
workload() {
	spawners=
	for s in a b; do
		/bin/sh -c 'i=1; while [ $i -le $2 ]; do /bin/true km-$1-$i; i=$((i+1)); done' \
			km-spawner "$s" "$KM_SPAWNS" &
		spawners="$spawners $!"
	done
	/bin/sh -c 'exit 7' km-exit7
	/bin/sh -c 'kill -9 $$' km-kill
	/bin/sh -c '(exit 5); exit 0' km-fork
	/bin/sh -c '(/bin/sleep 1; exit 6) & exit 0' km-orphan
	/bin/setpriv --reuid=65534 --regid=65534 --clear-groups /bin/true km-setuid
	# Not a bare `wait`: procmond is a child of this shell too.
	wait $spawners
	# The orphan's subshell ends a second after its parent.
	/bin/sleep 2
}

# One run: $1 names it, $2 is its procmond.yaml.
run() {
	name=$1
	dir=$KM_WORK/$name
	mkdir -p "$dir"
	started=$(cut -d' ' -f1 /proc/uptime)
	list_procs >"$dir/procs-before"
	"$PROCMOND" watch --source ebpf --config "$2" >"$dir/events" 2>"$dir/log" &
	watch=$!
	tries=0
	until grep -q "monitoring started" "$dir/log"; do
		if ! kill -0 "$watch" 2>/dev/null || [ $tries -ge 600 ]; then
			break
		fi
		tries=$((tries + 1))
		/bin/sleep 0.5
	done
	list_procs >"$dir/procs-after"
	if kill -0 "$watch" 2>/dev/null; then
		workload
		# Let the last batch leave the ring before the stop.
		/bin/sleep 1
		kill -TERM "$watch"
	fi
	wait "$watch"
	echo "rc=$? watch_pid=$watch started=$started ended=$(cut -d' ' -f1 /proc/uptime)" >"$dir/meta"
	uname -r >>"$dir/meta"
	for f in meta log events procs-before procs-after; do
		section "$name/$f" "$dir/$f"
	done
}

{
	echo "KM-BEGIN $(uname -r)"
	IFS=,
	set -- $KM_RUNS
	unset IFS
	for r in "$@"; do
		case $r in
		auto) printf 'ebpf_probes: %s\n' "$KM_PROBES" >"$KM_WORK/auto.yaml" ;;
		classic) printf 'ebpf_attach: tracepoint\nebpf_probes: %s\n' "$KM_PROBES" >"$KM_WORK/classic.yaml" ;;
		*) echo "KM-UNKNOWN-RUN $r"; continue ;;
		esac
		run "$r" "$KM_WORK/$r.yaml"
	done
	echo "KM-FINISHED"
} >"$KM_OUT"

if [ "${KM_HOST:-0}" != 1 ]; then
	sync
	poweroff -f
fi
