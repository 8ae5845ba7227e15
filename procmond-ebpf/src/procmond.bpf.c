// SPDX-License-Identifier: GPL-2.0 OR Apache-2.0
/* procmond.bpf.c - kernel probes for process exec, exit and fork.
 *
 * Each probe copies what userspace needs *at the moment of the event*, so a
 * process that lives for a microsecond still arrives with its argv, parent and
 * credentials. Records go to one ring buffer; a record that cannot be written
 * is counted in LOST (per CPU), which procmond reads and reports as the
 * kernel-side loss figure. The probes are BTF tracepoints (tp_btf): they need
 * no tracefs and read kernel structs through CO-RE relocations.
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

/* Userspace overrides max_entries (ring_buffer_bytes in procmond.yaml). */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} EVENTS SEC(".maps");

/* Records that could not be written to EVENTS. */
PERCPU_SLOT(LOST, __u64);

/* The cwd as the walk finds it (leaf first), before it joins the record. */
struct cwd_scratch {
	char buf[CWD_MAX_LEN + NAME_MAX_LEN];
};

PERCPU_SLOT(CWD, struct cwd_scratch);

/* Scratch space: an exec record is too large for the 512-byte BPF stack. */
PERCPU_SLOT(SCRATCH, struct exec_record);

static __always_inline void count_lost(void)
{
	__u32 zero = 0;
	__u64 *lost = bpf_map_lookup_elem(&LOST, &zero);

	if (lost)
		__sync_fetch_and_add(lost, 1);
}

static __always_inline void fill_header(struct record_header *hdr, __u16 kind,
					struct task_struct *task)
{
	const struct cred *cred = BPF_CORE_READ(task, real_cred);

	hdr->version = RECORD_VERSION;
	hdr->kind = kind;
	hdr->flags = 0;
	hdr->ktime_boot_ns = bpf_ktime_get_boot_ns();
	/* The process's start: an exit or setuid may come from a thread. */
	hdr->start_boottime_ns = BPF_CORE_READ(task, group_leader, start_boottime);
	hdr->cgroup_id = bpf_get_current_cgroup_id();
	hdr->pid = BPF_CORE_READ(task, tgid);
	hdr->tid = BPF_CORE_READ(task, pid);
	hdr->ppid = BPF_CORE_READ(task, real_parent, tgid);
	hdr->uid = BPF_CORE_READ(cred, uid.val);
	hdr->gid = BPF_CORE_READ(cred, gid.val);
	hdr->euid = BPF_CORE_READ(cred, euid.val);
	hdr->exit_code = 0;
	hdr->filename_len = 0;
	hdr->args_len = 0;
	hdr->cwd_len = 0;
	hdr->exe_ino = 0;
	hdr->exe_dev = 0;
	hdr->egid = BPF_CORE_READ(cred, egid.val);
	BPF_CORE_READ_STR_INTO(&hdr->comm, task, comm);
	fill_identity(hdr, task);
}

/* The executable the task now runs (its mm's exe_file): what userspace may
 * hash is checked against it, so a replaced file or a reused pid is told. */
static __always_inline void read_exe_id(struct task_struct *task, struct record_header *hdr)
{
	struct file *exe = BPF_CORE_READ(task, mm, exe_file);

	if (!exe)
		return;
	hdr->exe_ino = BPF_CORE_READ(exe, f_inode, i_ino);
	hdr->exe_dev = BPF_CORE_READ(exe, f_inode, i_sb, s_dev);
}

/* Small records (exit, fork) are reserved in place: no copy. */
static __always_inline struct record_header *reserve_small(void)
{
	struct record_header *hdr =
		bpf_ringbuf_reserve(&EVENTS, sizeof(struct record_header), 0);

	if (!hdr)
		count_lost();
	return hdr;
}

/* The working directory, walked in the kernel (procmond_path.h): no
 * /proc/PID/cwd read per exec. */
static __always_inline __u32 read_cwd(struct task_struct *task, char *out, __u32 *flags)
{
	struct fs_struct *fs = BPF_CORE_READ(task, fs);

	if (!fs)
		return 0;
	return read_path(BPF_CORE_READ(fs, pwd.dentry), BPF_CORE_READ(fs, pwd.mnt), out,
			 flags, RECORD_FLAG_CWD_TRUNCATED);
}

