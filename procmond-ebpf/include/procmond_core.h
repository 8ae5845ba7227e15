/* procmond_core.h - the few kernel types the probes read, for CO-RE.
 *
 * Only the fields procmond touches are declared. `preserve_access_index` makes
 * clang record every field access as a CO-RE relocation, so the loader (aya)
 * rewrites offsets against the running kernel's BTF at load time. This keeps
 * the object portable without shipping a multi-megabyte vmlinux.h.
 */
#ifndef PROCMOND_CORE_H
#define PROCMOND_CORE_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u32 u32;
typedef __u64 u64;
typedef _Bool bool;

enum { false = 0, true = 1 };

/* Map type and flag values from the stable UAPI (include/uapi/linux/bpf.h). */
enum bpf_map_type {
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)

typedef struct {
	int counter;
} atomic_t;

typedef struct {
	__u32 val;
} kuid_t;

typedef struct {
	__u32 val;
} kgid_t;

struct cred {
	kuid_t uid;
	kgid_t gid;
	kuid_t euid;
	kgid_t egid;
};

/* Process identity (the CPID's facts) and session: include/linux/pid.h,
 * pid_namespace.h, ns_common.h. */
struct ns_common {
	unsigned int inum;
};

struct pid_namespace {
	struct ns_common ns;
};

struct upid {
	int nr;
	struct pid_namespace *ns;
};

struct pid {
	unsigned int level;
	struct upid numbers[1];
};

enum pid_type {
	PIDTYPE_PID,
	PIDTYPE_TGID,
	PIDTYPE_PGID,
	PIDTYPE_SID,
	PIDTYPE_MAX,
};

struct tty_driver {
	int major;
	int minor_start;
};

struct tty_struct {
	struct tty_driver *driver;
	int index;
};

struct file;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

struct signal_struct {
	atomic_t live;
	struct pid *pids[PIDTYPE_MAX];
	struct tty_struct *tty;
};

struct qstr {
	__u32 len;
	const unsigned char *name;
};

struct dentry {
	struct dentry *d_parent;
	struct qstr d_name;
};

struct vfsmount {
	struct dentry *mnt_root;
};

/* fs/mount.h: the vfsmount is embedded; its offset is relocated too. */
struct mount {
	struct mount *mnt_parent;
	struct dentry *mnt_mountpoint;
	struct vfsmount mnt;
};

struct path {
	struct vfsmount *mnt;
	struct dentry *dentry;
};

struct fs_struct {
	struct path pwd;
};

struct kernfs_node {
	__u64 id;
};

struct cgroup {
	struct kernfs_node *kn;
};

struct css_set {
	struct cgroup *dfl_cgrp;
};

struct super_block {
	__u32 s_dev; /* dev_t */
};

struct inode {
	unsigned long i_ino;
	struct super_block *i_sb;
};

struct file {
	struct path f_path;
	struct inode *f_inode;
};

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	unsigned long long start_boottime;
	struct task_struct *real_parent;
	const struct cred *real_cred;
	struct mm_struct *mm;
	struct signal_struct *signal;
	struct fs_struct *fs;
	struct css_set *cgroups;
	unsigned int flags;
	char comm[16];
	struct task_struct *group_leader;
	struct pid *thread_pid;
	/* Incremented by every exec, copied by fork (u64 since Linux 5.7). */
	__u64 self_exec_id;
	/* CONFIG_AUDIT; probes check bpf_core_field_exists first. */
	kuid_t loginuid;
};

/* BPF iterator context (include/linux/bpf.h, kernel/bpf/task_iter.c). */
struct seq_file;

struct bpf_iter_meta {
	struct seq_file *seq;
};

struct bpf_iter__task {
	struct bpf_iter_meta *meta;
	struct task_struct *task;
};

/* The syscall's registers at sys_exit: its number (arch/x86 ptrace.h,
 * arch/arm64 ptrace.h). */
#if defined(__TARGET_ARCH_arm64)
struct pt_regs {
	int syscallno;
};
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, syscallno)
#else
struct pt_regs {
	unsigned long orig_ax;
};
#define SYSCALL_NR(regs) BPF_CORE_READ(regs, orig_ax)
#endif

struct linux_binprm {
	const char *filename;
};

/* Classic tracepoint record of sched_process_exec (the fallback path). */
struct trace_event_raw_sched_process_exec {
	__u32 __data_loc_filename;
};

#pragma clang attribute pop

#endif
