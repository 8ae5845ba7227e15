/* procmond_record.h - the wire layout of one kernel record in the ring buffer.
 *
 * This is the contract between the probes and procmond's decoder
 * (procmond/src/platform/sources/ebpf/record.rs). Every field is little-endian and
 * naturally aligned; a header is followed by `filename_len` bytes of the exec
 * filename, `args_len` bytes of NUL-separated argv and `cwd_len` bytes of the
 * working directory, its components leaf first, each NUL-terminated (exec
 * records only).
 * Bump RECORD_VERSION whenever the layout changes: the decoder refuses other
 * versions instead of misreading them.
 */
#ifndef PROCMOND_RECORD_H
#define PROCMOND_RECORD_H

#define RECORD_VERSION 4

#define RECORD_KIND_EXEC 1
#define RECORD_KIND_EXIT 2
#define RECORD_KIND_FORK 3
/* A live process, from the task iterator (the inventory and reconciliation
 * snapshot): the filename slot holds its exe as path components. */
#define RECORD_KIND_TASK 4
/* A running process changed its uid/gid without exec: the header's ids are
 * the new ones, prev_* the ones before. */
#define RECORD_KIND_SETUID 5
/* prev_* of a setuid record when the probe could not read them. */
#define PREV_UNKNOWN 0xffffffffu

#define RECORD_FLAG_ARGS_TRUNCATED (1u << 0)
#define RECORD_FLAG_FILENAME_TRUNCATED (1u << 1)
/* The working directory was deeper or longer than the probe walks. */
#define RECORD_FLAG_CWD_TRUNCATED (1u << 2)

/* Powers of two: the probes mask lengths with (N - 1) to prove bounds. */
#define FILENAME_MAX_LEN 512
#define ARGS_MAX_LEN 4096
#define COMM_LEN 16
/* The cwd: path components leaf first, each NUL-terminated. */
#define CWD_MAX_LEN 1024
#define CWD_MAX_DEPTH 32
#define NAME_MAX_LEN 256

struct record_header {
	__u16 version;
	__u16 kind;
	__u32 flags;
	__u64 ktime_boot_ns;     /* when it happened, CLOCK_BOOTTIME */
	__u64 start_boottime_ns; /* task start, CLOCK_BOOTTIME */
	__u64 cgroup_id;
	__u32 pid;               /* tgid; the child's on fork */
	__u32 tid;
	__u32 ppid;              /* real parent's tgid */
	__u32 uid;
	__u32 gid;
	__u32 euid;
	__u32 exit_code;         /* raw wait status: (code << 8) | signal */
	__u16 filename_len;
	__u16 args_len;
	char comm[COMM_LEN];
	__u16 cwd_len;           /* exec only: bytes of cwd after argv */
	__u16 _pad[3];
	__u64 exe_ino;           /* exec and task: inode of mm->exe_file, else 0 */
	__u32 exe_dev;           /* its superblock's dev_t, kernel encoding */
	__u32 egid;
	/* Identity (the OCSF CPID's facts) and lineage, version 4. */
	__u64 exec_count;        /* task->self_exec_id */
	__u64 parent_start_boottime_ns;
	__u32 pid_ns;            /* inum of the pid namespace it was created in */
	__u32 ns_tgid;           /* its tgid there */
	__u32 parent_pid_ns;
	__u32 parent_ns_tgid;
	__u32 sid;               /* session id, root namespace */
	__u32 pgid;              /* process group id, root namespace */
	__u32 tty_nr;            /* /proc/PID/stat field 7 encoding; 0: none */
	__u32 loginuid;          /* (u32)-1: unset or no CONFIG_AUDIT */
	__u32 prev_uid;          /* setuid records: the ids before */
	__u32 prev_euid;
	__u32 prev_gid;
	__u32 prev_egid;
};

_Static_assert(sizeof(struct record_header) == 168, "record header layout");

struct exec_record {
	struct record_header hdr;
	/* filename, argv, cwd; the last NAME_MAX_LEN bytes are slack for
	 * the verifier's bounds on the cwd copy. */
	char data[FILENAME_MAX_LEN + ARGS_MAX_LEN + CWD_MAX_LEN + NAME_MAX_LEN];
};

#endif