/* exec: header, then the filename and argv, copied while they still exist. */
static __always_inline int emit_exec(struct task_struct *task, const char *filename)
{
	__u32 zero = 0;
	struct exec_record *rec = bpf_map_lookup_elem(&SCRATCH, &zero);
	struct mm_struct *mm;
	unsigned long arg_start, arg_end, want;
	long fn_len, got;
	__u32 args_len = 0;

	if (!rec)
		return 0;
	fill_header(&rec->hdr, RECORD_KIND_EXEC, task);
	read_exe_id(task, &rec->hdr);

	fn_len = bpf_probe_read_kernel_str(rec->data, FILENAME_MAX_LEN, filename);
	if (fn_len <= 0) {
		fn_len = 0;
	} else {
		fn_len -= 1; /* drop the NUL */
		if (fn_len >= FILENAME_MAX_LEN - 1)
			rec->hdr.flags |= RECORD_FLAG_FILENAME_TRUNCATED;
	}
	fn_len &= FILENAME_MAX_LEN - 1;
	rec->hdr.filename_len = fn_len;

	mm = BPF_CORE_READ(task, mm);
	arg_start = BPF_CORE_READ(mm, arg_start);
	arg_end = BPF_CORE_READ(mm, arg_end);
	if (arg_end > arg_start) {
		want = arg_end - arg_start;
		if (want > ARGS_MAX_LEN - 1) {
			want = ARGS_MAX_LEN - 1;
			rec->hdr.flags |= RECORD_FLAG_ARGS_TRUNCATED;
		}
		want &= ARGS_MAX_LEN - 1;
		got = bpf_probe_read_user(&rec->data[fn_len], want,
					  (const void *)arg_start);
		if (got == 0)
			args_len = want;
	}
	rec->hdr.args_len = args_len;

	{
		struct cwd_scratch *cwd = bpf_map_lookup_elem(&CWD, &zero);
		__u32 cwd_len = 0, at;

		if (cwd)
			cwd_len = read_cwd(task, cwd->buf, &rec->hdr.flags);
		if (cwd_len > CWD_MAX_LEN) {
			cwd_len = 0;
			rec->hdr.flags |= RECORD_FLAG_CWD_TRUNCATED;
		}
		cwd_len &= CWD_MAX_LEN - 1;
		at = fn_len + args_len;
		if (cwd && cwd_len > 0 && at < FILENAME_MAX_LEN + ARGS_MAX_LEN &&
		    bpf_probe_read_kernel(&rec->data[at], cwd_len, cwd->buf) == 0)
			rec->hdr.cwd_len = cwd_len;
	}

	{
		__u64 size = sizeof(struct record_header) + fn_len + args_len +
			     rec->hdr.cwd_len;

		if (size > sizeof(*rec))
			size = sizeof(*rec);
		if (bpf_ringbuf_output(&EVENTS, rec, size, 0) != 0)
			count_lost();
	}
	return 0;
}

