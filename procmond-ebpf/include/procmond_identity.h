/* procmond_identity.h - who a task is and where it sits, for both objects.
 *
 * The event probes and the task iterator fill the same header fields the
 * same way, so the entity_id procmond computes from them (the OCSF CPID:
 * boot id, the pid namespace the process was created in, its tgid there,
 * its start time) is the same whichever of them saw the process, and the
 * same as procfs gives (/proc/PID/ns/pid, NStgid, stat field 22).
 */
#ifndef PROCMOND_IDENTITY_H
#define PROCMOND_IDENTITY_H

/* Nesting limit of pid namespaces (MAX_PID_NS_LEVEL). */
#define PID_NS_LEVELS 32
#define LOGINUID_UNSET 0xffffffffu

/* The deepest pid namespace of `task`'s thread group and its tgid there. */
static __always_inline void read_ns_tgid(struct task_struct *task, __u32 *ns, __u32 *nr)
{
	struct pid *pid = BPF_CORE_READ(task, group_leader, thread_pid);
	struct upid up = {};
	unsigned int level;

	*ns = 0;
	*nr = 0;
	if (!pid)
		return;
	level = BPF_CORE_READ(pid, level) & (PID_NS_LEVELS - 1);
	if (bpf_core_read(&up, sizeof(up), &pid->numbers[level]) != 0)
		return;
	*nr = up.nr;
	*ns = BPF_CORE_READ(up.ns, ns.inum);
}

/* A struct pid's number in the root namespace (0 for none). */
static __always_inline __u32 root_nr(struct pid *pid)
{
	return pid ? BPF_CORE_READ(pid, numbers[0].nr) : 0;
}

/* The controlling terminal as /proc/PID/stat's tty_nr encodes it. */
static __always_inline __u32 read_tty_nr(struct signal_struct *sig)
{
	struct tty_struct *tty = BPF_CORE_READ(sig, tty);
	__u32 major, minor;

	if (!tty)
		return 0;
	major = BPF_CORE_READ(tty, driver, major);
	minor = BPF_CORE_READ(tty, driver, minor_start) + BPF_CORE_READ(tty, index);
	return (minor & 0xff) | (major << 8) | ((minor & ~0xffu) << 12);
}

/* Identity, parent, session, tty and login uid into `hdr`. */
static __always_inline void fill_identity(struct record_header *hdr, struct task_struct *task)
{
	/* The parent process: real_parent is the thread that forked, whose
	 * own start time is not the process's. */
	struct task_struct *parent = BPF_CORE_READ(task, real_parent, group_leader);
	struct signal_struct *sig = BPF_CORE_READ(task, signal);

	hdr->exec_count = BPF_CORE_READ(task, self_exec_id);
	read_ns_tgid(task, &hdr->pid_ns, &hdr->ns_tgid);
	hdr->parent_start_boottime_ns = BPF_CORE_READ(parent, start_boottime);
	read_ns_tgid(parent, &hdr->parent_pid_ns, &hdr->parent_ns_tgid);
	hdr->pgid = root_nr(BPF_CORE_READ(sig, pids[PIDTYPE_PGID]));
	hdr->sid = root_nr(BPF_CORE_READ(sig, pids[PIDTYPE_SID]));
	hdr->tty_nr = read_tty_nr(sig);
	hdr->loginuid = LOGINUID_UNSET;
	if (bpf_core_field_exists(task->loginuid))
		hdr->loginuid = BPF_CORE_READ(task, loginuid.val);
	hdr->prev_uid = 0;
	hdr->prev_euid = 0;
	hdr->prev_gid = 0;
	hdr->prev_egid = 0;
}

#endif
