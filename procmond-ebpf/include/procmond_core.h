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
};

struct file;

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
};

struct signal_struct {
	atomic_t live;
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

struct linux_binprm {
	const char *filename;
};

/* Classic tracepoint record of sched_process_exec (the fallback path). */
struct trace_event_raw_sched_process_exec {
	__u32 __data_loc_filename;
};

#pragma clang attribute pop

#endif