/* exit: one record per process, only when its last thread exits. */
static __always_inline int emit_exit(struct task_struct *task)
{
	struct record_header *hdr;

	if (BPF_CORE_READ(task, signal, live.counter) != 0)
		return 0;
	hdr = reserve_small();
	if (!hdr)
		return 0;
	fill_header(hdr, RECORD_KIND_EXIT, task);
	hdr->exit_code = BPF_CORE_READ(task, exit_code);
	bpf_ringbuf_submit(hdr, 0);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(handle_exec, struct task_struct *task, int old_pid,
	     struct linux_binprm *bprm)
{
	return emit_exec(task, BPF_CORE_READ(bprm, filename));
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(handle_exit, struct task_struct *task)
{
	return emit_exit(task);
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(handle_fork, struct task_struct *parent, struct task_struct *child)
{
	struct record_header *hdr;

	/* New processes only; threads share their creator's tgid. */
	if (BPF_CORE_READ(child, pid) != BPF_CORE_READ(child, tgid))
		return 0;
	hdr = reserve_small();
	if (!hdr)
		return 0;
	fill_header(hdr, RECORD_KIND_FORK, child);
	/* The child inherits its parent's credentials at this point. */
	bpf_ringbuf_submit(hdr, 0);
	return 0;
}

/* setuid family: the LSM hooks every setuid/setreuid/setresuid/setfsuid
 * (and setgid family) call passes through before the new credentials are
 * committed. exec's credential change does not pass here, so a setuid
 * record is always a change without exec. Only a change of uid, euid, gid
 * or egid is reported, and only when no earlier LSM refused it (`ret`).
 * Attached as BPF LSM programs where the kernel runs the BPF LSM, else as
 * fexit programs (which need ftrace trampolines). Never refuses anything:
 * the LSM programs return what the hooks before them decided. */
static __always_inline void emit_cred_change(const struct cred *new, const struct cred *old,
					     int ret)
{
	struct record_header *hdr;
	__u32 uid, euid, gid, egid;

	if (ret != 0)
		return;
	uid = BPF_CORE_READ(new, uid.val);
	euid = BPF_CORE_READ(new, euid.val);
	gid = BPF_CORE_READ(new, gid.val);
	egid = BPF_CORE_READ(new, egid.val);
	if (uid == BPF_CORE_READ(old, uid.val) && euid == BPF_CORE_READ(old, euid.val) &&
	    gid == BPF_CORE_READ(old, gid.val) && egid == BPF_CORE_READ(old, egid.val))
		return;
	hdr = reserve_small();
	if (!hdr)
		return;
	fill_header(hdr, RECORD_KIND_SETUID, (struct task_struct *)bpf_get_current_task());
	hdr->prev_uid = BPF_CORE_READ(old, uid.val);
	hdr->prev_euid = BPF_CORE_READ(old, euid.val);
	hdr->prev_gid = BPF_CORE_READ(old, gid.val);
	hdr->prev_egid = BPF_CORE_READ(old, egid.val);
	hdr->uid = uid;
	hdr->euid = euid;
	hdr->gid = gid;
	hdr->egid = egid;
	bpf_ringbuf_submit(hdr, 0);
}

SEC("lsm/task_fix_setuid")
int BPF_PROG(lsm_setuid, struct cred *new, const struct cred *old, int flags, int ret)
{
	emit_cred_change(new, old, ret);
	return ret;
}

SEC("lsm/task_fix_setgid")
int BPF_PROG(lsm_setgid, struct cred *new, const struct cred *old, int flags, int ret)
{
	emit_cred_change(new, old, ret);
	return ret;
}

/* The last resort where neither LSM nor fexit programs may load: the
 * sys_exit tracepoint, filtered to the uid/gid-setting syscalls that
 * succeeded. The ids before are not at hand here: the record carries
 * PREV_UNKNOWN and procmond takes them from its process table. It runs on
 * every syscall's exit, so it costs more than the hooks above; the number
 * test is the first thing it does. Native syscalls only (not the 32-bit
 * compat table). */
#if defined(__TARGET_ARCH_arm64)
#define NR_SETUID 146
#define NR_SETGID 144
#define NR_SETREUID 145
#define NR_SETREGID 143
#define NR_SETRESUID 147
#define NR_SETRESGID 149
#else
#define NR_SETUID 105
#define NR_SETGID 106
#define NR_SETREUID 113
#define NR_SETREGID 114
#define NR_SETRESUID 117
#define NR_SETRESGID 119
#endif

SEC("tp_btf/sys_exit")
int BPF_PROG(handle_sys_exit, struct pt_regs *regs, long ret)
{
	struct record_header *hdr;
	long nr;

	if (ret != 0)
		return 0;
	nr = SYSCALL_NR(regs);
	if (nr != NR_SETUID && nr != NR_SETGID && nr != NR_SETREUID && nr != NR_SETREGID &&
	    nr != NR_SETRESUID && nr != NR_SETRESGID)
		return 0;
	hdr = reserve_small();
	if (!hdr)
		return 0;
	fill_header(hdr, RECORD_KIND_SETUID, (struct task_struct *)bpf_get_current_task());
	hdr->prev_uid = PREV_UNKNOWN;
	hdr->prev_euid = PREV_UNKNOWN;
	hdr->prev_gid = PREV_UNKNOWN;
	hdr->prev_egid = PREV_UNKNOWN;
	bpf_ringbuf_submit(hdr, 0);
	return 0;
}

SEC("fexit/security_task_fix_setuid")
int BPF_PROG(handle_setuid, struct cred *new, const struct cred *old, int flags, int ret)
{
	emit_cred_change(new, old, ret);
	return 0;
}

SEC("fexit/security_task_fix_setgid")
int BPF_PROG(handle_setgid, struct cred *new, const struct cred *old, int flags, int ret)
{
	emit_cred_change(new, old, ret);
	return 0;
}

/*
 * Classic tracepoints: the fallback where BTF tracepoints cannot attach.
 * The task is `current` in both; the exec filename sits in the record at
 * the offset its __data_loc field names. The classic fork record does not
 * say whether the child is a thread, so this path reports no fork events
 * (reconciliation covers processes that fork without exec).
 */
SEC("tracepoint/sched/sched_process_exec")
int handle_exec_tp(struct trace_event_raw_sched_process_exec *ctx)
{
	__u32 loc = ctx->__data_loc_filename;

	return emit_exec((struct task_struct *)bpf_get_current_task(),
			 (const char *)ctx + (loc & 0xffff));
}

SEC("tracepoint/sched/sched_process_exit")
int handle_exit_tp(void *ctx)
{
	return emit_exit((struct task_struct *)bpf_get_current_task());
}
