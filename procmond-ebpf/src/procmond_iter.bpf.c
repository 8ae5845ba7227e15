// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* procmond_iter.bpf.c - the process table, read by a BPF task iterator.
 *
 * One read of the iterator's file walks every task in the kernel and yields
 * a record per process (thread-group leader) in the ring buffer's layout
 * (RECORD_KIND_TASK): ids, credentials, start time, cgroup id, comm, argv
 * (copied from the process's memory: this program is sleepable), and the
 * exe and cwd paths walked from their dentries. It replaces five procfs
 * reads per process for the inventory and every reconciliation pass; where
 * it cannot load, procmond reads procfs as before.
 */
#include "procmond_core.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include "procmond_record.h"
#include "procmond_path.h"
#include "procmond_maps.h"
#include "procmond_identity.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define PF_KTHREAD 0x00200000

struct path_scratch {
	char buf[CWD_MAX_LEN + NAME_MAX_LEN];
};

/* Scratch of their own: the event probes may run on this CPU while the
 * iterator sleeps in a page fault. */
PERCPU_SLOT(ITER_RECORD, struct exec_record);

PERCPU_SLOT(ITER_PATH, struct path_scratch);

SEC("iter.s/task")
int snapshot_task(struct bpf_iter__task *ctx)
{
	struct seq_file *seq = ctx->meta->seq;
	struct task_struct *task = ctx->task;
	__u32 zero = 0;
	struct exec_record *rec;
	struct path_scratch *path;
	const struct cred *cred;
	struct mm_struct *mm;
	__u32 fn_len = 0, args_len = 0, cwd_len = 0, at;
	__u64 size;

	if (!task || task->pid != task->tgid)
		return 0;
	rec = bpf_map_lookup_elem(&ITER_RECORD, &zero);
	path = bpf_map_lookup_elem(&ITER_PATH, &zero);
	if (!rec || !path)
		return 0;

	cred = BPF_CORE_READ(task, real_cred);
	rec->hdr.version = RECORD_VERSION;
	rec->hdr.kind = RECORD_KIND_TASK;
	rec->hdr.flags = 0;
	rec->hdr.ktime_boot_ns = bpf_ktime_get_boot_ns();
	rec->hdr.start_boottime_ns = BPF_CORE_READ(task, start_boottime);
	rec->hdr.cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	rec->hdr.pid = BPF_CORE_READ(task, tgid);
	rec->hdr.tid = BPF_CORE_READ(task, pid);
	rec->hdr.ppid = BPF_CORE_READ(task, real_parent, tgid);
	rec->hdr.uid = BPF_CORE_READ(cred, uid.val);
	rec->hdr.gid = BPF_CORE_READ(cred, gid.val);
	rec->hdr.euid = BPF_CORE_READ(cred, euid.val);
	rec->hdr.exit_code = 0;
	rec->hdr.filename_len = 0;
	rec->hdr.args_len = 0;
	rec->hdr.cwd_len = 0;
	rec->hdr.exe_ino = 0;
	rec->hdr.exe_dev = 0;
	rec->hdr.egid = BPF_CORE_READ(cred, egid.val);
	BPF_CORE_READ_STR_INTO(&rec->hdr.comm, task, comm);
	fill_identity(&rec->hdr, task);

	mm = BPF_CORE_READ(task, mm);
	if (mm && !(BPF_CORE_READ(task, flags) & PF_KTHREAD)) {
		struct file *exe = BPF_CORE_READ(mm, exe_file);
		unsigned long arg_start = BPF_CORE_READ(mm, arg_start);
		unsigned long arg_end = BPF_CORE_READ(mm, arg_end);

		if (exe) {
			rec->hdr.exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
			rec->hdr.exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
		}
		if (exe) {
			__u32 n = read_path(BPF_CORE_READ(exe, f_path.dentry),
					    BPF_CORE_READ(exe, f_path.mnt), path->buf,
					    &rec->hdr.flags, RECORD_FLAG_FILENAME_TRUNCATED);

			if (n >= FILENAME_MAX_LEN) {
				rec->hdr.flags |= RECORD_FLAG_FILENAME_TRUNCATED;
			} else if (n > 0) {
				n &= FILENAME_MAX_LEN - 1;
				if (bpf_probe_read_kernel(rec->data, n, path->buf) == 0)
					fn_len = n;
			}
		}
		if (arg_end > arg_start) {
			__u64 want = arg_end - arg_start;

			if (want > ARGS_MAX_LEN - 1) {
				want = ARGS_MAX_LEN - 1;
				rec->hdr.flags |= RECORD_FLAG_ARGS_TRUNCATED;
			}
			want &= ARGS_MAX_LEN - 1;
			fn_len &= FILENAME_MAX_LEN - 1;
			if (want > 0 &&
			    bpf_copy_from_user_task(&rec->data[fn_len], want,
						    (const void *)arg_start, task, 0) == 0)
				args_len = want;
		}
	}
	fn_len &= FILENAME_MAX_LEN - 1;
	args_len &= ARGS_MAX_LEN - 1;
	rec->hdr.filename_len = fn_len;
	rec->hdr.args_len = args_len;

	{
		struct fs_struct *fs = BPF_CORE_READ(task, fs);

		if (fs)
			cwd_len = read_path(BPF_CORE_READ(fs, pwd.dentry),
					    BPF_CORE_READ(fs, pwd.mnt), path->buf,
					    &rec->hdr.flags, RECORD_FLAG_CWD_TRUNCATED);
		if (cwd_len > CWD_MAX_LEN)
			cwd_len = 0;
		cwd_len &= CWD_MAX_LEN - 1;
		at = fn_len + args_len;
		if (cwd_len > 0 && at < FILENAME_MAX_LEN + ARGS_MAX_LEN &&
		    bpf_probe_read_kernel(&rec->data[at], cwd_len, path->buf) == 0)
			rec->hdr.cwd_len = cwd_len;
	}

	size = sizeof(struct record_header) + fn_len + args_len + rec->hdr.cwd_len;
	if (size > sizeof(*rec))
		size = sizeof(*rec);
	bpf_seq_write(seq, rec, size);
	return 0;
}
